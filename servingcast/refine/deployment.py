"""A deployment as the refinement sees it: instance groups with counts and engine limits, and a
router, per workload — what a trial chooses and what the simulator runs.

A :class:`Deployment` carries no prediction; it is the decision only. This module also checks
a deployment against the pools (GPUs and whole nodes, the same rules as the MILP's constraints
1–2, recomputed here) and vLLM's engine rule (``max_num_batched_tokens >= max_num_seqs``), and
turns one part of a workload (its aggregated groups, or its prefill and decode groups) into a
simulator scenario through the planner's own :func:`servingcast.planner.to_scenario`, so the
scenario written for the refined plan is exactly the one that was simulated.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from servingcast.planner.plan import InstanceGroup, Plan, SolverReport, SolveStatus, WorkloadPlan
from servingcast.planner.problem import Problem
from servingcast.planner.verify import nodes_needed

_FROZEN = ConfigDict(extra="forbid", frozen=True)

Role = Literal["aggregated", "prefill", "decode"]
Part = Literal["aggregated", "disaggregated"]
ROLES: tuple[Role, ...] = ("aggregated", "prefill", "decode")
#: The routers a trial may pick, the planner's scenario default first.
ROUTERS = ("least_outstanding", "round_robin", "least_kv_load", "power_of_two")


class GroupSetting(BaseModel):
    """``count`` instances of one configuration (``slot`` names it in the search space)."""

    model_config = _FROZEN

    slot: str
    pool: str
    hardware: str
    role: Role
    tp: int
    pp: int
    ep: int
    gpus_per_instance: int
    count: int
    max_num_seqs: int
    max_num_batched_tokens: int
    enable_chunked_prefill: bool
    capacity_per_instance_per_s: float = 0.0
    """The planner's req/s of one instance: a group's share of its role's traffic, when a role
    has several groups, is ``count × capacity`` (the exported scenario's routing weight)."""

    @property
    def part(self) -> Part:
        """The part of the workload the group belongs to."""
        return "aggregated" if self.role == "aggregated" else "disaggregated"

    @property
    def gpus(self) -> int:
        """GPUs of the whole group."""
        return self.count * self.gpus_per_instance

    def describe(self) -> str:
        """``2x decode h200-sxm tp4 (seqs 178, tokens 256)``."""
        par = f"tp{self.tp}" + (f"pp{self.pp}" if self.pp > 1 else "") + (
            f"ep{self.ep}" if self.ep > 1 else "")
        return (f"{self.count}x {self.role} {self.hardware} {par} (max_num_seqs "
                f"{self.max_num_seqs}, max_num_batched_tokens {self.max_num_batched_tokens})")


class WorkloadSetting(BaseModel):
    """One workload's groups (each with ``count >= 1``) and its router."""

    model_config = _FROZEN

    name: str
    router: str
    groups: tuple[GroupSetting, ...]

    def part_groups(self, part: Part) -> tuple[GroupSetting, ...]:
        """The groups of ``part``."""
        return tuple(g for g in self.groups if g.part == part)

    @property
    def parts(self) -> tuple[Part, ...]:
        """The parts with at least one group, aggregated first."""
        have = {g.part for g in self.groups}
        return tuple(p for p in ("aggregated", "disaggregated") if p in have)


class Deployment(BaseModel):
    """Every workload's setting: what a trial decides."""

    model_config = _FROZEN

    workloads: tuple[WorkloadSetting, ...]

    def workload(self, name: str) -> WorkloadSetting:
        """The setting of workload ``name``."""
        return next(w for w in self.workloads if w.name == name)

    def key(self) -> str:
        """Canonical text: equal for equal deployments."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def same_groups(self, other: Deployment) -> bool:
        """Equal but for the capacities that only weight each group's traffic (a search slot
        keeps its first plan's; a pooled prefill group's per-instance capacity depends on its
        size)."""
        skip = {"workloads": {"__all__": {"groups": {"__all__": {
            "capacity_per_instance_per_s"}}}}}
        return bool(self.model_dump(exclude=skip) == other.model_dump(exclude=skip))

    @property
    def total_gpus(self) -> int:
        """GPUs of every group."""
        return sum(g.gpus for w in self.workloads for g in w.groups)


def slot_key(role: str, pool: str, tp: int, pp: int, ep: int, occurrence: int = 1) -> str:
    """``decode-h200-tp4`` (``-2`` for the second group of that configuration in one plan)."""
    key = f"{role}-{pool}-tp{tp}" + (f"pp{pp}" if pp > 1 else "") + (f"ep{ep}" if ep > 1 else "")
    key = re.sub(r"[^A-Za-z0-9_.\-]", "-", key)
    return key if occurrence == 1 else f"{key}-{occurrence}"


def plan_slots(plan: Plan, workload: str) -> list[tuple[str, InstanceGroup]]:
    """The groups of ``workload`` in ``plan`` with their slot keys, in the plan's order."""
    seen: dict[str, int] = {}
    out = []
    wp = next((w for w in plan.workloads if w.name == workload), None)
    for g in (wp.groups if wp is not None else ()):
        if g.count <= 0:
            continue
        base = slot_key(g.role, g.pool, g.tp, g.pp, g.ep)
        seen[base] = seen.get(base, 0) + 1
        out.append((slot_key(g.role, g.pool, g.tp, g.pp, g.ep, seen[base]), g))
    return out


