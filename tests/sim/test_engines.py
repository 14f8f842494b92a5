"""Engine profiles: each engine's admission and preemption on hand-built cases, its defaults, the
YAML it accepts, and the KV rule the planner uses (servingcast.engines, servingcast.sim.engines).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from servingcast.engines import (
    SglangEngine,
    TrtllmEngine,
    VllmEngine,
    mean_reserved_kv_tokens,
    parse_engine,
    reserved_kv_tokens,
)
from servingcast.errors import ConfigError
from servingcast.sim import load_scenario, simulate
from servingcast.sim.cluster import build_groups
from servingcast.sim.core import Options, Simulation
from servingcast.sim.decodeset import DecodeSet
from servingcast.sim.engines import NoEvictPolicy, SglangPolicy
from servingcast.sim.entities import Request
from servingcast.sim.metrics import SimResult, collect
from servingcast.sim.report import summary_json, summary_table
from servingcast.sim.scenario import InstanceGroup
from servingcast.workload import Requests
from tests.sim.conftest import batch_requests, fixed_requests, group, make_scenario

TRT_MU = {"kind": "trtllm", "capacity_scheduler": "max_utilization"}


def simulate_blocks(engine: Any, blocks: int, requests: Requests,
                    **fields: Any) -> tuple[Simulation, SimResult]:
    """One engine on one H100 whose KV cache is exactly ``blocks`` blocks; the bookkeeping is
    checked (every block back, every queue empty)."""
    sc = make_scenario([group(engine=engine, **fields)])
    plans = [replace(p, num_blocks=blocks) for p in build_groups(sc)]
    sim = Simulation(sc, plans, requests, Options(trace=True))
    sim.run()
    for inst in sim.instances:
        assert inst.pool.used == 0 and not inst.running and not inst.waiting
        assert getattr(inst.engine, "reserved", 0) == 0
    return sim, collect(sim)


# -- admission and preemption, by hand ----------------------------------------------------------

# 43 blocks of 16 tokens (688 tokens); four requests of 96 + 160 tokens arrive together: 6 blocks
# of prompt each, 16 blocks (256 tokens) each once their output is done.
HAND = {"block_size": 16, "max_num_seqs": 8, "max_num_batched_tokens": 512}


def hand(engine: Any) -> SimResult:
    return simulate_blocks(engine, 43, batch_requests(4, 96, 160), **HAND)[1]


def test_vllm_admits_every_prompt_and_preempts_the_newest() -> None:
    req = hand("vllm").requests
    # 4 x 6 prompt blocks = 24 <= 43: all four start at once ...
    assert req.admitted_s.tolist() == [0.0] * 4
    # ... and 4 x 16 = 64 blocks > 43 at the end: the newest are preempted, the oldest never.
    assert req.preemptions[:2].tolist() == [0, 0] and req.preemptions[2:].min() >= 1


@pytest.mark.parametrize("engine", ["trtllm", TRT_MU])
def test_trtllm_capacity_schedulers(engine: Any) -> None:
    result = hand(engine)
    req = result.requests
    if engine == "trtllm":  # guaranteed_no_evict: 2 x 16 = 32 <= 43 < 48 = 3 x 16
        assert req.admitted_s[:2].tolist() == [0.0, 0.0]
        assert req.admitted_s[2] == req.admitted_s[3] == req.finish_s[0]
        assert req.preemptions.tolist() == [0, 0, 0, 0]
        assert result.summary.groups[0].kv_usage_peak == pytest.approx(32 / 43)
    else:  # max_utilization packs like vLLM and pauses the newest
        assert req.admitted_s.tolist() == [0.0] * 4
        assert req.preemptions.sum() >= 2


def test_sglang_reserves_output_by_its_ratio() -> None:
    req = hand("sglang").requests
    # First pass, in tokens (688 free): a request admitted in the pass is charged its whole
    # output: 2 x (96 + 160) = 512 < 688 but 3 x 256 = 768 is not.
    assert req.admitted_s[:2].tolist() == [0.0, 0.0]
    # Next pass, the two decode: 96 + 160 < (688 - 192) - 0.7 x 2 x 159 = 273.4: the third
    # starts at once (at the first token of the first two); the fourth would need
    # 256 < 400 - 222.6 - 160 = 17.4 and waits for them to finish.
    assert req.admitted_s[2] == req.first_token_s[0]
    assert req.admitted_s[3] == req.finish_s[0]
    # 48 blocks > 43 at the end: the decode with the fewest tokens (the third) is retracted.
    assert req.preemptions.tolist() == [0, 0, 1, 0]


def test_sglang_decaying_ratio_admits_during_a_run() -> None:
    # A (100 + 2000 tokens) runs alone on 2300 one-token blocks; B (520 + 300) arrives during
    # A's prefill. B starts after s decodes of A, the first s with
    #   820 < (2300 - 100 - s) - r(s) (1999 - s),   r(s) = max(0.7 - s (0.7 - 0.098) / 600, 0.098)
    # long before A finishes: the decode run must stop there (run_limit).
    decay = (0.7 - 0.098) / 600
    s_star = next(s for s in range(2000)
                  if (2200 - s) - max(0.7 - s * decay, 0.098) * (1999 - s) > 820)
    assert 5 < s_star < 50
    sim, result = simulate_blocks("sglang", 2300,
                                  fixed_requests([0.0, 0.001], [100, 520], [2000, 300]))
    steps, ends = 0, []
    for _, _, end, kind, n, _, _ in sim.batches:
        if kind == "decode":
            steps += n
            ends.append((steps, end))
    end_of_s = dict(ends)
    assert result.requests.admitted_s[1] == end_of_s[s_star]


def test_trtllm_never_preempts_where_vllm_and_sglang_do() -> None:
    wl = {"num_requests": 200, "arrival": {"kind": "poisson", "rate": 30},
          "input_len": {"kind": "lognormal", "mean": 1200, "std": 800, "max": 6000},
          "output_len": {"kind": "lognormal", "mean": 400, "std": 300, "max": 3000}}
    pre = {}
    for engine in ("vllm", "sglang", "trtllm"):
        sc = make_scenario([group(engine=engine, gpu_memory_utilization=0.25)], workload=wl)
        s = simulate(sc).summary
        assert s.completed == 200
        pre[engine] = s.preemptions
    assert pre["trtllm"] == 0 and pre["vllm"] > pre["sglang"] > 0


def test_iteration_shapes() -> None:
    """vLLM and TensorRT-LLM mix prefill with decodes; SGLang prefills first, alone."""
    requests = fixed_requests([0.0, 0.05, 0.1, 0.15], [2000] * 4, [200] * 4)
    kinds = {}
    for engine in ("vllm", "sglang", "trtllm"):
        sim, _ = simulate_blocks(engine, 4000, requests, block_size=16)
        kinds[engine] = {kind for _, _, _, kind, _, _, _ in sim.batches}
    assert kinds["vllm"] == kinds["trtllm"] == {"prefill", "mixed", "decode"}
    assert kinds["sglang"] == {"prefill", "decode"}
    sim, _ = simulate_blocks({"kind": "sglang", "enable_mixed_chunk": True}, 4000, requests,
                             block_size=16)
    assert {kind for _, _, _, kind, _, _, _ in sim.batches} == {"prefill", "mixed", "decode"}


# -- the policies' decisions as data ------------------------------------------------------------

def _decoding(dec: DecodeSet, rid: int, prompt: int, output: int, step: int) -> Request:
    req = Request(rid, 0.0, prompt, output)
    req.generated = 1
    req.decoding = True
    dec.join(req, step, prompt, output - 1)
    return req


def test_sglang_victim_and_ratio() -> None:
    dec = DecodeSet(block_size=1)
    a = _decoding(dec, 0, 100, 500, step=0)     # 31 tokens at step 30
    b = _decoding(dec, 1, 300, 500, step=10)    # 21 tokens
    c = _decoding(dec, 2, 200, 500, step=10)    # 21 tokens, shorter prompt
    inst = SimpleNamespace(running=dict.fromkeys([a, b, c]), dec=dec, step=30)
    policy = SglangPolicy(SglangEngine(), block_size=1)
    # Fewest output tokens first; on a tie, the longest prompt.
    assert policy.victim(inst) is b  # type: ignore[arg-type]
    assert policy.ratio == pytest.approx(0.7)
    policy.decoded(300)
    assert policy.ratio == pytest.approx(0.7 - 300 * (0.7 - 0.098) / 600)
    policy.decoded(10_000)
    assert policy.ratio == pytest.approx(0.098)
    # After a retraction: (tokens decoded + 20 per survivor) / (sum of outputs + 1).
    del inst.running[b]
    policy.retracted(inst)  # type: ignore[arg-type]
    assert policy.ratio == pytest.approx((31 + 21 + 2 * 20) / (2 * 500 + 1))
    policy.idle()
    assert policy.ratio == pytest.approx(0.7)
    # The decodes' remaining output, as SGLang's reserve sums it.
    assert dec.remaining_tokens(30) == pytest.approx((500 - 31) + 2 * (500 - 21))


def test_no_evict_reserves_to_completion() -> None:
    policy = NoEvictPolicy(total_blocks=40, block_size=16, spare_tokens=0, prompt_only=False)
    inst = SimpleNamespace(running={})
    first, second = Request(0, 0.0, 96, 160), Request(1, 0.0, 96, 161)
    assert policy.footprint(first) == 16 and policy.footprint(second) == 17
    assert policy.admits(inst, first, 96)  # type: ignore[arg-type]
    inst.running[first] = None
    assert policy.reserved == 16
    assert not policy.admits(inst, Request(2, 0.0, 96, 385), 96)  # type: ignore[arg-type]
    assert policy.admits(inst, second, 96) and policy.reserved == 33  # type: ignore[arg-type]
    policy.release(first)
    assert policy.reserved == 17 and first.reserve == 0
    spec = NoEvictPolicy(total_blocks=40, block_size=16, spare_tokens=4, prompt_only=False)
    assert spec.footprint(first) == 17  # k = 4 speculative slots
    assert NoEvictPolicy(40, 16, 0, prompt_only=True).footprint(first) == 6


# -- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize(("engine", "hardware", "expected"), [
    ("vllm", "h100-sxm", (256, 8192, True, 16)),
    ("sglang", "h100-sxm", (2048, 8192, True, 1)),
    ("sglang", "h200-sxm", (2048, 8192, True, 1)),
    ("sglang", "a100-sxm4-40gb", (2048, 4096, True, 1)),
    ("sglang", "l4", (2048, 2048, True, 1)),
    ("sglang", "b200", (2048, 16384, True, 1)),
    ("trtllm", "h100-sxm", (2048, 8192, False, 32)),
])
def test_engine_defaults(engine: str, hardware: str, expected: tuple[Any, ...]) -> None:
    g = InstanceGroup(name="g", hardware=hardware, engine=engine)
    assert (g.max_num_seqs, g.max_num_batched_tokens, g.enable_chunked_prefill,
            g.block_size) == expected


def test_set_fields_win_and_the_scenario_engine_applies_to_the_rest() -> None:
    g = InstanceGroup(name="g", hardware="h100-sxm", engine="trtllm", max_num_seqs=64,
                      enable_chunked_prefill=True)
    assert (g.max_num_seqs, g.max_num_batched_tokens, g.enable_chunked_prefill,
            g.block_size) == (64, 8192, True, 32)
    sc = make_scenario([group("a"), group("b", engine="vllm", max_num_seqs=128)],
                       engine="sglang")
    a, b = sc.instance_groups
    assert a.engine == SglangEngine() and (a.max_num_seqs, a.block_size) == (2048, 1)
    assert b.engine == VllmEngine() and (b.max_num_seqs, b.block_size) == (128, 16)
    assert make_scenario([group()]).instance_groups[0].engine == VllmEngine()
    assert parse_engine({"kind": "trtllm", "capacity_scheduler": "max_utilization"}) == \
        TrtllmEngine(capacity_scheduler="max_utilization")


BAD = "model: llama-3.1-8b\ninstance_groups:\n  - name: g\n    hardware: h100-sxm\n    {field}\n" \
      "workload: {{num_requests: 5, arrival: {{kind: poisson, rate: 1}}, input_len: 10, " \
      "output_len: 5}}\n"


@pytest.mark.parametrize(("field", "message"), [
    ("engine: tgi", "s.yaml:5: instance_groups.0.engine: unknown engine 'tgi'; servingcast "
     "models vllm, sglang, trtllm. To fix: use one of those (e.g. engine: sglang)"),
    ("engine: {kind: trtllm, capacity_scheduler: static_batch}",
     "instance_groups.0.engine.trtllm.capacity_scheduler: "),
    ("engine: {kind: vllm, scheduler: fcfs}", "instance_groups.0.engine.vllm.scheduler: "),
    ("engine: {capacity_scheduler: max_utilization}",
     "instance_groups.0.engine: an engine mapping needs kind:, one of vllm, sglang, trtllm"),
    ("engine: {kind: sglang, schedule_conservativeness: 0}",
     "instance_groups.0.engine.sglang.schedule_conservativeness: "),
    ("engine: sglang\n    max_num_seqs: 0", "instance_groups.0.max_num_seqs: "),
    ("engine: trtllm\n    max_num_seqs: 9000",
     "max_num_batched_tokens (8192) must be >= max_num_seqs (9000), as TensorRT-LLM counts "
     "each decode against max_num_tokens. To fix"),
])
def test_yaml_errors(tmp_path: Path, field: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(BAD.format(field=field))
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert message in str(err.value)


def test_scenario_engine_error_is_reported_once(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("engine: tgi\n" + BAD.format(field="count: 1"))
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert str(err.value) == (f"{path}:1: engine: unknown engine 'tgi'; servingcast models "
                              "vllm, sglang, trtllm. To fix: use one of those (e.g. engine: "
                              "sglang)")


def test_sglang_may_run_more_sequences_than_its_chunk() -> None:
    g = InstanceGroup(name="g", hardware="l4", engine="sglang", max_num_seqs=4096)
    assert g.max_num_batched_tokens == 2048  # SGLang's chunk counts prefill tokens only


# -- reproducibility, reports, the example ------------------------------------------------------

@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm", TRT_MU])
def test_seeded_runs_are_reproducible(engine: Any) -> None:
    wl = {"num_requests": 150, "arrival": {"kind": "poisson", "rate": 20},
          "input_len": {"kind": "lognormal", "mean": 1000, "std": 700, "max": 6000},
          "output_len": {"kind": "lognormal", "mean": 300, "std": 200, "max": 2000}}
    sc = make_scenario([group(engine=engine, gpu_memory_utilization=0.3)], workload=wl, seed=3)
    first, again = simulate(sc), simulate(sc)
    assert summary_json(first) == summary_json(again)
    assert np.array_equal(first.requests.finish_s, again.requests.finish_s)


def test_example_compares_engines_by_group() -> None:
    scenario = load_scenario(Path(__file__).parents[2] / "configs" / "scenarios"
                             / "engines-compare.yaml")
    assert [g.engine.kind for g in scenario.instance_groups] == ["vllm", "sglang", "trtllm"]
    result = simulate(scenario, num_requests=300)
    groups = result.summary.groups
    assert [g.engine for g in groups] == ["vllm", "sglang", "trtllm"]
    served = [g.ttft_ms for g in groups]
    assert all(t.p50 is not None and t.p50 > 0 for t in served)
    text = summary_table(result)
    assert "Latency by group (ms)" in text and " trtllm " in text


# -- the KV rule the planner uses ---------------------------------------------------------------

def test_reserved_kv_tokens() -> None:
    gne, mu = TrtllmEngine(), TrtllmEngine(capacity_scheduler="max_utilization")
    assert reserved_kv_tokens(VllmEngine(), 1000, 250, 100) == 1100
    assert reserved_kv_tokens(mu, 1000, 250, 100) == 1100
    assert reserved_kv_tokens(gne, 1000, 250, 100) == 1250
    assert reserved_kv_tokens(SglangEngine(), 1000, 250, 100) == pytest.approx(
        1100 + 0.098 * 150)
    assert reserved_kv_tokens(SglangEngine(), 1000, 9000, 0, new_token_ratio=0.5) == \
        1000 + 0.5 * 4096  # SGLang clips its estimate at 4096 tokens
    # Fixed lengths L = 1000, O = 250: the mean decoding context is L + O / 2.
    assert mean_reserved_kv_tokens(VllmEngine(), 1000, 250) == 1125
    assert mean_reserved_kv_tokens(gne, 1000, 250) == 1250
    assert mean_reserved_kv_tokens(SglangEngine(), 1000, 250) == pytest.approx(
        1125 + 0.098 * 125)
    # Spread outputs: E[O] = 250, E[O²] = 250² + 200²; seen in proportion to O.
    sq = 250**2 + 200**2
    assert mean_reserved_kv_tokens(gne, 1000, 250, sq) == pytest.approx(1000 + sq / 250)
    assert mean_reserved_kv_tokens(VllmEngine(), 1000, 250, sq) == pytest.approx(
        1000 + sq / 500)
    assert math.isclose(SglangEngine(schedule_conservativeness=2).init_ratio, 1.0)
