"""Engine groups and their one naming grammar: names are made, never parsed back."""

from __future__ import annotations

import dataclasses

import pytest

from servingcast.groups import (
    EngineGroup,
    group_label,
    group_name,
    group_of_instances,
    instance_name,
    unique_labels,
)
from servingcast.planner.candidates import Config


def _group(**kw: object) -> EngineGroup:
    data: dict[str, object] = dict(
        workload="chat", pool="h100", hardware="h100-sxm", role="decode", count=2, tp=2, pp=1,
        ep=1, gpus_per_instance=2, max_num_seqs=64, max_num_batched_tokens=512,
        enable_chunked_prefill=False)
    data.update(kw)
    return EngineGroup.model_validate(data)


def test_group_name_is_the_candidate_key() -> None:
    cfg = Config(workload="chat", pool="h100", role="prefill", tp=2, pp=1, ep=1,
                 max_num_seqs=256, max_num_batched_tokens=8192)
    assert group_name("chat", "h100", "prefill", 2, 1, 1, 256, 8192) == (
        "chat/h100/prefill/tp2-pp1-ep1/s256-k8192")
    assert cfg.key == group_name("chat", "h100", "prefill", 2, 1, 1, 256, 8192)
    group = EngineGroup.from_config(cfg, hardware="h100-sxm", count=1, gpus_per_instance=2,
                                    enable_chunked_prefill=True)
    assert group.key == cfg.key


def test_every_config_field_is_an_engine_group_field() -> None:
    """A field added to the candidate configuration must reach the groups built from it."""
    missing = {f.name for f in dataclasses.fields(Config)} - set(EngineGroup.model_fields)
    assert not missing


def test_labels_are_valid_scenario_names_and_repeat_with_a_suffix() -> None:
    assert group_label("decode", "h200", 4, 1, 1) == "decode-h200-tp4"
    assert group_label("prefill", "h100 east", 2, 2, 4) == "prefill-h100-east-tp2-pp2-ep4"
    a, b = _group(), _group(count=5)
    c = _group(role="prefill", enable_chunked_prefill=True)
    assert unique_labels([a, c, b]) == ["decode-h100-tp2", "prefill-h100-tp2",
                                        "decode-h100-tp2-2"]
    assert instance_name("decode-h100-tp2", 3) == "decode-h100-tp2/3"


def test_group_of_instances_numbers_groups_one_after_the_other() -> None:
    assert group_of_instances([2, 1, 3]) == (0, 0, 1, 2, 2, 2)
    assert group_of_instances([]) == ()


def test_engine_group_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="tp"):
        _group(tp=0)
    with pytest.raises(ValueError, match="extra"):
        _group(colour="red")
    assert _group().part == "disaggregated" and _group(role="aggregated").part == "aggregated"


def test_every_simulated_instance_maps_to_its_group_without_parsing() -> None:
    """Round trip: groups -> scenario -> simulation; instance ``i`` belongs to group
    ``group_of_instances(counts)[i]``, and the simulator named it after that group."""
    from servingcast.planner.export import groups_scenario
    from servingcast.planner.problem import problem_from_dict
    from servingcast.sim import scenario_from_dict, simulate

    problem = problem_from_dict({
        "name": "roundtrip",
        "pools": [{"name": "h100", "hardware": "h100-sxm", "count": 8}],
        "workloads": [{"name": "chat", "model": "llama-3.1-8b", "precision": "bf16",
                       "input_len": 512, "output_len": 32,
                       "slo": {"ttft": "1 s", "tpot": "50 ms", "attainment": 0.9}}],
    })
    groups = [
        _group(role="prefill", count=2, tp=1, gpus_per_instance=1, max_num_seqs=16,
               max_num_batched_tokens=2048, enable_chunked_prefill=True),
        _group(role="decode", count=1, tp=2, max_num_seqs=64, max_num_batched_tokens=512),
        _group(role="decode", count=3, tp=1, gpus_per_instance=1, max_num_seqs=32,
               max_num_batched_tokens=512),
    ]
    data = groups_scenario(problem, "chat", "disaggregated", groups, 2.0, [2.0, 1.0, 1.0])
    data["workload"]["num_requests"] = 40
    scenario = scenario_from_dict(data)
    labels = unique_labels(groups)
    assert [g.name for g in scenario.instance_groups] == labels
    result = simulate(scenario)
    names = result.requests.instance_names
    owner = group_of_instances([g.count for g in groups])
    assert len(names) == len(owner) == 6
    seen: dict[int, int] = {}
    for name, index in zip(names, owner, strict=True):
        k = seen.get(index, 0)
        seen[index] = k + 1
        assert name == instance_name(labels[index], k)
    # Every request was served by instances of the right role.
    done = result.requests.completed
    assert done.any()
    for column, role in ((result.requests.prefill_instance, "prefill"),
                         (result.requests.decode_instance, "decode")):
        used = column[done]
        assert all(groups[owner[i]].role == role for i in used.tolist())
