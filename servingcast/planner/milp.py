"""The allocation MILP in Pyomo, solved with HiGHS: build → solve → extract.

Notation::

    c ∈ C        candidates; w(c) workload, p(c) pool, role A (aggregated), P (prefill), D (decode)
    g_c, μ_c     GPUs per instance, capacity in req/s under the SLOs (the cost model's)
    π_c          cost of one instance per hour ($/h; GPUs when a pool has no price)
    G_p, N_p, s_p  GPUs, whole nodes and GPUs per node of pool p
    d_w, ω_w     demand of workload w in req/s (none when maximized), goodput weight
    B_w, F       KV bytes a request moves prefill→decode, fabric bandwidth (bytes/s)

Variables::

    n_c ∈ ℤ≥0    instances of candidate c, n_c ≤ U_c  (instances[c]; U_c = G_p // g_c; in a large
                 model, with a demand, the fewest instances of c that serve d_w alone:
                 instance_bound)
    y_p ∈ ℤ≥0    nodes of pool p given to instances smaller than a node  (small_nodes[p])
    x_w ≥ 0      served rate; a_w ≥ 0 its aggregated part, z_w ≥ 0 its disaggregated part

Objective (the problem's ``objective``)::

    max_goodput             (with several workloads and demands: first max φ, the share of
                            every demand served together, and keep it); max Σ_w ω_w x_w; then
                            min Σ_c π_c n_c keeping that goodput
    min_cost                min Σ_c π_c n_c
    max_goodput_per_dollar  max Σ ω x / Σ π n by Dinkelbach's method (Dinkelbach, "On nonlinear
                            fractional programming", Management Science 13, 1967): solve
                            max Σ ω x − λ Σ π n, set λ to the new ratio, until the optimum is 0;
                            then max Σ ω x among plans with that ratio

Constraints::

    1. pool_gpus_le_budget[p]         Σ_{c∈p} g_c n_c ≤ G_p
    2. pool_nodes_le_budget[p]        Σ_{c∈p, g_c≥s_p} (g_c/s_p) n_c + y_p ≤ N_p
       small_instances_fit_nodes[p]   Σ_{c∈p, g_c<s_p} g_c n_c ≤ s_p y_p
       (an instance larger than a node uses whole nodes; smaller ones divide s_p; when their
       sizes divide each other — 1, 2, 4 on 8-GPU nodes — they pack onto any whole nodes and
       constraint 1 implies 2, which is then left out)
    3. served_rate_eq_parts[w]        x_w = a_w + z_w
    4. aggregated_rate_le_capacity[w] a_w ≤ Σ_{c∈A_w} f_c(n_c)
    5. disaggregated_rate_le_prefill_capacity[w]  z_w ≤ Σ_{c∈P_w} f_c(n_c)
       disaggregated_rate_le_decode_capacity[w]   z_w ≤ Σ_{c∈D_w} f_c(n_c)   (the P:D ratio)
       where f_c(n) is the capacity of a group of n instances behind one router (candidates'
       ``pooled``: more than n μ_c — a prefill group shares one queue, a decode or aggregated
       group's batches swing less; f_c(n) = μ_c n when the candidate has no ``pooled``, and for
       decode and aggregated candidates in a MILP of ``POOL_ALL_ROLES_BELOW`` candidates or
       more), made
       linear with one binary per group-size level l ∈ L_c and a continuous extra e past it::
         pool_one_level[c]              Σ_l δ_{c,l} ≤ 1
         pool_count_eq_level[c]         n_c = Σ_l (l δ_{c,l} + e_{c,l})
         pool_extra_le_width[c,l]       e_{c,l} ≤ (l⁺ − l) δ_{c,l}   (l⁺ the next level)
         f_c(n_c) ≥ Σ_l (f_c(l) δ_{c,l} + s_{c,l} e_{c,l})
         with s_{c,l} = min_{l<n≤l⁺} (f(n) − f(l)) / (n − l)
       (exact at the levels, a lower bound between them)
    6. kv_traffic_le_fabric           Σ_w B_w z_w ≤ F   (each instance's own links already bound
                                                         its μ_c; see candidates)
    7. served_rate_le_demand[w]       x_w ≤ d_w  (max_* objectives, when w has a demand)
       served_rate_ge_demand[w]       x_w ≥ d_w  (min_cost)
       served_rate_ge_demand_share[w] x_w ≥ φ d_w, 0 ≤ φ ≤ 1  (max_goodput, several workloads)
    8. instances_le_used[c]           n_c ≤ U_c u_c, u_c ∈ {0, 1}  (only with ``alternatives``)
       plan_differs[k]                Σ_{c∈S_k} u_c ≤ |S_k| − 1: every alternative leaves out
                                      at least one configuration of each plan before it
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import highspy
import numpy as np
import pyomo.core as pyo
from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition
from pyomo.contrib.solver.solvers.highs import Highs

from servingcast.errors import SolverError
from servingcast.groups import ROLES
from servingcast.planner.candidates import LARGE_MILP, Candidate
from servingcast.planner.plan import Plan, SolverReport, SolveStatus
from servingcast.planner.problem import Problem

#: A lexicographic second stage keeps the first stage's objective within this relative slack.
STAGE_SLACK = 1e-6
#: The cost stage of ``max_goodput`` (removing instances the goodput does not need) stops within
#: this relative gap of the least cost: closing the last 0.5% takes HiGHS ten times longer on
#: the large fleets, for a cost difference below the prices' own precision.
COST_STAGE_GAP = 5e-3


@dataclass
class PlanModel:
    """A built model and what solving and extraction need."""

    model: pyo.ConcreteModel
    problem: Problem
    candidates: dict[str, Candidate]
    cost_unit: str
    alternatives: bool = False
    cuts: int = 0
    solver: Any = field(default=None, repr=False)
    large: bool = False
    """At least ``LARGE_MILP`` candidates: instance counts bounded by the demands, and each stage
    of :func:`solve_model` started from the previous stage's solution."""
    patience: tuple[float, float] | None = None
    """While :func:`solve_model` runs: ``(when, gap)`` of its ``patience_s`` (:class:`_Highs`)."""


