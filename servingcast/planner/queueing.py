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

9. **Gated batches** (an aggregated engine with chunked prefill; an **approximation** derived
   here, in the spirit of gated polling systems — Takagi, "Analysis of Polling Systems", MIT
   Press 1986). Each iteration carries the decodes (``τ_dec``) and every prompt that arrived
   during the previous iteration, whose pure prefill work is ``S`` each (``ρ = λ E[S]``). The
   iteration lengths ``D`` then satisfy ``D' = τ_dec + Σ_{arrivals during D} S_j``, so::

       E[D]   = τ_dec / (1 - ρ)
       Var(D) = λ E[D] E[S²] / (1 - ρ²)

   A prompt arrives during an iteration ``D*`` (length-biased: ``E[D*ⁿ] = E[Dⁿ⁺¹] / E[D]``,
   with ``D`` taken as a gamma law of that mean and variance), waits its residual ``U D*``
   (``U`` uniform), then rides the next iteration with the others that arrived during ``D*``
   (Poisson, ``λ D*``) — everyone in it gets the first token at its end::

       TTFT = U D* + Σ_{λ D* others} S_j + τ_dec + S_own
       X = U D* + Σ S_j:  E[X] = (1/2 + ρ) E[D*],
                          E[X²] = (1/3 + ρ + ρ²) E[D*²] + λ E[S²] E[D*]

   ``X`` is taken as a gamma law of those moments (quantile by Wilson–Hilferty) and the TTFT
   percentile solves ``mean_i P(X > t - own_i) = 1 - q`` over the prompt lengths as in item 8.
   On a Llama-3.1-70B tp2 H200 engine at 65 % prefill load (1024-token prompts) the mean is
   224 ms against the simulator's 223 ms, where the M/G/1 token queue of item 2 gives 203 ms.
   It holds while the batch stays within the token budget; above, the M/G/1 queue is used.

