"""The refinement's report: text, the ``refined`` section of ``plan.json``, the scenario files
of the refined plan, and PNGs of the optimization history and the simulated Pareto front.

Functions return strings, dicts or bytes; only the CLI prints and writes. The table puts the
MILP plan's prediction next to its simulation (at the load the MILP planned, and at the highest
load it sustains within the SLOs) and next to the refined plan's simulation.
"""

from __future__ import annotations

import io
import json
from typing import Any, cast

from servingcast._text import table
from servingcast.planner.export import plan_scenario_files
from servingcast.refine.deployment import Part, part_scenario
from servingcast.refine.evaluate import Evaluation
from servingcast.refine.result import RefinedResult

DASHBOARD_EXTRA = "pip install 'servingcast[dashboard]'"


def _n(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes}m{s:02d}s" if minutes else f"{seconds:.1f}s"


def _worst(ev: Evaluation, field: str, stat: str) -> float | None:
    values = [getattr(getattr(w, field), stat) for w in ev.workloads]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _at_target(ev: Evaluation, field: str) -> float | None:
    values = [getattr(p.point, field) for w in ev.workloads for p in w.parts
              if p.point is not None and getattr(p.point, field) is not None]
    return max(values) if values else None


def _attainment(ev: Evaluation) -> float | None:
    rates = [(w.attainment, w.rate_per_s) for w in ev.workloads if w.attainment is not None]
    total = sum(r for _, r in rates)
    return sum(a * r for a, r in rates) / total if total else None


def _planned_load(r: RefinedResult) -> dict[str, float | None]:
    points = [c.point for c in r.milp_at_planned_load]
    total = sum(p.rate_per_s for p in points)

    def worst(field: str) -> float | None:
        values = [getattr(p, field) for p in points if getattr(p, field) is not None]
        return max(values) if values else None

    return {
        "rate_per_s": total,
        "attainment": sum(p.attainment * p.rate_per_s for p in points) / total if total else None,
        "ttft_at_target_ms": worst("ttft_at_target_ms"),
        "tpot_at_target_ms": worst("tpot_at_target_ms"),
        "ttft_p99_ms": max((p.ttft_ms.p99 for p in points if p.ttft_ms.p99 is not None),
                           default=None),
        "tpot_p99_ms": max((p.tpot_ms.p99 for p in points if p.tpot_ms.p99 is not None),
                           default=None),
    }


def _quantile_label(r: RefinedResult) -> str:
    targets = {w.slo.attainment for w in r.problem.workloads}
    return f"p{next(iter(targets)) * 100:g}" if len(targets) == 1 else "at SLO quantile"


def nothing_reasons(ev: Evaluation) -> list[str]:
    """``workload (part): reason`` for every part of ``ev`` that sustains nothing."""
    return [f"{w.name} ({p.part}): {p.reason}" for w in ev.workloads for p in w.parts
            if p.rate_per_s <= 0 and p.reason]


def _gain_text(r: RefinedResult) -> str:
    if r.gain is None:
        why = "; ".join(nothing_reasons(r.milp_evaluation))
        return ("Gain: - (the MILP plan sustains nothing in simulation"
                + (f": {why})" if why else ")"))
    if r.problem.objective == "min_cost":
        if not r.milp_feasible:
            return (f"Gain: the MILP plan (${r.milp_value:,.2f}/h) misses the demand in "
                    f"simulation; the refined plan meets it at ${r.value:,.2f}/h")
        return (f"Gain: {r.gain:+.1%} lower cost (${r.milp_value:,.2f}/h -> "
                f"${r.value:,.2f}/h), simulated")
    unit = "req/s per $/h" if r.problem.objective == "max_goodput_per_dollar" else "req/s"
    return (f"Gain: {r.gain:+.1%} goodput, simulated ({r.milp_value:,.4g} -> "
            f"{r.value:,.4g} {unit})")


