"""Instance capacities under the SLOs, re-derived from the cost model with explicit batches."""

import math

import numpy as np
import pytest

from servingcast.costmodel import Batch, CostModel, Parallelism, max_batch_size, memory_plan
from servingcast.planner.capacity import (
    AggregatedProfile,
    Capacity,
    DecodeProfile,
    Infeasible,
    PrefillProfile,
    Shape,
    evaluate_profiles,
    shape_of,
)
from servingcast.planner.lengths import length_points
from servingcast.planner.queueing import lifetime_spread, mg1_wait_quantile_s, rate_elasticity
from servingcast.specs import get_hardware, get_model, get_precision

from .conftest import make_problem

SHAPE = Shape.of(make_problem().workloads[0])   # 1024 in, 256 out, attainment 0.9


@pytest.fixture(scope="module")
def cm() -> CostModel:
    return CostModel(get_model("llama-3.1-8b"), get_hardware("h100-sxm"), get_precision("bf16"),
                     Parallelism())


def _decode(cm: CostModel, nic: float = math.inf) -> DecodeProfile:
    prof = DecodeProfile(cm, SHAPE, memory_plan(cm, 0.9, 512, 512, 16), 512, nic)
    evaluate_profiles(cm, [prof])
    return prof


def _prefill(cm: CostModel, nic: float = math.inf) -> PrefillProfile:
    prof = PrefillProfile(cm, SHAPE, memory_plan(cm, 0.9, 2048, 512, 16), 2048, nic)
    evaluate_profiles(cm, [prof])
    return prof


def _aggregated(cm: CostModel) -> AggregatedProfile:
    prof = AggregatedProfile(cm, SHAPE, memory_plan(cm, 0.9, 2048, 512, 16), 512, 2048)
    evaluate_profiles(cm, [prof])
    return prof


def test_shape_moments() -> None:
    assert SHAPE.decode_steps == 255 and SHAPE.decode_context == 1024 + 128
    # Each of TTFT and TPOT is planned at p95 so that both hold together for 90 %.
    assert SHAPE.seq_len == 1280 and SHAPE.quantile == pytest.approx(0.95)
    assert SHAPE.input_max == 1024 and SHAPE.total_max == 1280


def test_decode_capacity_from_explicit_batches(cm: CostModel) -> None:
    cap = _decode(cm).capacity(1.0, 0.030)
    assert isinstance(cap, Capacity) and cap.limited_by == "tpot"
    b = int(cap.batch)
    mean = cm.step(Batch.of(decode=[1152] * b)).latency_s
    # Little's law: b requests each decoding 255 tokens at the mean TPOT.
    assert cap.rate_per_s == pytest.approx(b / (255 * mean), rel=1e-9)
    # TPOT at the batch a request sees over its life (between the mean and the quantile the
    # KV cache must hold) meets the limit; one more request in the mean batch breaks it.
    assert cap.max_batch > b and cap.tpot_s is not None and cap.tpot_s <= 0.030
    eps = float(np.interp(b, _decode(cm).batch, rate_elasticity(_decode(cm).batch,
                                                                _decode(cm).rate)))
    seen = b + (cap.max_batch - b) * float(lifetime_spread(eps))
    assert b < seen < cap.max_batch
    lo = cm.step(Batch.of(decode=[1152] * math.floor(seen))).latency_s
    hi = cm.step(Batch.of(decode=[1152] * math.ceil(seen))).latency_s
    assert lo <= cap.tpot_s <= hi
    nxt = _decode(cm)
    assert nxt.tpot[b] > 0.030   # index b is batch b + 1


def test_decode_capacity_kv_bound_and_network_bound(cm: CostModel) -> None:
    cap = _decode(cm).capacity(1.0, 1.0)
    held = max_batch_size(memory_plan(cm, 0.9, 512, 512, 16), 1280)
    assert isinstance(cap, Capacity) and cap.limited_by in ("kv_cache", "max_num_seqs")
    assert cap.max_batch <= min(held, 512)
    slow = _decode(cm, nic=1.5).capacity(1.0, 1.0)
    assert isinstance(slow, Capacity) and slow.rate_per_s == 1.5 and slow.limited_by == "network"