10. **Groups of decoding instances** (decode or aggregated instances, ``k`` of one configuration
    behind one router; an **approximation**). Least-outstanding routing is join-the-shortest-
    queue on the requests in flight: it keeps the instances within about a request of each
    other, so in heavy traffic the vector of their batches collapses onto its total (state-space
    collapse: Foschini & Salz, "A basic dynamic routing problem and diffusion", IEEE Trans.
    Commun. 26, 1978; Reiman, "Some diffusion approximations with state space collapse", 1984).
    The total is one pooled system of ``k`` times the load, whose batch variance is ``k`` times
    an instance's (item 5 scales with the mean), and each instance holds ``1/k`` of it::

        Var(b_i) ≈ Var(b) / k       (least-outstanding)

    Round-robin sends every ``k``-th arrival to an instance: a renewal stream whose squared
    coefficient of variation is ``c_a² = 1/k`` (Erlang-``k`` gaps). An infinite-server queue fed
    by it has the peakedness ``z = 1 + (c_a² - 1) η``, ``η = 1/2`` for exponential times in
    service and 1 for fixed ones (Whitt, "Heavy-traffic approximations for service systems with
    blocking", AT&T Bell Labs Tech. J. 63, 1984); we take ``η = 1/2``, the smaller gain::

        Var(b_i) ≈ Var(b) (1 + 1/k) / 2       (round-robin)

    The spread of the batch quantile ``b_q - b`` (item 5, with its knee and prefill-noise
    terms) is multiplied by the square root (:func:`group_spread_factor`); what does not pool —
    an aggregated instance's own prefill stalls in its TPOT — keeps its full size. The
    simulator checks it (``tests/planner/test_queueing.py``).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from servingcast.planner._crossing import crossing

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


#: Item 5's correction near the knee, fitted to the simulator (an **empirical** factor): the
#: batch's spread is ``1 + k (1/ε - 1)`` times the diffusion's. Decode instances of
#: Llama-3.1-70B fp8 tp4 on H100 and H200 (2000/300 tokens, Poisson arrivals) at ε = 0.56,
#: 0.33, 0.29 and 0.24 swung 1.17, 1.37, 1.43 and 1.55 times as far to their 95th percentile
#: as the diffusion says (k = 0.22, 0.18, 0.18, 0.17): a request leaves after its own number
#: of iterations, not at a rate that grows with the batch, so the drift back to ``b*`` is
#: weaker than the linearised one. Exact (factor 1) at ε = 1.
KNEE_SPREAD = 0.18


def occupancy_quantile(mean_occupancy: npt.ArrayLike, quantile: float,
                       elasticity: npt.ArrayLike = 1.0,
                       extra_noise: npt.ArrayLike = 0.0) -> FloatArray:
    """``m + z_q √(m (1 + x) / ε) (1 + k (1/ε - 1))``: the ``quantile`` of the batch of mean
    ``m`` whose rate has elasticity ``ε = d ln λ / d ln b`` (items 4 and 5; ``ε = 1``: Poisson),
    whose departures carry ``x`` times the Poisson noise on top (item 5: prefill beside the
    decodes), with :data:`KNEE_SPREAD` ``k``. ``inf`` for ``ε <= 0`` (past the knee: no stable
    batch)."""
    m = np.maximum(np.asarray(mean_occupancy, dtype=np.float64), 0.0)
    e = np.asarray(elasticity, dtype=np.float64)
    x = np.asarray(extra_noise, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.sqrt(m * (1.0 + x) / e) * (1.0 + KNEE_SPREAD * (1.0 / e - 1.0))
    return np.where(e > 0, m + NormalDist().inv_cdf(quantile) * spread, np.inf)


def group_spread_factor(count: npt.ArrayLike, round_robin: bool = False) -> FloatArray:
    """``√(Var(b_i) / Var(b))`` of item 10: how much narrower the batch of one of ``count``
    instances behind one router swings than that of an instance alone — ``1 / √k`` with
    least-outstanding routing, ``√((1 + 1/k) / 2)`` with round-robin (1 for ``k = 1``)."""
    k = np.maximum(np.asarray(count, dtype=np.float64), 1.0)
    share = (1.0 + 1.0 / k) / 2.0 if round_robin else 1.0 / k
    return np.asarray(np.sqrt(share), dtype=np.float64)


def lifetime_spread(elasticity: npt.ArrayLike) -> FloatArray:
    """``√g(ε)``: the spread of the batch a request sees *on average over its life*, relative to
    the batch's own (item 5). The batch relaxes to ``b*`` with time constant
    ``θ = 1 / μ'(b*) = T / ε`` (``T`` a request's time in decode, ``μ = b / T``), so over a
    life of ``T = ε θ`` the mean of an Ornstein–Uhlenbeck process has the variance
    ``g(x) = 2 (x - 1 + e^(-x)) / x²`` times the process's, ``x = T / θ = ε`` (the variance of
    a time average of an exponentially correlated process; Papoulis, "Probability, Random
    Variables and Stochastic Processes", 1991, ch. 9). TPOT — a request's mean iteration — is
    planned at that batch: ``b + (b_q - b) √g(ε)``; 1 for ``ε -> 0`` (slow waves: a request
    sees one batch), 0.86 for ``ε = 1``."""
    x = np.maximum(np.asarray(elasticity, dtype=np.float64), 1e-9)
    with np.errstate(invalid="ignore", over="ignore"):
        g = 2.0 * (x - 1.0 + np.exp(-x)) / (x * x)
    # Near 0 the closed form loses precision: g = 1 - x/3 + x²/12 - …
    g = np.where(x < 1e-3, 1.0 - x / 3.0, g)
    return np.asarray(np.sqrt(np.clip(g, 0.0, 1.0)), dtype=np.float64)


#: The span of :func:`rate_elasticity`'s difference: ``b (1 ± δ)``.
ELASTICITY_SPAN = 0.01


def rate_elasticity(batch: npt.ArrayLike, rate: npt.ArrayLike) -> FloatArray:
    """``d ln λ / d ln b`` along a grid of batches and their steady-state rates (item 5), as
    the difference over ``b (1 ± δ)`` (``δ`` = :data:`ELASTICITY_SPAN`, ``ln λ`` interpolated
    linearly in ``ln b``; one-sided at the grid's ends): the diffusion's drift is a slope over
    the batch's swing, not between neighbouring whole batches, where an engine whose step
    grows in whole rows per rank (attention data-parallel ranks) has a staircase."""
    b = np.asarray(batch, dtype=np.float64)
    lam = np.asarray(rate, dtype=np.float64)
    if b.size < 2:
        return np.ones_like(b)
    log_b, log_lam = np.log(b), np.log(lam)
    lo = np.maximum(log_b + math.log(1.0 - ELASTICITY_SPAN), log_b[0])
    hi = np.minimum(log_b + math.log(1.0 + ELASTICITY_SPAN), log_b[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (np.interp(hi, log_b, log_lam) - np.interp(lo, log_b, log_lam)) / (hi - lo)
    return np.asarray(np.where(hi > lo, slope, 1.0), dtype=np.float64)


#: Servers times elements :func:`erlang_c` works on at once (a block of its rows).
_ERLANG_BLOCK = 1 << 18


def erlang_c(servers: npt.ArrayLike, offered_load: npt.ArrayLike) -> FloatArray:
    """``C(c, a)``: the probability that an arrival waits in an M/M/c queue offered ``a = λ E[S]``
    erlangs (item 6), elementwise; 1 when ``a >= c``. From Erlang's B,
    ``1 / B(c, a) = Σ_(j=0..c) Π_(i=1..j) (c - i + 1) / a`` (its recursion
    ``B(n) = a B(n - 1) / (n + a B(n - 1))`` unrolled: a sum of positive terms, stable for
    thousands of servers; Jagerman, "Some properties of the Erlang loss function", Bell System
    Technical Journal 53, 1974), then ``C = c B / (c - a (1 - B))``. The products and sums run
    in order along ``j``, so each element's value does not depend on the others."""
    c, a = np.broadcast_arrays(np.asarray(servers, dtype=np.float64),
                               np.asarray(offered_load, dtype=np.float64))
    if c.size == 0:
        return np.zeros_like(a)
    flat_c, flat_a = c.reshape(-1), a.reshape(-1)
    inverse = np.ones_like(flat_a)  # 1 / B
    most = int(np.max(flat_c))
    if most >= 1:
        i = np.arange(1, most + 1, dtype=np.float64)
        rows = max(1, _ERLANG_BLOCK // most)
        for start in range(0, flat_c.size, rows):
            cs, as_ = flat_c[start:start + rows], flat_a[start:start + rows]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                sums = np.cumsum(np.cumprod((cs[:, None] - i + 1.0) / as_[:, None], axis=-1),
                                 axis=-1)
            n = cs.astype(np.int64)
            at = sums[np.arange(cs.size), np.maximum(n - 1, 0)]
            inverse[start:start + rows] += np.where(n >= 1, at, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = (1.0 / inverse).reshape(c.shape)
        wait = c * loss / (c - a * (1.0 - loss))
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
    c, a = np.broadcast_arrays(c, a)
    p_wait = np.array(np.clip(a, 0.0, 1.0), dtype=np.float64)
    group = np.asarray(c != 1.0)
    if group.any():  # Erlang C only where there is more than one server
        p_wait[group] = erlang_c(c[group], a[group])
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


def _points_and_parameters(own_points_s: npt.ArrayLike, *parameters: npt.ArrayLike
                           ) -> tuple[FloatArray, list[FloatArray]]:
    """Own times as an array with the points on the last axis, and each queue parameter
    broadcast to the leading axes."""
    own = np.asarray(own_points_s, dtype=np.float64)
    if own.ndim == 0:
        own = own[None]
    lead = own.shape[:-1]
    return own, [np.broadcast_to(np.asarray(p, dtype=np.float64), lead) for p in parameters]


def wait_plus_service_quantile_s(quantile: float, servers: npt.ArrayLike,
                                 arrival_rate: npt.ArrayLike, mean_service_s: npt.ArrayLike,
                                 second_moment_s2: npt.ArrayLike,
                                 own_points_s: npt.ArrayLike) -> FloatArray:
    """The ``quantile`` of wait + own time over equally weighted points ``own_points_s[..., i]``
    (item 8), vectorised over the leading axes (queue parameters broadcast against them):
    ``t`` with ``mean_i P(W > t - own_i) = 1 - quantile``, between the own times' quantile
    and the wait's quantile plus the longest own time (:func:`_exponential_mixture_quantile`);
    ``inf`` when ``ρ >= 1``."""
    own, (c, lam, es, es2) = _points_and_parameters(
        own_points_s, servers, arrival_rate, mean_service_s, second_moment_s2)
    tail = 1.0 - quantile
    _, a, p_wait, mean = _jsq_wait_law(c, lam, es, es2)
    stable = a < c
    lo = np.quantile(own, quantile, axis=-1)
    hi = jsq_wait_quantile_s(quantile, c, lam, es, es2) + own.max(axis=-1)
    hi = np.where(stable, hi, lo)
    t = _exponential_mixture_quantile(tail, np.where(stable & (p_wait > 0), p_wait, 0.0),
                                      np.where(stable, mean, 1.0), own)
    return np.where(stable, np.clip(t, lo, hi), np.inf)


def _exponential_mixture_quantile(tail: float, p_wait: FloatArray, mean: FloatArray,
                                  own: FloatArray) -> FloatArray:
    """The smallest ``t`` with ``mean_i P(W > t - own_i) <= tail`` for the wait law of item 7
    (``P(W > s) = C exp(-s / M)`` for ``s >= 0``, 1 for ``s < 0``), in closed form.

    With the own times sorted, ``s_1 <= … <= s_n``, and ``t`` in ``[s_j, s_(j+1))`` (``j`` of them
    at or below ``t``), the miss fraction is
    ``(n - j) / n + (C / n) E_j exp(-(t - s_j) / M)``, ``E_j = Σ_(i<=j) exp(-(s_j - s_i) / M)``:
    it is ``(n - j) / n + C E_j / n`` at ``s_j`` and falls to ``tail`` at
    ``t = s_j + M ln(C E_j / (n (tail - (n - j) / n)))``; the answer is the first segment's
    ``s_j`` (where the miss fraction steps below ``tail``) or that ``t``, whichever lies in it
    first. A bisection on the miss fraction finds the same ``t`` to rounding
    (``tests/planner/test_scale.py``)."""
    s = np.sort(own, axis=-1)
    n = s.shape[-1]
    cw, m = p_wait[..., None], mean[..., None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        decay = np.exp(-np.diff(s, axis=-1) / m)
    sums = np.empty_like(s)
    sums[..., 0] = 1.0
    for j in range(1, n):
        sums[..., j] = sums[..., j - 1] * decay[..., j - 1] + 1.0
    above = (n - np.arange(1, n + 1, dtype=np.float64)) / n
    waiting = cw * sums / n
    room = tail - above
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inside = s + m * np.log(waiting / room)
    at = np.where(above + waiting <= tail, s, np.where(room > 0, inside, np.inf))
    upper = np.concatenate([s[..., 1:], np.full(s.shape[:-1] + (1,), np.inf)], axis=-1)
    return np.asarray(np.where(at < upper, at, np.inf).min(axis=-1), dtype=np.float64)


def ttft_quantile_s(quantile: float, servers: float, arrival_rate: float, mean_service_s: float,
                    second_moment_s2: float, service_points_s: npt.ArrayLike) -> float:
    """The ``quantile`` of TTFT = wait + own service over equally weighted service points
    (item 8; :func:`wait_plus_service_quantile_s` for one queue)."""
    return float(wait_plus_service_quantile_s(quantile, servers, arrival_rate, mean_service_s,
                                              second_moment_s2, service_points_s))


def pooled_rates_per_s(quantile: float, servers: npt.ArrayLike, mean_service_s: npt.ArrayLike,
                       second_moment_s2: npt.ArrayLike, service_points_s: npt.ArrayLike,
                       limit_s: npt.ArrayLike) -> FloatArray:
    """For each number of servers, the largest arrival rate ``λ`` at which at most
    ``1 - quantile`` of the requests see a TTFT (wait plus their own service, over the
    equally weighted ``service_points_s``; :func:`ttft_miss_fraction`) above ``limit_s``: the
    zero of ``ln(1 - quantile) - ln(miss(λ))`` on ``λ ∈ [0, c / E[S])`` (the miss fraction
    grows smoothly with ``λ``; :func:`~servingcast.planner._crossing.crossing`). Zero where
    even an idle group misses too many.

    Several queues at once: ``mean_service_s``, ``second_moment_s2``, ``limit_s`` and the
    leading axes of ``service_points_s`` (its last axis holds the points) broadcast against
    ``servers``; each element is solved on its own, so the result does not depend on what is
    solved beside it."""
    c = np.asarray(servers, dtype=np.float64)
    points = np.asarray(service_points_s, dtype=np.float64)
    if points.ndim == 0:
        points = points[None]
    shape = np.broadcast_shapes(c.shape, np.shape(mean_service_s), np.shape(second_moment_s2),
                                np.shape(limit_s), points.shape[:-1])
    c, es, es2, limit = (np.broadcast_to(np.asarray(x, dtype=np.float64), shape).reshape(-1)
                         for x in (c, mean_service_s, second_moment_s2, limit_s))
    sets = points.reshape(-1, points.shape[-1])
    which = np.broadcast_to(np.arange(sets.shape[0]).reshape(points.shape[:-1]),
                            shape).reshape(-1)
    tail = 1.0 - quantile
    idle_miss = np.mean(sets[which] > limit[:, None], axis=-1)
    live = (es > 0) & (idle_miss <= tail)
    with np.errstate(divide="ignore", invalid="ignore"):
        top = np.where(live, c / es, 0.0)
    log_tail = math.log(tail)

    def excess(rows: npt.NDArray[np.intp], lam: FloatArray) -> FloatArray:
        cr = c[rows]
        _, a, p_wait, mean = _jsq_wait_law(cr, lam, es[rows], es2[rows])
        slack = limit[rows, None] - sets[which[rows]]
        miss = _tail(slack, p_wait[:, None], mean[:, None], (a >= cr)[:, None]).mean(axis=-1)
        with np.errstate(divide="ignore"):
            return np.asarray(log_tail - np.log(miss), dtype=np.float64)

    ok, _ = crossing(excess, np.zeros_like(top), top)
    return ok.reshape(shape)


def _normal_sf(z: FloatArray) -> FloatArray:
    """``1 - Φ(z)``, elementwise (Abramowitz & Stegun 7.1.26 for erfc; error below 1.5e-7)."""
    # t (0.254829592 + t (-0.284496736 + t (1.421413741 + t (-1.453152027 + t 1.061405429)))),
    # t = 1 / (1 + 0.3275911 x), x = |z| / √2, times exp(-x²) / 2: in place (the hot loop of
    # the gated-batch TTFT), in the same order of operations.
    x = np.abs(z)
    x /= math.sqrt(2.0)
    t = 0.3275911 * x
    t += 1.0
    np.divide(1.0, t, out=t)
    poly = t * 1.061405429
    for coef in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += coef
        poly *= t
    poly *= 0.5
    np.multiply(x, x, out=x)
    np.negative(x, out=x)
    np.exp(x, out=x)
    poly *= x
    return np.where(z >= 0, poly, 1.0 - poly)


def _gamma_sf(x: FloatArray, mean: FloatArray, var: FloatArray) -> FloatArray:
    """``P(X > x)`` for a gamma law of ``mean`` and ``var`` (Wilson–Hilferty: ``(X / E[X])^(1/3)``
    is nearly normal with mean ``1 - 1/(9k)`` and variance ``1/(9k)``, ``k = mean² / var``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        k = mean * mean / var
        h = 1.0 / (9.0 * k)
        z = np.maximum(x, 0.0) / mean
        np.cbrt(z, out=z)
        z -= 1.0 - h
        z /= np.sqrt(h)
    return np.where(x <= 0, 1.0, _normal_sf(z))


def gated_batch_ttft_quantile_s(quantile: float, arrival_rate: npt.ArrayLike,
                                decode_s: npt.ArrayLike, mean_work_s: npt.ArrayLike,
                                work_second_moment_s2: npt.ArrayLike,
                                own_points_s: npt.ArrayLike) -> FloatArray:
    """The ``quantile`` of TTFT on an engine that prefills, each iteration, the prompts that
    arrived during the previous one (item 9), over equally weighted own times
    ``own_points_s[..., i]`` (``τ_dec`` plus the prompt's own work); vectorised over the
    leading axes. ``inf`` when ``ρ >= 1``. The zero of ``ln mean_i P(X > t - own_i) - ln(1 - q)``
    between the own times' quantile and that plus ``20 (E[X] + √Var(X))``
    (:func:`~servingcast.planner._crossing.crossing`; the mixture steps at each own time)."""
    own, (lam, tau, es, es2) = _points_and_parameters(
        own_points_s, arrival_rate, decode_s, mean_work_s, work_second_moment_s2)
    rho = lam * es
    stable = rho < 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(stable, rho, 0.0)
        d1 = tau / (1.0 - r)
        var_d = lam * d1 * es2 / (1.0 - r * r)
        # gamma moments of D: E[D²] = m² + v, E[D³] = m³ + 3 m v + 2 v² / m
        d2 = d1 * d1 + var_d
        d3 = d1**3 + 3.0 * d1 * var_d + 2.0 * var_d**2 / d1
        star1, star2 = d2 / d1, d3 / d1
        mean_x = (0.5 + r) * star1
        var_x = (1.0 / 3.0 + r + r * r) * star2 + lam * es2 * star1 - mean_x**2
    var_x = np.maximum(var_x, 1e-12 * np.maximum(mean_x, 1e-9) ** 2)
    tail = 1.0 - quantile
    lo = np.quantile(own, quantile, axis=-1)
    hi = lo + 20.0 * (mean_x + np.sqrt(var_x))
    hi = np.where(stable & np.isfinite(hi), hi, lo)
    points = own.reshape(-1, own.shape[-1])
    m, v = mean_x.reshape(-1, 1), var_x.reshape(-1, 1)
    log_tail = math.log(tail)

    def excess(rows: npt.NDArray[np.intp], t: FloatArray) -> FloatArray:
        miss = _gamma_sf(t[:, None] - points[rows], m[rows], v[rows]).mean(axis=-1)
        with np.errstate(divide="ignore"):
            return np.asarray(np.log(miss) - log_tail, dtype=np.float64)

    _, t = crossing(excess, lo.reshape(-1), hi.reshape(-1), jumps=points)
    return np.where(stable, t.reshape(own.shape[:-1]), np.inf)