def deployment_of(problem: Problem, plan: Plan) -> Deployment:
    """The deployment a MILP plan describes (with the scenario's default router)."""
    from servingcast.planner.export import default_router

    workloads = []
    for w in problem.workloads:
        groups = tuple(GroupSetting(
            slot=key, pool=g.pool, hardware=g.hardware, role=g.role, tp=g.tp, pp=g.pp, ep=g.ep,
            gpus_per_instance=g.gpus_per_instance, count=g.count, max_num_seqs=g.max_num_seqs,
            max_num_batched_tokens=g.max_num_batched_tokens,
            enable_chunked_prefill=g.enable_chunked_prefill,
            capacity_per_instance_per_s=g.capacity_per_instance_per_s)
            for key, g in plan_slots(plan, w.name))
        # The exported scenario's router; one per workload here, so a plan with disaggregated
        # groups keeps least-outstanding for its pooled prefill groups.
        aggregated = bool(groups) and all(g.role == "aggregated" for g in groups)
        router = default_router(w, "aggregated" if aggregated else "disaggregated")
        workloads.append(WorkloadSetting(name=w.name, router=router, groups=groups))
    return Deployment(workloads=tuple(workloads))


# -- budget and engine rules -------------------------------------------------------------------


def budget_violation(problem: Problem, deployment: Deployment) -> tuple[float, list[str]]:
    """How far the deployment exceeds the pools: ``(max relative excess, messages)``; ``0.0``
    and no messages when it fits. Never adjusts the deployment."""
    worst = 0.0
    messages = []
    for pool in problem.pools:
        groups = [g for w in deployment.workloads for g in w.groups if g.pool == pool.name]
        used = sum(g.gpus for g in groups)
        nodes = nodes_needed(pool, [(g.gpus_per_instance, g.count) for g in groups])
        if used > pool.count:
            worst = max(worst, (used - pool.count) / pool.count)
            messages.append(f"{pool.name}: {used} GPUs > {pool.count}")
        if nodes > pool.nodes:
            worst = max(worst, (nodes - pool.nodes) / pool.nodes)
            messages.append(f"{pool.name}: {nodes} nodes > {pool.nodes}")
    return worst, messages


def engine_violation(deployment: Deployment) -> tuple[float, list[str]]:
    """vLLM's rule ``max_num_batched_tokens >= max_num_seqs``: ``(count of groups breaking it,
    messages)``."""
    messages = [f"{w.name}: {g.slot} has max_num_batched_tokens {g.max_num_batched_tokens} < "
                f"max_num_seqs {g.max_num_seqs}"
                for w in deployment.workloads for g in w.groups
                if g.max_num_batched_tokens < g.max_num_seqs]
    return float(len(messages)), messages


# -- scenarios ---------------------------------------------------------------------------------

_NO_SOLVER = SolverReport(status=SolveStatus.FEASIBLE, termination="simulated", time_s=0.0,
                          gap=None, objective=None, objective_bound=None)


def _skeleton_group(w: str, g: GroupSetting) -> InstanceGroup:
    return InstanceGroup(
        name=f"{w}/{g.slot}", workload=w, pool=g.pool, hardware=g.hardware, role=g.role,
        count=g.count, tp=g.tp, pp=g.pp, ep=g.ep, gpus_per_instance=g.gpus_per_instance,
        gpus=g.gpus, max_num_seqs=g.max_num_seqs, max_num_batched_tokens=g.max_num_batched_tokens,
        enable_chunked_prefill=g.enable_chunked_prefill,
        capacity_per_instance_per_s=g.capacity_per_instance_per_s,
        rate_per_instance_per_s=g.capacity_per_instance_per_s, utilization=1.0, batch=0.0,
        ttft_ms=None, tpot_ms=None, tpot_mean_ms=None, limited_by="", cost_per_hour=None)


def part_scenario(problem: Problem, ws: WorkloadSetting, part: Part, rate: float,
                  num_requests: int, seed: int) -> dict[str, Any]:
    """The simulator scenario (as a dict) of one part of a workload at ``rate`` req/s: the
    planner's :func:`to_scenario` of a plan holding just these groups, with the router, the
    number of requests and the seed set."""
    from servingcast.planner.export import to_scenario

    w = problem.workload(ws.name)
    groups = tuple(_skeleton_group(ws.name, g) for g in ws.part_groups(part))
    agg = rate if part == "aggregated" else 0.0
    wp = WorkloadPlan(
        name=ws.name, model=w.model, precision=w.precision, input_len_mean=0.0,
        output_len_mean=0.0, demand_per_s=w.demand_per_s, served_rate_per_s=rate,
        aggregated_rate_per_s=agg, disaggregated_rate_per_s=rate - agg, input_tokens_per_s=0.0,
        output_tokens_per_s=0.0, gpus=sum(g.gpus for g in groups), tokens_per_s_per_gpu=0.0,
        tokens_per_s_per_user=0.0, ttft_ms=None, tpot_ms=None, tpot_mean_ms=None,
        ttft_limit_ms=w.slo.ttft_s * 1e3, tpot_limit_ms=w.slo.tpot_s * 1e3,
        attainment=w.slo.attainment, pd_ratio=None, prefill_instances=0, decode_instances=0,
        kv_transfer_gb_s=0.0, groups=groups)
    plan = Plan(problem=problem.name, label="trial", status=SolveStatus.FEASIBLE,
                objective=problem.objective, objective_value=0.0, mode="aggregated",
                workloads=(wp,), gpus_used={}, gpus_available={}, total_gpus=wp.gpus,
                cost_per_hour=None, served_rate_per_s=rate, output_tokens_per_s=0.0,
                tokens_per_s_per_gpu=0.0, solver=_NO_SOLVER)
    data = to_scenario(problem, plan, ws.name, part)
    data["router"] = {"kind": ws.router}
    data["workload"] = {**data["workload"], "num_requests": num_requests}
    data["seed"] = seed
    return data
