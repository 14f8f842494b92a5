"""The simulator against queueing theory where the theory is exact.

A prefill instance that takes one prompt per iteration (``max_num_batched_tokens`` = the prompt)
serving fixed-length prompts with one-token outputs is an M/D/1 queue: Poisson arrivals, a
deterministic service time ``D`` (the cost model's prefill iteration), one server. Its mean TTFT
(DistServe, Zhong et al. OSDI 2024, section 3.1) is

    TTFT = D + R D^2 / (2 (1 - R D))

with arrival rate ``R`` and utilisation ``R D``. On one sample path the waiting times obey
Lindley's recursion ``W_{n+1} = max(0, W_n + D - A_{n+1})``: the simulator must reproduce it
request by request.
"""

import numpy as np
import pytest

from servingcast.costmodel import Batch
from servingcast.sim.cluster import build_groups
from servingcast.sim.scenario import Scenario
from tests.sim.conftest import group, make_scenario, run

PROMPT = 1024


def md1(rate: float, n: int, seed: int) -> Scenario:
    engine = {"max_num_batched_tokens": PROMPT, "enable_chunked_prefill": False}
    return make_scenario([group("p", role="prefill", **engine), group("d", role="decode")],
                         network={"bandwidth": "50 GB/s"}, seed=seed,
                         workload={"num_requests": n, "input_len": PROMPT, "output_len": 1,
                                   "arrival": {"kind": "poisson", "rate": rate}})


def service_time() -> float:
    cm = build_groups(md1(1.0, 1, 0))[0].cost_model
    return float(cm.iteration_s(Batch.of(prefill=[(PROMPT, 0)]).stats())[0])


def test_sample_path_follows_lindleys_recursion() -> None:
    d = service_time()
    result = run(md1(0.8 / d, 20_000, seed=7))
    req = result.requests
    gaps = np.diff(req.arrival_s)
    wait = np.zeros(req.arrival_s.size)
    for n, gap in enumerate(gaps.tolist()):
        wait[n + 1] = max(0.0, wait[n] + d - gap)
    np.testing.assert_allclose(req.ttft_s, d + wait, rtol=1e-9, atol=1e-9)


# Requests per run and runs (seeds): the standard error of the mean TTFT stays under 1.2%,
# a quarter of the 5% tolerance (the M/D/1 waiting time's autocorrelation grows as 1/(1-rho)^2).
@pytest.mark.parametrize(("rho", "n", "seeds"), [(0.3, 20_000, 1), (0.6, 40_000, 1),
                                                 (0.8, 60_000, 3)])
def test_mean_ttft_matches_md1(rho: float, n: int, seeds: int) -> None:
    d = service_time()
    rate = rho / d
    theory = d + rate * d * d / (2.0 * (1.0 - rate * d))
    means = [run(md1(rate, n, seed)).summary.ttft_ms.mean / 1e3 for seed in range(seeds)]
    assert np.mean(means) == pytest.approx(theory, rel=0.05)
