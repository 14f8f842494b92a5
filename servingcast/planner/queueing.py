"""Queueing theory for TTFT: the waiting time of an M/G/1 queue, its mean and its percentiles.

Not a hardware formula: the service times come from the cost model; this module only says how
long a request waits behind others when requests arrive as a Poisson stream of rate ``λ`` and
one server works through them in order (first come, first served).

Notation: ``S`` the service time, ``ρ = λ E[S] < 1`` the utilisation, ``W`` the time a request
waits before its service starts.

1. Mean wait, the Pollaczek–Khinchine formula (exact for M/G/1)::

       E[W] = λ E[S²] / (2 (1 - ρ))

   For a deterministic service ``D`` (M/D/1) this is ``ρ D / (2 (1 - ρ))``: DistServe's average
   TTFT of a prefill instance, ``D + λ D² / (2 (1 - λ D))`` (Zhong et al., "DistServe", OSDI
   2024, section 3.1), is ``D + E[W]``.

2. Percentiles of ``W`` — an **approximation**: a point mass ``1 - ρ`` at zero (exact: an arrival
   finds the server idle with probability ``1 - ρ``) and an exponential tail with the exact mean::

       P(W > t) ≈ ρ exp(-ρ t / E[W])
       W_q = (E[W] / ρ) ln(ρ / (1 - q))   if ρ > 1 - q, else 0

   Kingman ("On queues in heavy traffic", J. R. Stat. Soc. B 24, 1962) showed the conditional
   wait becomes exponential with this mean as ``ρ -> 1``; the two-moment form above is the
   usual engineering approximation of the M/G/1 waiting-time distribution (Tijms, "A First
   Course in Stochastic Models", Wiley 2003, ch. 2). Against the exact M/D/1 distribution
   (:func:`md1_wait_cdf`) the 90th-percentile wait is within 7% (6% short at ``ρ = 0.3``, where
   the wait is a fraction of ``D``; 2-6% long for ``ρ >= 0.5``) and the 99th percentile is long by
   6-35%, so ``W_q + D`` — the TTFT of a prefill — is within 3% below and 19% above the exact
   value for ``0.3 <= ρ <= 0.9`` (``tests/planner/test_queueing.py`` checks it).

3. The exact M/D/1 waiting-time distribution (Erlang 1909; Crommelin, "Delay probability
   formulae when the holding times are constant", P.O.E.E.J. 25, 1932)::

       P(W <= t) = (1 - ρ) Σ_{k=0}^{⌊t/D⌋} (λ(kD - t))^k / k! · exp(-λ(kD - t))

   An alternating series: accurate in double precision while ``t / D`` stays below about 30,
   which is where we use it (checking item 2).

4. Requests in decode (continuous batching admits every arrival): with Poisson arrivals the
   number of requests in service of an M/G/∞ system is Poisson with mean ``m = λ E[T]``, whatever
   the distribution of the time ``T`` each spends (the classical M/G/∞ result: Takács,
   "Introduction to the Theory of Queues", 1962; Kleinrock, "Queueing Systems" vol. 1, 1975).
   Its ``q`` quantile is approximately ``m + z_q √m`` (normal approximation; ``z_q`` the standard
   normal quantile).

5. A batch that slows its own service (an **approximation**, derived here). With continuous
   batching the time in decode grows with the batch: ``T(b) = n τ(b)``, and the departure rate
   is ``μ(b) = b / T(b)``, the rate ``λ(b)`` at which ``b`` is the steady state. Linearising the
   drift ``λ - μ(b)`` around ``b*`` and keeping the Poisson noise of arrivals and departures
   (``2λ``) gives an Ornstein–Uhlenbeck process (the diffusion approximation of a birth-death
   process; Whitt, "Stochastic-Process Limits", Springer 2002) with stationary variance::

       Var(b) ≈ 2λ / (2 μ'(b*)) = b* / ε,    ε = d ln λ(b) / d ln b   at b*

   ``ε = 1`` when the time in service does not depend on the batch (item 4's Poisson variance);
   near an instance's throughput knee ``ε -> 0`` and the batch swings widely. The quantile is
   then ``b_q ≈ b + z_q √(b / ε)``: the batch an instance must hold, and still run within the
   TPOT limit, a fraction ``q`` of the time. Conservative for TPOT, which each request averages
   over its decode (against the simulator, the predicted p90 TPOT is within a few percent).

6. A **group** of ``c`` identical servers fed by one router (a prefill instance group; each
   virtual engine of a pipelined instance is a server). Pooled, the group queues like an M/G/c
   queue, not like ``c`` separate M/G/1 queues (DistServe section 3.1 models one instance; the
   group extends it to ``c`` servers). Offered load ``a = λ E[S]``, ``ρ = a / c``. The
   probability of waiting is Erlang's C formula of M/M/c::

       C(c, a) = (a^c / c!) · c / (c - a)  /  (Σ_{k<c} a^k / k!  +  (a^c / c!) · c / (c - a))

   and, given a wait, the wait is taken as exponential with the Allen–Cunneen mean
   (Allen, "Probability, Statistics and Queueing Theory", 1978; exact for M/M/c and, with
   ``c = 1``, Pollaczek–Khinchine's)::

       E[W | W > 0] = E[S²] / (2 E[S] (c - a))

7. The router is not one central queue: least-outstanding routing (join the shortest queue)
   commits a request to one instance when it arrives, so a request that finds every server busy
   waits for *that* server's job in progress, not for the first of ``c`` to finish. We add the
   difference between the mean residual service of one server and that of the first of ``c``
   (``E[R] = E[S²] / (2 E[S])``; residuals of ``c`` busy servers spread over ``(0, S)`` end first
   after ``E[R] · 2 / (c + 1)`` on average) to the conditional mean, an **approximation** of
   ours, and keep the exponential tail (so the quantile grows continuously from 0 as ``C``
   passes ``1 - q``)::

       W_q ≈ (E[W | W > 0] + E[R] (c - 1) / (c + 1)) ln(C / (1 - q))   if C > 1 - q, else 0

   With ``c = 1`` this is item 2 exactly. Against the simulator (prompts of one length and
   lognormal, ``c = 1 … 32``, ``ρ = 0.3 … 0.95``, one prompt per iteration), ``W_q + S_q`` — the
   TTFT percentile — is within about -15 % / +20 % for ``ρ <= 0.9`` and conservative above
   (``tests/planner/test_queueing.py``). When an instance batches several short prompts in one
   iteration its real capacity is higher than this model's (conservative).

8. TTFT over a length distribution. The wait does not depend on the request's own prompt
   (first come, first served), so the fraction of requests missing a TTFT limit ``L`` is the
   mixture over the prompts' service times ``S_i`` (equally weighted quantile points)::

       miss(L) = mean_i P(W > L - S_i)       (P(W > t) = C exp(-t / M), item 7's tail)

   The TTFT percentile solves ``miss(t) = 1 - q``. Adding the wait's quantile to the service's
   quantile instead is far too conservative when the longest prompts alone nearly fill the
   limit (the simulator sustained 3.7× such a plan's rate).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def utilization(arrival_rate: npt.ArrayLike, mean_service_s: npt.ArrayLike) -> FloatArray:
    """``ρ = λ E[S]``."""
    return np.asarray(arrival_rate, dtype=np.float64) * np.asarray(mean_service_s, np.float64)


def mg1_mean_wait_s(arrival_rate: npt.ArrayLike, mean_service_s: npt.ArrayLike,
                    second_moment_s2: npt.ArrayLike) -> FloatArray:
    """Pollaczek–Khinchine mean wait (item 1); ``inf`` when ``ρ >= 1``."""
    lam = np.asarray(arrival_rate, dtype=np.float64)
    rho = utilization(lam, mean_service_s)
    es2 = np.asarray(second_moment_s2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        wait = lam * es2 / (2.0 * (1.0 - rho))
    return np.where(rho < 1.0, wait, np.inf)


def mg1_wait_quantile_s(quantile: float, arrival_rate: npt.ArrayLike,
                        mean_service_s: npt.ArrayLike,
                        second_moment_s2: npt.ArrayLike) -> FloatArray:
    """The ``quantile`` of the wait by the two-moment exponential approximation (item 2).

    Elementwise over arrays; ``inf`` when ``ρ >= 1``, 0 when ``ρ <= 1 - quantile``.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    rho = utilization(arrival_rate, mean_service_s)
    mean = mg1_mean_wait_s(arrival_rate, mean_service_s, second_moment_s2)
    tail = 1.0 - quantile
    with np.errstate(divide="ignore", invalid="ignore"):
        value = mean / rho * np.log(rho / tail)
    value = np.where(rho > tail, value, 0.0)
    return np.where(rho < 1.0, value, np.inf)