# -- build -------------------------------------------------------------------------------------


def instance_bound(c: Candidate, problem: Problem, by_demand: bool = True) -> int:
    """``U_c``, the most instances of ``c`` a plan can use to some purpose: ``G_p // g_c``, and
    (``by_demand``) for a workload with a demand ``d_w`` no more than the fewest that serve it
    alone (``f_c(n) >= d_w``; more would serve nothing more, since ``x_w <= d_w``, and cost
    more)."""
    most = problem.pool(c.config.pool).count // c.gpus
    demand = problem.workload(c.config.workload).demand_per_s
    if not by_demand or demand is None or most <= 1 or c.group_rate(most) < demand:
        return most
    lo, hi = 0, most  # f_c(lo) < demand <= f_c(hi); f_c grows with n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if c.group_rate(mid) >= demand else (mid, hi)
    return hi


def add_instance_counts(m: pyo.ConcreteModel, cands: dict[str, Candidate],
                        most: dict[str, int]) -> None:
    """Variables ``instances[c] ∈ ℤ≥0`` bounded by ``most[c]``, ``U_c``
    (:func:`instance_bound`), and the rate variables."""
    def bounds(_: Any, key: str) -> tuple[int, int]:
        return 0, most[key]

    m.instances = pyo.Var(m.C, domain=pyo.NonNegativeIntegers, bounds=bounds)
    m.served_rate = pyo.Var(m.W, domain=pyo.NonNegativeReals)
    m.aggregated_rate = pyo.Var(m.W, domain=pyo.NonNegativeReals)
    m.disaggregated_rate = pyo.Var(m.W, domain=pyo.NonNegativeReals)


def add_gpu_budget(m: pyo.ConcreteModel, cands: dict[str, Candidate], problem: Problem) -> None:
    """1. ``pool_gpus_le_budget[p]: Σ_{c∈p} g_c n_c ≤ G_p``."""
    def rule(_: Any, pool: str) -> Any:
        terms = [c.gpus * m.instances[k] for k, c in cands.items() if c.config.pool == pool]
        if not terms:
            return pyo.Constraint.Skip
        return sum(terms) <= problem.pool(pool).count

    m.pool_gpus_le_budget = pyo.Constraint(m.P, rule=rule)


def _chain(sizes: set[int]) -> bool:
    """Whether ``sizes`` divide one another (1, 2, 4 ...): such instances pack any node set."""
    ordered = sorted(sizes)
    return all(b % a == 0 for a, b in itertools.pairwise(ordered))


