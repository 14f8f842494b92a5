"""Attention data-parallel + expert-parallel (DEP) decode engines in the planner."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from servingcast.errors import ConfigError
from servingcast.planner import PlanningResult, load_problem, solve
from servingcast.planner.candidates import CandidateBuilder, Config
from servingcast.planner.export import to_scenario
from servingcast.planner.problem import SearchSpace, problem_from_dict
from servingcast.planner.simcheck import check_plan

from .conftest import PROBLEMS


def qwen_problem(**search: Any) -> dict[str, Any]:
    """Qwen3-235B-A22B fp8 on 16 H200, disaggregated, DEP allowed for decode."""
    return {
        "name": "qwen3-235b-dep",
        "pools": [{"name": "h200", "hardware": "h200-sxm", "count": 16}],
        "workloads": [{"name": "chat", "model": "qwen3-235b-a22b", "precision": "fp8",
                       "input_len": 1500, "output_len": 400,
                       "slo": {"ttft": "2 s", "tpot": "60 ms", "attainment": 0.9}}],
        "search": {"modes": ["disaggregated"], "tp": [1, 8], "pp": [1], "ep": [1, 8],
                   "max_num_seqs": [64, 128], "max_num_batched_tokens": [4096],
                   "attention_dp": [1, 8, 16], **search},
    }


@functools.cache
def solved_deepseek() -> PlanningResult:
    return solve(load_problem(PROBLEMS / "deepseek-v3-dep-h200x32.yaml"), top_k=1,
                 pareto_factors=None, compare_modes=False)


def test_attention_dp_is_off_by_default_and_dumps_only_when_set() -> None:
    assert SearchSpace().attention_dp == (1,)
    assert "attention_dp" not in SearchSpace().model_dump()
    assert SearchSpace(attention_dp=(16, 1, 8, 8)).attention_dp == (1, 8, 16)
    assert SearchSpace(attention_dp=(1, 8)).model_dump()["attention_dp"] == (1, 8)


@pytest.mark.parametrize(("change", "message"), [
    ({"workloads": [{"name": "chat", "model": "llama-3.1-8b", "precision": "fp8",
                     "input_len": 100, "output_len": 100,
                     "slo": {"ttft": "1 s", "tpot": "50 ms"}}]},
     r"search\.attention_dp: attention_dp \[8, 16\] spreads experts over the ranks, and "
     r"llama-3.1-8b \(workload 'chat'\) is dense"),
    ({"search_modes": ["aggregated"]}, "applies to decode engines, and search.modes is "
     r"\['aggregated'\]. To fix: add disaggregated"),
    ({"pools": [{"name": "h200", "hardware": "h200-sxm", "count": 8}],
      "search_tp": [8]}, r"attention_dp=8 x tp=8 needs 64 GPUs per engine, the largest pool "
     "has 8"),
    ({"search_attention_dp": [0, 8]}, "every value must be >= 1"),
])
def test_bad_attention_dp_is_a_clear_error(change: dict[str, Any], message: str) -> None:
    data = qwen_problem()
    for key, value in change.items():
        if key.startswith("search_"):
            data["search"][key[len("search_"):]] = value
        else:
            data[key] = value
    with pytest.raises(ConfigError, match=message):
        problem_from_dict(data)


def test_keys_unchanged_without_dep_and_tagged_with_it() -> None:
    plain = Config("chat", "h200", "decode", 8, 1, 8, 256, 256)
    assert plain.key == "chat/h200/decode/tp8-pp1-ep8/s256-k256"
    dep = Config("chat", "h200", "decode", 1, 1, 16, 4096, 4096, attn_dp=16)
    assert dep.key == "chat/h200/decode/tp1-pp1-ep16-dp16/s4096-k4096"


def test_qwen3_235b_on_16_h200_is_plannable_with_dep() -> None:
    problem = problem_from_dict(qwen_problem())
    cands = CandidateBuilder(problem).candidates()
    dep = [c for c in cands.candidates if c.config.attn_dp > 1]
    assert {c.config.attn_dp for c in dep} == {8, 16}
    for c in dep:
        cfg = c.config
        assert cfg.role == "decode" and cfg.pp == 1
        assert cfg.ep == cfg.attn_dp * cfg.tp
        assert c.gpus == cfg.attn_dp * cfg.tp
        assert cfg.max_num_seqs % cfg.attn_dp == 0  # the engine's cap: per-rank caps x ranks
        assert c.rate > 0 and c.capacity.tpot_s is not None and c.capacity.tpot_s <= 0.06
    # Only decode engines are DEP, and without attention_dp none is.
    assert all(c.config.attn_dp == 1 for c in cands.candidates if c.config.role != "decode")
    plain = CandidateBuilder(problem_from_dict(qwen_problem(attention_dp=[1]))).candidates()
    assert all(c.config.attn_dp == 1 for c in plain.candidates)
    result = solve(problem, top_k=1, pareto_factors=None, compare_modes=False)
    assert result.plan.total_gpus <= 16
    served = result.plan.workloads[0].disaggregated_rate_per_s
    assert served > 0


def test_planner_picks_dep_for_deepseek_decode_and_it_simulates() -> None:
    """The shipped problem: DeepSeek-V3 on 32 H200 decodes on a DEP engine, serves more than
    without DEP, and the exported plan meets its SLO attainment in simulation."""
    result = solved_deepseek()
    plan = result.plan
    decode = [g for g in plan.groups if g.role == "decode"]
    assert decode and all(g.attn_dp > 1 for g in decode)
    for g in decode:
        assert g.gpus_per_instance == g.attn_dp * g.tp and g.ep == g.attn_dp * g.tp
        assert g.name.endswith(f"-dp{g.attn_dp}/s{g.max_num_seqs}-k{g.max_num_batched_tokens}") \
            or f"-dp{g.attn_dp}/" in g.name
    data = load_problem(PROBLEMS / "deepseek-v3-dep-h200x32.yaml").model_dump(mode="json")
    data["search"]["attention_dp"] = [1]
    without = solve(problem_from_dict(data), top_k=1, pareto_factors=None, compare_modes=False)
    assert plan.workloads[0].disaggregated_rate_per_s > \
        1.2 * without.plan.workloads[0].disaggregated_rate_per_s
    checks = check_plan(result.problem, plan)
    assert checks and all(c.attainment >= c.target for c in checks)


def test_export_carries_attn_dp_and_per_rank_limits() -> None:
    result = solved_deepseek()
    scenario = to_scenario(result.problem, result.plan, "chat")
    decode = [g for g in scenario["instance_groups"] if g["role"] == "decode"]
    plan_decode = [g for g in result.plan.groups if g.role == "decode"]
    for entry, g in zip(decode, plan_decode, strict=True):
        assert entry["attn_dp"] == g.attn_dp
        assert entry["max_num_seqs"] == -(-g.max_num_seqs // g.attn_dp)
        assert entry["name"].endswith(f"-dp{g.attn_dp}")
    for entry in scenario["instance_groups"]:
        if entry["role"] == "prefill":
            assert "attn_dp" not in entry