def format_refinement(r: RefinedResult) -> str:
    """The refinement report (module docstring)."""
    s = r.stats
    mode = " (Pareto mode: tokens/s per GPU vs per user)" if r.mode == "pareto" else ""
    lines = [
        f"Refinement{mode}: Optuna TPE, seed {s.seed}; the study holds {s.simulated} simulated "
        f"trials ({s.new_trials} new, {s.jobs} job{'s' if s.jobs > 1 else ''}, "
        f"{_duration(s.elapsed_s)}) and {s.finished - s.simulated} more not simulated: "
        f"{s.infeasible} infeasible (GPU budget, engine limits, or the demand), "
        f"{s.duplicates} duplicate{'s' if s.duplicates != 1 else ''}"
        + (f", {s.failed} failed" if s.failed else ""),
        (f"Final plan: trial {s.best_trial}"
         + (" (the MILP plan)" if r.refined_trial == r.milp_trial else "")
         + f", reached {_duration(s.time_to_best_s)} after the study's first trial started")
        if s.best_trial is not None else "Final plan: the MILP plan (no trial beat it)",
    ]
    if r.storage is not None:
        lines.append(f"Study {r.study_name!r} in {r.storage}")
        lines.append(f"  watch it: {r.dashboard_command}   ({DASHBOARD_EXTRA})")
    else:
        lines.append("Study: temporary (pass --output DIR or --storage URL to keep it)")
    q = _quantile_label(r)
    milp, pred, ev = r.milp_evaluation, r.milp_plan, r.evaluation
    planned = _planned_load(r)
    targets = sorted({w.slo.attainment for w in r.problem.workloads})
    headers = ["", "MILP predicted", "MILP simulated", "MILP simulated", "refined simulated"]
    sub = ["", "(planned load)", "(planned load)", "(max within SLO)", "(max within SLO)"]
    cost_pred = pred.cost_per_hour
    rows = [
        sub,
        ["rate (req/s)", _n(pred.served_rate_per_s, 2), _n(planned["rate_per_s"], 2),
         _n(milp.served_per_s, 2), _n(ev.served_per_s, 2)],
        ["SLO attainment", ">= " + "/".join(f"{t:g}" for t in targets),
         _n(planned["attainment"], 3), _n(_attainment(milp), 3), _n(_attainment(ev), 3)],
        [f"TTFT {q} (ms)", _n(max((w.ttft_ms for w in pred.workloads if w.ttft_ms), default=None)),
         _n(planned["ttft_at_target_ms"]), _n(_at_target(milp, "ttft_at_target_ms")),
         _n(_at_target(ev, "ttft_at_target_ms"))],
        [f"TPOT {q} (ms)", _n(max((w.tpot_ms for w in pred.workloads if w.tpot_ms), default=None),
                              2),
         _n(planned["tpot_at_target_ms"], 2), _n(_at_target(milp, "tpot_at_target_ms"), 2),
         _n(_at_target(ev, "tpot_at_target_ms"), 2)],
        ["TTFT p99 (ms)", "-", _n(planned["ttft_p99_ms"]), _n(_worst(milp, "ttft_ms", "p99")),
         _n(_worst(ev, "ttft_ms", "p99"))],
        ["TPOT p99 (ms)", "-", _n(planned["tpot_p99_ms"], 2),
         _n(_worst(milp, "tpot_ms", "p99"), 2), _n(_worst(ev, "tpot_ms", "p99"), 2)],
        ["tokens/s per GPU", _n(pred.tokens_per_s_per_gpu), "-", _n(milp.tokens_per_s_per_gpu),
         _n(ev.tokens_per_s_per_gpu)],
        ["tokens/s per user", _n(pred.workloads[0].tokens_per_s_per_user if len(
            pred.workloads) == 1 else None), "-", _n(milp.tokens_per_s_per_user),
         _n(ev.tokens_per_s_per_user)],
        ["GPUs", str(pred.total_gpus), str(pred.total_gpus), str(milp.total_gpus),
         str(ev.total_gpus)],
        ["$/h", _n(cost_pred, 2), _n(cost_pred, 2), _n(milp.cost_per_hour, 2),
         _n(ev.cost_per_hour, 2)],
    ]
    if len(r.problem.workloads) > 1:
        for w in r.problem.workloads:
            wp = next(p for p in pred.workloads if p.name == w.name)
            rows.append([f"{w.name} rate (req/s)", _n(wp.served_rate_per_s, 2), "-",
                         _n(milp.workload(w.name).served_per_s, 2),
                         _n(ev.workload(w.name).served_per_s, 2)])
    lines += ["", "Refined plan vs MILP plan"] + table(headers, rows)
    lines += ["", _gain_text(r)]
    if r.changes:
        lines += ["What changed:"] + [f"  {c}" for c in r.changes]
    else:
        lines.append("What changed: nothing — the MILP plan is the best plan the simulator found")
    sizes = ", ".join(f"{name} {n:,}" for name, n in r.sim_requests.items())
    k = r.settings.get("capacity_multiple", 4.0)
    lines.append(f"Simulations: {sizes} requests each for the final plan (at least {k:g} x the "
                 f"requests a deployment holds at once, at most "
                 f"{r.settings['max_sim_requests']:,}), Poisson arrivals, seed "
                 f"{r.settings['seed']} (the same requests in every trial of one size); a rate "
                 f"counts when the simulated SLO attainment after the warm-up meets its target "
                 f"in a run long enough to judge; rates {r.settings['rate_step']:.0%} apart.")
    if r.mode == "pareto":
        lines.append(f"Simulated Pareto front: trials {', '.join(map(str, r.pareto_front))}")
    lines += [f"Note: {n}" for n in r.notes]
    return "\n".join(lines)