def add_whole_nodes(m: pyo.ConcreteModel, cands: dict[str, Candidate], problem: Problem) -> None:
    """2. Instances larger than a node use whole nodes; smaller ones pack onto ``y_p`` nodes::

        pool_nodes_le_budget[p]:       Σ_{c∈p, g_c≥s_p} (g_c/s_p) n_c + y_p ≤ N_p
        small_instances_fit_nodes[p]:  Σ_{c∈p, g_c<s_p} g_c n_c ≤ s_p y_p

    Candidates larger than a node span whole nodes (their size is a multiple of ``s_p``) and the
    smaller ones divide ``s_p``; when the smaller sizes also divide one another (1, 2, 4 on
    8-GPU nodes: first-fit decreasing packs them onto any set of whole nodes), constraint 1
    already implies these, and they are left out of the model of that pool.
    """
    pools = []
    for pool in problem.pools:
        small = {c.gpus for c in cands.values()
                 if c.config.pool == pool.name and c.gpus < pool.node_size}
        if small and not _chain(small | {pool.node_size}):
            pools.append(pool.name)
    if not pools:
        return
    m.node_pools = pyo.Set(initialize=pools, ordered=True)
    m.small_nodes = pyo.Var(m.node_pools, domain=pyo.NonNegativeIntegers,
                            bounds=lambda _, p: (0, problem.pool(p).nodes))

    def nodes_rule(_: Any, pool: str) -> Any:
        spec = problem.pool(pool)
        large = [c.gpus // spec.node_size * m.instances[k] for k, c in cands.items()
                 if c.config.pool == pool and c.gpus >= spec.node_size]
        return sum(large) + m.small_nodes[pool] <= spec.nodes

    def small_rule(_: Any, pool: str) -> Any:
        spec = problem.pool(pool)
        small = [c.gpus * m.instances[k] for k, c in cands.items()
                 if c.config.pool == pool and c.gpus < spec.node_size]
        return sum(small) <= spec.node_size * m.small_nodes[pool]

    m.pool_nodes_le_budget = pyo.Constraint(m.node_pools, rule=nodes_rule)
    m.small_instances_fit_nodes = pyo.Constraint(m.node_pools, rule=small_rule)


def add_rate_split(m: pyo.ConcreteModel) -> None:
    """3. ``served_rate_eq_parts[w]: x_w = a_w + z_w``."""
    m.served_rate_eq_parts = pyo.Constraint(
        m.W, rule=lambda _, w: m.served_rate[w] == m.aggregated_rate[w] + m.disaggregated_rate[w])


def _capacity(m: pyo.ConcreteModel, cands: dict[str, Candidate], w: str, role: str) -> Any:
    """``Σ_{c∈R_w} f_c(n_c)`` over the candidates of workload ``w`` and ``role``: the pooled
    expression of those with one (:func:`add_pooled_capacity`), ``μ_c n_c`` for the others."""
    return sum(m.pooled_capacity[k] if k in m.pooled_capacity else c.rate * m.instances[k]
               for k, c in cands.items() if c.config.workload == w and c.config.role == role)


#: Group sizes with a binary each in a pooled capacity (constraints 4-5): every size up to 8,
#: then a coarser grid; between two levels the capacity is bounded below by a line.
POOL_LEVELS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64)


#: MILPs of fewer candidates pool decode and aggregated groups too (constraints 4-5); larger
#: ones count them at ``n μ_c`` (the 1 024-GPU multi-model problem, 97 candidates, took about
#: 55 s to plan with them pooled and 3 s without, on a busy 2-core machine).
POOL_ALL_ROLES_BELOW = 64


def pooled_segments(c: Candidate, max_count: int) -> list[tuple[int, int, float, float]]:
    """``(l, l⁺ − l, f(l), s_l)`` for each level of candidate ``c`` (constraints 4-5), for groups of
    at most ``max_count`` instances."""
    exact = len(c.pooled)
    if exact == 0 or max_count <= 0:
        return []
    levels = [level for level in POOL_LEVELS if level <= min(exact, max_count)]
    if min(exact, max_count) not in levels:
        levels.append(min(exact, max_count))
    out = []
    for i, level in enumerate(levels):
        nxt = levels[i + 1] if i + 1 < len(levels) else max_count
        f0 = c.group_rate(level)
        slope = min(((c.group_rate(n) - f0) / (n - level) for n in range(level + 1, nxt + 1)
                     if n <= exact or n == nxt), default=0.0)
        out.append((level, nxt - level, f0, max(0.0, slope)))
    return out


