"""A day of traffic: the demand profiles planned as one multi-period MILP.

A workload's ``demand_profile`` gives its rate in each of ``K`` equal periods of ``τ`` hours
(``H = K τ`` hours in all; a profile of other than 24 h is taken to repeat, and costs are
reported per day, ``× 24 / H``). A workload without a profile keeps its demand in every period.
Every period has the allocation MILP of :mod:`servingcast.planner.milp` in a block of its own —
the same candidates, built by the same ``add_*`` functions, with that period's demands and the
``min_cost`` constraints (``served_rate_ge_demand``) — and the blocks are tied by the fleet.

Notation (besides the MILP's, each of its variables now also indexed by the period t)::

    t ∈ T        periods, τ hours each; d_{w,t} the demand of w in period t
    n_{c,t}      instances of c in period t; cost_t = Σ_c π_c n_{c,t} ($/h)
    B_p ∈ ℤ≥0    GPUs of pool p bought for the day (``fleet: buy_once``; B_p ≤ G_p)

``fleet: fixed`` — the pools are owned; each period uses what it needs of them and the GPUs a
period leaves idle are released (not paid)::

    min  Σ_t τ cost_t
    s.t. the MILP's constraints 1-7 in every period (pool_gpus_le_budget[p] ≤ G_p, ...)

  The periods share nothing, so the optimum is the sum of the periods' own optima. The report
  also gives what the whole fleet costs when it is paid all day (Σ_p G_p π_p × 24).

``fleet: buy_once`` — buy B_p GPUs of each pool once and pay for them all day (priced per GPU,
as the peak-provisioned plan is); every period's instances must fit in them (and, as in the
single-period MILP, in the pool's whole nodes)::

    1. min  H Σ_p π_p B_p                  (π_p the pool's $ per GPU-hour; B_p ≤ G_p)
       s.t. the MILP's constraints in every period, and
            period_gpus_le_bought[t,p]    Σ_{c∈p} g_c n_{c,t} ≤ B_p
    2. with B fixed at its optimum: min Σ_t τ cost_t (no instance runs without need; its value
       is the cost if the idle bought GPUs could be released).

Bounds (what the tests check): every period's instances of the peak-provisioned plan (the
single-period plan at each workload's peak rate, run all day) are feasible for both fleets, so
either optimum costs no more than it; and dropping the link B makes the periods independent,
so either costs at least the sum of the periods' own optima (each period solved alone). With a
flat profile all three are equal.

The N+1 headroom (``headroom: n_plus_one``) applies in every period.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import pyomo.core as pyo
from pydantic import BaseModel, ConfigDict

from servingcast.errors import InfeasibleError, SolverError
from servingcast.planner.candidates import LARGE_MILP, Candidate
from servingcast.planner.milp import (
    PlanModel,
    add_allocation,
    add_objective_terms,
    extract_allocation,
    instance_bound,
    solve_model,
    with_pooled_groups,
)
from servingcast.planner.plan import SolverReport, SolveStatus
from servingcast.planner.problem import Problem

_FROZEN = ConfigDict(extra="forbid", frozen=True)

HOURS_PER_DAY = 24.0


class PeriodGroup(BaseModel):
    """``count`` instances of one configuration in one period."""

    model_config = _FROZEN

    name: str
    workload: str
    pool: str
    hardware: str
    role: Literal["aggregated", "prefill", "decode"]
    tp: int
    pp: int
    count: int
    gpus: int
    cost_per_hour: float


class PeriodPlan(BaseModel):
    """One period: its demands, instances, GPUs and $/h."""

    model_config = _FROZEN

    index: int
    start_h: float
    hours: float
    demand_per_s: dict[str, float]
    groups: tuple[PeriodGroup, ...]
    gpus_used: dict[str, int]
    total_gpus: int
    cost_per_hour: float


class DailyPlan(BaseModel):
    """The multi-period plan of a problem with demand profiles (module docstring).

    ``cost_per_day`` is what the fleet choice pays: with ``fixed`` the GPUs each period uses
    (idle ones released), with ``buy_once`` the bought GPUs all day. ``used_cost_per_day`` is
    always the GPUs the periods use; ``fleet_gpus`` the pools' GPUs (fixed) or those bought, and
    ``fleet_cost_per_day`` what they cost all day. ``peak_cost_per_day`` is the
    peak-provisioned plan (each workload's peak rate, ``peak_cost_per_hour`` × 24);
    ``saving_per_day`` = peak − ``cost_per_day``."""

    model_config = _FROZEN

    problem: str
    fleet: Literal["fixed", "buy_once"]
    status: SolveStatus
    period_h: float
    horizon_h: float
    periods: tuple[PeriodPlan, ...]
    fleet_gpus: dict[str, int]
    cost_per_day: float
    used_cost_per_day: float
    fleet_cost_per_day: float
    peak_cost_per_hour: float
    peak_cost_per_day: float
    saving_per_day: float
    saving_share: float
    solver: SolverReport
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return self.model_dump(mode="json")


# -- the problem of each period ----------------------------------------------------------------


def has_profiles(problem: Problem) -> bool:
    """Whether some workload has a ``demand_profile``."""
    return any(w.demand_profile is not None for w in problem.workloads)


def period_count(problem: Problem) -> tuple[int, float]:
    """``(K, τ hours)`` of the problem's profiles (checked equal by ``problem_issues``)."""
    for w in problem.workloads:
        if w.demand_profile is not None:
            return len(w.demand_profile.rates_per_s), w.demand_profile.period_h
    raise ValueError(f"problem {problem.name!r} has no demand profile")


def period_problem(problem: Problem, t: int) -> Problem:
    """``problem`` with each workload's demand that of period ``t`` (a workload without a
    profile keeps its demand). A rate of 0 is allowed here, as in the profile."""
    workloads = tuple(
        w if w.demand_profile is None
        else w.model_copy(update={"demand_per_s": w.demand_profile.rates_per_s[t]})
        for w in problem.workloads)
    return problem.model_copy(update={"workloads": workloads})


# -- build -------------------------------------------------------------------------------------


def _add_period(b: Any, problem: Problem, cands: dict[str, Candidate],
                most: dict[str, int]) -> None:
    """The MILP of :func:`servingcast.planner.milp.build_model` for one period, in block
    ``b`` (with the N+1 headroom when the problem asks for it)."""
    add_allocation(b, problem, cands, most)
    add_objective_terms(b, cands, problem, priced=True)
    if problem.headroom == "n_plus_one":
        from servingcast.planner.headroom import add_n_plus_one

        add_n_plus_one(PlanModel(b, problem, cands, "$/h"))


def _add_bought_fleet(m: Any, problem: Problem, cands: dict[str, Candidate]) -> None:
    """``B_p`` and ``period_gpus_le_bought[t,p]`` (module docstring, ``buy_once``)."""
    m.bought_gpus = pyo.Var(m.P, domain=pyo.NonNegativeIntegers,
                            bounds=lambda _, p: (0, problem.pool(p).count))
    index = [(t, p) for t in m.T for p in m.P]

    def gpus_rule(_: Any, t: int, pool: str) -> Any:
        b = m.period[t]
        terms = [c.gpus * b.instances[k] for k, c in cands.items() if c.config.pool == pool]
        if not terms:
            return pyo.Constraint.Skip
        return sum(terms) <= m.bought_gpus[pool]

    m.period_gpus_le_bought = pyo.Constraint(index, rule=gpus_rule)


def build_periods(problem: Problem, candidates: Sequence[Candidate]) -> PlanModel:
    """The multi-period MILP of the module docstring (objective: stage 1 of the fleet; see
    :func:`solve_periods`). ``problem`` needs demand profiles and ``objective: min_cost``."""
    if not has_profiles(problem):
        raise ValueError(f"problem {problem.name!r} has no demand profile")
    if any(p.price is None for p in problem.pools):
        raise ValueError("every pool needs a price (problem_issues checks it for min_cost)")
    cands = {c.key: c for c in candidates}
    k, tau = period_count(problem)
    # U_c from each workload's peak (milp.instance_bound; the problem's own demand is the
    # peak): more instances of c than serve the peak alone never lower a cost, in any period.
    # They make the 24-period model ~15x faster (daily-llama-3.1-8b: 21 s to 1.4 s). Not with
    # N+1 headroom, which may need more (as build_model, only in a large model then).
    large = len(cands) >= LARGE_MILP
    most = {key: instance_bound(c, problem, by_demand=large or problem.headroom == "none")
            for key, c in cands.items()}
    cands = with_pooled_groups(cands, most)  # as build_model
    m = pyo.ConcreteModel(name=f"{problem.name}-periods")
    m.T = pyo.Set(initialize=range(k), ordered=True)
    m.P = pyo.Set(initialize=[p.name for p in problem.pools], ordered=True)
    m.period = pyo.Block(m.T)
    for t in m.T:
        _add_period(m.period[t], period_problem(problem, t), cands, most)
    m.used_cost = pyo.Expression(expr=sum(tau * m.period[t].cost for t in m.T))
    if problem.fleet == "buy_once":
        _add_bought_fleet(m, problem, cands)
        price = {p.name: float(p.price or 0.0) for p in problem.pools}
        m.fleet_cost = pyo.Expression(expr=k * tau * sum(
            price[p] * m.bought_gpus[p] for p in m.P))
        m.cost = pyo.Expression(expr=m.fleet_cost)
    else:
        m.cost = pyo.Expression(expr=m.used_cost)
    m.stage = pyo.Block()
    return PlanModel(m, problem, cands, "$")


# -- solve and extract -------------------------------------------------------------------------


def solve_periods(pm: PlanModel, time_limit_s: float = 60.0, mip_gap: float = 1e-3,
                  progress: Callable[[str], None] | None = None) -> SolverReport:
    """Solve the multi-period model: the least ``cost`` (``min_cost`` of
    :func:`~servingcast.planner.milp.solve_model`), then, with ``buy_once``, the least cost
    of the GPUs used within the bought fleet (stage 2). The report is stage 1's."""
    say = progress or (lambda _: None)
    m = pm.model
    started = time.perf_counter()
    say("periods: least cost per day")
    report = solve_model(pm, time_limit_s, mip_gap)
    if report.status.has_solution and hasattr(m, "bought_gpus"):
        say("periods: least use of the bought fleet")
        for p in m.P:
            m.bought_gpus[p].fix(round(m.bought_gpus[p].value or 0.0))
        m.cost.set_value(m.used_cost)
        pm.solver = None  # a fresh HiGHS: the fixed variables are read again
        left = max(0.01, time_limit_s - (time.perf_counter() - started))
        second = solve_model(pm, left, mip_gap)
        if not second.status.has_solution:
            raise SolverError(f"HiGHS stopped with {second.termination} on the use of the "
                              "bought fleet. To fix: raise --time-limit")
        report = report.model_copy(update={
            "solves": report.solves + second.solves, "time_s": report.time_s + second.time_s})
    return report


def _period_plan(pm: PlanModel, problem: Problem, t: int, start_h: float, hours: float,
                 report: SolverReport) -> PeriodPlan:
    """Period ``t``'s solution, re-checked by :func:`~servingcast.planner.verify.verify_plan`
    as a plan of its own."""
    from servingcast.planner.assemble import plan_from_allocation
    from servingcast.planner.verify import verify_plan

    part = PlanModel(pm.model.period[t], problem, pm.candidates, "$/h")
    plan = plan_from_allocation(problem, pm.candidates, extract_allocation(part), report,
                                f"period {t}")
    errors = verify_plan(problem, plan)
    if errors:
        raise SolverError(f"period {t}'s plan failed its independent re-check (a planner bug): "
                          + "; ".join(errors[:5]) + ". To fix: report it with the problem file")
    groups = tuple(PeriodGroup(name=g.name, workload=g.workload, pool=g.pool,
                               hardware=g.hardware, role=g.role, tp=g.tp, pp=g.pp,
                               count=g.count, gpus=g.gpus, cost_per_hour=g.cost_per_hour or 0.0)
                   for g in plan.groups)
    return PeriodPlan(index=t, start_h=start_h, hours=hours,
                      demand_per_s={w.name: float(w.demand_per_s or 0.0)
                                    for w in problem.workloads},
                      groups=groups, gpus_used=dict(plan.gpus_used), total_gpus=plan.total_gpus,
                      cost_per_hour=sum(g.cost_per_hour for g in groups))


def extract_daily(pm: PlanModel, report: SolverReport, peak_cost_per_hour: float) -> DailyPlan:
    """The solved multi-period model as a :class:`DailyPlan` (module docstring)."""
    problem = pm.problem
    k, tau = period_count(problem)
    horizon_h = k * tau
    per_day = HOURS_PER_DAY / horizon_h
    periods = tuple(_period_plan(pm, period_problem(problem, t), t, t * tau, tau, report)
                    for t in range(k))
    used = sum(p.cost_per_hour * p.hours for p in periods) * per_day
    m = pm.model
    if problem.fleet == "buy_once":
        fleet = {p.name: round(m.bought_gpus[p.name].value or 0.0) for p in problem.pools}
    else:
        fleet = {p.name: p.count for p in problem.pools}
    fleet_cost = sum(float(p.price or 0.0) * fleet[p.name] for p in problem.pools) * HOURS_PER_DAY
    cost = fleet_cost if problem.fleet == "buy_once" else used
    peak = peak_cost_per_hour * HOURS_PER_DAY
    notes = []
    if abs(horizon_h - HOURS_PER_DAY) > 1e-9:
        notes.append(f"the profile spans {horizon_h:g} h; it is taken to repeat, and costs are "
                     "per 24 h")
    return DailyPlan(problem=problem.name, fleet=problem.fleet, status=report.status,
                     period_h=tau, horizon_h=horizon_h, periods=periods, fleet_gpus=fleet,
                     cost_per_day=cost, used_cost_per_day=used, fleet_cost_per_day=fleet_cost,
                     peak_cost_per_hour=peak_cost_per_hour, peak_cost_per_day=peak,
                     saving_per_day=peak - cost,
                     saving_share=(peak - cost) / peak if peak > 0 else 0.0,
                     solver=report, notes=tuple(notes))


def _single(problem: Problem, candidates: Sequence[Candidate], time_limit_s: float,
            mip_gap: float) -> float | None:
    """The least $/h of one single-period problem (None when infeasible)."""
    from servingcast.planner.milp import build_model
    from servingcast.planner.planning import with_headroom

    pm = with_headroom(build_model(problem, candidates))
    report = solve_model(pm, time_limit_s, mip_gap)
    if report.status == SolveStatus.ERROR:
        raise SolverError(f"HiGHS stopped with {report.termination}. To fix: rerun with "
                          "--debug and report it")
    if not report.status.has_solution:
        return None
    return float(pyo.value(pm.model.cost))


def period_optima(problem: Problem, candidates: Sequence[Candidate],
                  time_limit_s: float = 60.0, mip_gap: float = 1e-3) -> list[float]:
    """The least $/h of each period solved alone (the lower bound of the module docstring)."""
    k, _ = period_count(problem)
    out = []
    for t in range(k):
        cost = _single(period_problem(problem, t), candidates, time_limit_s, mip_gap)
        if cost is None:
            raise InfeasibleError(f"period {t}: no plan meets its demands")
        out.append(cost)
    return out


def plan_daily(problem: Problem, candidates: Sequence[Candidate] | None = None, *,
               time_limit_s: float = 60.0, mip_gap: float = 1e-3,
               progress: Callable[[str], None] | None = None) -> DailyPlan:
    """Plan the day of ``problem`` (demand profiles; ``objective: min_cost``): the
    peak-provisioned plan, then the multi-period MILP on the same candidates (default: the
    problem's, with dominated ones pruned, as :func:`~servingcast.planner.planning.solve`).
    Raises :class:`InfeasibleError` when even the peak cannot be served, :class:`SolverError`
    when HiGHS finds no plan in time."""
    from servingcast.planner.candidates import CandidateBuilder, prune_dominated

    if candidates is None:
        candidates = prune_dominated(CandidateBuilder(problem, progress).candidates()).candidates
    peak = _single(problem, candidates, time_limit_s, mip_gap)
    if peak is None:
        raise InfeasibleError(f"{problem.name}: no plan serves every workload's peak rate. To "
                              "fix: add GPUs, or lower the profile's peak")
    pm = build_periods(problem, candidates)
    report = solve_periods(pm, time_limit_s, mip_gap, progress)
    if report.status == SolveStatus.INFEASIBLE:
        raise InfeasibleError(f"{problem.name}: no plan serves every period's demand (the "
                              "peak alone can be). To fix: report it with the problem file")
    if not report.status.has_solution:
        raise SolverError(f"HiGHS found no multi-period plan within the time limit "
                          f"({time_limit_s:g} s). To fix: raise --time-limit or use longer "
                          "periods")
    return extract_daily(pm, report, peak)


# -- report ------------------------------------------------------------------------------------


def _group_text(g: PeriodGroup) -> str:
    par = f"tp{g.tp}" + (f"pp{g.pp}" if g.pp > 1 else "")
    role = {"aggregated": "agg", "prefill": "P", "decode": "D"}[g.role]
    return f"{g.count}x {g.workload} {role} {g.hardware} {par}"


def format_daily(daily: DailyPlan) -> str:
    """The per-period table and the daily costs, as text."""
    names = list(daily.periods[0].demand_per_s) if daily.periods else []
    demand_head = "".join(f"{(n + ' req/s')[:16]:>17}" for n in names)
    lines = [f"Daily plan ({len(daily.periods)} periods of {daily.period_h:g} h, fleet "
             f"{daily.fleet}, {daily.status.value}):",
             f"{'period':>6} {'start':>6}{demand_head}{'GPUs':>6}{'$/h':>10}  instances"]
    for p in daily.periods:
        demands = "".join(f"{p.demand_per_s[n]:>17.2f}" for n in names)
        groups = ", ".join(_group_text(g) for g in p.groups) or "none"
        start = f"{int(p.start_h):02d}:{round(p.start_h % 1 * 60):02d}"
        lines.append(f"{p.index:>6} {start:>6}{demands}{p.total_gpus:>6}"
                     f"{p.cost_per_hour:>10.2f}  {groups}")
    fleet = ", ".join(f"{k}: {v}" for k, v in daily.fleet_gpus.items())
    if daily.fleet == "buy_once":
        lines.append(f"Bought for the day: {fleet} GPUs, ${daily.cost_per_day:,.2f}/day "
                     f"(${daily.used_cost_per_day:,.2f}/day if the idle GPUs were released)")
    else:
        lines.append(f"Cost per day (idle GPUs released): ${daily.cost_per_day:,.2f}/day; the "
                     f"whole fleet ({fleet} GPUs) paid all day: "
                     f"${daily.fleet_cost_per_day:,.2f}/day")
    lines.append(f"Peak-provisioned plan: ${daily.peak_cost_per_hour:,.2f}/h x 24 h = "
                 f"${daily.peak_cost_per_day:,.2f}/day; saving ${daily.saving_per_day:,.2f}/day "
                 f"({daily.saving_share:.1%})")
    lines += [f"Note: {n}" for n in daily.notes]
    return "\n".join(lines)


__all__ = ["DailyPlan", "PeriodGroup", "PeriodPlan", "build_periods", "extract_daily",
           "format_daily", "has_profiles", "period_count", "period_optima", "period_problem",
           "plan_daily", "solve_periods"]
