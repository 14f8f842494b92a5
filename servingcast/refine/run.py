"""The refinement's Python API: :func:`refine` (the main run) and :func:`join` (a worker).

::

    from servingcast.planner import load_problem, solve
    from servingcast.refine import RefineOptions, refine

    problem = load_problem("problems/quickstart.yaml")
    planning = solve(problem, top_k=3)
    result = refine(problem, planning, RefineOptions(trials=50, storage="out/study.log"))
    print(result.plan, result.gain)

Steps of :func:`refine`: build the search space around the MILP's plans; open (or resume) the
study — refusing one that belongs to another problem or other settings before writing
anything —; enqueue the MILP's best plan and alternatives as the first trials; run trials
until the study holds ``options.trials`` finished ones (in this process, or in ``jobs`` worker
processes); pick the best feasible trial by the problem's objective (ties: the earliest, so the
MILP plan wins a tie and the result can never be worse than it); simulate the MILP plan at its
planned load for the report. Nothing here prints or writes files other than the study.

``options.trials`` counts *simulated* trials: a deployment outside the GPU budget or vLLM's
engine rule is recorded in the study as an infeasible trial (so the sampler learns from it) but
not simulated and not counted, nor is a duplicate; at most ``4 × trials + 10`` trials run.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from servingcast.errors import ConfigError
from servingcast.planner.plan import Plan
from servingcast.planner.problem import Problem
from servingcast.refine.deployment import Deployment, Part, deployment_of
from servingcast.refine.evaluate import Evaluation, Evaluator
from servingcast.refine.objective import (
    demand_violation,
    evaluation_of,
    is_simulated,
    metrics_of,
    objective_value,
)
from servingcast.refine.options import RefineOptions
from servingcast.refine.result import (
    PlannedLoadCheck,
    RefinedResult,
    RunStats,
    TrialRecord,
    changes,
    plan_of,
)
from servingcast.refine.space import build_space, params_of
from servingcast.refine.study import (
    JournalUse,
    StudyInfo,
    WorkerArgs,
    default_pid_seed,
    finished,
    info_of,
    is_journal,
    join_study,
    masked,
    open_storage,
    open_study,
    quiet_optuna,
    reclaim_stale,
    run_local,
    simulated,
)

if TYPE_CHECKING:
    from servingcast.planner.planning import PlanningResult


def default_study_name(problem: Problem, options: RefineOptions) -> str:
    """The problem's name (``-pareto`` appended in the Pareto mode)."""
    if options.study_name:
        return options.study_name
    return problem.name + ("-pareto" if options.settings.mode == "pareto" else "")


def dashboard_command(url: str) -> str:
    """``optuna-dashboard URL`` (password hidden); a journal file is opened by its path
    (optuna-dashboard >= 0.9 tells it from an SQLite file)."""
    return f"optuna-dashboard {shlex.quote(url) if is_journal(url) else masked(url)}"


def storage_in_folder(url: str, folder: str | Path) -> str:
    """``url`` as the files written in ``folder`` record it: a journal or SQLite file inside
    ``folder`` relative to it (``study.log``, ``sqlite:///study.db``), a file elsewhere given
    by a relative path relative to ``folder``; an absolute path outside ``folder`` and server
    URLs (password hidden) as they were given."""
    prefix = "" if is_journal(url) else "sqlite:///" if url.startswith("sqlite:///") else None
    if prefix is None or url.startswith("sqlite:///:memory:"):
        return masked(url)
    path = Path(url[len(prefix):])
    home = Path(folder).resolve()
    try:
        return prefix + path.resolve().relative_to(home).as_posix()
    except ValueError:
        pass
    if path.is_absolute():
        return masked(url)
    return prefix + Path(os.path.relpath(path.resolve(), home)).as_posix()


@contextlib.contextmanager
def _storage_url(url: str | None) -> Iterator[tuple[str, bool]]:
    if url is not None:
        yield url, False
        return
    with tempfile.TemporaryDirectory(prefix="servingcast-study-") as folder:
        yield str(Path(folder) / "study.log"), True