def add_pooled_capacity(m: pyo.ConcreteModel, cands: dict[str, Candidate],
                        most: dict[str, int], roles: tuple[str, ...] = ROLES) -> None:
    """4-5. The pooled capacity ``f_c(n_c)`` of each candidate of ``roles`` with one (module
    docstring), as the expression ``pooled_capacity[c]``, for groups of at most ``most[c]``;
    the other candidates count ``μ_c n_c``, a lower bound."""
    segments = {k: segs for k, c in cands.items()
                if c.config.role in roles and (segs := pooled_segments(c, most[k]))}
    index = [(k, level) for k, segs in segments.items() for level, *_ in segs]
    m.PL = pyo.Set(initialize=index, dimen=2, ordered=True)
    m.pool_level = pyo.Var(m.PL, domain=pyo.Binary)
    m.pool_extra = pyo.Var(m.PL, domain=pyo.NonNegativeReals)
    by_key = {k: {seg[0]: seg for seg in segs} for k, segs in segments.items()}
    m.pool_one_level = pyo.Constraint(
        list(segments), rule=lambda _, k: sum(m.pool_level[k, lv] for lv in by_key[k]) <= 1)
    m.pool_count_eq_level = pyo.Constraint(
        list(segments), rule=lambda _, k: m.instances[k] == sum(
            lv * m.pool_level[k, lv] + m.pool_extra[k, lv] for lv in by_key[k]))
    m.pool_extra_le_width = pyo.Constraint(
        m.PL, rule=lambda _, k, lv: m.pool_extra[k, lv]
        <= by_key[k][lv][1] * m.pool_level[k, lv])
    m.pooled_capacity = pyo.Expression(
        list(segments), rule=lambda _, k: sum(
            by_key[k][lv][2] * m.pool_level[k, lv] + by_key[k][lv][3] * m.pool_extra[k, lv]
            for lv in by_key[k]))


def add_aggregated_capacity(m: pyo.ConcreteModel, cands: dict[str, Candidate]) -> None:
    """4. ``aggregated_rate_le_capacity[w]: a_w ≤ Σ_{c∈A_w} f_c(n_c)`` (after
    :func:`add_pooled_capacity`)."""
    m.aggregated_rate_le_capacity = pyo.Constraint(
        m.W, rule=lambda _, w: m.aggregated_rate[w] <= _capacity(m, cands, w, "aggregated"))


def add_disaggregated_capacity(m: pyo.ConcreteModel, cands: dict[str, Candidate]) -> None:
    """5. The disaggregated rate is bounded by both phases (this sets the P:D ratio)::

        disaggregated_rate_le_prefill_capacity[w]:  z_w ≤ Σ_{c∈P_w} f_c(n_c)
        disaggregated_rate_le_decode_capacity[w]:   z_w ≤ Σ_{c∈D_w} f_c(n_c)

    (``f_c`` from :func:`add_pooled_capacity`, which must be added first.)
    """
    m.disaggregated_rate_le_prefill_capacity = pyo.Constraint(
        m.W, rule=lambda _, w: m.disaggregated_rate[w] <= _capacity(m, cands, w, "prefill"))
    m.disaggregated_rate_le_decode_capacity = pyo.Constraint(
        m.W, rule=lambda _, w: m.disaggregated_rate[w] <= _capacity(m, cands, w, "decode"))


def add_kv_fabric(m: pyo.ConcreteModel, cands: dict[str, Candidate], problem: Problem) -> None:
    """6. ``kv_traffic_le_fabric: Σ_w B_w z_w ≤ F`` (only when the fabric bandwidth is set)."""
    fabric = problem.network.fabric_bandwidth_bytes_s
    if fabric is None:
        return
    per_request = {w.name: 0.0 for w in problem.workloads}
    for c in cands.values():
        per_request[c.config.workload] = c.kv_bytes_per_request
    # Scaled to GB/s to keep the coefficients near 1.
    m.kv_traffic_le_fabric = pyo.Constraint(
        expr=sum(per_request[w] / 1e9 * m.disaggregated_rate[w] for w in m.W) <= fabric / 1e9)


def add_demand(m: pyo.ConcreteModel, problem: Problem) -> None:
    """7. ``served_rate_le_demand[w]: x_w ≤ d_w``; with ``min_cost``,
    ``served_rate_ge_demand[w]: x_w ≥ d_w``. With ``max_goodput``, several workloads and some
    demands, also the share ``φ ∈ [0, 1]`` of every demand served (``demand_share``):
    ``served_rate_ge_demand_share[w]: x_w ≥ φ d_w`` (demands are served first)."""
    capped = [w.name for w in problem.workloads if w.demand_per_s is not None]
    demand = {w.name: w.demand_per_s for w in problem.workloads}
    m.served_rate_le_demand = pyo.Constraint(
        capped, rule=lambda _, w: m.served_rate[w] <= demand[w])
    if problem.objective == "min_cost":
        m.served_rate_ge_demand = pyo.Constraint(
            capped, rule=lambda _, w: m.served_rate[w] >= demand[w])
    elif problem.objective == "max_goodput" and capped and len(problem.workloads) > 1:
        m.demand_share = pyo.Var(domain=pyo.NonNegativeReals, bounds=(0.0, 1.0))
        m.served_rate_ge_demand_share = pyo.Constraint(
            capped, rule=lambda _, w: m.served_rate[w] >= m.demand_share * demand[w])


