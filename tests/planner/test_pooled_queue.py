"""The pooled prefill queue (M/G/c behind a least-outstanding router) against its formulas and
against the simulator (``servingcast.planner.queueing``, items 6 and 7)."""

from __future__ import annotations

import math
import statistics
from functools import cache

import numpy as np
import pytest

from servingcast.costmodel import CostModel, Parallelism
from servingcast.costmodel.steady import iteration_cadence_s, prefill_chunk_series
from servingcast.planner.lengths import length_points
from servingcast.planner.queueing import (
    erlang_c,
    jsq_wait_quantile_s,
    mg1_wait_quantile_s,
    pooled_rates_per_s,
)
from servingcast.sim import scenario_from_dict, simulate
from servingcast.specs import get_hardware, get_model, get_precision
from servingcast.workload import FixedLength, LognormalLength


def _erlang_c_textbook(c: int, a: float) -> float:
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


@pytest.mark.parametrize(("c", "a"), [(1, 0.5), (2, 1.0), (5, 3.0), (10, 9.5), (30, 20.0)])
def test_erlang_c_is_the_textbook_formula(c: int, a: float) -> None:
    assert float(erlang_c(c, a)) == pytest.approx(_erlang_c_textbook(c, a), rel=1e-9)


def test_erlang_c_edges_and_large_groups() -> None:
    assert float(erlang_c(4, 0.0)) == 0.0
    assert float(erlang_c(4, 4.0)) == 1.0
    assert float(erlang_c(4, 7.0)) == 1.0
    # Thousands of servers stay finite and inside (0, 1).
    value = float(erlang_c(4000, 3950.0))
    assert 0.0 < value < 1.0


@pytest.mark.parametrize("rho", [0.2, 0.5, 0.9])
def test_one_server_is_the_mg1_approximation(rho: float) -> None:
    es, es2 = 0.2, 0.05
    lam = rho / es
    assert float(jsq_wait_quantile_s(0.9, 1, lam, es, es2)) == pytest.approx(
        float(mg1_wait_quantile_s(0.9, lam, es, es2)), rel=1e-12)


def test_pooled_rates_meet_the_limit_and_grow_per_server() -> None:
    es, es2, limit = 0.45, 0.45**2, 1.0
    servers = np.arange(1, 65)
    rates = pooled_rates_per_s(0.9, servers, es, es2, es, limit)
    waits = jsq_wait_quantile_s(0.9, servers, rates, es, es2)
    assert np.all(waits + es <= limit + 1e-9)
    per_server = rates / servers
    assert np.all(np.diff(per_server) >= -1e-9)
    # Pooling: 20 servers carry far more than 20 independent M/G/1 queues at the same limit.
    assert rates[19] > 1.8 * 20 * rates[0]
    assert float(pooled_rates_per_s(0.9, 4, es, es2, 1.2, 1.0)[()]) == 0.0


@cache
def _service(dist: str) -> tuple[float, float, float]:
    """``(E[S], E[S²], S_0.9)`` of prefilling Llama-3.1-8B prompts on one H100, 2048-token
    chunks (one prompt per iteration, as the model assumes)."""
    cm = CostModel(get_model("llama-3.1-8b"), get_hardware("h100-sxm"), get_precision("bf16"),
                   Parallelism(tp=1))
    points = length_points(_LENGTHS[dist])
    stats, owner = prefill_chunk_series(points, 2048)
    service = np.bincount(owner, weights=np.asarray(iteration_cadence_s(cm, stats)))
    q = float(np.quantile(service, 0.9)) if service.size > 1 else float(service[0])
    return float(service.mean()), float((service**2).mean()), q


_LENGTHS = {"fixed": FixedLength(value=2000),
            "lognormal": LognormalLength(kind="lognormal", mean=2000, std=1200, max=8000)}


def _simulated_ttft_p90(dist: str, servers: int, rate: float, rho: float) -> float:
    length = 2000 if dist == "fixed" else _LENGTHS[dist].model_dump(mode="json")
    n = int(max(4000, 400 * servers) / math.sqrt(1.0 - rho))
    data = {
        "model": "llama-3.1-8b", "precision": "bf16",
        "instance_groups": [
            {"name": "p", "count": servers, "hardware": "h100-sxm", "role": "prefill",
             "max_num_batched_tokens": 2048, "max_num_seqs": 256},
            {"name": "d", "count": 1, "hardware": "h100-sxm", "role": "decode",
             "max_num_batched_tokens": 2048, "max_num_seqs": 2048}],
        "router": {"kind": "least_outstanding"},
        "network": {"bandwidth": "1000 GB/s"},
        "workload": {"num_requests": n, "arrival": {"kind": "poisson", "rate": rate},
                     "input_len": length, "output_len": 2},
    }
    ttft = simulate(scenario_from_dict(data)).requests.ttft_s
    return float(np.quantile(ttft[~np.isnan(ttft)], 0.9))


@pytest.mark.slow
@pytest.mark.parametrize("dist", ["fixed", "lognormal"])
def test_pooled_ttft_against_the_simulator(dist: str) -> None:
    """c = 1 … 32 prefill instances behind least-outstanding, ρ = 0.3 … 0.95: the pooled model's
    TTFT p90 is within -12 % / +90 % of the simulated one everywhere (conservative at heavy
    load, as documented), within -12 % / +35 % up to ρ = 0.9, with a median of 0.95-1.25 — while the
    per-instance M/G/1 model it replaces is off by up to 12×."""
    es, es2, sq = _service(dist)
    pooled_ratios, per_instance_ratios = [], []
    for servers in (1, 4, 16, 32):
        for rho in (0.3, 0.6, 0.8, 0.9, 0.95):
            rate = rho * servers / es
            sim = _simulated_ttft_p90(dist, servers, rate, rho)
            pooled = float(jsq_wait_quantile_s(0.9, servers, rate, es, es2)) + sq
            separate = float(mg1_wait_quantile_s(0.9, rate / servers, es, es2)) + sq
            ratio = pooled / sim
            assert 0.88 <= ratio <= 1.9, (servers, rho, ratio)
            if rho <= 0.9:
                assert ratio <= 1.35, (servers, rho, ratio)
            pooled_ratios.append(ratio)
            per_instance_ratios.append(separate / sim)
    assert 0.95 <= statistics.median(pooled_ratios) <= 1.25
    assert max(per_instance_ratios) > 5.0  # what the old model did with many instances

    def spread(xs: list[float]) -> float:
        return statistics.mean(abs(math.log(x)) for x in xs)

    assert spread(pooled_ratios) < spread(per_instance_ratios) / 4
