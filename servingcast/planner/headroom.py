"""N+1 headroom: every demand still met, within its SLOs, when any one node of any pool is lost.

``headroom: n_plus_one`` on a problem adds the constraints below to the allocation MILP
(:mod:`servingcast.planner.milp`, whose notation this follows), and :func:`check_one_node_down`
simulates the plan with its worst node removed.

Placement. A node failure takes down every instance with a GPU on that node. How much capacity
that is depends on where the instances are, so an N+1 plan comes with a placement: **each
configuration on nodes of its own**, an instance as large as a node or larger on ``g_c / s_p``
whole nodes (one lost node kills one instance), and the ``n_c`` instances of a smaller
configuration spread over nodes holding at most ``q_c`` of them each, ``1 ≤ q_c ≤ k_c = s_p //
g_c`` (one lost node kills ``q_c``; ``q_c = k_c`` packs them, ``q_c = 1`` spreads them one to a
node). The MILP chooses ``q_c``. Configurations never share a node, so one node's loss hits one
configuration, of one workload and one role.

Notation (besides the MILP's)::

    k_c              s_p // g_c, the most instances of c one node holds (c smaller than a node)
    z_{c,q} ∈ {0,1}  c smaller than a node is spread at most q to a node, q = 1..k_c
                     (headroom_spread[c, q])
    m_{c,q} ∈ ℤ≥0    nodes holding up to q instances of c (headroom_nodes[c, q])
    z_c ∈ {0,1}      c at least a node large is used (headroom_used[c])
    L_{w,p,r} ≥ 0    capacity of workload w, role r (A, P, D) that one lost node of pool p takes
                     (headroom_loss[w, p, r], req/s)

Constraints::

    1. headroom_one_spread[c]              Σ_q z_{c,q} ≤ 1
       headroom_nodes_le_spread[c,q]       m_{c,q} ≤ N_p z_{c,q}
       headroom_instances_fit_nodes[c]     n_c ≤ Σ_q q m_{c,q}
       headroom_large_used[c]              n_c ≤ U_c z_c                    (g_c ≥ s_p)
       headroom_nodes_le_budget[p]         Σ_{c∈p, g_c≥s_p} (g_c/s_p) n_c
                                           + Σ_{c∈p, g_c<s_p} Σ_q m_{c,q} ≤ N_p
    2. headroom_loss_ge_node[c]            L_{w,p,r} ≥ μ_c Σ_q q z_{c,q}    (g_c < s_p)
                                           L_{w,p,r} ≥ μ_c z_c              (g_c ≥ s_p)
       so L_{w,p,r} is at least the most capacity of (w, r) that one node of p carries (the
       solver spreads no wider than it must: a smaller q costs nodes, a larger one headroom).
    3. headroom_rate_le_capacity_less_node[w,p,r]
                                           Σ_{c∈(w,r)} μ_c n_c − L_{w,p,r} ≥ a_w   (r = A)
                                                                             ≥ z_w   (r = P, D)
       the instances left after the worst node of p is lost still carry the part's rate.

Approximations, all on the safe side: the prefill capacity after a loss is the linear
``Σ μ_c n_c`` (the pooled ``f_c(n) ≥ n μ_c`` of constraint 5 of the MILP is not used); the
aggregated and disaggregated parts must each survive on their own (the aggregated instances do
not take over a disaggregated loss); roles are checked one at a time, since one node holds one
configuration. ``n_plus_one`` needs ``objective: min_cost`` (every workload has a demand; see
:func:`servingcast.planner.problem.problem_issues`), so the plan serves exactly what the
constraints protect.

The placement of a solved plan (:func:`placement`) is recomputed from the plan alone: each
configuration smaller than a node gets the largest ``q`` that its part's spare capacity allows
(``q μ ≤ Σ μ n − rate``; ``μ`` the plan's capacity per instance), hence the fewest nodes; where
that does not fit the pool's nodes (possible only for prefill, whose plan capacity is the pooled
one), the configurations of that pool are packed (``q = k``) and the check says so.

The check (:func:`check_one_node_down`): for each part of the plan (a workload's aggregated
groups, or its prefill and decode groups), the group whose lost node leaves the least capacity
(``μ`` times the instances left, the lesser of prefill and decode for a disaggregated part) loses
``q`` instances; that plan is exported and simulated at the part's planned rate
(:class:`servingcast.planner.simcheck.PartSimulator`), and its SLO attainment compared with the
target. The simulator has no nodes: it sees the instances that survive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyomo.core as pyo

from servingcast.planner.candidates import Candidate
from servingcast.planner.milp import PlanModel
from servingcast.planner.plan import InstanceGroup, Plan, WorkloadPlan
from servingcast.planner.problem import Problem

#: The MILP's role of each part a lost node can hit.
_RATE_OF_ROLE = {"aggregated": "aggregated_rate", "prefill": "disaggregated_rate",
                 "decode": "disaggregated_rate"}


def per_node(gpus_per_instance: int, node_size: int) -> int:
    """``k``: instances of one configuration that share one node (1 for an instance as large as
    a node or larger, which spans whole nodes)."""
    return max(1, node_size // gpus_per_instance) if gpus_per_instance < node_size else 1


def add_n_plus_one(pm: PlanModel) -> None:
    """Add constraints 1-3 of the module docstring to a built model (before it is solved)."""
    m, problem, cands = pm.model, pm.problem, pm.candidates
    node = {p.name: p.node_size for p in problem.pools}
    # A large model bounds n_c by the fewest instances that serve the demand alone
    # (milp.instance_bound); N+1 may need more. Prefill counts stay within their levels.
    for k, c in cands.items():
        if c.config.role != "prefill":
            m.instances[k].setub(problem.pool(c.config.pool).count // c.gpus)
    small = [k for k, c in cands.items() if c.gpus < node[c.config.pool]]
    large = [k for k, c in cands.items() if c.gpus >= node[c.config.pool]]
    spread = [(k, q) for k in small for q in range(1, per_node(cands[k].gpus,
                                                               node[cands[k].config.pool]) + 1)]
    qs: dict[str, list[int]] = {k: [] for k in small}
    for k, q in spread:
        qs[k].append(q)

    def nodes_of(k: str) -> int:
        return problem.pool(cands[k].config.pool).nodes

    # 1. each configuration on nodes of its own, spread at most q to a node
    m.HS = pyo.Set(initialize=small, ordered=True)
    m.HQ = pyo.Set(initialize=spread, dimen=2, ordered=True)
    m.HB = pyo.Set(initialize=large, ordered=True)
    m.headroom_spread = pyo.Var(m.HQ, domain=pyo.Binary)
    m.headroom_nodes = pyo.Var(m.HQ, domain=pyo.NonNegativeIntegers,
                               bounds=lambda _, k, q: (0, nodes_of(k)))
    m.headroom_used = pyo.Var(m.HB, domain=pyo.Binary)
    m.headroom_one_spread = pyo.Constraint(
        m.HS, rule=lambda _, k: sum(m.headroom_spread[k, q] for q in qs[k]) <= 1)
    m.headroom_nodes_le_spread = pyo.Constraint(
        m.HQ, rule=lambda _, k, q: m.headroom_nodes[k, q] <= nodes_of(k)
        * m.headroom_spread[k, q])
    m.headroom_instances_fit_nodes = pyo.Constraint(
        m.HS, rule=lambda _, k: m.instances[k] <= sum(q * m.headroom_nodes[k, q]
                                                      for q in qs[k]))
    m.headroom_large_used = pyo.Constraint(
        m.HB, rule=lambda _, k: m.instances[k] <= _most(m, problem, cands, k)
        * m.headroom_used[k])

    def nodes_rule(_: Any, pool: str) -> Any:
        size = node[pool]
        used = [cands[k].gpus // size * m.instances[k] for k in large
                if cands[k].config.pool == pool]
        used += [m.headroom_nodes[k, q] for k, q in spread if cands[k].config.pool == pool]
        if not used:
            return pyo.Constraint.Skip
        return sum(used) <= problem.pool(pool).nodes

    m.headroom_nodes_le_budget = pyo.Constraint(m.P, rule=nodes_rule)

    # 2. the most capacity of (w, r) one node of p carries
    parts = sorted({_part(c) for c in cands.values()})
    m.HL = pyo.Set(initialize=parts, dimen=3, ordered=True)
    m.headroom_loss = pyo.Var(m.HL, domain=pyo.NonNegativeReals)

    def loss_rule(_: Any, k: str) -> Any:
        c = cands[k]
        if k in qs:
            lost = sum(q * m.headroom_spread[k, q] for q in qs[k])
        else:
            lost = m.headroom_used[k]
        return m.headroom_loss[_part(c)] >= c.rate * lost

    m.headroom_loss_ge_node = pyo.Constraint(m.C, rule=loss_rule)

    # 3. what is left after the worst node of p still carries the part's rate
    def left_rule(_: Any, w: str, pool: str, role: str) -> Any:
        capacity = sum(c.rate * m.instances[k] for k, c in cands.items()
                       if c.config.workload == w and c.config.role == role)
        rate = getattr(m, _RATE_OF_ROLE[role])[w]
        return capacity - m.headroom_loss[w, pool, role] >= rate

    m.headroom_rate_le_capacity_less_node = pyo.Constraint(m.HL, rule=left_rule)


def _most(m: Any, problem: Problem, cands: dict[str, Candidate], key: str) -> float:
    ub = m.instances[key].ub
    return float(ub if ub is not None else problem.pool(cands[key].config.pool).count)


def _part(c: Candidate) -> tuple[str, str, str]:
    return (c.config.workload, c.config.pool, c.config.role)


# -- the check by simulation -------------------------------------------------------------------


@dataclass(frozen=True)
class NodeDownCheck:
    """One part of a plan simulated with its worst node lost (module docstring)."""

    workload: str
    part: str
    pool: str
    group: str
    instances_lost: int
    planned_per_s: float
    capacity_left_per_s: float
    attainment: float
    target: float
    num_requests: int

    @property
    def meets_target(self) -> bool:
        """Whether the attainment with the node lost reaches the target."""
        return self.attainment >= self.target

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"workload": self.workload, "part": self.part, "pool": self.pool,
                "group": self.group, "instances_lost": self.instances_lost,
                "planned_per_s": self.planned_per_s,
                "capacity_left_per_s": self.capacity_left_per_s,
                "attainment": self.attainment, "target": self.target,
                "meets_target": self.meets_target, "num_requests": self.num_requests}


def _capacity_left(groups: list[InstanceGroup], part: str) -> float:
    total = {"aggregated": 0.0, "prefill": 0.0, "decode": 0.0}
    for g in groups:
        total[g.role] += g.capacity_per_instance_per_s * g.count
    return total["aggregated"] if part == "aggregated" else min(total["prefill"],
                                                                total["decode"])


@dataclass(frozen=True)
class Placement:
    """Where one group of an N+1 plan runs: ``nodes`` nodes of its own, at most ``per_node``
    instances on each (1 for an instance of a node or larger, which spans whole nodes);
    ``packed``: the pool's spread did not fit its nodes, so its groups were packed."""

    group: str
    pool: str
    count: int
    per_node: int
    nodes: int
    packed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"group": self.group, "pool": self.pool, "count": self.count,
                "per_node": self.per_node, "nodes": self.nodes, "packed": self.packed}