def add_usage_indicators(m: pyo.ConcreteModel, most: dict[str, int]) -> None:
    """8. ``instances_le_used[c]: n_c ≤ U_c u_c`` with binary ``used[c]`` (for alternatives)."""
    m.used = pyo.Var(m.C, domain=pyo.Binary)

    def rule(_: Any, key: str) -> Any:
        return m.instances[key] <= most[key] * m.used[key]

    m.instances_le_used = pyo.Constraint(m.C, rule=rule)
    m.plan_differs = pyo.ConstraintList()


def add_objective_terms(m: pyo.ConcreteModel, cands: dict[str, Candidate], problem: Problem,
                        priced: bool) -> None:
    """Expressions ``goodput = Σ_w ω_w x_w`` and ``cost = Σ_c π_c n_c``."""
    weight = {w.name: w.weight for w in problem.workloads}
    m.goodput = pyo.Expression(expr=sum(weight[w] * m.served_rate[w] for w in m.W))
    m.cost = pyo.Expression(expr=sum(
        ((c.price_per_hour or 0.0) if priced else float(c.gpus)) * m.instances[k]
        for k, c in cands.items()))


def with_pooled_groups(cands: dict[str, Candidate],
                       most: dict[str, int]) -> dict[str, Candidate]:
    """``cands`` with the group capacities of decode and aggregated candidates
    (:meth:`Candidate.with_groups`) when the MILP is small enough to take them
    (:data:`POOL_ALL_ROLES_BELOW`), as they are otherwise."""
    if len(cands) >= POOL_ALL_ROLES_BELOW:
        return cands
    return {k: c.with_groups(most[k]) for k, c in cands.items()}


def add_allocation(m: Any, problem: Problem, cands: dict[str, Candidate],
                   most: dict[str, int]) -> None:
    """The sets and constraints 1-7 of the module docstring on ``m`` (a model or a block): one
    allocation of ``problem``'s pools to ``cands`` (from :func:`with_pooled_groups`), without
    an objective."""
    m.C = pyo.Set(initialize=list(cands), ordered=True)
    m.W = pyo.Set(initialize=[w.name for w in problem.workloads], ordered=True)
    m.P = pyo.Set(initialize=[p.name for p in problem.pools], ordered=True)
    add_instance_counts(m, cands, most)
    add_gpu_budget(m, cands, problem)
    add_whole_nodes(m, cands, problem)
    add_rate_split(m)
    # Past POOL_ALL_ROLES_BELOW candidates only prefill groups are pooled (where pooling gains
    # the most): every pooled candidate adds a binary per group size, and decode and aggregated
    # groups gain a few percent per instance (queueing item 10), which n μ_c leaves as headroom.
    small = len(cands) < POOL_ALL_ROLES_BELOW
    add_pooled_capacity(m, cands, most, ROLES if small else ("prefill",))
    add_aggregated_capacity(m, cands)
    add_disaggregated_capacity(m, cands)
    add_kv_fabric(m, cands, problem)
    add_demand(m, problem)


def build_model(problem: Problem, candidates: Sequence[Candidate],
                alternatives: bool = False) -> PlanModel:
    """Assemble the MILP of the module docstring for ``candidates`` (no objective yet: the
    objective depends on the solve stage, see :func:`solve_model`)."""
    cands = {c.key: c for c in candidates}
    large = len(cands) >= LARGE_MILP
    most = {k: instance_bound(c, problem, by_demand=large) for k, c in cands.items()}
    cands = with_pooled_groups(cands, most)
    priced = all(p.price is not None for p in problem.pools)
    m = pyo.ConcreteModel(name=problem.name)
    add_allocation(m, problem, cands, most)
    if alternatives:
        add_usage_indicators(m, most)
    add_objective_terms(m, cands, problem, priced)
    m.stage = pyo.Block()
    return PlanModel(m, problem, cands, "$/h" if priced else "GPUs", alternatives, large=large)


def exclude_plan(pm: PlanModel, used_keys: Sequence[str]) -> None:
    """Add ``plan_differs[k]`` (constraint 8): a later solve must leave out one of ``used_keys``."""
    if not pm.alternatives:
        raise ValueError("build the model with alternatives=True to exclude plans")
    keys = [k for k in used_keys if k in pm.candidates]
    if keys:
        m = pm.model
        m.plan_differs.add(sum(m.used[k] for k in keys) <= len(keys) - 1)
        pm.cuts += 1


# -- solve -------------------------------------------------------------------------------------