def _prediction(plan: Plan) -> dict[str, Any]:
    return {
        "label": plan.label, "served_rate_per_s": round(plan.served_rate_per_s, 4),
        "tokens_per_s_per_gpu": round(plan.tokens_per_s_per_gpu, 2), "gpus": plan.total_gpus,
        "cost_per_hour": plan.cost_per_hour,
        "workloads": {w.name: {"served_rate_per_s": round(w.served_rate_per_s, 4),
                               "ttft_ms": w.ttft_ms, "tpot_ms": w.tpot_ms,
                               "attainment_target": w.attainment,
                               "tokens_per_s_per_user": round(w.tokens_per_s_per_user, 2)}
                      for w in plan.workloads},
    }


def refine(problem: Problem, planning: PlanningResult, options: RefineOptions | None = None,
           *, progress: Any | None = None) -> RefinedResult:
    """Refine the MILP's plans by simulation (module docstring). ``progress(done, total)`` is
    called as trials finish. Raises :class:`ConfigError` for an unreachable storage or a study
    of another problem (nothing written), :class:`SimulationError` when a worker fails."""
    options = options or RefineOptions()
    settings = options.settings
    plans = [planning.plan, *planning.alternatives]
    space = build_space(problem, plans, options.count_spread, settings)
    labelled = [(p.label, deployment_of(problem, p)) for p in plans]
    plan_keys: dict[str, str] = {}
    for label, dep in labelled:
        plan_keys.setdefault(dep.key(), label)
    name = default_study_name(problem, options)
    target = options.trials or 1
    with contextlib.ExitStack() as stack:
        url, temporary = stack.enter_context(_storage_url(options.storage))
        stack.enter_context(quiet_optuna())
        storage = open_storage(url)
        use = stack.enter_context(JournalUse(url, claim=True))
        study, _ = open_study(storage, url, name, problem, settings, space,
                              {p.label: _prediction(p) for p in plans}, plan_keys, target)
        info = info_of(study)
        notes = [] if info.space == space else [
            "the study was started from other MILP plans; its own search space is used"]
        stale = reclaim_stale(storage, study) if use.sole else 0
        use.share()
        if stale:
            notes.append(f"{stale} trial(s) left running by a run that stopped were marked "
                         "failed and queued again")
        enqueued: list[dict[str, Any]] = []
        for label, dep in labelled:
            try:
                params = params_of(info.space, dep)
            except (ValueError, KeyError, StopIteration):
                continue
            if params not in enqueued:
                enqueued.append(params)
                study.enqueue_trial(params, user_attrs={"source": f"milp: {label}"},
                                    skip_if_exists=True)
        before = simulated(study)
        t0 = time.perf_counter()
        remaining = max(0, target - before)
        run_local(WorkerArgs(problem.model_dump(mode="json", by_alias=True), url, name,
                             options.timeout_s, settings.seed, target),
                  options.jobs, remaining, progress)
        elapsed = time.perf_counter() - t0
        return _collect(problem, planning, study, info, options, before, elapsed,
                        None if temporary else masked(url),
                        None if temporary else dashboard_command(url), notes)


