"""The queueing formulas against exact M/D/1 results and simulation."""

import math

import numpy as np
import pytest

from servingcast.planner.queueing import (
    gated_batch_ttft_quantile_s,
    group_spread_factor,
    lifetime_spread,
    md1_wait_cdf,
    md1_wait_quantile_s,
    mg1_mean_wait_s,
    mg1_wait_quantile_s,
    mg1_wait_tail,
    occupancy_quantile,
    rate_elasticity,
)


def _lindley(rho: float, n: int = 400_000, seed: int = 1) -> np.ndarray:
    """Waiting times of an M/D/1 queue with D = 1 (Lindley's recursion)."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rho, n)
    wait = np.zeros(n)
    for i in range(1, n):
        wait[i] = max(0.0, wait[i - 1] + 1.0 - gaps[i])
    return wait[n // 10:]


@pytest.mark.parametrize("rho", [0.3, 0.5, 0.7])
def test_pollaczek_khinchine_is_the_exact_md1_mean(rho: float) -> None:
    d = 0.2
    lam = rho / d
    exact = rho * d / (2 * (1 - rho))
    assert float(mg1_mean_wait_s(lam, d, d * d)) == pytest.approx(exact, rel=1e-12)
    # The mean of the exact M/D/1 distribution: integral of P(W > t), t/D <= 30.
    grid = np.linspace(0.0, 30 * d, 6001)
    tail = np.array([1.0 - md1_wait_cdf(t, lam, d) for t in grid])
    assert float(np.sum((tail[1:] + tail[:-1]) / 2) * (grid[1] - grid[0])) == pytest.approx(
        exact, rel=2e-3)


def test_the_approximation_keeps_the_exact_mean_and_idle_probability() -> None:
    lam, es, es2 = 3.0, 0.2, 0.05
    rho = lam * es
    mean = float(mg1_mean_wait_s(lam, es, es2))
    assert mg1_wait_tail(0.0, lam, es, es2) == pytest.approx(rho)
    grid = np.linspace(0.0, 60 * mean, 20001)
    tail = np.array([mg1_wait_tail(t, lam, es, es2) for t in grid])
    assert float(np.sum((tail[1:] + tail[:-1]) / 2) * (grid[1] - grid[0])) == pytest.approx(
        mean, rel=1e-3)


@pytest.mark.parametrize("rho", [0.3, 0.5, 0.7, 0.8, 0.9])
def test_ttft_quantile_close_to_exact_md1(rho: float) -> None:
    """W_q + D (a prefill's TTFT) within 3% below and 19% above the exact M/D/1 value."""
    for q in (0.9, 0.99):
        if q == 0.99 and rho > 0.8:
            continue  # the exact series needs t/D <= 30
        exact = md1_wait_quantile_s(q, rho, 1.0) + 1.0
        approx = float(mg1_wait_quantile_s(q, rho, 1.0, 1.0)) + 1.0
        assert 0.97 * exact <= approx <= 1.19 * exact, (rho, q, exact, approx)


def test_approximation_against_simulated_md1() -> None:
    wait = _lindley(0.8)
    assert float(np.mean(wait)) == pytest.approx(0.8 / (2 * 0.2), rel=0.04)
    for q in (0.9, 0.99):
        sim = float(np.quantile(wait, q))
        assert float(mg1_wait_quantile_s(q, 0.8, 1.0, 1.0)) == pytest.approx(sim, rel=0.08)


def test_quantile_edges() -> None:
    assert float(mg1_wait_quantile_s(0.9, 0.05, 1.0, 1.0)) == 0.0   # idle 95% of the time
    assert math.isinf(float(mg1_wait_quantile_s(0.9, 1.0, 1.0, 1.0)))  # overloaded
    with pytest.raises(ValueError, match="quantile"):
        mg1_wait_quantile_s(1.0, 0.5, 1.0, 1.0)


def test_occupancy_quantile_is_poisson_when_service_time_is_fixed() -> None:
    rng = np.random.default_rng(0)
    for mean in (20.0, 200.0):
        sample = rng.poisson(mean, 200_000)
        assert float(occupancy_quantile(mean, 0.9)) == pytest.approx(
            float(np.quantile(sample, 0.9)), rel=0.03)
    # A batch that slows itself (elasticity < 1) swings wider; past the knee it has no quantile.
    assert float(occupancy_quantile(100.0, 0.9, 0.25)) > float(occupancy_quantile(100.0, 0.9))
    assert math.isinf(float(occupancy_quantile(100.0, 0.9, 0.0)))


def test_rate_elasticity() -> None:
    b = np.arange(1.0, 100.0)
    assert np.allclose(rate_elasticity(b, 3.0 * b), 1.0)        # rate proportional to batch
    tau = 0.01 + 0.001 * b                                       # affine step time
    assert np.allclose(rate_elasticity(b, b / tau)[1:-1], (0.01 / tau)[1:-1], rtol=0.02)


def _gated(lam: float, tau: float, work: float, n_iter: int = 200_000,
           seed: int = 3) -> np.ndarray:
    """TTFTs of the gated-batch engine (queueing item 9) by direct simulation: each iteration
    lasts tau plus ``work`` per prompt that arrived during the previous one; a prompt's TTFT is
    the rest of the iteration it arrived in plus the next (its own work included)."""
    rng = np.random.default_rng(seed)
    d, out = tau, []
    for _ in range(n_iter):
        k = rng.poisson(lam * d)
        nxt = tau + k * work
        if k:
            out.append(d - rng.uniform(0.0, d, k) + nxt)
        d = nxt
    return np.concatenate(out)


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.8])
def test_gated_batches_against_their_simulation(rho: float) -> None:
    tau, work = 0.02, 0.07
    lam = rho / work
    ttft = _gated(lam, tau, work)
    for q in (0.5, 0.9, 0.975):
        model = float(gated_batch_ttft_quantile_s(q, lam, tau, work, work**2,
                                                  np.array([tau + work])))
        # The gamma law of the queue part: within 10 % at every load and percentile.
        assert model == pytest.approx(float(np.quantile(ttft, q)), rel=0.10), q
    assert math.isinf(float(gated_batch_ttft_quantile_s(0.9, 1.0 / work, tau, work, work**2,
                                                        np.array([tau + work]))))


