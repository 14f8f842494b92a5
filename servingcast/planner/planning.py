"""Solving a problem end to end: candidates → dominance → MILP → plan, then the alternatives,
the aggregated-only and disaggregated-only optima, and the Pareto sweep.

:func:`solve` is the planner's Python API; the CLI is a thin layer over it. It does no I/O.
Every plan it returns has been re-checked by :func:`servingcast.planner.verify.verify_plan`.
The MILP plan is this function's final plan (``PlanningResult.refined`` is False); the Optuna
refinement (:func:`servingcast.refine.refine`) takes a result of this function and simulates
plans around it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from servingcast.errors import InfeasibleError, SolverError
from servingcast.planner.candidates import (
    LARGE_MILP,
    Candidate,
    CandidateBuilder,
    CandidateSet,
    prune_dominated,
)
from servingcast.planner.explain import explain_demands, explain_workload
from servingcast.planner.pareto import DEFAULT_FACTORS, DEFAULT_TTFT_FACTORS, ParetoPoint, sweep
from servingcast.planner.plan import Plan, SolveStatus
from servingcast.planner.problem import Problem
from servingcast.planner.verify import verify_plan

if TYPE_CHECKING:
    from servingcast.planner.milp import PlanModel

_FROZEN = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

#: The MIP gap of the secondary solves (alternatives, single-mode optima, Pareto points): they
#: inform a choice, and 1% is well inside the cost model's own accuracy.
AUX_MIP_GAP = 0.01

#: The alternatives, single-mode optima and Pareto points share a wall-time budget: as long as
#: the best plan took (candidates to checked plan), and at least this many seconds. On large
#: problems they were ~80 % of the time (20 workloads x 8 pools: 600 of 720 s, every solve at
#: its time limit); now they take at most about half. Each solve gets an equal share of what is
#: left; what the budget cannot hold is skipped and said so in ``PlanningResult.notes``.
SECONDARY_MIN_S = 10.0
#: A secondary solve's time limit is at least this (while the budget has it left).
SECONDARY_SOLVE_MIN_S = 1.0

#: Shares of the secondary budget the Pareto sweep reserves (it runs last and takes what is
#: left): as many as the seven MILP solves of the sweep it replaced, since rating the
#: candidates at a TTFT limit costs about as much as a solve on large problems.
PARETO_SHARES = 7

#: The best plan of a large problem (``LARGE_MILP`` candidates or more) is solved to the MIP gap
#: for this share of the time limit, then stopped as soon as it is within ``PATIENT_GAP``: on 20
#: workloads and 8 pools HiGHS had a plan within 0.3 % after 6 s and took 12 s more to prove
#: 0.1 %, longer than everything else the best plan needs. A note says the gap reached.
PATIENCE_SHARE = 0.1
PATIENT_GAP = 5e-3

#: Receives one line per step (the CLI prints them to stderr), e.g. ``"Pareto 5/8"``.
Progress = Callable[[str], None]

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
    notes: tuple[str, ...] = ()
    """What the secondary results left out or could not prove (the time budget)."""


class _Budget:
    """The secondary solves' shared wall-time budget (``SECONDARY_MIN_S``)."""

    def __init__(self, seconds: float, time_limit_s: float, solves: int) -> None:
        self.deadline = time.perf_counter() + seconds
        self.time_limit_s = time_limit_s
        self.left = solves
        self.skipped: list[str] = []
        self.limited: list[str] = []

    def next_limit(self, what: str) -> float | None:
        """The time limit of the next solve: an equal share of what is left, at least
        ``SECONDARY_SOLVE_MIN_S`` while that much is left (a quick solve leaves its unused share
        to the next ones); None (and ``what`` recorded as skipped) when nothing is left."""
        left_s = self.deadline - time.perf_counter()
        share = left_s / max(self.left, 1)
        self.left -= 1
        if left_s <= 0:
            self.skipped.append(what)
            return None
        return min(self.time_limit_s, max(share, min(SECONDARY_SOLVE_MIN_S, left_s)))

    def record(self, what: str, status: SolveStatus) -> None:
        """Note a solve that stopped at its time limit."""
        if status == SolveStatus.FEASIBLE:
            self.limited.append(what)

    def notes(self, seconds: float) -> tuple[str, ...]:
        out = []
        if self.skipped:
            out.append(f"skipped for time ({seconds:.0f} s budget after the best plan): "
                       + ", ".join(self.skipped) + ". To get them: pass a larger "
                       "secondary_time_s to solve(), or use --no-pareto / --top 1 to spend "
                       "the budget on the rest")
        if self.limited:
            out.append("stopped at their share of the time budget, not proven within 1%: "
                       + ", ".join(self.limited))
        return tuple(out)


