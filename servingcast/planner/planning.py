"""Solving a problem end to end: candidates → dominance → MILP → plan, then the alternatives,
the aggregated-only and disaggregated-only optima, and the Pareto sweep.

:func:`solve` is the planner's Python API; the CLI is a thin layer over it. It does no I/O.
Every plan it returns has been re-checked by :func:`servingcast.planner.verify.verify_plan`.
The MILP plan is this function's final plan (``PlanningResult.refined`` is False); the Optuna
refinement (:func:`servingcast.refine.refine`) takes a result of this function and simulates
plans around it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from servingcast.errors import InfeasibleError, SolverError
from servingcast.planner.candidates import (
    Candidate,
    CandidateBuilder,
    CandidateSet,
    prune_dominated,
)
from servingcast.planner.explain import explain_demands, explain_workload
from servingcast.planner.pareto import DEFAULT_FACTORS, ParetoPoint, mark_frontier, point_of
from servingcast.planner.plan import Plan, SolveStatus
from servingcast.planner.problem import Problem
from servingcast.planner.verify import verify_plan

_FROZEN = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

#: The MIP gap of the secondary solves (alternatives, single-mode optima, Pareto points): they
#: inform a choice, and 1% is well inside the cost model's own accuracy.
AUX_MIP_GAP = 0.01

#: Shown wherever the refinement would have run.
REFINEMENT_NOTE = ("Refinement: not run (--no-refine): the MILP plan is the final plan, with "
                   "steady-state capacities that no simulation has checked.")


class Timings(BaseModel):
    """Wall seconds of each stage (``total_s`` is the whole call)."""

    model_config = _FROZEN

    candidates_s: float
    build_s: float
    solve_s: float
    extract_s: float
    alternatives_s: float
    compare_s: float
    pareto_s: float
    total_s: float


class CandidateSummary(BaseModel):
    """How many configurations were enumerated, dropped (by reason), dominated, kept."""

    model_config = _FROZEN

    enumerated: int
    dropped: dict[str, int]
    dominated: int
    in_milp: int


class ModeComparison(BaseModel):
    """The optimum when only one mode is allowed, or why there is none."""

    model_config = _FROZEN

    mode: str
    plan: Plan | None
    reason: str | None = None


class PlanningResult(BaseModel):
    """Everything :func:`solve` found."""

    model_config = _FROZEN

    problem: Problem
    plan: Plan
    alternatives: tuple[Plan, ...]
    aggregated_only: ModeComparison | None
    disaggregated_only: ModeComparison | None
    pareto: tuple[ParetoPoint, ...]
    candidates: CandidateSummary
    timings: Timings
    refined: bool = False
    refinement: str = REFINEMENT_NOTE


def _solve_candidates(problem: Problem, candidates: Sequence[Candidate], time_limit_s: float,
                      mip_gap: float, label: str) -> tuple[Plan | None, SolveStatus, float, float]:
    """Build, solve and extract; ``(plan or None, status, build_s, solve_s)``."""
    from servingcast.planner.milp import build_model, extract_plan, solve_model

    t0 = time.perf_counter()
    pm = build_model(problem, candidates)
    t1 = time.perf_counter()
    report = solve_model(pm, time_limit_s, mip_gap)
    t2 = time.perf_counter()
    if report.status == SolveStatus.ERROR:
        raise SolverError(f"HiGHS stopped with {report.termination}. To fix: rerun with --debug "
                          "and report it")
    if not report.status.has_solution:
        return None, report.status, t1 - t0, t2 - t1
    return extract_plan(pm, report, label), report.status, t1 - t0, t2 - t1


def _checked(problem: Problem, plan: Plan) -> Plan:
    errors = verify_plan(problem, plan)
    if errors:
        raise SolverError("the plan failed its independent re-check (a planner bug): "
                          + "; ".join(errors[:5]) + ". To fix: report it with the problem file")
    return plan


def _explain_infeasible_demands(problem: Problem, candidates: Sequence[Candidate],
                                time_limit_s: float, mip_gap: float) -> str:
    relaxed = problem.model_copy(update={"objective": "max_goodput"})
    together, _, _, _ = _solve_candidates(relaxed, candidates, time_limit_s, mip_gap, "relaxed")
    served = {w.name: w.served_rate_per_s for w in together.workloads} if together else {}
    alone: dict[str, float] = {}
    for w in problem.workloads:
        single = relaxed.model_copy(update={"workloads": (w.model_copy(
            update={"demand_per_s": None}),)})
        own = [c for c in candidates if c.config.workload == w.name]
        plan, _, _, _ = _solve_candidates(single, own, time_limit_s, mip_gap, "alone")
        alone[w.name] = plan.served_rate_per_s if plan else 0.0
    return explain_demands(problem, served, alone)


def _explain_nothing_served(problem: Problem, pruned: CandidateSet) -> str:
    parts = []
    for w in problem.workloads:
        sizes = {}
        for role in ("aggregated", "prefill", "decode"):
            gpus = [c.gpus for c in pruned.candidates
                    if c.config.workload == w.name and c.config.role == role]
            if gpus:
                sizes[role] = min(gpus)
        if "aggregated" in sizes:
            parts.append(f"{w.name}: the smallest aggregated instance needs "
                         f"{sizes['aggregated']} GPUs")
        elif "prefill" in sizes and "decode" in sizes:
            parts.append(f"{w.name}: disaggregated serving needs a prefill instance "
                         f"({sizes['prefill']} GPUs) and a decode instance ({sizes['decode']} "
                         f"GPUs), {sizes['prefill'] + sizes['decode']} GPUs together")
    pools = ", ".join(f"{p.name} has {p.count}" for p in problem.pools)
    return ("no allocation serves any request: " + "; ".join(parts) + f" ({pools}). To fix: "
            "add GPUs to a pool, or allow the aggregated mode")


def solve(problem: Problem, *, top_k: int = 3, time_limit_s: float = 60.0,
          mip_gap: float = 1e-3, pareto_factors: Sequence[float] | None = DEFAULT_FACTORS,
          compare_modes: bool = True) -> PlanningResult:
    """Plan ``problem``: the best plan, up to ``top_k - 1`` distinct alternatives, the
    single-mode optima and the Pareto sweep (``None``: skip it).

    ``time_limit_s`` applies to each MILP solve; ``mip_gap`` to the best plan's (the secondary
    solves stop at ``max(mip_gap, AUX_MIP_GAP)``). Raises
    :class:`InfeasibleError` (with the numbers and a fix) when nothing is feasible and
    :class:`SolverError` when HiGHS fails or finds no plan in time.
    """
    t_start = time.perf_counter()
    builder = CandidateBuilder(problem)
    cset = builder.candidates()
    reasons = [r for w in problem.workloads if (r := explain_workload(problem, cset, w))]
    if reasons:
        raise InfeasibleError("\n".join(reasons))
    pruned = prune_dominated(cset)
    t_cand = time.perf_counter()

    plan, status, build_s, solve_s = _solve_candidates(problem, pruned.candidates,
                                                       time_limit_s, mip_gap, "best")
    t_solved = time.perf_counter()
    if status == SolveStatus.INFEASIBLE:
        raise InfeasibleError(_explain_infeasible_demands(problem, pruned.candidates,
                                                          time_limit_s, mip_gap))
    if plan is None:
        raise SolverError(f"HiGHS found no plan within the time limit ({time_limit_s:g} s). "
                          "To fix: raise --time-limit or loosen --mip-gap")
    if plan.served_rate_per_s <= 0:
        raise InfeasibleError(_explain_nothing_served(problem, pruned))
    plan = _checked(problem, plan)
    t_extract = time.perf_counter()

    aux_gap = max(mip_gap, AUX_MIP_GAP)
    alternatives = _alternatives(problem, cset, plan, top_k, time_limit_s, aux_gap)
    t_alt = time.perf_counter()

    agg = dis = None
    if compare_modes and len(problem.search.modes) == 2:
        agg = _mode_only(problem, pruned, "aggregated", time_limit_s, aux_gap)
        dis = _mode_only(problem, pruned, "disaggregated", time_limit_s, aux_gap)
    t_cmp = time.perf_counter()

    pareto: tuple[ParetoPoint, ...] = ()
    if pareto_factors:
        pareto = _pareto(problem, builder, plan, pareto_factors, time_limit_s, aux_gap)
    t_end = time.perf_counter()
    timings = Timings(candidates_s=t_cand - t_start, build_s=build_s, solve_s=solve_s,
                      extract_s=t_extract - t_solved, alternatives_s=t_alt - t_extract,
                      compare_s=t_cmp - t_alt, pareto_s=t_end - t_cmp, total_s=t_end - t_start)
    summary = CandidateSummary(enumerated=cset.enumerated, dropped=cset.drop_counts(),
                               dominated=pruned.dominated, in_milp=len(pruned.candidates))
    return PlanningResult(problem=problem, plan=plan, alternatives=alternatives,
                          aggregated_only=agg, disaggregated_only=dis, pareto=pareto,
                          candidates=summary, timings=timings)


def _alternatives(problem: Problem, cset: CandidateSet, best: Plan, top_k: int,
                  time_limit_s: float, mip_gap: float) -> tuple[Plan, ...]:
    """The next best plans, each leaving out a configuration of every plan before it."""
    from servingcast.planner.milp import build_model, exclude_plan, extract_plan, solve_model

    if top_k <= 1:
        return ()
    keyset = prune_dominated(cset, by_parallelism=True)
    pm = build_model(problem, keyset.candidates, alternatives=True)
    exclude_plan(pm, [g.name for g in best.groups])
    out: list[Plan] = []
    for i in range(top_k - 1):
        report = solve_model(pm, time_limit_s, mip_gap)
        if not report.status.has_solution:
            break
        alt = extract_plan(pm, report, f"alternative {i + 1}")
        if alt.served_rate_per_s <= 0:
            break
        out.append(_checked(problem, alt))
        exclude_plan(pm, [g.name for g in alt.groups])
    return tuple(out)


def _mode_only(problem: Problem, pruned: CandidateSet, mode: str, time_limit_s: float,
               mip_gap: float) -> ModeComparison:
    roles = ("aggregated",) if mode == "aggregated" else ("prefill", "decode")
    subset = [c for c in pruned.candidates if c.config.role in roles]
    for w in problem.workloads:
        have = {c.config.role for c in subset if c.config.workload == w.name}
        if not set(roles) <= have:
            return ModeComparison(mode=mode, plan=None,
                                  reason=f"{w.name}: no {mode} configuration meets the SLOs")
    plan, status, _, _ = _solve_candidates(problem, subset, time_limit_s, mip_gap, f"{mode} only")
    if plan is None:
        reason = ("the demands cannot be met in this mode" if status == SolveStatus.INFEASIBLE
                  else f"no solution ({status.value})")
        return ModeComparison(mode=mode, plan=None, reason=reason)
    return ModeComparison(mode=mode, plan=_checked(problem, plan))


def _pareto(problem: Problem, builder: CandidateBuilder, best: Plan,
            factors: Sequence[float], time_limit_s: float,
            mip_gap: float) -> tuple[ParetoPoint, ...]:
    points = []
    for f in sorted(set(factors) | {1.0}):
        if f == 1.0:
            points.append(point_of(best, 1.0))
            continue
        cset = builder.candidates(tpot_scale=f)
        if any(explain_workload(problem, cset, w) for w in problem.workloads):
            continue
        plan, _, _, _ = _solve_candidates(problem, prune_dominated(cset).candidates,
                                          time_limit_s, mip_gap, f"pareto x{f:g}")
        if plan is not None and plan.served_rate_per_s > 0:
            points.append(point_of(plan, f))
    return mark_frontier(points)