def refined_section(r: RefinedResult) -> dict[str, Any]:
    """The ``refined`` section of ``plan.json``. Paths in it are relative to the output
    folder (the study: ``study.log``; its dashboard command is run from that folder)."""
    from servingcast.refine.run import dashboard_command

    return {
        "plan": r.plan.to_dict(),
        "changed": r.improved,
        "changes": list(r.changes),
        "objective": r.problem.objective,
        "mode": r.mode,
        "milp_value": r.milp_value,
        "milp_feasible": r.milp_feasible,
        "refined_value": r.value,
        "gain": r.gain,
        "milp": {
            "predicted": {"served_rate_per_s": r.milp_plan.served_rate_per_s,
                          "tokens_per_s_per_gpu": r.milp_plan.tokens_per_s_per_gpu,
                          "attainment_target": [w.attainment for w in r.milp_plan.workloads]},
            "simulated_at_planned_load": [c.model_dump(mode="json")
                                          for c in r.milp_at_planned_load],
            "simulated": r.milp_evaluation.model_dump(mode="json"),
            "trial": r.milp_trial,
        },
        "refined_simulated": r.evaluation.model_dump(mode="json"),
        "deployment": r.deployment.model_dump(mode="json"),
        "study": {"name": r.study_name, "storage": r.storage_in_folder or r.storage,
                  "dashboard": (r.dashboard_command if r.storage_in_folder is None
                                else dashboard_command(r.storage_in_folder)),
                  "trial": r.refined_trial,
                  **r.stats.model_dump(mode="json")},
        "simulation": r.settings,
        "pareto_front": list(r.pareto_front),
        "notes": list(r.notes),
    }


def refined_scenarios(r: RefinedResult) -> dict[str, str]:
    """The refined plan's scenarios as YAML (the planner's file names): each part at the
    rate the refined plan serves, with the refinement's requests, seed and router — so
    ``servingcast-simulate`` reproduces the simulated figures."""

    def render(name: str, mode: str, rate: float, mixed: bool) -> tuple[dict[str, Any], str]:
        part = cast(Part, mode)
        n = next((p.num_requests for p in r.evaluation.workload(name).parts
                  if p.part == part and p.num_requests), r.sim_requests[name])
        data = part_scenario(r.problem, r.deployment.workload(name), part, rate, n,
                             int(r.settings["seed"]))
        header = (f"# Refined plan for {r.problem.name!r}: workload {name!r}"
                  + (f", its {part} part" if mixed else "")
                  + f", at its simulated sustained load ({rate:.4g} req/s).\n"
                  "# Check it with: servingcast-simulate <this file>\n")
        return data, header

    return plan_scenario_files(r.plan, render, "the refined plan", r.problem)