def test_prefill_capacity_meets_ttft_exactly(cm: CostModel) -> None:
    prof = _prefill(cm)
    service = cm.step(Batch.of(prefill=[(1024, 0)])).latency_s
    assert prof.mean_s == pytest.approx(service) and prof.service_q == pytest.approx(service)
    cap = prof.capacity(0.25, 0.0)
    assert isinstance(cap, Capacity)
    # One instance: the M/G/1 wait at the per-SLO quantile, plus the prompt's own prefill.
    ttft = float(mg1_wait_quantile_s(0.95, cap.rate_per_s, service, service**2)) + service
    assert ttft == pytest.approx(0.25, rel=1e-6)
    assert cap.rate_per_s < 1 / service
    # A pooled group of four serves more than four separate instances at the same limit.
    four = prof.group_rates(0.25, 4)
    assert four[0] == pytest.approx(cap.rate_per_s)
    assert four[3] > 4 * cap.rate_per_s
    assert prof.ttft_s(float(four[3]), 4) == pytest.approx(0.25, rel=1e-4)


def test_aggregated_capacity_meets_both_limits(cm: CostModel) -> None:
    prof = _aggregated(cm)
    tight, loose = prof.capacity(0.3, 0.03), prof.capacity(0.5, 0.05)
    assert isinstance(tight, Capacity) and isinstance(loose, Capacity)
    assert tight.ttft_s is not None and tight.ttft_s <= 0.3
    assert tight.tpot_s is not None and tight.tpot_s <= 0.03
    assert loose.rate_per_s > tight.rate_per_s
    # Light load: TPOT close to a decode step with a little prefill; TTFT one prefill beside
    # the decodes, after the rest of the decode iteration a prompt arrives in (gated batches:
    # at the SLO's quantile nearly a whole one), so between one prefill and that plus two
    # decode iterations.
    light = prof.at_rate(0.5)
    one = cm.step(Batch.of(prefill=[(1024, 0)])).latency_s
    decode = cm.step(Batch.of(decode=[1024] * max(1, round(light.batch)))).latency_s
    assert light.ttft_s is not None
    assert one < light.ttft_s <= (one + 2 * decode) * 1.05
    assert light.tpot_mean_s is not None and light.tpot_s is not None
    assert light.tpot_mean_s <= light.tpot_s


@pytest.mark.parametrize(("ttft", "tpot", "reason"), [(1.0, 0.004, "tpot"), (0.01, 0.05, "ttft")])
def test_infeasible_at_any_load(cm: CostModel, ttft: float, tpot: float, reason: str) -> None:
    if reason == "tpot":
        got = _decode(cm).capacity(ttft, tpot)
        assert isinstance(got, Infeasible) and got.reason == "tpot"
        assert got.best_s == pytest.approx(cm.step(Batch.of(decode=[1152])).latency_s)
    else:
        got = _prefill(cm).capacity(ttft, tpot)
        assert isinstance(got, Infeasible) and got.reason == "ttft"
    agg = _aggregated(cm).capacity(ttft, tpot)
    assert isinstance(agg, Infeasible) and agg.reason == reason


def test_planned_load_metrics_grow_with_load(cm: CostModel) -> None:
    prof = _aggregated(cm)
    cap = prof.capacity(0.5, 0.05)
    assert isinstance(cap, Capacity)
    points = [prof.at_rate(f * cap.rate_per_s) for f in (0.2, 0.5, 0.9, 1.0)]
    tpots = [p.tpot_s for p in points]
    assert tpots == sorted(tpots)
    assert points[-1].tpot_s == pytest.approx(cap.tpot_s, rel=1e-6)
    assert np.isclose(points[-1].batch, cap.batch)


def test_an_engine_that_reserves_the_output_holds_fewer_requests() -> None:
    # TensorRT-LLM's default (guaranteed_no_evict) reserves prompt + output at admission:
    # E[L] + E[O²]/E[O] KV tokens a request (servingcast.engines); vLLM holds its context.
    from servingcast.engines import SglangEngine, TrtllmEngine, VllmEngine

    w = make_problem(workloads=[{
        "name": "chat", "model": "llama-3.1-8b", "precision": "bf16", "input_len": 1000,
        "output_len": {"kind": "lognormal", "mean": 250, "std": 250, "max": 4000},
        "slo": {"ttft": "1 s", "tpot": "50 ms"}}]).workloads[0]
    vllm, trt = shape_of(w, VllmEngine()), shape_of(w, TrtllmEngine())
    o1 = vllm.output_mean
    assert vllm.seq_len == shape_of(w).seq_len == math.ceil(1000 + o1)
    o2 = float((length_points(w.output_len) ** 2).mean())
    assert trt.seq_len == math.ceil(1000 + o2 / o1) > vllm.seq_len
    assert shape_of(w, SglangEngine()).seq_len == vllm.seq_len  # within L + O