def _solve_candidates(problem: Problem, candidates: Sequence[Candidate], time_limit_s: float,
                      mip_gap: float, label: str, progress: Progress | None = None,
                      patience_s: float | None = None,
                      ) -> tuple[Plan | None, SolveStatus, float, float]:
    """Build, solve and extract; ``(plan or None, status, build_s, solve_s)``."""
    from servingcast.planner.milp import build_model, extract_plan, solve_model

    t0 = time.perf_counter()
    pm = with_headroom(build_model(problem, candidates))
    t1 = time.perf_counter()
    report = solve_model(pm, time_limit_s, mip_gap, progress, patience_s, PATIENT_GAP)
    t2 = time.perf_counter()
    if report.status == SolveStatus.ERROR:
        raise SolverError(f"HiGHS stopped with {report.termination}. To fix: rerun with --debug "
                          "and report it")
    if not report.status.has_solution:
        return None, report.status, t1 - t0, t2 - t1
    return extract_plan(pm, report, label), report.status, t1 - t0, t2 - t1


def with_headroom(pm: PlanModel) -> PlanModel:
    """``pm`` with the N+1 constraints (:mod:`servingcast.planner.headroom`) when its problem
    asks for ``headroom: n_plus_one``."""
    if pm.problem.headroom == "n_plus_one":
        from servingcast.planner.headroom import add_n_plus_one

        add_n_plus_one(pm)
    return pm


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