def _figure() -> Any:
    # A bare Figure on an Agg canvas: no pyplot, no process-wide backend change.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def history_png(r: RefinedResult) -> bytes:
    """The optimization history: each trial's objective, the best so far, the MILP plan."""
    fig = _figure()
    ax = fig.add_subplot()
    minimize = r.problem.objective == "min_cost"
    ok = [t for t in r.trials if t.feasible and t.objective_value is not None]
    bad = [t for t in r.trials if t.state == "complete" and not t.feasible]
    ax.scatter([t.number for t in ok], [t.objective_value for t in ok], s=14,
               color="tab:blue", label="feasible trial", zorder=3)
    if bad:
        floor = min((t.objective_value or 0.0 for t in ok), default=0.0)
        ax.scatter([t.number for t in bad], [floor] * len(bad), marker="x", s=14, color="0.6",
                   label="infeasible (budget, engine or SLO)", zorder=2)
    best: list[tuple[int, float]] = []
    for t in sorted(ok, key=lambda t: t.number):
        v = float(t.objective_value or 0.0)
        if not best or (v < best[-1][1] if minimize else v > best[-1][1]):
            best.append((t.number, v))
        else:
            best.append((t.number, best[-1][1]))
    if best:
        ax.step([b[0] for b in best], [b[1] for b in best], where="post", color="tab:orange",
                label="best so far", zorder=4)
    ax.axhline(r.milp_value, color="tab:red", linestyle="--", linewidth=1,
               label="MILP plan (simulated)")
    unit = {"max_goodput": "goodput (req/s within SLOs)", "min_cost": "cost ($/h)",
            "max_goodput_per_dollar": "goodput per $/h"}[r.problem.objective]
    ax.set_xlabel("trial")
    ax.set_ylabel(unit)
    ax.set_title(f"{r.problem.name}: optimization history ({r.study_name})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def pareto_png(r: RefinedResult) -> bytes:
    """Simulated tokens/s per GPU against tokens/s per user; the Pareto front joined."""
    fig = _figure()
    ax = fig.add_subplot()
    ok = [t for t in r.trials if t.feasible and t.tokens_per_s_per_gpu is not None]
    ax.scatter([t.tokens_per_s_per_user for t in ok], [t.tokens_per_s_per_gpu for t in ok],
               color="0.6", s=14, label="trials", zorder=2)
    on = {n for n in r.pareto_front}
    front = sorted((t for t in ok if t.number in on),
                   key=lambda t: t.tokens_per_s_per_user or 0.0)
    ax.plot([t.tokens_per_s_per_user for t in front], [t.tokens_per_s_per_gpu for t in front],
            "-o", color="tab:blue", label="simulated Pareto front", zorder=3)
    ax.scatter([r.milp_evaluation.tokens_per_s_per_user], [r.milp_evaluation.tokens_per_s_per_gpu],
               marker="s", s=60, color="tab:red", label="MILP plan", zorder=4)
    ax.scatter([r.evaluation.tokens_per_s_per_user], [r.evaluation.tokens_per_s_per_gpu],
               marker="*", s=180, color="tab:orange", label="refined plan", zorder=5)
    ax.set_xlabel("tokens/s per user (1000 / mean TPOT ms)")
    ax.set_ylabel("output tokens/s per GPU (at the sustained rate)")
    ax.set_title(f"{r.problem.name}: simulated Pareto front", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def apply_refinement(files: dict[str, bytes], r: RefinedResult) -> dict[str, bytes]:
    """The planner's output files with the refinement applied: ``plan.json`` gains its
    ``refined`` section, the scenario files describe the refined plan, and
    ``refine_history.png`` (and ``refine_pareto.png`` in the Pareto mode) are added. When the
    refined plan sustains nothing (so has no scenario), the MILP plan's scenario files are kept
    (their header says they are the MILP plan's, at its planned load) and ``plan.json`` says
    why."""
    refined = refined_scenarios(r)
    out = {k: v for k, v in files.items()
           if not (refined and k.startswith("scenario") and k.endswith(".yaml"))}
    if "plan.json" in out:
        data = json.loads(out["plan.json"])
        data["refined"] = refined_section(r)
        data["refinement"] = (f"refined by simulation: {_gain_text(r)}; study "
                              f"{r.study_name!r}")
        why = nothing_reasons(r.evaluation)
        if why:
            data["refined"]["sustains_nothing"] = why
        out["plan.json"] = json.dumps(data, indent=2).encode()
    for name, text in refined.items():
        out[name] = text.encode()
    out["refine_history.png"] = history_png(r)
    if r.mode == "pareto":
        out["refine_pareto.png"] = pareto_png(r)
    return out