def placement(problem: Problem, plan: Plan) -> dict[str, Placement]:
    """The placement of each group of ``plan`` (module docstring), by group name."""
    cap: dict[tuple[str, str], float] = {}
    rate: dict[tuple[str, str], float] = {}
    for wp in plan.workloads:
        rate[(wp.name, "aggregated")] = wp.aggregated_rate_per_s
        rate[(wp.name, "prefill")] = rate[(wp.name, "decode")] = wp.disaggregated_rate_per_s
        for g in wp.groups:
            cap[(wp.name, g.role)] = (cap.get((wp.name, g.role), 0.0)
                                      + g.capacity_per_instance_per_s * g.count)
    out: dict[str, Placement] = {}
    for pool in problem.pools:
        size = pool.node_size
        groups = [g for g in plan.groups if g.pool == pool.name]
        spread: dict[str, int] = {}
        for g in groups:
            if g.gpus_per_instance >= size:
                spread[g.name] = 1
                continue
            slack = cap[(g.workload, g.role)] - rate[(g.workload, g.role)]
            fits = (math.floor(slack / g.capacity_per_instance_per_s + 1e-6)
                    if g.capacity_per_instance_per_s > 0 else g.count)
            spread[g.name] = max(1, min(per_node(g.gpus_per_instance, size), g.count, fits))

        packed = sum(_nodes(g, spread[g.name], size) for g in groups) > pool.nodes
        for g in groups:
            q = (min(g.count, per_node(g.gpus_per_instance, size)) if packed
                 and g.gpus_per_instance < size else spread[g.name])
            out[g.name] = Placement(g.name, pool.name, g.count, q, _nodes(g, q, size), packed)
    return out


