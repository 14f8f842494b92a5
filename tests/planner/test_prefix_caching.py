"""Prefix caching as a planner decision (servingcast.planner.prefix_caching): the prompt mix of
workloads with shared prefixes, what a warm cache changes in the capacity, the enumeration, the
export, and the shipped agentic problem checked by simulation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import yaml

from servingcast.costmodel.memory import memory_plan
from servingcast.costmodel.parallel import Parallelism
from servingcast.costmodel.steady import chunked_prefill_sums, prefill_chunk_series
from servingcast.costmodel.step import CostModel
from servingcast.planner import load_problem, solve
from servingcast.planner.candidates import CandidateBuilder
from servingcast.planner.capacity import PrefillProfile, Shape, evaluate_profiles
from servingcast.planner.export import scenario_files
from servingcast.planner.prefix_caching import cached_context_sums, with_cached_context
from servingcast.planner.problem import SearchSpace, Workload
from servingcast.planner.simcheck import check_plan
from servingcast.sim import scenario_from_dict, simulate
from servingcast.specs.catalog import get_hardware, get_model
from servingcast.specs.precision import get_precision
from servingcast.workload import Requests, expected_cached_prefix_tokens

from .conftest import PROBLEMS, make_problem

AGENTIC = {"kind": "agentic", "turns": 8, "tool_time": "2 s"}


def _workload(prefix: dict[str, Any] | None = None, **fields: Any) -> Workload:
    data = {"name": "w", "model": "llama-3.1-8b", "input_len": 400, "output_len": 100,
            "slo": {"ttft": "1 s", "tpot": "50 ms"}, "prefix": prefix, **fields}
    return Workload.model_validate(data)


def test_shape_takes_the_history_growth() -> None:
    shape = Shape.of(_workload(AGENTIC))
    # Turns 0..7 of 400 new and 100 answer tokens: 400 + 3.5 * 500 = 2150 prompt tokens.
    assert shape.input_mean == pytest.approx(2150.0, rel=0.002)
    assert shape.input_max == 7 * 500 + 400
    assert shape.decode_context == pytest.approx(2150.0 + 100.0 / 2.0, rel=0.002)
    assert shape.seq_len == pytest.approx(2250, rel=0.002)
    assert shape.context_points is None and shape.resident_kv_tokens == 0
    plain = Shape.of(_workload())
    assert plain.input_mean == 400.0 and plain.input_points.size == 1


def test_shape_with_caching_prefills_only_the_uncached_tokens() -> None:
    w = _workload(AGENTIC)
    shape = Shape.of(w, prefix_caching=True, block_size=16)
    assert w.prefix is not None
    cached = expected_cached_prefix_tokens(w.prefix, 400.0, 100.0, 16)
    assert shape.context_points is not None
    assert float(shape.context_points.mean()) == pytest.approx(cached, rel=0.01)
    assert shape.input_mean == pytest.approx(2150.0 - cached, rel=0.02)
    assert shape.prompt_mean == pytest.approx(2150.0, rel=0.002)
    # Paused sessions keep their history: 2 s x 7/8 of the requests x (prompt + answer).
    assert shape.idle_token_s == pytest.approx(2.0 * 7 / 8 * 2250.0, rel=0.002)
    # A prefill instance caches a session's previous prompt, not the answer decoded elsewhere.
    front = Shape.of(w, prefix_caching=True, block_size=16, prefill_side=True)
    assert front.context_points is not None
    assert float(front.context_points.mean()) == pytest.approx(cached - 100.0 * 7 / 8, rel=0.01)
    assert front.idle_token_s == 0.0


def test_system_prompts_are_resident_and_shared() -> None:
    prefix = {"kind": "system_prompt", "num_groups": 4, "length": 1000}
    shape = Shape.of(_workload(prefix), prefix_caching=True, block_size=16)
    # 992 of the 1000 tokens are whole 16-token blocks: 408 tokens left to prefill.
    assert shape.input_points.tolist() == [408.0]
    assert shape.context_points is not None and shape.context_points.tolist() == [992.0]
    assert shape.resident_kv_tokens == 4 * 992
    assert shape.seq_len == 1400 + 100 - 992  # the shared blocks are held once, resident
    assert Shape.of(_workload(prefix)).seq_len == 1500


def test_cached_context_adds_the_attention_to_it() -> None:
    lens = np.asarray([300.0, 1000.0])
    context = np.asarray([2000.0, 500.0])
    stats, owner = prefill_chunk_series(lens, 256)
    cached = with_cached_context(stats, owner, context)
    # Chunk j of a prompt: t tokens after context + prior: t (c + prior) + t (t + 1) / 2 pairs.
    assert float(np.sum(cached.prefill_pairs[owner == 0])) == pytest.approx(
        300 * 2000 + 300 * 301 / 2)
    assert float(np.sum(cached.prefill_pairs[owner == 1])) == pytest.approx(
        1000 * 500 + 1000 * 1001 / 2)
    assert float(np.sum(cached.prefill_kv_tokens[owner == 1])) == pytest.approx(
        4 * 500 + 1000 + 256 * 4 * 3 / 2)
    pairs, kv, chunks = chunked_prefill_sums(lens, 256.0)
    p2, kv2 = cached_context_sums(pairs, kv, chunks, lens, context)
    assert p2.tolist() == pytest.approx([float(np.sum(cached.prefill_pairs[owner == i]))
                                         for i in range(2)])
    assert kv2.tolist() == pytest.approx([float(np.sum(cached.prefill_kv_tokens[owner == i]))
                                          for i in range(2)])


def test_planner_prefill_time_matches_the_simulator_with_a_cache_hit() -> None:
    """One prompt of 500 new tokens after a cached 4 000-token system prompt: the planner's
    prefill service time against the simulator's TTFT for the same prompt (cache warm)."""
    prefix = {"kind": "system_prompt", "num_groups": 1, "length": 4000}
    w = _workload(prefix, input_len=500)
    shape = Shape.of(w, prefix_caching=True, block_size=16)
    cm = CostModel(get_model("llama-3.1-8b"), get_hardware("h100-sxm"), get_precision("bf16"),
                   Parallelism(tp=1))
    plan = memory_plan(cm, 0.9, 8192, 8, 16)
    profile = PrefillProfile(cm, shape, plan, 8192, 1e9)
    evaluate_profiles(cm, [profile])
    predicted_s = float(profile.service[0])
    cold = PrefillProfile(cm, Shape.of(w, block_size=16), plan, 8192, 1e9)
    evaluate_profiles(cm, [cold])
    assert predicted_s < 0.5 * float(cold.service[0])  # 500 tokens, not 4 500
    scenario = scenario_from_dict({
        "model": "llama-3.1-8b", "instance_groups": [{
            "name": "a", "hardware": "h100-sxm", "max_num_seqs": 8,
            "max_num_batched_tokens": 8192, "enable_prefix_caching": True}],
        "workload": {"num_requests": 2, "arrival": {"kind": "poisson", "rate": 1},
                     "input_len": 4500, "output_len": 2}})
    requests = Requests(np.asarray([0.0, 10.0]), np.asarray([4500, 4500]), np.asarray([2, 2]),
                        np.asarray([0, 0]), np.asarray([4000, 4000]))
    result = simulate(scenario, requests=requests)
    first, second = result.requests.ttft_s
    assert second < 0.5 * first  # the second found the system prompt cached
    assert predicted_s == pytest.approx(second, rel=0.10)