def _status(termination: TerminationCondition, solution: SolutionStatus) -> SolveStatus:
    """The one place where HiGHS's termination becomes our :class:`SolveStatus`."""
    found = solution in (SolutionStatus.optimal, SolutionStatus.feasible)
    if termination == TerminationCondition.convergenceCriteriaSatisfied and found:
        return SolveStatus.OPTIMAL
    if termination in (TerminationCondition.provenInfeasible,
                       TerminationCondition.infeasibleOrUnbounded,
                       TerminationCondition.locallyInfeasible):
        return SolveStatus.INFEASIBLE
    if termination in (TerminationCondition.maxTimeLimit, TerminationCondition.iterationLimit,
                       TerminationCondition.interrupted, TerminationCondition.objectiveLimit):
        return SolveStatus.FEASIBLE if found else SolveStatus.NO_SOLUTION
    if termination == TerminationCondition.emptyModel:
        return SolveStatus.OPTIMAL
    return SolveStatus.ERROR


class _Highs(Highs):  # type: ignore[misc]  # Pyomo ships no type information
    """Pyomo's persistent HiGHS interface with two things it has no way to set, both for the
    next solve only:

    * ``start``, pairs of a variable and its value: a MIP start. A stage's start is the previous
      stage's solution, feasible for it (the stages only add constraints that solution meets):
      HiGHS begins with that incumbent instead of searching for one;
    * ``patience``, ``(when, gap)``: past ``time.perf_counter()`` ``when``, HiGHS stops as soon as
      its gap is within ``gap``, through its MIP interrupt callback. The callback answers every
      call (HiGHS keeps an interrupt it was given for its next run), before Pyomo's own
      keyboard-interrupt handler, which can still stop a solve.

    With a Pyomo or highspy that lacks the attributes used here, HiGHS solves without them."""

    start: list[tuple[Any, float]] | None = None
    patience: tuple[float, float] | None = None
    _now: tuple[float, float] | None = None
    _stopped = False

    def _solve(self) -> Any:
        start, self.start = self.start, None
        self._now, self.patience, self._stopped = self.patience, None, False
        highs: Any = getattr(self, "_solver_model", None)
        columns = getattr(self, "_pyomo_var_to_solver_var_map", None)
        if start and highs is not None and isinstance(columns, dict):
            values = np.zeros(highs.getNumCol())
            for var, value in start:
                column = columns.get(id(var))
                if column is not None:
                    values[column] = value
            solution = highspy.HighsSolution()
            solution.col_value = values
            solution.value_valid = True
            highs.setSolution(solution)
        hook: Any = getattr(highs, "cbMipInterrupt", None)
        if hasattr(hook, "subscribe") and not getattr(highs, "_servingcast_patience", False):
            hook.subscribe(self._patience)  # the first subscriber, before Pyomo's
            highs._servingcast_patience = True
        # Pyomo does not know HiGHS's "interrupted" status: it logs a warning and says
        # "unknown"; an interruption of ours is said so, without the warning.
        log = logging.getLogger(Highs.__module__)

        def quiet(record: logging.LogRecord) -> bool:
            return not (self._stopped and "unhandled" in record.getMessage())

        log.addFilter(quiet)
        try:
            results = super()._solve()
        finally:
            log.removeFilter(quiet)
        if self._stopped and results.termination_condition == TerminationCondition.unknown:
            results.termination_condition = TerminationCondition.interrupted
        return results

    def _patience(self, event: Any) -> None:
        now = self._now
        stop = (now is not None and time.perf_counter() >= now[0]
                and event.data_out.mip_gap <= now[1])
        self._stopped = self._stopped or stop
        event.interrupt(stop)


@dataclass
class _Stage:
    status: SolveStatus
    termination: str
    objective: float | None
    bound: float | None
    time_s: float


#: HiGHS's MIP feasibility tolerance for a second try when it rejects its own optimum.
MIP_RETRY_TOL = 1e-5


def _run(pm: PlanModel, expr: Any, sense: Any, deadline: float, mip_gap: float,
         warm: bool = False) -> _Stage:
    """Solve for ``expr``; ``warm``: start from the values loaded in the model (the previous
    stage's solution). With ``pm.patience``, HiGHS stops within its gap once past its time."""
    m = pm.model
    if hasattr(m.stage, "objective"):
        m.stage.del_component("objective")
    m.stage.objective = pyo.Objective(expr=expr, sense=sense)
    if pm.solver is None:
        pm.solver = _Highs()
    if warm:
        pm.solver.start = [(v, v.value) for v in m.component_data_objects(pyo.Var)
                           if v.value is not None]
    if pm.patience is not None and pm.patience[1] > mip_gap:
        pm.solver.patience = pm.patience
    left = max(0.01, deadline - time.perf_counter())
    start = time.perf_counter()
    try:
        res = pm.solver.solve(m, time_limit=left, rel_gap=mip_gap, load_solutions=False,
                              raise_exception_on_nonoptimal_result=False)
        status = _status(res.termination_condition, res.solution_status)
        if status == SolveStatus.ERROR:
            # HiGHS rejects its own optimum when a row is off by about its tolerance (1e-6:
            # "MIP solver claims optimality, but with ... primal infeasibilities"; capacities
            # span 1e-3 to 1e5 req/s). Once more, with 1e-5.
            left = max(0.01, deadline - time.perf_counter())
            res = pm.solver.solve(m, time_limit=left, rel_gap=mip_gap, load_solutions=False,
                                  raise_exception_on_nonoptimal_result=False,
                                  solver_options={"mip_feasibility_tolerance": MIP_RETRY_TOL})
            status = _status(res.termination_condition, res.solution_status)
    except Exception as exc:  # HiGHS or Pyomo failure: report it, with the solver's words
        raise SolverError(f"HiGHS failed: {exc}. To fix: rerun with --debug and report it") \
            from exc
    if status.has_solution:
        res.solution_loader.load_vars()
    return _Stage(status, res.termination_condition.name, res.incumbent_objective,
                  res.objective_bound, time.perf_counter() - start)