def _nodes(g: InstanceGroup, per_node_count: int, node_size: int) -> int:
    """Nodes of group ``g`` at most ``per_node_count`` instances to a node."""
    if g.gpus_per_instance >= node_size:
        return g.count * (g.gpus_per_instance // node_size)
    return -(-g.count // per_node_count)


def worst_node(wp: WorkloadPlan, part: str, places: dict[str, Placement],
               ) -> tuple[InstanceGroup, int, list[InstanceGroup]] | None:
    """``(group hit, instances lost, the part's groups after the loss)`` for the node whose
    loss leaves the part the least capacity, under ``places``; None when the part has no
    groups."""
    roles = ("aggregated",) if part == "aggregated" else ("prefill", "decode")
    groups = [g for g in wp.groups if g.role in roles]
    worst = None
    for i, g in enumerate(groups):
        lost = min(g.count, places[g.name].per_node)
        left = [h if j != i else h.model_copy(update={
            "count": h.count - lost, "gpus": (h.count - lost) * h.gpus_per_instance})
            for j, h in enumerate(groups)]
        left = [h for h in left if h.count > 0]
        capacity = _capacity_left(left, part)
        if worst is None or capacity < worst[0]:
            worst = (capacity, g, lost, left)
    return None if worst is None else worst[1:]


def plan_without(plan: Plan, workload: str, part: str, groups: list[InstanceGroup]) -> Plan:
    """``plan`` with ``part`` of ``workload`` on ``groups`` instead of its own (the other
    part's groups kept)."""
    roles = ("aggregated",) if part == "aggregated" else ("prefill", "decode")
    workloads = []
    for wp in plan.workloads:
        if wp.name == workload:
            kept = tuple(g for g in wp.groups if g.role not in roles) + tuple(groups)
            wp = wp.model_copy(update={"groups": kept})
        workloads.append(wp)
    return plan.model_copy(update={"workloads": tuple(workloads)})


def check_one_node_down(problem: Problem, plan: Plan, *, seed: int = 0,
                        num_requests: int | None = None,
                        runs: int = 1) -> list[NodeDownCheck]:
    """Each part of ``plan`` simulated at its planned rate with its worst node lost (module
    docstring); ``runs`` seeds (:func:`servingcast.planner.simcheck.check_plan`)."""
    from servingcast.planner.simcheck import PartSimulator, parts

    places = placement(problem, plan)
    checks = []
    for workload, part, planned in parts(plan):
        wp = next(w for w in plan.workloads if w.name == workload)
        hit = worst_node(wp, part, places)
        if hit is None:
            continue
        group, lost, left = hit
        capacity = _capacity_left(left, part)
        target = problem.workload(workload).slo.attainment
        if capacity <= 0:  # nothing of the part survives: every request fails
            checks.append(NodeDownCheck(workload, part, group.pool, group.name, lost, planned,
                                        0.0, 0.0, target, 0))
            continue
        sim = PartSimulator(problem, plan_without(plan, workload, part, left), workload, part,
                            seed, num_requests, runs)
        attained, _ = sim.attainment(planned)
        checks.append(NodeDownCheck(workload, part, group.pool, group.name, lost, planned,
                                    capacity, attained, target, sim.num_requests))
    return checks


def format_node_down(checks: list[NodeDownCheck], places: dict[str, Placement]) -> str:
    """The N+1 placement and check as text (a row per group, then a row per part)."""
    lines = ["N+1 placement (each configuration on nodes of its own):"]
    for p in places.values():
        lines.append(f"  {p.pool}: {p.group}: {p.count} on {p.nodes} node(s), at most "
                     f"{p.per_node} per node" + (" (packed: the spread did not fit)"
                                                 if p.packed else ""))
    if not checks:
        return "\n".join([*lines, "N+1 check: the plan carries no traffic."])
    ok = all(c.meets_target for c in checks)
    verdict = ("every part meets its SLO target with its worst node lost" if ok else
               "a part misses its SLO target with its worst node lost")
    lines += [f"N+1 check (simulated, one node down): {verdict}",
              f"  {'workload':<14}{'part':<15}{'node lost (group)':<44}{'lost':>5}"
              f"{'planned req/s':>15}{'left req/s':>12}{'attained':>10}{'target':>8}  ok"]
    lines += [f"  {c.workload:<14}{c.part:<15}{(c.pool + ': ' + c.group)[:43]:<44}"
              f"{c.instances_lost:>5}{c.planned_per_s:>15.2f}{c.capacity_left_per_s:>12.2f}"
              f"{c.attainment:>10.3f}{c.target:>8.2f}  {'yes' if c.meets_target else 'NO'}"
              for c in checks]
    return "\n".join(lines)


__all__ = ["NodeDownCheck", "Placement", "add_n_plus_one", "check_one_node_down",
           "format_node_down", "per_node", "placement", "plan_without", "worst_node"]