class WorkerReport(BaseModel):
    """What a ``--worker`` run did."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study_name: str
    storage: str
    new_trials: int
    """Simulated trials added while this worker ran (by every process on the study)."""
    simulated: int
    """Simulated trials the study holds."""
    target: int
    elapsed_s: float


def join(problem: Problem, options: RefineOptions, *, progress: Any | None = None,
         ) -> WorkerReport:
    """Join the existing study on ``options.storage`` as a worker and run trials until the
    study holds its target of simulated trials (``options.trials`` when given) or the timeout
    passes."""
    if options.storage is None:
        raise ConfigError("--worker joins a study in a shared database, so it needs --storage. "
                          "To fix: pass the main run's URL, e.g. --storage "
                          "postgresql://user:password@host/db")
    url = options.storage
    name = default_study_name(problem, options)
    if is_journal(url) and not os.path.isfile(url):
        raise ConfigError(f"no study {name!r} in {url} to join: the file does not exist. To "
                          "fix: start the main run first, or pass the file it uses (e.g. "
                          "--storage out/study.log)")
    with quiet_optuna():
        storage = open_storage(url)
        study, info = join_study(storage, url, name, problem)
        target = options.trials if options.trials is not None else info.target
        before = simulated(study)
        t0 = time.perf_counter()
        remaining = max(0, target - before)
        run_local(WorkerArgs(problem.model_dump(mode="json", by_alias=True), url, name,
                             options.timeout_s, default_pid_seed(options.settings.seed),
                             target), options.jobs, remaining, progress)
        return WorkerReport(study_name=name, storage=masked(url),
                            new_trials=simulated(study) - before, simulated=simulated(study),
                            target=target, elapsed_s=time.perf_counter() - t0)


# -- collecting the result ---------------------------------------------------------------------


def _feasible(trial: Any) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def _records(study: Any) -> list[TrialRecord]:
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    origin = min(starts) if starts else None

    def since(moment: Any) -> float | None:
        return None if moment is None or origin is None else (moment - origin).total_seconds()

    out = []
    for t in trials:
        attrs, metrics = t.user_attrs, metrics_of(t)
        out.append(TrialRecord(
            number=t.number, state=t.state.name.lower(), source=attrs.get("source", "sampler"),
            values=tuple(t.values) if t.values is not None else None,
            feasible=_feasible(t) and t.state.name == "COMPLETE",
            objective_value=metrics.get("objective_value"),
            goodput_per_s=metrics.get("goodput_req_s"),
            tokens_per_s_per_gpu=metrics.get("tokens_per_s_per_gpu"),
            tokens_per_s_per_user=metrics.get("tokens_per_s_per_user"),
            gpus=metrics.get("gpus"), duplicate_of=attrs.get("duplicate_of"),
            start_s=since(t.datetime_start), complete_s=since(t.datetime_complete)))
    return out


def _better(problem: Problem, a: float, b: float) -> bool:
    return a < b if problem.objective == "min_cost" else a > b


#: Flag a workload whose simulations cover fewer than this many TTFT limits of traffic: its
#: sustained rate is then optimistic by more than about 5% (see servingcast.refine.evaluate).
MIN_WINDOW_IN_TTFT_LIMITS = 22.0


def _window_notes(problem: Problem, ev: Evaluation) -> list[str]:
    notes = []
    for w in problem.workloads:
        for p in ev.workload(w.name).parts:
            n, rate = p.num_requests, p.rate_per_s
            if rate > 0 and n and n / rate < MIN_WINDOW_IN_TTFT_LIMITS * w.slo.ttft_s:
                notes.append(
                    f"{w.name}: each simulation covers only {n / rate:.1f} s of traffic ({n:,} "
                    f"requests at {rate:,.4g} req/s), under {MIN_WINDOW_IN_TTFT_LIMITS:g} TTFT "
                    "limits, so its sustained rate is optimistic. To fix: raise --sim-requests "
                    "(and --max-sim-requests)")
    return notes


def part_notes(problem: Problem, ev: Evaluation, whose: str) -> list[str]:
    """One line per part of ``ev`` that sustains nothing (with the reason) or whose rate is
    only a bound; ``whose`` names the plan (``the MILP plan``, ``the refined plan``)."""
    notes = []
    for w in problem.workloads:
        for p in ev.workload(w.name).parts:
            if p.reason is None:
                continue
            if p.rate_per_s <= 0:
                notes.append(f"{whose}, {w.name} ({p.part}): sustains nothing in simulation — "
                             f"{p.reason}")
            else:
                notes.append(f"{whose}, {w.name} ({p.part}): {p.reason}")
    return notes


def _collect(problem: Problem, planning: PlanningResult, study: Any, info: StudyInfo,
             options: RefineOptions, before: int, elapsed: float, storage: str | None,
             dashboard: str | None, notes: list[str]) -> RefinedResult:
    import optuna

    settings = info.settings
    evaluator = Evaluator(problem, info.space, settings)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    done = [t for t in trials.values() if t.state == optuna.trial.TrialState.COMPLETE
            and is_simulated(t)]
    milp_dep = deployment_of(problem, planning.plan)
    milp_trial = next((t for t in sorted(done, key=lambda t: t.number)
                       if Deployment.model_validate(t.user_attrs["plan"]) == milp_dep), None)
    if milp_trial is not None:
        milp_ev = evaluation_of(milp_trial)
    else:
        milp_ev = evaluator.evaluate(milp_dep)
        notes.append("the MILP plan was simulated outside the study (no trial holds it)")
    milp_value = objective_value(problem, milp_dep, milp_ev)
    if milp_trial is not None:
        milp_feasible = _feasible(milp_trial)
    else:
        milp_feasible = (problem.objective != "min_cost"
                         or demand_violation(problem, milp_ev) <= 0)
    best_trial = milp_trial if milp_feasible else None
    best_value = milp_value if milp_feasible else None
    for t in sorted((t for t in done if _feasible(t)), key=lambda t: t.number):
        value = float(metrics_of(t)["objective_value"])
        if best_value is None or _better(problem, value, best_value):
            best_trial, best_value = t, value
    if best_trial is None:  # the MILP plan itself (simulated outside the study), or nothing
        deployment, ev, value = milp_dep, milp_ev, milp_value
        if best_value is None:
            notes.append("no trial met every constraint in simulation; the MILP plan is kept")
    else:
        deployment = Deployment.model_validate(best_trial.user_attrs["plan"])
        ev = evaluation_of(best_trial)
        value = float(best_value if best_value is not None else milp_value)
    checks = []
    for wp in planning.plan.workloads:
        ws = milp_dep.workload(wp.name)
        parts: tuple[tuple[Part, float], ...] = (
            ("aggregated", wp.aggregated_rate_per_s),
            ("disaggregated", wp.disaggregated_rate_per_s))
        for part, rate in parts:
            if rate > 0 and part in ws.parts:
                point, _ = evaluator.simulate(ws, part, rate)
                checks.append(PlannedLoadCheck(workload=wp.name, part=part, point=point))
    minimize = problem.objective == "min_cost"
    gain = None if milp_value == 0 else (
        (milp_value - value) if minimize else (value - milp_value)) / abs(milp_value)
    records = _records(study)
    by_number = {r.number: r for r in records}
    front: tuple[int, ...] = ()
    if settings.mode == "pareto":
        front = tuple(sorted(t.number for t in study.best_trials))
    best_number = best_trial.number if best_trial is not None else None
    stats = RunStats(
        finished=finished(study), simulated=len(done),
        infeasible=sum(1 for t in done if not _feasible(t)) + sum(
            1 for t in trials.values() if t.state == optuna.trial.TrialState.COMPLETE
            and not is_simulated(t)),
        duplicates=sum(1 for r in records if r.duplicate_of is not None),
        failed=sum(1 for r in records if r.state == "fail"),
        new_trials=len(done) - before, elapsed_s=elapsed, best_trial=best_number,
        time_to_best_s=by_number[best_number].complete_s if best_number is not None else None,
        jobs=options.jobs, seed=settings.seed)
    notes += part_notes(problem, milp_ev, "the MILP plan")
    if deployment != milp_dep:
        notes += part_notes(problem, ev, "the refined plan")
    notes += _window_notes(problem, ev)
    note = ("same deployment as the MILP plan" if deployment == milp_dep
            else f"refined by simulation (trial {best_number} of study {study.study_name!r})")
    plan = plan_of(problem, deployment, ev, planning.plan, notes=(note,),
                   others=tuple(planning.alternatives))
    if not math.isfinite(value):
        value = 0.0
    return RefinedResult(
        problem=problem, mode=settings.mode, milp_plan=planning.plan, plan=plan,
        milp_deployment=milp_dep, deployment=deployment, milp_evaluation=milp_ev,
        evaluation=ev, milp_at_planned_load=tuple(checks), milp_value=milp_value,
        milp_feasible=milp_feasible, value=value,
        gain=gain, milp_trial=milp_trial.number if milp_trial is not None else None,
        refined_trial=best_number, changes=changes(milp_dep, deployment),
        trials=tuple(records), pareto_front=front, study_name=study.study_name,
        storage=storage, dashboard_command=dashboard, stats=stats,
        settings=settings.to_dict(),
        sim_requests={w.name: max((p.num_requests for p in ev.workload(w.name).parts),
                                  default=info.space.workload(w.name).num_requests)
                      for w in problem.workloads}, notes=tuple(notes))