def _snapshot(m: pyo.ConcreteModel) -> list[tuple[Any, float | None]]:
    return [(v, v.value) for v in m.component_data_objects(pyo.Var)]


def _restore(values: list[tuple[Any, float | None]]) -> None:
    for v, value in values:
        v.set_value(value, skip_validation=True)


def _gap(objective: float | None, bound: float | None) -> float | None:
    if objective is None or bound is None or not math.isfinite(bound):
        return None
    return abs(bound - objective) / max(abs(objective), 1e-9)


def solve_model(pm: PlanModel, time_limit_s: float = 30.0, mip_gap: float = 1e-3,
                progress: Callable[[str], None] | None = None,
                patience_s: float | None = None,
                patience_gap: float = COST_STAGE_GAP) -> SolverReport:
    """Solve ``pm`` for the problem's objective (module docstring); the solution stays loaded in
    the model for :func:`extract_plan`. The report's gap and bound are the main objective's
    (goodput, cost, or the goodput per dollar). ``progress`` receives a line per stage. In a
    large model each stage after the first starts from the previous one's solution
    (:class:`_Highs`).

    Each stage stops within ``mip_gap`` or at ``time_limit_s`` (all stages together); past
    ``patience_s`` (if given, all stages together) also as soon as it is within
    ``patience_gap``: the report then says ``feasible`` with the gap reached.

    ``max_goodput`` runs up to three lexicographic stages: (a) with several workloads and some
    demands, the largest share ``φ`` of every demand served together (demands first); (b) the
    most weighted goodput keeping that share; (c) the least cost keeping that goodput to within
    the MIP gap (the goodput of stage b is only known that well), itself within
    ``COST_STAGE_GAP``.
    """
    m = pm.model
    say = progress or (lambda _: None)
    started = time.perf_counter()
    deadline = started + time_limit_s
    pm.patience = (None if patience_s is None or patience_s >= time_limit_s
                   else (started + patience_s, patience_gap))
    m.stage.del_component("keeps")
    m.stage.keeps = pyo.ConstraintList()
    kind = pm.problem.objective
    stages: list[_Stage] = []
    if kind == "min_cost":
        say("MILP: least cost")
        main = _run(pm, m.cost, pyo.minimize, deadline, mip_gap)
        stages.append(main)
    elif kind == "max_goodput_per_dollar":
        say("MILP: most goodput")
        main = _run(pm, m.goodput, pyo.maximize, deadline, mip_gap)
        stages.append(main)
        if main.status.has_solution:
            main = _dinkelbach(pm, main, stages, deadline, mip_gap, say)
    else:
        share = None
        if hasattr(m, "demand_share"):
            say("MILP: the share of every demand served")
            share = _run(pm, m.demand_share, pyo.maximize, deadline, mip_gap)
            stages.append(share)
            if share.status.has_solution:
                m.stage.keeps.add(m.demand_share >= pyo.value(m.demand_share) * (
                    1.0 - STAGE_SLACK))
        if share is None or share.status.has_solution:
            say("MILP: most goodput")
            main = _next_stage(pm, None, m.goodput, pyo.maximize, stages, deadline, mip_gap)
        else:
            main = share
        if main.status.has_solution:
            # The goodput is only known within the gap: keep it within the gap, not exactly.
            floor = pyo.value(m.goodput) * (1.0 - max(STAGE_SLACK, mip_gap))
            say("MILP: least cost for that goodput")
            _next_stage(pm, m.goodput >= floor, m.cost, pyo.minimize, stages, deadline,
                        max(mip_gap, COST_STAGE_GAP))
    pm.patience = None
    status = main.status
    if status == SolveStatus.OPTIMAL and any(s.status != SolveStatus.OPTIMAL for s in stages):
        status = SolveStatus.FEASIBLE  # a stage stopped early: not proven optimal
    return SolverReport(
        status=status, termination=main.termination, time_s=sum(s.time_s for s in stages),
        gap=_gap(main.objective, main.bound), objective=main.objective,
        objective_bound=main.bound, solves=len(stages), variables=m.nvariables(),
        constraints=m.nconstraints())


