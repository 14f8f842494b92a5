"""The plan's groups are engine groups; plan.json keeps its fields and still loads."""

from __future__ import annotations

import json

from servingcast.groups import EngineGroup
from servingcast.planner.plan import _PLAN_GROUP_FIELDS, InstanceGroup, Plan, pd_ratio

from .conftest import cached_solve


def test_plan_groups_are_engine_groups_with_the_candidate_key() -> None:
    plan = cached_solve("quickstart").plan
    for g in plan.groups:
        assert isinstance(g, EngineGroup)
        assert g.gpus == g.count * g.gpus_per_instance
        assert g.name.startswith(f"{g.workload}/{g.pool}/{g.role}/tp{g.tp}-pp{g.pp}-ep{g.ep}/")


def test_plan_json_groups_keep_their_fields_and_order() -> None:
    plan = cached_solve("quickstart").plan
    data = json.loads(json.dumps(plan.to_dict()))
    for group in data["workloads"][0]["groups"]:
        assert tuple(group) == _PLAN_GROUP_FIELDS  # vLLM, no dp, no speculation: as before
    assert Plan.model_validate(data) == plan


def test_a_group_off_the_defaults_writes_its_engine_fields() -> None:
    group = cached_solve("quickstart").plan.groups[0]
    sglang = group.model_copy(update={"engine": "sglang", "prefix_caching": True})
    data = sglang.model_dump(mode="json")
    assert tuple(data)[:len(_PLAN_GROUP_FIELDS)] == _PLAN_GROUP_FIELDS
    assert data["engine"] == "sglang" and data["prefix_caching"] is True
    assert "dp" not in data and "spec_tokens" not in data
    assert InstanceGroup.model_validate(data) == sglang


def test_pd_ratio_is_reduced() -> None:
    assert pd_ratio(4, 6) == "2:3"
    assert pd_ratio(0, 0) is None
    assert pd_ratio(3, 0) == "1:0"
