"""The planner's text report: the chosen plan first, then the alternatives, the single-mode
optima and the Pareto sweep. Functions return strings; only the CLI prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from servingcast._text import table
from servingcast.planner.lengths import describe_length
from servingcast.planner.plan import Plan, WorkloadPlan
from servingcast.planner.problem import Problem

if TYPE_CHECKING:
    from servingcast.planner.pareto import ParetoPoint
    from servingcast.planner.planning import PlanningResult


def _n(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cost(plan: Plan) -> str:
    return "-" if plan.cost_per_hour is None else f"{plan.cost_per_hour:,.2f}"


def _groups_text(plan: Plan) -> str:
    parts = []
    for wp in plan.workloads:
        groups = []
        for g in wp.groups:
            par = f"tp{g.tp}" + (f"pp{g.pp}" if g.pp > 1 else "") + (
                f"ep{g.ep}" if g.ep > 1 else "")
            spec = "" if g.spec_tokens <= 0 else f" {_speculative(g.spec_tokens, g.draft_model)}"
            groups.append(f"{g.count}x {g.role} {par}{spec} ({g.pool})")
        text = ", ".join(groups) or "nothing"
        parts.append(f"{wp.name}: {text}" if len(plan.workloads) > 1 else text)
    return "; ".join(parts)


def _workload_block(problem: Problem, wp: WorkloadPlan) -> list[str]:
    w = problem.workload(wp.name)
    q = f"p{w.slo.attainment * 100:g}"
    demand = "maximize" if wp.demand_per_s is None else f"{wp.demand_per_s:,.4g} req/s"
    lines = [
        f"Workload {wp.name} — {wp.model} {wp.precision}, input {describe_length(w.input_len)}, "
        f"output {describe_length(w.output_len)} tokens; SLO TTFT {q} <= "
        f"{wp.ttft_limit_ms:,.0f} ms, TPOT {q} <= {wp.tpot_limit_ms:,.1f} ms",
        f"  served {wp.served_rate_per_s:,.2f} req/s (demand: {demand}) — aggregated "
        f"{wp.aggregated_rate_per_s:,.2f}, disaggregated {wp.disaggregated_rate_per_s:,.2f}"
        + (f" (P:D = {wp.pd_ratio}, KV transfer {wp.kv_transfer_gb_s:,.1f} GB/s)"
           if wp.pd_ratio else ""),
        f"  {wp.output_tokens_per_s:,.0f} output tokens/s, {wp.tokens_per_s_per_gpu:,.0f} per "
        f"GPU, {wp.tokens_per_s_per_user:,.1f} tokens/s per user; predicted TTFT {q} "
        f"{_n(wp.ttft_ms)} ms, TPOT {q} {_n(wp.tpot_ms, 2)} ms at the planned load",
    ]
    headers = ["role", "pool", "hardware", "count", "tp", "pp", "ep", "GPUs", "max_num_seqs",
               "batched tokens", "req/s each", "util", f"TTFT {q} (ms)", f"TPOT {q} (ms)",
               "limited by"]
    rows = [[g.role, g.pool, g.hardware, str(g.count), str(g.tp), str(g.pp), str(g.ep),
             str(g.gpus), str(g.max_num_seqs), str(g.max_num_batched_tokens),
             _n(g.rate_per_instance_per_s, 2), f"{g.utilization * 100:.0f}%", _n(g.ttft_ms),
             _n(g.tpot_ms, 2), g.limited_by] for g in wp.groups]
    right = [False, False, False] + [True] * 11 + [False]
    spec = problem.search.speculative
    notes = [f"    speculative decoding: {g.count}x {g.role} tp{g.tp} on {g.pool}, "
             f"{_speculative(g.spec_tokens, g.draft_model)}"
             + (f" at {spec.acceptance_rate:g} acceptance" if spec is not None else "")
             for g in wp.groups if g.spec_tokens > 0]
    return lines + table(headers, rows, right, indent="    ") + notes


def _speculative(k: int, draft: str | None) -> str:
    """``spec k=2 (llama-3.2-1b)`` or ``spec k=1 (MTP)``."""
    return f"spec k={k} ({'MTP' if draft == 'mtp' else draft})"


def _plans_table(plans: Sequence[tuple[str, Plan]], chosen: Plan) -> list[str]:
    headers = ["", "plan", "mode", "req/s", "output tok/s", "tok/s/GPU", "GPUs", "$/h", "P:D",
               "groups"]
    rows = []
    for label, p in plans:
        ratio = ", ".join(w.pd_ratio for w in p.workloads if w.pd_ratio) or "-"
        mark = "*" if p.signature() == chosen.signature() else ""
        rows.append([mark, label, p.mode, _n(p.served_rate_per_s, 2),
                     _n(p.output_tokens_per_s, 0), _n(p.tokens_per_s_per_gpu, 0),
                     str(p.total_gpus), _cost(p), ratio, _groups_text(p)])
    return table(headers, rows, [False, False, False, True, True, True, True, True, True, False])


#: Most TPOT limits per workload in the report's Pareto table (every n-th limit beyond).
PARETO_ROWS = 13


def pareto_table(points: Sequence[ParetoPoint]) -> list[str]:
    """The TPOT-limit sweep, compactly: per workload, at most :data:`PARETO_ROWS` TPOT limits
    (every n-th, always the problem's own), sorted by the limit; per mode, tokens/s per GPU @
    tokens/s per user, ``*`` on the mode's frontier; ``>`` marks the chosen plan's row. Every
    point, and the TTFT-limit sweep, are in ``pareto.csv`` and ``--json``."""
    import math

    from servingcast.planner.layouts import MODES

    tpot = [p for p in points if p.swept == "tpot"]
    modes = [m for m in MODES if any(p.mode == m for p in tpot)]
    out = ["", "Pareto sweep of the TPOT limit: tokens/s per GPU @ tokens/s per user, per mode "
           "(* on the mode's frontier, > the chosen plan; every point, and the TTFT-limit sweep, "
           "in pareto.csv and --json)"]
    for name in dict.fromkeys(p.workload for p in tpot):
        mine = [p for p in tpot if p.workload == name]
        rows: dict[tuple[float, bool], dict[str, ParetoPoint]] = {}
        for p in mine:
            # A chosen plan that no sweep point equals gets its own row.
            key = (p.tpot_limit_ms, p.chosen and p.signature is None)
            rows.setdefault(key, {})[p.mode] = p
        levels = sorted({p.tpot_limit_ms for p in mine})
        own = next((p.tpot_limit_ms for p in mine if p.tpot_factor == 1.0), levels[0])
        step = math.ceil(len(levels) / PARETO_ROWS)
        kept = {v for i, v in enumerate(levels) if (i - levels.index(own)) % step == 0}
        body = []
        for (limit, _), cells in sorted(rows.items()):
            chosen = any(p.chosen for p in cells.values())
            if limit not in kept and not chosen:
                continue
            row = [">" if chosen else "", _n(limit)]
            for m in modes:
                cell = cells.get(m)
                row.append("" if cell is None else (
                    f"{'*' if cell.on_frontier else ' '} {_n(cell.tokens_per_s_per_gpu, 0)} @ "
                    f"{_n(cell.tokens_per_s_per_user)}"))
            body.append(row)
        every = f", one in {step}" if step > 1 else ""
        out += [f"  {name + ': ' if name else ''}{len(kept)} of {len(levels)} TPOT limits{every}"]
        out += table(["", "TPOT limit (ms)", *modes], body, [False, True] + [True] * len(modes),
                     indent="    ")
    return out


def format_result(result: PlanningResult) -> str:
    """The whole report (see the module docstring)."""
    problem: Problem = result.problem
    plan: Plan = result.plan
    s = plan.solver
    gap = "-" if s.gap is None else f"{s.gap * 100:.2f}%"
    c = result.candidates
    dropped = sum(c.dropped.values())
    reasons = ", ".join(f"{n} {r}" for r, n in c.dropped.items())
    pools = ", ".join(f"{p.count} {p.hardware}" for p in problem.pools)
    out = [
        f"servingcast-solve: {problem.name} — objective {problem.objective}, pools: {pools}",
        f"Solver: HiGHS {s.status.value}, gap {gap}, {s.time_s:.2f} s ({s.solves} solve"
        f"{'s' if s.solves != 1 else ''}, {s.variables} variables, {s.constraints} constraints)",
        *([f"Note: HiGHS stopped at the time limit; this plan is not proven optimal (gap "
            f"{gap}). To improve it: raise --time-limit"] if s.status.value == "feasible" else []),
        f"Candidates: {c.enumerated} configurations, {dropped} dropped"
        + (f" ({reasons})" if reasons else "")
        + f", {c.dominated} dominated, {c.in_milp} in the MILP",
        "",
        f"Chosen plan ({plan.mode}): {plan.served_rate_per_s:,.2f} req/s, "
        f"{plan.output_tokens_per_s:,.0f} output tokens/s, {plan.tokens_per_s_per_gpu:,.0f} "
        f"tokens/s per GPU, {plan.total_gpus} GPUs"
        + (f", ${plan.cost_per_hour:,.2f}/h" if plan.cost_per_hour is not None else ""),
    ]
    for wp in plan.workloads:
        out += ["", *_workload_block(problem, wp)]
    used = ", ".join(f"{name} {plan.gpus_used[name]}/{plan.gpus_available[name]}"
                     for name in plan.gpus_used)
    out += ["", f"GPUs used: {used}"]
    out += [f"Note: {n}" for n in plan.notes]
    if result.alternatives:
        out += ["", "Alternatives (each leaves out a configuration of every plan above it)"]
        out += _plans_table([("best", plan)] + [(a.label, a) for a in result.alternatives], plan)
    comparisons = [x for x in (result.aggregated_only, result.disaggregated_only) if x]
    if comparisons:
        out += ["", "What disaggregation buys (best plan with one mode only)"]
        rows = [(f"{x.mode} only", x.plan) for x in comparisons if x.plan is not None]
        out += _plans_table([("chosen", plan), *rows], plan)
        out += [f"  {x.mode} only: none — {x.reason}" for x in comparisons if x.plan is None]
    if result.pareto:
        out += pareto_table(result.pareto)
    if result.notes:
        out += [""] + [f"Note: {n}" for n in result.notes]
    t = result.timings
    out += ["", result.refinement,
            f"Timings: candidates {t.candidates_s:.2f} s, MILP build {t.build_s:.2f} s, solve "
            f"{t.solve_s:.2f} s, extract+check {t.extract_s:.2f} s, alternatives "
            f"{t.alternatives_s:.2f} s, single-mode {t.compare_s:.2f} s, Pareto "
            f"{t.pareto_s:.2f} s; total {t.total_s:.2f} s"]
    return "\n".join(out)