def _next_stage(pm: PlanModel, keep: Any, expr: Any, sense: Any, stages: list[_Stage],
                deadline: float, mip_gap: float) -> _Stage:
    """Optimise ``expr`` subject to ``keep`` (an earlier stage's optimum, kept); fall back to
    the earlier solution if this stage finds none in the time left."""
    m = pm.model
    before = _snapshot(m) if stages else None
    if keep is not None:
        m.stage.keeps.add(keep)
    stage = _run(pm, expr, sense, deadline, mip_gap, warm=pm.large and before is not None)
    stages.append(stage)
    if not stage.status.has_solution and before is not None:
        _restore(before)
    return stage


def _dinkelbach(pm: PlanModel, first: _Stage, stages: list[_Stage], deadline: float,
                mip_gap: float, say: Callable[[str], None]) -> _Stage:
    """Maximise goodput / cost (module docstring); returns the stage that proved the ratio."""
    m = pm.model
    cost = pyo.value(m.cost)
    if cost <= 0:
        return first
    ratio = pyo.value(m.goodput) / cost
    best = first
    for i in range(30):
        say(f"MILP: goodput per dollar, step {i + 1}")
        stage = _run(pm, m.goodput - ratio * m.cost, pyo.maximize, deadline, mip_gap,
                     warm=pm.large)
        stages.append(stage)
        if not stage.status.has_solution:
            break
        best = stage
        g, c = pyo.value(m.goodput), pyo.value(m.cost)
        if c <= 0 or g / c <= ratio * (1.0 + 1e-9):
            break
        ratio = g / c
    reported = _Stage(best.status, best.termination, ratio, None, best.time_s)
    _next_stage(pm, m.goodput >= ratio * (1.0 - STAGE_SLACK) * m.cost, m.goodput,
                pyo.maximize, stages, deadline, mip_gap)
    return reported


# -- extract -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    """The solved values: instance counts per candidate and rates per workload."""

    counts: dict[str, int]
    served: dict[str, float]
    aggregated: dict[str, float]
    disaggregated: dict[str, float]


def extract_allocation(pm: PlanModel) -> Allocation:
    """Read the loaded solution (counts rounded to whole instances).

    With a ``max_*`` objective and no fabric limit, each workload then serves all that its
    instances carry (``x_w = min(d_w, A_w + min(P_w, D_w))``): a solve stopped at a MIP gap may
    leave the rates short of what the chosen instances serve, and the plan should not.
    """
    m = pm.model

    def val(v: Any) -> float:
        x = v.value
        return 0.0 if x is None else float(x)

    counts = {k: round(val(m.instances[k])) for k in m.C}
    counts = {k: n for k, n in counts.items() if n > 0}
    def rate(v: Any) -> float:
        # Solver noise (1e-13 req/s on a part with no instances) is no traffic.
        x = val(v)
        return x if x > 1e-9 else 0.0

    served = {w: rate(m.served_rate[w]) for w in m.W}
    agg = {w: rate(m.aggregated_rate[w]) for w in m.W}
    dis = {w: rate(m.disaggregated_rate[w]) for w in m.W}
    problem = pm.problem
    if problem.objective != "min_cost" and problem.network.fabric_bandwidth_bytes_s is None:
        cap = {(w, r): 0.0 for w in m.W for r in ("aggregated", "prefill", "decode")}
        for key, n in counts.items():
            c = pm.candidates[key]
            cap[(c.config.workload, c.config.role)] += c.group_rate(n)
        for w in problem.workloads:
            a = cap[(w.name, "aggregated")]
            z = min(cap[(w.name, "prefill")], cap[(w.name, "decode")])
            total = a + z
            if w.demand_per_s is not None and total > w.demand_per_s:
                scale = w.demand_per_s / total
                a, z, total = a * scale, z * scale, w.demand_per_s
            if total > served[w.name]:
                served[w.name], agg[w.name], dis[w.name] = total, a, z
    return Allocation(counts, served, agg, dis)


def extract_plan(pm: PlanModel, report: SolverReport, label: str = "best") -> Plan:
    """The solved model as a :class:`Plan`: groups, planned loads and predicted latencies."""
    from servingcast.planner.assemble import plan_from_allocation

    return plan_from_allocation(pm.problem, pm.candidates, extract_allocation(pm), report, label)