def mg1_wait_tail(t_s: float, arrival_rate: float, mean_service_s: float,
                  second_moment_s2: float) -> float:
    """``P(W > t)`` by the approximation of item 2."""
    rho = arrival_rate * mean_service_s
    if rho >= 1.0:
        return 1.0
    if rho <= 0.0:
        return 0.0
    mean = float(mg1_mean_wait_s(arrival_rate, mean_service_s, second_moment_s2))
    return rho * math.exp(-rho * t_s / mean)


def md1_wait_cdf(t_s: float, arrival_rate: float, service_s: float) -> float:
    """Exact ``P(W <= t)`` of the M/D/1 queue (item 3); requires ``t / D <= 30``."""
    lam, d = arrival_rate, service_s
    rho = lam * d
    if rho >= 1.0:
        return 0.0
    if t_s < 0:
        return 0.0
    if t_s / d > 30.0:
        raise ValueError(f"t/D = {t_s / d:.1f} > 30: the alternating series loses precision")
    total = 0.0
    for k in range(math.floor(t_s / d) + 1):
        x = lam * (k * d - t_s)
        total += x**k / math.factorial(k) * math.exp(-x)
    return (1.0 - rho) * total


def md1_wait_quantile_s(quantile: float, arrival_rate: float, service_s: float) -> float:
    """The exact M/D/1 wait ``quantile`` by bisection on :func:`md1_wait_cdf`."""
    if md1_wait_cdf(0.0, arrival_rate, service_s) >= quantile:
        return 0.0
    lo, hi = 0.0, service_s
    while md1_wait_cdf(hi, arrival_rate, service_s) < quantile:
        lo, hi = hi, hi * 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if md1_wait_cdf(mid, arrival_rate, service_s) < quantile:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def occupancy_quantile(mean_occupancy: npt.ArrayLike, quantile: float,
                       elasticity: npt.ArrayLike = 1.0) -> FloatArray:
    """``m + z_q √(m / ε)``: the ``quantile`` of the batch of mean ``m`` whose rate has
    elasticity ``ε = d ln λ / d ln b`` (items 4 and 5; ``ε = 1``: Poisson). ``inf`` for
    ``ε <= 0`` (past the knee: no stable batch)."""
    m = np.maximum(np.asarray(mean_occupancy, dtype=np.float64), 0.0)
    e = np.asarray(elasticity, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.sqrt(m / e)
    return np.where(e > 0, m + NormalDist().inv_cdf(quantile) * spread, np.inf)


def rate_elasticity(batch: npt.ArrayLike, rate: npt.ArrayLike) -> FloatArray:
    """``d ln λ / d ln b`` along a grid of batches and their steady-state rates (item 5)."""
    b = np.asarray(batch, dtype=np.float64)
    lam = np.asarray(rate, dtype=np.float64)
    if b.size < 2:
        return np.ones_like(b)
    return np.asarray(np.gradient(np.log(lam), np.log(b)), dtype=np.float64)


def _log_poisson_terms(offered: FloatArray, kmax: int) -> FloatArray:
    """``ln(a^k / k!)`` for ``k = 0 … kmax`` along a new last axis."""
    k = np.arange(kmax + 1, dtype=np.float64)
    log_fact = np.cumsum(np.log(np.maximum(k, 1.0)))
    with np.errstate(divide="ignore"):
        log_a = np.log(offered)[..., None]
    return np.asarray(k * log_a - log_fact, dtype=np.float64)


def erlang_c(servers: npt.ArrayLike, offered_load: npt.ArrayLike) -> FloatArray:
    """``C(c, a)``: the probability that an arrival waits in an M/M/c queue offered ``a = λ E[S]``
    erlangs (item 6), elementwise; 1 when ``a >= c``. Summed in log space (stable for thousands
    of servers; Cooper, "Introduction to Queueing Theory", 1981, section 3.4)."""
    c, a = np.broadcast_arrays(np.asarray(servers, dtype=np.float64),
                               np.asarray(offered_load, dtype=np.float64))
    if c.size == 0:
        return np.zeros_like(a)
    kmax = int(np.max(c))
    safe = np.clip(a, 1e-300, None)
    terms = _log_poisson_terms(safe, kmax)
    k = np.arange(kmax + 1)
    below = np.where(k < c[..., None], terms, -np.inf)
    top = np.take_along_axis(terms, c.astype(np.int64)[..., None], axis=-1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        top = top + np.log(c) - np.log(np.maximum(c - safe, 1e-300))
        head = np.max(np.maximum(below.max(axis=-1), top), initial=-np.inf)
        rest = np.log(np.exp(below - head[..., None]).sum(axis=-1)) + head
        wait = 1.0 / (1.0 + np.exp(rest - top))
    wait = np.where(a > 0, wait, 0.0)
    return np.where(a < c, np.clip(wait, 0.0, 1.0), 1.0)


def _jsq_wait_law(servers: npt.ArrayLike, arrival_rate: npt.ArrayLike,
                  mean_service_s: npt.ArrayLike, second_moment_s2: npt.ArrayLike,
                  ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``(c, a, C, M)`` of items 6 and 7: servers, offered load, the probability of waiting and
    the mean of the exponential wait given a wait (Allen–Cunneen plus the router's residual
    term), elementwise. ``C`` is ``a`` itself for one server (Erlang C of one server)."""
    c = np.asarray(servers, dtype=np.float64)
    es = np.asarray(mean_service_s, dtype=np.float64)
    a = np.asarray(arrival_rate, dtype=np.float64) * es
    p_wait = np.where(c == 1.0, np.clip(a, 0.0, 1.0), erlang_c(c, a))
    residual = np.asarray(second_moment_s2, dtype=np.float64) / (2.0 * es)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = residual / (c - a) + residual * (c - 1.0) / (c + 1.0)
    return c, a, p_wait, mean


def jsq_wait_quantile_s(quantile: float, servers: npt.ArrayLike, arrival_rate: npt.ArrayLike,
                        mean_service_s: npt.ArrayLike,
                        second_moment_s2: npt.ArrayLike) -> FloatArray:
    """The ``quantile`` of the wait in a group of ``servers`` behind a least-outstanding router
    (items 6 and 7), elementwise; ``inf`` when ``ρ >= 1``. ``servers = 1`` gives
    :func:`mg1_wait_quantile_s`."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    c, a, p_wait, mean = _jsq_wait_law(servers, arrival_rate, mean_service_s, second_moment_s2)
    tail = 1.0 - quantile
    with np.errstate(divide="ignore", invalid="ignore"):
        value = mean * np.log(p_wait / tail)
    value = np.where(p_wait > tail, value, 0.0)
    return np.where(a < c, value, np.inf)


def _tail(slack_s: FloatArray, p_wait: FloatArray, mean: FloatArray,
          overloaded: npt.NDArray[np.bool_]) -> FloatArray:
    """``P(W > s) = C exp(-s / M)``; 1 for ``s < 0`` or an overloaded queue."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tail = p_wait * np.exp(-np.maximum(slack_s, 0.0) / mean)
    tail = np.where(p_wait > 0, tail, 0.0)
    return np.where((slack_s < 0) | overloaded, 1.0, tail)


def jsq_wait_tail(t_s: npt.ArrayLike, servers: npt.ArrayLike, arrival_rate: npt.ArrayLike,
                  mean_service_s: npt.ArrayLike, second_moment_s2: npt.ArrayLike) -> FloatArray:
    """``P(W > t)`` in the model of :func:`jsq_wait_quantile_s` (items 6 and 7), elementwise:
    ``C exp(-t / M)``; 1 for ``t < 0`` or ``ρ >= 1``."""
    c, a, p_wait, mean = _jsq_wait_law(servers, arrival_rate, mean_service_s, second_moment_s2)
    return _tail(np.asarray(t_s, dtype=np.float64), p_wait, mean, a >= c)


def ttft_miss_fraction(limit_s: float, servers: npt.ArrayLike, arrival_rate: npt.ArrayLike,
                       mean_service_s: float, second_moment_s2: float,
                       service_points_s: npt.ArrayLike) -> FloatArray:
    """The fraction of requests whose wait plus own service ``S_i`` passes ``limit_s``, over
    equally weighted service points (item 8): ``mean_i P(W > limit - S_i)``, elementwise over
    ``servers`` and ``arrival_rate``. The wait does not depend on the request's own length
    (first come, first served), so the mixture is exact given the wait's tail."""
    points = np.atleast_1d(np.asarray(service_points_s, dtype=np.float64))
    c, lam = np.broadcast_arrays(np.asarray(servers, dtype=np.float64),
                                 np.asarray(arrival_rate, dtype=np.float64))
    slack = limit_s - points
    tails = jsq_wait_tail(slack[None, :], c.reshape(-1)[:, None], lam.reshape(-1)[:, None],
                          mean_service_s, second_moment_s2)
    return np.asarray(tails.mean(axis=-1).reshape(c.shape), dtype=np.float64)


def wait_plus_service_quantile_s(quantile: float, servers: npt.ArrayLike,
                                 arrival_rate: npt.ArrayLike, mean_service_s: npt.ArrayLike,
                                 second_moment_s2: npt.ArrayLike,
                                 own_points_s: npt.ArrayLike) -> FloatArray:
    """The ``quantile`` of wait + own time over equally weighted points ``own_points_s[..., i]``
    (item 8), vectorised over the leading axes (queue parameters broadcast against them):
    ``t`` with ``mean_i P(W > t - own_i) = 1 - quantile``, by bisection between the own
    times' quantile and the wait's quantile plus the longest own time; ``inf`` when
    ``ρ >= 1``."""
    own = np.asarray(own_points_s, dtype=np.float64)
    if own.ndim == 0:
        own = own[None]
    lead = own.shape[:-1]
    c = np.broadcast_to(np.asarray(servers, dtype=np.float64), lead)
    lam = np.broadcast_to(np.asarray(arrival_rate, dtype=np.float64), lead)
    es = np.broadcast_to(np.asarray(mean_service_s, dtype=np.float64), lead)
    es2 = np.broadcast_to(np.asarray(second_moment_s2, dtype=np.float64), lead)
    tail = 1.0 - quantile
    # The wait's law does not depend on t: computed once, outside the bisection.
    _, a, p_wait, mean = _jsq_wait_law(c, lam, es, es2)
    stable = a < c
    lo = np.quantile(own, quantile, axis=-1)
    hi = jsq_wait_quantile_s(quantile, c, lam, es, es2) + own.max(axis=-1)
    hi = np.where(stable, hi, lo)
    p_wait, mean, overloaded = p_wait[..., None], mean[..., None], ~stable[..., None]
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        miss = _tail(mid[..., None] - own, p_wait, mean, overloaded).mean(axis=-1)
        over = miss > tail
        lo = np.where(over, mid, lo)
        hi = np.where(over, hi, mid)
    return np.where(stable, hi, np.inf)


def ttft_quantile_s(quantile: float, servers: float, arrival_rate: float, mean_service_s: float,
                    second_moment_s2: float, service_points_s: npt.ArrayLike) -> float:
    """The ``quantile`` of TTFT = wait + own service over equally weighted service points
    (item 8; :func:`wait_plus_service_quantile_s` for one queue)."""
    return float(wait_plus_service_quantile_s(quantile, servers, arrival_rate, mean_service_s,
                                              second_moment_s2, service_points_s))


def pooled_rates_per_s(quantile: float, servers: npt.ArrayLike, mean_service_s: float,
                       second_moment_s2: float, service_points_s: npt.ArrayLike, limit_s: float,
                       iterations: int = 48) -> FloatArray:
    """For each number of servers, the largest arrival rate ``λ`` at which at most
    ``1 - quantile`` of the requests see a TTFT (wait plus their own service, over the
    equally weighted ``service_points_s``; :func:`ttft_miss_fraction`) above ``limit_s``: a
    bisection on ``λ ∈ [0, c / E[S])``, vectorised over ``servers``. Zero where even an idle
    group misses too many."""
    c = np.asarray(servers, dtype=np.float64)
    points = np.atleast_1d(np.asarray(service_points_s, dtype=np.float64))
    tail = 1.0 - quantile
    if mean_service_s <= 0 or float(np.mean(points > limit_s)) > tail:
        return np.zeros_like(c)
    lo = np.zeros_like(c)
    hi = c / mean_service_s
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        ok = ttft_miss_fraction(limit_s, c, mid, mean_service_s, second_moment_s2,
                                points) <= tail
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid)
    return lo