def _explain_infeasible_headroom(problem: Problem, candidates: Sequence[Candidate],
                                 time_limit_s: float, mip_gap: float) -> str:
    """Why no plan keeps every demand met with one node lost: the plan without headroom, if
    there is one, and what it would need."""
    plain = problem.model_copy(update={"headroom": "none"})
    plan, _, _, _ = _solve_candidates(plain, candidates, time_limit_s, mip_gap, "plain")
    if plan is None:
        return ("the demands cannot be met even without headroom: "
                + _explain_infeasible_demands(plain, candidates, time_limit_s, mip_gap))
    pools = ", ".join(f"{p.name}: {p.nodes} node(s) of {p.node_size} GPUs" for p in problem.pools)
    used = ", ".join(f"{name}: {gpus} GPUs" for name, gpus in plan.gpus_used.items() if gpus)
    return ("headroom n_plus_one: no plan meets every demand with any one node lost. Without "
            f"headroom the demands need {used} ({pools}); with it, each configuration gets "
            "nodes of its own and the instances left after losing the busiest node must still "
            "carry the demand. To fix: add nodes to a pool (a pool of one node cannot survive "
            "losing it), or remove headroom")


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
          compare_modes: bool = True, secondary_time_s: float | None = None,
          progress: Progress | None = None,
          pareto_ttft_factors: Sequence[float] | None = DEFAULT_TTFT_FACTORS) -> PlanningResult:
    """Plan ``problem``: the best plan, up to ``top_k - 1`` distinct alternatives, the
    single-mode optima and the Pareto sweep (:mod:`servingcast.planner.pareto`) of the TPOT
    limit times ``pareto_factors`` (``None``: no sweep at all) and of the TTFT limit times
    ``pareto_ttft_factors`` (``None``: no TTFT sweep).

    ``time_limit_s`` applies to each MILP solve; ``mip_gap`` to the best plan's (the secondary
    solves stop at ``max(mip_gap, AUX_MIP_GAP)``). The secondary solves share
    ``secondary_time_s`` seconds (default: as long as the best plan took, at least
    ``SECONDARY_MIN_S``); the best plan never depends on it. ``progress`` receives a line per
    step. Raises :class:`InfeasibleError` (with the numbers and a fix) when nothing is feasible
    and :class:`SolverError` when HiGHS fails or finds no plan in time.
    """
    say = progress or (lambda _: None)
    t_start = time.perf_counter()
    builder = CandidateBuilder(problem, progress)
    cset = builder.candidates()
    reasons = [r for w in problem.workloads if (r := explain_workload(problem, cset, w))]
    if reasons:
        raise InfeasibleError("\n".join(reasons))
    pruned = prune_dominated(cset)
    large = len(pruned.candidates) >= LARGE_MILP
    if large:
        pruned = prune_dominated(cset, across_sizes=True)
    t_cand = time.perf_counter()
    say(f"candidates: {len(pruned.candidates)} of {cset.enumerated} configurations in the MILP")

    say("MILP: solving…")
    patience_s = PATIENCE_SHARE * time_limit_s if large else None
    plan, status, build_s, solve_s = _solve_candidates(problem, pruned.candidates,
                                                       time_limit_s, mip_gap, "best", say,
                                                       patience_s)
    t_solved = time.perf_counter()
    if status == SolveStatus.INFEASIBLE and problem.headroom == "n_plus_one":
        raise InfeasibleError(_explain_infeasible_headroom(problem, pruned.candidates,
                                                           time_limit_s, mip_gap))
    if status == SolveStatus.INFEASIBLE:
        raise InfeasibleError(_explain_infeasible_demands(problem, pruned.candidates,
                                                          time_limit_s, mip_gap))
    if plan is None:
        raise SolverError(f"HiGHS found no plan within the time limit ({time_limit_s:g} s). "
                          "To fix: raise --time-limit or loosen --mip-gap")
    if plan.served_rate_per_s <= 0:
        raise InfeasibleError(_explain_nothing_served(problem, pruned))
    say("MILP: checking the plan")
    plan = _checked(problem, plan)
    plan = plan.model_copy(update={"notes": plan.notes + explain_unserved(problem, plan, pruned)
                                   + _patience_note(plan, mip_gap, patience_s)})
    t_extract = time.perf_counter()
    say(f"MILP: best plan in {t_extract - t_start:.1f} s ({status.value})")

    aux_gap = max(mip_gap, AUX_MIP_GAP)
    seconds = (secondary_time_s if secondary_time_s is not None
               else max(SECONDARY_MIN_S, t_extract - t_start))
    two_modes = compare_modes and len(problem.search.modes) == 2
    factors = _sweep_order(pareto_factors) if pareto_factors else []
    ttft_factors = _sweep_order(pareto_ttft_factors) if factors and pareto_ttft_factors else []
    budget = _Budget(seconds, time_limit_s,
                     max(top_k - 1, 0) + 2 * two_modes + PARETO_SHARES * bool(factors))
    alternatives = _alternatives(problem, cset, plan, top_k, aux_gap, budget, say)
    t_alt = time.perf_counter()

    agg = dis = None
    if two_modes:
        agg = _mode_only(problem, pruned, "aggregated", aux_gap, budget, say)
        dis = _mode_only(problem, pruned, "disaggregated", aux_gap, budget, say)
    t_cmp = time.perf_counter()

    pareto: tuple[ParetoPoint, ...] = ()
    if factors:
        pareto = _pareto(problem, builder, plan, factors, ttft_factors, budget, say)
    t_end = time.perf_counter()
    timings = Timings(candidates_s=t_cand - t_start, build_s=build_s, solve_s=solve_s,
                      extract_s=t_extract - t_solved, alternatives_s=t_alt - t_extract,
                      compare_s=t_cmp - t_alt, pareto_s=t_end - t_cmp, total_s=t_end - t_start)
    summary = CandidateSummary(enumerated=cset.enumerated, dropped=cset.drop_counts(),
                               dominated=pruned.dominated, in_milp=len(pruned.candidates))
    return PlanningResult(problem=problem, plan=plan, alternatives=alternatives,
                          aggregated_only=agg, disaggregated_only=dis, pareto=pareto,
                          candidates=summary, timings=timings, notes=budget.notes(seconds))


