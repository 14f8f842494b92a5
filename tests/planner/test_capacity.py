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
    batch_grid,
    evaluate_profiles,
    shape_of,
)
from servingcast.planner.lengths import length_points
from servingcast.planner.queueing import lifetime_spread, mg1_wait_quantile_s, rate_elasticity
from servingcast.sim import scenario_from_dict, simulate
from servingcast.specs import get_hardware, get_model, get_precision
from servingcast.workload import FixedLength, LognormalLength

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


def _prefill(cm: CostModel, nic: float = math.inf, budget: int = 2048) -> PrefillProfile:
    prof = PrefillProfile(cm, SHAPE, memory_plan(cm, 0.9, budget, 512, 16), budget, nic)
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
    j = int(np.flatnonzero(nxt.batch == b)[0])
    assert b >= 16 and nxt.batch[j + 1] == b + 1   # whole batches past the fine grid
    assert nxt.tpot[j + 1] > 0.030


def test_decode_capacity_kv_bound_and_network_bound(cm: CostModel) -> None:
    cap = _decode(cm).capacity(1.0, 1.0)
    held = max_batch_size(memory_plan(cm, 0.9, 512, 512, 16), 1280)
    assert isinstance(cap, Capacity) and cap.limited_by in ("kv_cache", "max_num_seqs")
    assert cap.max_batch <= min(held, 512)
    slow = _decode(cm, nic=1.5).capacity(1.0, 1.0)
    assert isinstance(slow, Capacity) and slow.rate_per_s == 1.5 and slow.limited_by == "network"


def test_prefill_capacity_meets_ttft_exactly(cm: CostModel) -> None:
    prof = _prefill(cm, budget=1024)   # one 1024-token prompt per iteration: no batching
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


def test_batch_grid_is_fine_below_16_and_whole_above() -> None:
    grid = batch_grid(40.0)
    fine = grid[grid < 16]
    assert fine[0] == pytest.approx(0.25) and np.all(np.diff(fine) / fine[:-1] <= 0.0501)
    assert np.array_equal(grid[grid >= 16], np.arange(16, 41, dtype=np.float64))
    assert np.all(np.diff(grid) > 0)
    assert batch_grid(0.5).size == 0
    small = batch_grid(3.0)
    assert small[-1] == 3.0 and np.all(small <= 3.0)


def test_decode_group_capacity_grows_with_the_group(cm: CostModel) -> None:
    """Queueing item 10: one of k decode instances behind least-outstanding swings 1/√k as far,
    so it carries more at the same TPOT limit; the mean TPOT at a load does not change."""
    prof = _decode(cm)
    caps = [prof.capacity(1.0, 0.030, k) for k in (1, 4, 16)]
    assert all(isinstance(c, Capacity) for c in caps)
    rates = [c.rate_per_s for c in caps if isinstance(c, Capacity)]
    assert rates[0] < rates[1] < rates[2] < 1.2 * rates[0]
    one, four = prof.at_rate(rates[0], 1), prof.at_rate(rates[0], 4)
    assert four.tpot_mean_s == one.tpot_mean_s and four.batch == one.batch
    assert one.tpot_s is not None and four.tpot_s is not None
    assert one.tpot_mean_s is not None and four.tpot_s < one.tpot_s
    spread_1 = prof.group_tpot(1)[0] - prof.batch
    spread_4 = prof.group_tpot(4)[0] - prof.batch
    assert np.allclose(spread_4, spread_1 / 2.0)
    levels = prof.group_capacities(1.0, 0.030, 16)
    assert levels[0][0] == 1 and levels[-1][1].rate_per_s == rates[2]


def test_aggregated_round_robin_groups_pool_less(cm: CostModel) -> None:
    plan = memory_plan(cm, 0.9, 2048, 512, 16)
    lo = AggregatedProfile(cm, SHAPE, plan, 512, 2048)
    rr = AggregatedProfile(cm, SHAPE, plan, 512, 2048, round_robin=True)
    evaluate_profiles(cm, [lo, rr])
    assert np.array_equal(lo.tpot, rr.tpot)
    assert np.all(lo.group_tpot(8)[1] <= rr.group_tpot(8)[1])
    assert np.any(lo.group_tpot(8)[1] < rr.group_tpot(8)[1])


