"""Attention data-parallel engines (``attn_dp``) in the simulator."""

import pytest

from servingcast._estimate import estimate
from servingcast.errors import ConfigError
from servingcast.sim.cluster import build_groups
from servingcast.sim.scenario import InstanceGroup
from tests.sim.conftest import batch_requests, group, make_scenario, run

QWEN = "qwen3-235b-a22b"


def dep_group(**fields: object) -> dict[str, object]:
    return group(hardware="h200-sxm", **fields)


def test_attn_dp_is_opt_in_and_dumps_only_when_set() -> None:
    plain = InstanceGroup(name="g", hardware="h200-sxm")
    assert plain.attn_dp == 1 and "attn_dp" not in plain.model_dump()
    assert plain.engine_max_num_seqs == plain.max_num_seqs
    dep = InstanceGroup(name="g", hardware="h200-sxm", attn_dp=8, max_num_seqs=64,
                        max_num_batched_tokens=2048)
    assert dep.model_dump()["attn_dp"] == 8
    assert (dep.engine_max_num_seqs, dep.engine_max_num_batched_tokens) == (512, 16384)


def test_group_plan_spans_the_ranks() -> None:
    sc = make_scenario([dep_group(attn_dp=8, max_num_seqs=64, max_num_batched_tokens=2048)],
                       model=QWEN, precision="fp8")
    plan = build_groups(sc)[0]
    par = plan.cost_model.parallel
    assert (par.attn_dp, par.ep, par.gpus_per_instance) == (8, 8, 8)
    assert plan.memory.ranks == 8
    assert plan.capacity_tokens == plan.memory.kv_capacity_tokens


def test_dense_model_with_attn_dp_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"instance_groups\.0: attn_dp=4 .* needs a "
                       "mixture-of-experts model; llama-3.1-8b is dense"):
        make_scenario([dep_group(attn_dp=4)], model="llama-3.1-8b")


def test_closed_batch_reproduces_the_dep_estimate() -> None:
    """The one-cost-model invariant for DEP: a closed batch of 128 requests on 8 ranks (16
    each) simulates to the estimate's TTFT and TPOT exactly."""
    b, prompt, output = 128, 256, 40
    g = dep_group(attn_dp=8, max_num_seqs=16, max_num_batched_tokens=16 * prompt,
                  enable_chunked_prefill=False)
    sc = make_scenario([g], model=QWEN, precision="fp8")
    result = run(sc, batch_requests(b, prompt, output))
    est = estimate(QWEN, "h200-sxm", seq_len=prompt, batch_size=b, precision="fp8",
                   output_len=output, attn_dp=8, max_num_batched_tokens=16 * prompt)
    s = result.summary
    assert s.completed == b
    assert s.ttft_ms.mean == pytest.approx(est.ttft_ms, rel=1e-9)
    assert s.tpot_ms.p99 == pytest.approx(est.tpot_ms, rel=1e-9)


def test_engine_admits_max_num_seqs_on_every_rank() -> None:
    """max_num_seqs is per rank: 8 ranks of 4 run 32 requests at once, one rank of 4 only 4."""
    b, prompt, output = 32, 128, 30

    def ttft_p99(attn_dp: int) -> float:
        g = dep_group(attn_dp=attn_dp, ep=8 if attn_dp == 1 else 1, tp=8 if attn_dp == 1 else 1,
                      max_num_seqs=4, max_num_batched_tokens=4096)
        sc = make_scenario([g], model=QWEN, precision="fp8")
        return float(run(sc, batch_requests(b, prompt, output)).summary.ttft_ms.p99)

    dep, tp = ttft_p99(8), ttft_p99(1)
    # tp8 with 4 slots serves the 32 requests in 8 waves; DEP8 admits them all at once.
    assert tp > 5 * dep


def test_seeded_dep_runs_are_reproducible() -> None:
    g = dep_group(attn_dp=8, max_num_seqs=32, max_num_batched_tokens=2048)
    sc = make_scenario([g], model=QWEN, precision="fp8", workload={
        "num_requests": 60, "arrival": {"kind": "poisson", "rate": 8},
        "input_len": {"kind": "lognormal", "mean": 500, "std": 300, "max": 2000},
        "output_len": {"kind": "lognormal", "mean": 80, "std": 40, "max": 300}}, seed=3)
    a, b = run(sc).summary, run(sc).summary
    assert a == b
    assert a.completed == 60
