"""From a scenario to what each instance group is: cost model, KV capacity, limits.

Everything here comes from the cost model: the step time (:class:`CostModel`, with a co-located
draft model for speculative decoding), the KV capacity in blocks
(:func:`~servingcast.costmodel.memory.memory_plan`, with the draft's share of memory from
:func:`~servingcast.costmodel.spec.draft_memory_extras`) and the bytes of KV a prefill→decode
transfer moves per token (:func:`~servingcast.costmodel.memory.kv_bytes_per_token`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from servingcast.costmodel.memory import (
    MemoryPlan,
    kv_bytes_per_token,
    memory_plan,
    require_fit,
)
from servingcast.costmodel.parallel import Parallelism
from servingcast.costmodel.spec import (
    MTP,
    draft_cost_model,
    draft_memory_extras,
    draft_parallelism,
    expected_tokens_per_step,
)
from servingcast.costmodel.step import CostModel
from servingcast.errors import ConfigError, InfeasibleError
from servingcast.sim.scenario import InstanceGroup, Scenario
from servingcast.specs.catalog import get_hardware, get_model
from servingcast.specs.precision import Precision, get_precision

Loc = tuple[Any, ...]


@dataclass(frozen=True)
class GroupPlan:
    """One instance group, resolved. Capacities are per instance."""

    index: int
    spec: InstanceGroup
    cost_model: CostModel
    draft: CostModel | None
    memory: MemoryPlan
    num_blocks: int
    max_model_len: int
    kv_bytes_per_token: float
    tokens_per_step: float
    num_speculative_tokens: int

    @property
    def capacity_tokens(self) -> int:
        """KV tokens one instance holds."""
        return self.num_blocks * self.spec.block_size


def _precision(scenario: Scenario) -> Precision:
    precision = get_precision(scenario.precision)
    if scenario.kv_cache_dtype is not None:
        precision = precision.with_kv_cache_dtype(scenario.kv_cache_dtype)
    return precision


def _plan(scenario: Scenario, index: int, precision: Precision) -> GroupPlan:
    group = scenario.instance_groups[index]
    model = get_model(scenario.model)
    hardware = get_hardware(group.hardware)
    efficiency = None if scenario.efficiency == "calibrated" else float(scenario.efficiency)
    cm = CostModel(model, hardware, precision, Parallelism(tp=group.tp, pp=group.pp, ep=group.ep,
                                                         attn_dp=group.attn_dp),
                   efficiency)
    draft = None
    extra_w = extra_kv = 0.0
    spec = group.speculative or scenario.speculative
    if spec is not None and group.role != "prefill":
        if spec.draft_model == MTP:  # the target's own MTP layer, sharded like its layers
            draft = draft_cost_model(cm, MTP)
        else:
            draft_model = get_model(spec.draft_model)
            draft = CostModel(draft_model, hardware, precision,
                              draft_parallelism(draft_model, group.tp), efficiency)
        extra_w, extra_kv = draft_memory_extras(draft, group.pp)
    plan = memory_plan(cm, group.gpu_memory_utilization, group.max_num_batched_tokens,
                       group.max_num_seqs, group.block_size, extra_w, extra_kv)
    require_fit(cm, plan, 1, 1)
    return GroupPlan(
        index=index, spec=group, cost_model=cm, draft=draft, memory=plan,
        num_blocks=plan.kv_capacity_tokens // group.block_size,
        max_model_len=group.max_model_len or model.max_position_embeddings,
        kv_bytes_per_token=kv_bytes_per_token(cm),
        tokens_per_step=(1.0 if draft is None or spec is None
                         else expected_tokens_per_step(spec.acceptance_rate,
                                                       spec.num_speculative_tokens)),
        num_speculative_tokens=0 if draft is None or spec is None
        else spec.num_speculative_tokens,
    )


def _roles(scenario: Scenario) -> list[tuple[Loc, str]]:
    roles = {g.role for g in scenario.instance_groups}
    problems: list[tuple[Loc, str]] = []
    if "aggregated" in roles and len(roles) > 1:
        problems.append((("instance_groups",), "aggregated groups cannot be mixed with prefill "
                         "or decode groups. To fix: make every group aggregated, or split them "
                         "into prefill and decode groups"))
    elif roles - {"aggregated"} and roles != {"prefill", "decode"}:
        missing = ({"prefill", "decode"} - roles).pop()
        problems.append((("instance_groups",), f"a disaggregated cluster needs a {missing} "
                         f"group. To fix: add a group with role: {missing}"))
    if scenario.disaggregated and scenario.network is None:
        problems.append((("network",), "a disaggregated cluster moves KV caches from prefill to "
                         "decode instances. To fix: add network: {bandwidth: '100 GB/s', "
                         "latency: '10 us'}"))
    if not scenario.disaggregated and scenario.decode_router is not None:
        problems.append((("decode_router",), "only disaggregated clusters (prefill and decode "
                         "groups) use a decode router. To fix: remove decode_router"))
    return problems


def _weights(scenario: Scenario) -> list[tuple[Loc, str]]:
    """Weights split a pool's traffic: on every group of the pool or on none."""
    problems: list[tuple[Loc, str]] = []
    groups = list(enumerate(scenario.instance_groups))
    for pool, members in (("aggregated or prefill", [(i, g) for i, g in groups
                                                      if g.role != "decode"]),
                          ("decode", [(i, g) for i, g in groups if g.role == "decode"])):
        weighted = [g.name for _, g in members if g.weight is not None]
        if not weighted or len(weighted) == len(members):
            continue
        for i, g in members:
            if g.weight is None:
                problems.append((("instance_groups", i), (
                    f"group {g.name!r} has no weight, but the other {pool} groups "
                    f"({', '.join(weighted)}) have one: weights split a role's traffic, so "
                    f"they go on every {pool} group or on none. To fix: add weight: to "
                    f"group {g.name!r}, or remove weight: from {', '.join(weighted)}")))
    return problems


def plan_groups(scenario: Scenario) -> tuple[list[GroupPlan], list[tuple[Loc, str]]]:
    """Every group resolved, and the problems found (location in the scenario, message)."""
    problems = _roles(scenario) + _weights(scenario)
    try:
        precision = _precision(scenario)
    except ConfigError as exc:
        return [], [*problems, (("kv_cache_dtype",), str(exc))]
    plans = []
    for index in range(len(scenario.instance_groups)):
        try:
            plans.append(_plan(scenario, index, precision))
        except (ConfigError, InfeasibleError) as exc:
            problems.append((("instance_groups", index), str(exc)))
    return plans, problems


def check_cluster(scenario: Scenario) -> list[tuple[Loc, str]]:
    """Problems of the cluster pydantic cannot see (see :func:`plan_groups`)."""
    return plan_groups(scenario)[1]


def build_groups(scenario: Scenario) -> list[GroupPlan]:
    """Every group resolved; :class:`ConfigError` listing the problems otherwise."""
    plans, problems = plan_groups(scenario)
    if problems:
        raise ConfigError("\n".join(f"{'.'.join(str(p) for p in loc)}: {message}"
                                    for loc, message in problems))
    return plans