def _simulated_decode_tpot(k: int, rate_per_instance: float) -> tuple[float, float]:
    """``(p95, mean)`` TPOT (s) of ``k`` Llama-3.1-8B decode instances on H100 behind
    least-outstanding (prompts prefilled on 8 fast instances, lognormal outputs)."""
    out = {"kind": "lognormal", "mean": 256, "std": 150, "max": 1024}
    data = {"model": "llama-3.1-8b", "precision": "bf16", "seed": 1,
            "instance_groups": [
                {"name": "p", "count": 8, "hardware": "h100-sxm", "role": "prefill",
                 "max_num_batched_tokens": 8192, "max_num_seqs": 256},
                {"name": "d", "count": k, "hardware": "h100-sxm", "role": "decode",
                 "max_num_batched_tokens": 512, "max_num_seqs": 512}],
            "router": {"kind": "least_outstanding"}, "network": {"bandwidth": "1000 GB/s"},
            "workload": {"num_requests": 20000 * max(1, k // 2),
                         "arrival": {"kind": "poisson", "rate": rate_per_instance * k},
                         "input_len": 512, "output_len": out}}
    req = simulate(scenario_from_dict(data)).requests
    keep = req.arrival_s > 0.1 * np.nanmax(req.arrival_s)
    tpot = req.tpot_s[keep]
    tpot = tpot[~np.isnan(tpot)]
    return float(np.quantile(tpot, 0.95)), float(tpot.mean())


@pytest.mark.slow
def test_decode_group_capacity_against_the_simulator(cm: CostModel) -> None:
    """One and four decode instances, each at the capacity the planner gives one of a group of
    that size for a TPOT p95 of 20 ms: the simulator's p95 is within 3 % of the limit, and
    6 % more load breaks it (the planner leaves little on the table)."""
    work = make_problem().workloads[0].model_copy(update={
        "input_len": FixedLength(value=512),
        "output_len": LognormalLength(kind="lognormal", mean=256, std=150, max=1024)})
    shape = Shape.of(work.model_copy(update={"slo": work.slo.model_copy(
        update={"attainment": 0.9})}))
    assert shape.quantile == pytest.approx(0.95)
    prof = DecodeProfile(cm, shape, memory_plan(cm, 0.9, 512, 512, 16), 512, math.inf)
    evaluate_profiles(cm, [prof])
    rates = []
    for k in (1, 4):
        cap = prof.capacity(1.0, 0.020, k)
        assert isinstance(cap, Capacity)
        rates.append(cap.rate_per_s)
        p95, _ = _simulated_decode_tpot(k, cap.rate_per_s)
        assert 0.93 * 0.020 <= p95 <= 1.03 * 0.020, (k, p95)
        over, _ = _simulated_decode_tpot(k, 1.06 * cap.rate_per_s)
        assert over > 0.98 * 0.020, (k, over)
    assert rates[1] > 1.02 * rates[0]


@pytest.mark.slow
def test_batched_prefill_against_the_simulator() -> None:
    """Prompts that batch (queueing item 9 on a prefill instance: each iteration prefills the
    prompts queued, ``a + κ T`` seconds for ``T`` tokens): Mixtral-8x7B on two H100, 1024-token
    prompts, a 8192-token budget. The planned rate is ~1.6 times one-at-a-time's (the experts'
    weights are read once per iteration), and the simulator's TTFT p95 there is within 5 % of
    the limit; 10 % more load breaks it."""
    cm = CostModel(get_model("mixtral-8x7b"), get_hardware("h100-sxm"), get_precision("bf16"),
                   Parallelism(tp=2))
    work = make_problem().workloads[0].model_copy(update={
        "model": "mixtral-8x7b", "input_len": FixedLength(value=1024),
        "output_len": FixedLength(value=2)})
    shape = Shape.of(work)
    assert shape.quantile == pytest.approx(0.95)

    def profile(budget: int) -> PrefillProfile:
        prof = PrefillProfile(cm, shape, memory_plan(cm, 0.9, budget, 64, 16), budget,
                              math.inf, 64)
        evaluate_profiles(cm, [prof])
        return prof

    one, many = profile(1024), profile(8192)
    assert one.batched_rate(0.5) == 0.0
    # a + κ L̄ is one prompt's iteration; a + 8 κ L̄ eight prompts' (the cost model's).
    eight = cm.step(Batch.of(prefill=[(1024, 0)] * 8)).latency_s
    assert many.iteration_s + 1024 * many.token_s == pytest.approx(many.mean_s, rel=1e-6)
    assert many.iteration_s + 8192 * many.token_s == pytest.approx(eight, rel=1e-6)
    slow, fast = one.capacity(0.5, 1.0), many.capacity(0.5, 1.0)
    assert isinstance(slow, Capacity) and isinstance(fast, Capacity)
    assert fast.rate_per_s > 1.4 * slow.rate_per_s
    assert fast.rate_per_s == pytest.approx(many.batched_rate(0.5))
    assert fast.ttft_s is not None and fast.ttft_s <= 0.5

    def simulated_p95(rate: float) -> float:
        data = {"model": "mixtral-8x7b", "precision": "bf16", "seed": 1,
                "instance_groups": [
                    {"name": "p", "hardware": "h100-sxm", "tp": 2, "role": "prefill",
                     "max_num_batched_tokens": 8192, "max_num_seqs": 64},
                    {"name": "d", "count": 2, "hardware": "h100-sxm", "tp": 2,
                     "role": "decode", "max_num_batched_tokens": 512, "max_num_seqs": 512}],
                "router": {"kind": "least_outstanding"}, "network": {"bandwidth": "1000 GB/s"},
                "workload": {"num_requests": 6000, "arrival": {"kind": "poisson", "rate": rate},
                             "input_len": 1024, "output_len": 2}}
        req = simulate(scenario_from_dict(data)).requests
        keep = req.arrival_s > 0.1 * np.nanmax(req.arrival_s)
        ttft = req.ttft_s[keep]
        return float(np.quantile(ttft[~np.isnan(ttft)], 0.95))

    assert 0.9 * 0.5 <= simulated_p95(fast.rate_per_s) <= 1.05 * 0.5
    assert simulated_p95(1.1 * fast.rate_per_s) > 0.5