def test_search_prefix_caching_defaults_off_and_dumps_as_before() -> None:
    assert SearchSpace().prefix_caching == (False,)
    assert "prefix_caching" not in SearchSpace().model_dump()
    assert SearchSpace(prefix_caching=(True, False)).prefix_caching == (False, True)
    assert "prefix" not in _workload().model_dump()
    assert _workload(AGENTIC).model_dump()["prefix"]["kind"] == "agentic"


def test_candidates_try_caching_where_it_can_hit() -> None:
    search = {"tp": [1], "pp": [1], "max_num_seqs": [256], "max_num_batched_tokens": [2048],
              "prefix_caching": [False, True]}
    workloads = [{"name": "agent", "model": "llama-3.1-8b", "input_len": 400, "output_len": 100,
                  "prefix": AGENTIC, "slo": {"ttft": "1 s", "tpot": "50 ms"}},
                 {"name": "chat", "model": "llama-3.1-8b", "input_len": 400,
                  "output_len": 100, "slo": {"ttft": "1 s", "tpot": "50 ms"}}]
    problem = make_problem(search=search, workloads=workloads)
    keys = {e.config.key: e.config for e in CandidateBuilder(problem).entries}
    cached = sorted(k.split("/", 2)[2] for k, c in keys.items() if c.prefix_caching)
    assert cached == ["aggregated/tp1-pp1-ep1/s256-k2048-pc",
                      "prefill/tp1-pp1-ep1/s256-k2048-pc"]  # decode prefills nothing
    assert all(k.startswith("agent/") for k, c in keys.items() if c.prefix_caching)
    rates = {c.key: c.rate for c in CandidateBuilder(problem).candidates().candidates}
    base = "agent/h100/aggregated/tp1-pp1-ep1/s256-k2048"
    assert rates[base + "-pc"] > 1.5 * rates[base]  # the history is not prefilled again


def test_shipped_agentic_plan_caches_and_meets_its_target_in_simulation() -> None:
    problem = load_problem(PROBLEMS / "agentic-llama-3.1-8b.yaml")
    plan = solve(problem, top_k=1, pareto_factors=None, compare_modes=False).plan
    groups = [g for g in plan.groups if g.count > 0]
    assert groups and all(g.prefix_caching for g in groups)
    scenario = yaml.safe_load(scenario_files(problem, plan)["scenario.yaml"])
    assert all(g["enable_prefix_caching"] for g in scenario["instance_groups"])
    assert scenario["workload"]["prefix"]["kind"] == "agentic"
    (check,) = check_plan(problem, plan)
    assert check.rejected == 0
    assert check.attainment >= check.target