def _patience_note(plan: Plan, mip_gap: float, patience_s: float | None) -> tuple[str, ...]:
    """Say so when the best plan stopped at ``PATIENT_GAP`` rather than the MIP gap."""
    gap = plan.solver.gap
    if (patience_s is None or plan.solver.status != SolveStatus.FEASIBLE or gap is None
            or gap <= mip_gap or plan.solver.termination != "interrupted"):
        return ()
    return (f"MILP: a large problem is solved to the MIP gap ({mip_gap:.2%}) for a tenth of the "
            f"time limit ({patience_s:.0f} s), then stops as soon as it is within "
            f"{PATIENT_GAP:.1%}; this plan's goodput is within {gap:.2%} of the best. To prove "
            f"{mip_gap:.2%}: raise the time limit (--time-limit)",)


def _per_gpu(pruned: CandidateSet, workload: str) -> float:
    """The most req/s per GPU any plan of ``workload`` reaches: its best aggregated instance,
    or its best prefill and decode instances side by side (each per GPU, the prefill one in the
    largest pooled group)."""
    best = {"aggregated": 0.0, "prefill": 0.0, "decode": 0.0}
    for c in pruned.candidates:
        if c.config.workload == workload:
            rate = c.pooled[-1] / len(c.pooled) if c.pooled else c.rate
            best[c.config.role] = max(best[c.config.role], rate / c.gpus)
    pd = (1.0 / (1.0 / best["prefill"] + 1.0 / best["decode"])
          if best["prefill"] > 0 and best["decode"] > 0 else 0.0)
    return max(best["aggregated"], pd)


def explain_unserved(problem: Problem, plan: Plan, pruned: CandidateSet) -> tuple[str, ...]:
    """A note for every maximized workload the plan serves nothing, saying why and what would
    change it (a demand workload left short already has its note; ``min_cost`` requires
    demands)."""
    notes = []
    served = {wp.name: wp.served_rate_per_s for wp in plan.workloads}
    for w in problem.workloads:
        if served[w.name] > 0 or w.demand_per_s is not None:
            continue
        winners = [v for v in problem.workloads
                   if v.demand_per_s is None and served[v.name] > 0]
        own = w.weight * _per_gpu(pruned, w.name)
        if not winners:
            notes.append(f"{w.name}: 0 req/s — the GPUs all go to the demands of the other "
                         "workloads. To serve it: add GPUs, or give it a demand")
            continue
        top = max(winners, key=lambda v: v.weight * _per_gpu(pruned, v.name))
        theirs = top.weight * _per_gpu(pruned, top.name)
        notes.append(
            f"{w.name}: 0 req/s — the MILP gives the GPUs left after the demands to "
            f"{', '.join(v.name for v in winners)}, whose weighted goodput per GPU is higher "
            f"({top.name}: weight {top.weight:g} x up to {theirs / top.weight:.3g} req/s per "
            f"GPU; {w.name}: weight {w.weight:g} x up to {own / w.weight if w.weight else 0:.3g}"
            f"). To serve {w.name}: give it a demand (demands are served first) or a weight "
            f"above {w.weight * theirs / own if own > 0 else math.inf:.3g}")
    return tuple(notes)


