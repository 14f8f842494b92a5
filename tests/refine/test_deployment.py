"""A trial's deployment: its groups are engine groups, and its scenario is the plan's export."""

from __future__ import annotations

import pytest

from servingcast.groups import EngineGroup, unique_labels
from servingcast.planner.export import default_router, groups_scenario, to_scenario
from servingcast.planner.problem import Problem, problem_from_dict
from servingcast.refine.deployment import (
    GroupSetting,
    WorkloadSetting,
    deployment_of,
    part_scenario,
    plan_slots,
)

from .conftest import planning_of, tiny_data, tiny_problem


def _problems() -> list[Problem]:
    """The tiny problem, and the same workload on 8 GPUs (several groups)."""
    wide = tiny_data(pools=[{"name": "h100", "hardware": "h100-sxm", "count": 8}])
    return [tiny_problem(), problem_from_dict(wide)]


@pytest.mark.parametrize("index", [0, 1])
def test_part_scenario_is_the_plan_export_of_the_same_groups(index: int) -> None:
    problem = _problems()[index]
    plan = planning_of(problem).plan
    deployment = deployment_of(problem, plan)
    checked = 0
    for wp in plan.workloads:
        ws = deployment.workload(wp.name)
        for part in ws.parts:
            rate = wp.aggregated_rate_per_s if part == "aggregated" else (
                wp.disaggregated_rate_per_s)
            exported = to_scenario(problem, plan, wp.name, part)
            w = problem.workload(wp.name)
            ws_default = ws.model_copy(update={"router": default_router(w, part)})
            trial = part_scenario(problem, ws_default, part, rate,
                                  exported["workload"]["num_requests"], exported["seed"])
            # Routing weights: the plan's planned req/s against the trial's capacities; a
            # role's groups share one utilisation, so the two are proportional.
            weights = [(a.pop("weight", None), b.pop("weight", None)) for a, b in
                       zip(exported["instance_groups"], trial["instance_groups"], strict=True)]
            assert trial == exported
            planned = [a for a, _ in weights if a is not None]
            capacity = [b for _, b in weights if b is not None]
            assert len(planned) == len(capacity)
            if planned:
                ratio = [p / c for p, c in zip(planned, capacity, strict=True)]
                assert max(ratio) == pytest.approx(min(ratio), rel=1e-4)
            checked += 1
    assert checked >= 1


def test_the_scenario_groups_are_the_trial_slots_in_order() -> None:
    problem = tiny_problem()
    plan = planning_of(problem).plan
    deployment = deployment_of(problem, plan)
    ws = deployment.workloads[0]
    part = ws.parts[0]
    data = part_scenario(problem, ws, part, 1.0, 100, 3)
    groups = ws.part_groups(part)
    assert [g["name"] for g in data["instance_groups"]] == [g.slot for g in groups]
    assert [g["name"] for g in data["instance_groups"]] == unique_labels(groups)
    assert [key for key, _ in plan_slots(plan, ws.name)] == [g.slot for g in ws.groups]
    assert data["seed"] == 3 and data["workload"]["num_requests"] == 100
    assert data["router"] == {"kind": ws.router}


def test_a_trial_group_is_an_engine_group() -> None:
    problem = tiny_problem()
    plan = planning_of(problem).plan
    group = deployment_of(problem, plan).workloads[0].groups[0]
    assert isinstance(group, EngineGroup)
    planned = plan.workloads[0].groups[0]
    assert group.engine_group() == planned.engine_group()
    assert group.gpus == planned.gpus


def test_groups_scenario_refuses_a_group_of_the_other_part() -> None:
    from servingcast.errors import ConfigError

    problem = tiny_problem()
    group = EngineGroup(workload="chat", pool="h100", hardware="h100-sxm", role="decode",
                        count=1, tp=1, pp=1, ep=1, gpus_per_instance=1, max_num_seqs=8,
                        max_num_batched_tokens=64, enable_chunked_prefill=False)
    with pytest.raises(ConfigError, match="the aggregated part cannot hold decode groups"):
        groups_scenario(problem, "chat", "aggregated", [group], 1.0, [1.0])


def test_a_setting_stored_before_groups_named_their_workload_loads() -> None:
    stored = {"name": "chat", "router": "round_robin", "groups": [{
        "slot": "decode-h100-tp1", "pool": "h100", "hardware": "h100-sxm", "role": "decode",
        "tp": 1, "pp": 1, "ep": 1, "gpus_per_instance": 1, "count": 2, "max_num_seqs": 8,
        "max_num_batched_tokens": 64, "enable_chunked_prefill": False,
        "capacity_per_instance_per_s": 1.5}]}
    ws = WorkloadSetting.model_validate(stored)
    assert isinstance(ws.groups[0], GroupSetting)
    assert ws.groups[0].workload == "chat" and ws.groups[0].gpus == 2