def test_lifetime_spread_is_the_time_average_of_an_ou_process() -> None:
    # Var of the mean over T of a process with correlation exp(-|s|/θ), over its variance:
    # (2/T²) ∫_0^T (T - s) e^{-s/θ} ds, at T/θ = ε.
    for eps in (0.05, 0.3, 1.0, 2.5):
        s = np.linspace(0.0, eps, 200_001)
        y = (eps - s) * np.exp(-s)
        g = 2.0 / eps**2 * float(np.sum((y[1:] + y[:-1]) / 2.0 * np.diff(s)))
        assert float(lifetime_spread(eps)) == pytest.approx(math.sqrt(g), rel=1e-6)
    assert float(lifetime_spread(0.0)) == pytest.approx(1.0)
    assert float(lifetime_spread(1.0)) == pytest.approx(math.sqrt(2 / math.e), rel=1e-9)


def test_prefill_noise_and_the_knee_widen_the_batch() -> None:
    base = float(occupancy_quantile(100.0, 0.95))
    assert base == pytest.approx(100.0 + 1.6448536 * 10.0, rel=1e-6)  # ε = 1: Poisson, exact
    assert float(occupancy_quantile(100.0, 0.95, 1.0, 1.0)) == pytest.approx(
        100.0 + 1.6448536 * 10.0 * math.sqrt(2.0), rel=1e-6)
    # Near the knee: the diffusion's spread times 1 + k (1/ε - 1).
    from servingcast.planner.queueing import KNEE_SPREAD

    assert float(occupancy_quantile(100.0, 0.95, 0.25)) == pytest.approx(
        100.0 + 1.6448536 * 20.0 * (1.0 + 3.0 * KNEE_SPREAD), rel=1e-6)


def test_group_spread_factor() -> None:
    """Queueing item 10: least-outstanding, 1/√k; round-robin, √((1 + 1/k) / 2); 1 alone."""
    assert float(group_spread_factor(1)) == 1.0
    assert float(group_spread_factor(1, round_robin=True)) == 1.0
    assert float(group_spread_factor(4)) == pytest.approx(0.5)
    assert float(group_spread_factor(4, round_robin=True)) == pytest.approx(math.sqrt(0.625))
    both = group_spread_factor(np.array([2.0, 16.0]))
    assert np.allclose(both, [1 / math.sqrt(2), 0.25])
    assert float(group_spread_factor(10**6, round_robin=True)) > math.sqrt(0.5)
