"""The planner's own result types: a status enum, the solver report, and the frozen plan.

The solver's termination is mapped to :class:`SolveStatus` in exactly one place
(:func:`servingcast.planner.milp.solve_model`). Times are in ms in the plan (as users read them)
and seconds in the solver report.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from servingcast.groups import EngineGroup, stable_dump

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class SolveStatus(str, Enum):
    """How a solve ended."""

    OPTIMAL = "optimal"
    """Proven optimal within the MIP gap."""
    FEASIBLE = "feasible"
    """Stopped (time limit) with a solution that is not proven optimal."""
    INFEASIBLE = "infeasible"
    """No allocation meets the constraints."""
    NO_SOLUTION = "no_solution"
    """Stopped (time limit) before finding any solution."""
    ERROR = "error"
    """The solver failed."""

    @property
    def has_solution(self) -> bool:
        """Whether a plan can be read from the solve."""
        return self in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)


class SolverReport(BaseModel):
    """What the MILP solver did: status, time, gap, objective and bound of the main objective."""

    model_config = _FROZEN

    solver: str = "highs"
    status: SolveStatus
    termination: str
    time_s: float
    gap: float | None
    objective: float | None
    objective_bound: float | None
    solves: int = 1
    variables: int = 0
    constraints: int = 0


class InstanceGroup(EngineGroup):
    """``count`` identical instances of one configuration (an :class:`EngineGroup`), and their
    predicted behaviour.

    ``name`` is the candidate's key (:func:`servingcast.groups.group_name`); ``gpus`` those of
    the whole group. ``rate_per_instance_per_s`` is the planned load of each instance
    (``utilization`` times its capacity); ``batch`` the mean number of decoding requests there;
    ``ttft_ms`` and ``tpot_ms`` the predicted values at the attainment quantile, ``tpot_mean_ms``
    the mean TPOT.

    ``plan.json`` keeps its fields and their order; the engine-group fields it did not have
    (``prefix_caching``, ``spec_tokens``, ``draft_model``, ``dp``, ``engine``) are written only
    when they differ from their defaults, so older plans load and read the same.
    """

    model_config = _FROZEN

    name: str
    gpus: int
    capacity_per_instance_per_s: float
    rate_per_instance_per_s: float
    utilization: float
    batch: float
    ttft_ms: float | None
    tpot_ms: float | None
    tpot_mean_ms: float | None
    limited_by: str
    cost_per_hour: float | None

    @model_serializer(mode="wrap")
    def _plan_json_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return stable_dump(InstanceGroup, handler(self), _PLAN_GROUP_FIELDS)


#: The fields of a plan's group, in ``plan.json``'s order.
_PLAN_GROUP_FIELDS = (
    "name", "workload", "pool", "hardware", "role", "count", "tp", "pp", "ep",
    "gpus_per_instance", "gpus", "max_num_seqs", "max_num_batched_tokens",
    "enable_chunked_prefill", "capacity_per_instance_per_s", "rate_per_instance_per_s",
    "utilization", "batch", "ttft_ms", "tpot_ms", "tpot_mean_ms", "limited_by", "cost_per_hour")


def pd_ratio(prefill: int, decode: int) -> str | None:
    """``"2:3"``, prefill to decode instances reduced by their gcd (:attr:`WorkloadPlan.pd_ratio`);
    None without disaggregated instances."""
    if prefill == 0 and decode == 0:
        return None
    g = math.gcd(prefill, decode) or 1
    return f"{prefill // g}:{decode // g}"


class WorkloadPlan(BaseModel):
    """One workload's share of the plan. ``ttft_ms`` and ``tpot_ms`` are the worst group's at
    the attainment quantile; ``tokens_per_s_per_user`` is ``1000 / tpot_mean_ms``, the mean over
    the requests."""

    model_config = _FROZEN

    name: str
    model: str
    precision: str
    input_len_mean: float
    output_len_mean: float
    demand_per_s: float | None
    served_rate_per_s: float
    aggregated_rate_per_s: float
    disaggregated_rate_per_s: float
    input_tokens_per_s: float
    output_tokens_per_s: float
    gpus: int
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    ttft_ms: float | None
    tpot_ms: float | None
    tpot_mean_ms: float | None
    ttft_limit_ms: float
    tpot_limit_ms: float
    attainment: float
    pd_ratio: str | None
    prefill_instances: int
    decode_instances: int
    kv_transfer_gb_s: float
    groups: tuple[InstanceGroup, ...]


class Plan(BaseModel):
    """A deployment: instance groups per workload, GPUs, cost, and how it was found."""

    model_config = _FROZEN

    problem: str
    label: str
    status: SolveStatus
    objective: str
    objective_value: float
    mode: Literal["aggregated", "disaggregated", "mixed", "empty"]
    workloads: tuple[WorkloadPlan, ...]
    gpus_used: dict[str, int]
    gpus_available: dict[str, int]
    total_gpus: int
    cost_per_hour: float | None
    served_rate_per_s: float
    output_tokens_per_s: float
    tokens_per_s_per_gpu: float
    solver: SolverReport
    refined: bool = False
    notes: tuple[str, ...] = ()

    @property
    def groups(self) -> tuple[InstanceGroup, ...]:
        """Every instance group of every workload."""
        return tuple(g for w in self.workloads for g in w.groups)

    def signature(self) -> tuple[tuple[str, int], ...]:
        """The groups as (name, count) pairs: equal for equal deployments."""
        return tuple(sorted((g.name, g.count) for g in self.groups))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return self.model_dump(mode="json")

    def __repr__(self) -> str:
        cost = "" if self.cost_per_hour is None else f", ${self.cost_per_hour:,.2f}/h"
        parts = []
        for w in self.workloads:
            groups = " + ".join(
                f"{g.count}x {g.role} {g.hardware} tp{g.tp}"
                + (f"pp{g.pp}" if g.pp > 1 else "") + (f"ep{g.ep}" if g.ep > 1 else "")
                for g in w.groups)
            parts.append(f"{w.name}: {w.served_rate_per_s:.2f} req/s on {groups or 'nothing'}")
        return (f"Plan({self.status.value}, {self.mode}, {self.total_gpus} GPUs{cost}; "
                + "; ".join(parts) + ")")

    __str__ = __repr__
