"""A deployment as the refinement sees it: instance groups with counts and engine limits, and a
router, per workload — what a trial chooses and what the simulator runs.

A :class:`Deployment` carries no prediction; it is the decision only. This module also checks
a deployment against the pools (GPUs and whole nodes, the same rules as the MILP's constraints
1–2, recomputed here) and vLLM's engine rule (``max_num_batched_tokens >= max_num_seqs``), and
turns one part of a workload (its aggregated groups, or its prefill and decode groups) into a
simulator scenario through the planner's own
:func:`servingcast.planner.export.groups_scenario` (which :func:`servingcast.planner.to_scenario`
calls too), so the scenario written for the refined plan is exactly the one that was simulated.
A trial's groups are :class:`~servingcast.groups.EngineGroup` s, named by the same grammar.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from servingcast.groups import (
    ROLES,
    EngineGroup,
    Part,
    Role,
    group_label,
    stable_dump,
    unique_labels,
)
from servingcast.planner.plan import InstanceGroup, Plan
from servingcast.planner.problem import Problem
from servingcast.planner.verify import nodes_needed

_FROZEN = ConfigDict(extra="forbid", frozen=True)

__all__ = ["ROLES", "ROUTERS", "Deployment", "GroupSetting", "Part", "Role", "WorkloadSetting"]

#: The routers a trial may pick, the planner's scenario default first.
ROUTERS = ("least_outstanding", "round_robin", "least_kv_load", "power_of_two")


class GroupSetting(EngineGroup):
    """An :class:`~servingcast.groups.EngineGroup` in a trial: its search ``slot`` (the group's
    :func:`~servingcast.groups.group_label` in the plan it came from) and the planner's
    capacity of one instance."""

    model_config = _FROZEN

    slot: str
    capacity_per_instance_per_s: float = 0.0
    """The planner's req/s of one instance: a group's share of its role's traffic, when a role
    has several groups, is ``count × capacity`` (the exported scenario's routing weight)."""

    @property
    def gpus(self) -> int:
        """GPUs of the whole group."""
        return self.count * self.gpus_per_instance

    @model_serializer(mode="wrap")
    def _stable(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Studies and plan.json keep the fields and order they had; ``workload`` is the
        # enclosing WorkloadSetting's name (filled back in on loading).
        return stable_dump(GroupSetting, handler(self), _SETTING_FIELDS, omit=("workload",))


#: The fields of a stored trial group, in their order.
_SETTING_FIELDS = (
    "slot", "pool", "hardware", "role", "tp", "pp", "ep", "gpus_per_instance", "count",
    "max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill",
    "capacity_per_instance_per_s")


class WorkloadSetting(BaseModel):
    """One workload's groups (each with ``count >= 1``) and its router."""

    model_config = _FROZEN

    name: str
    router: str
    groups: tuple[GroupSetting, ...]

    @model_validator(mode="before")
    @classmethod
    def _groups_workload(cls, data: Any) -> Any:
        """Groups stored by studies before groups named their workload get this one's."""
        if isinstance(data, dict) and isinstance(data.get("groups"), (list, tuple)):
            data = {**data, "groups": [
                {**g, "workload": data.get("name")} if isinstance(g, dict)
                and "workload" not in g else g for g in data["groups"]]}
        return data

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
    """The search slot of a shape: its :func:`~servingcast.groups.group_label`."""
    return group_label(role, pool, tp, pp, ep, occurrence)


def plan_slots(plan: Plan, workload: str) -> list[tuple[str, InstanceGroup]]:
    """The groups of ``workload`` in ``plan`` with their slot keys
    (:func:`~servingcast.groups.unique_labels`), in the plan's order."""
    wp = next((w for w in plan.workloads if w.name == workload), None)
    groups = [g for g in (wp.groups if wp is not None else ()) if g.count > 0]
    return list(zip(unique_labels(groups), groups, strict=True))


def deployment_of(problem: Problem, plan: Plan) -> Deployment:
    """The deployment a MILP plan describes (with the scenario's default router)."""
    from servingcast.planner.export import default_router

    workloads = []
    for w in problem.workloads:
        groups = tuple(GroupSetting(
            **g.engine_group().model_dump(), slot=key,
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

def part_scenario(problem: Problem, ws: WorkloadSetting, part: Part, rate: float,
                  num_requests: int, seed: int) -> dict[str, Any]:
    """The simulator scenario (as a dict) of one part of a workload at ``rate`` req/s: the
    planner's :func:`~servingcast.planner.export.groups_scenario` of the part's groups (each
    weighted by its planned ``count × capacity``), with the router, the number of requests and
    the seed set — the scenario a MILP plan of the same groups exports, so the scenario written
    for the refined plan is exactly the one that was simulated."""
    from servingcast.planner.export import groups_scenario

    groups = ws.part_groups(part)
    data = groups_scenario(problem, ws.name, part, groups, rate,
                           [g.capacity_per_instance_per_s * g.count for g in groups])
    data["router"] = {"kind": ws.router}
    data["workload"] = {**data["workload"], "num_requests": num_requests}
    data["seed"] = seed
    return data