def _alternatives(problem: Problem, cset: CandidateSet, best: Plan, top_k: int,
                  mip_gap: float, budget: _Budget, say: Progress) -> tuple[Plan, ...]:
    """The next best plans, each leaving out a configuration of every plan before it."""
    from servingcast.planner.milp import build_model, exclude_plan, extract_plan, solve_model

    if top_k <= 1:
        return ()
    keyset = prune_dominated(cset, by_parallelism=True)
    pm = with_headroom(build_model(problem, keyset.candidates, alternatives=True))
    exclude_plan(pm, [g.name for g in best.groups])
    out: list[Plan] = []
    for i in range(top_k - 1):
        what = f"alternative {i + 1}"
        limit = budget.next_limit(what)
        if limit is None:
            budget.left -= top_k - 2 - i
            budget.skipped[-1] = (f"alternatives {i + 1}-{top_k - 1}" if i + 2 < top_k
                                  else what)
            break
        say(f"alternatives {i + 1}/{top_k - 1}")
        report = solve_model(pm, limit, mip_gap)
        if not report.status.has_solution:
            break
        budget.record(what, report.status)
        alt = extract_plan(pm, report, what)
        if alt.served_rate_per_s <= 0:
            break
        out.append(_checked(problem, alt))
        exclude_plan(pm, [g.name for g in alt.groups])
    return tuple(out)


def _mode_only(problem: Problem, pruned: CandidateSet, mode: str, mip_gap: float,
               budget: _Budget, say: Progress) -> ModeComparison:
    roles = ("aggregated",) if mode == "aggregated" else ("prefill", "decode")
    subset = [c for c in pruned.candidates if c.config.role in roles]
    for w in problem.workloads:
        have = {c.config.role for c in subset if c.config.workload == w.name}
        if not set(roles) <= have:
            budget.left -= 1
            return ModeComparison(mode=mode, plan=None,
                                  reason=f"{w.name}: no {mode} configuration meets the SLOs")
    limit = budget.next_limit(f"{mode} only")
    if limit is None:
        return ModeComparison(mode=mode, plan=None, reason="skipped for time (see the notes)")
    say(f"single-mode: {mode} only")
    plan, status, _, _ = _solve_candidates(problem, subset, limit, mip_gap, f"{mode} only")
    if plan is None:
        reason = ("the demands cannot be met in this mode" if status == SolveStatus.INFEASIBLE
                  else f"no solution ({status.value})")
        return ModeComparison(mode=mode, plan=None, reason=reason)
    budget.record(f"{mode} only", status)
    return ModeComparison(mode=mode, plan=_checked(problem, plan))


def _sweep_order(factors: Sequence[float]) -> list[float]:
    """The sweep's factors with 1.0, in the order they are solved: 1.0 (the best plan, no
    solve), the extremes, then each time the factor farthest (in log) from those solved, so
    that a sweep cut short by the time budget still spans the range evenly."""
    rest = sorted(set(factors) - {1.0})
    order = [1.0]
    while rest:
        far = max(rest, key=lambda f: min(abs(math.log(f / g)) for g in order))
        order.append(far)
        rest.remove(far)
    return order


def _pareto(problem: Problem, builder: CandidateBuilder, best: Plan,
            tpot_factors: Sequence[float], ttft_factors: Sequence[float], budget: _Budget,
            say: Progress) -> tuple[ParetoPoint, ...]:
    """The Pareto sweep (no MILP: each point is an enumeration over the candidates) within
    what the budget has left; the limits it could not rate are noted as skipped."""
    budget.left -= PARETO_SHARES  # the last step: it has all that is left
    points, skipped = sweep(problem, builder, best, tpot_factors, ttft_factors,
                            budget.deadline, say)
    if len(skipped) == len(tpot_factors) + len(ttft_factors):
        budget.skipped.append("Pareto sweep")
    elif skipped:
        budget.skipped.append("Pareto limits " + ", ".join(skipped))
    return points
