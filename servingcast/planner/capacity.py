"""The capacity of one instance under the SLOs: req/s it serves with TTFT and TPOT in bounds.

Every time below is the cost model's (:class:`~servingcast.costmodel.CostModel` through
:mod:`servingcast.costmodel.steady`); every memory figure is :func:`memory_plan` /
:func:`max_batch_size`; waiting times and occupancies are :mod:`servingcast.planner.queueing`.
Notation for a workload: prompt lengths ``L`` (quantile points, means ``E[L]``, ``E[L²]``),
output lengths ``O``; ``n = E[O] - 1`` decode steps per request (the first token comes from
prefill); the mean context of a decoding sequence ``C = E[L] + E[O²] / (2 E[O])`` (a sequence is
seen in proportion to its decode time); ``q`` the quantile each latency limit is planned at —
``(1 + α) / 2`` for an attainment target ``α`` (:func:`per_slo_quantile`: a request must meet
both limits, so each gets half of the tail budget). An instance with ``pp``
stages runs ``m = min(pp, b)`` micro-batches (vLLM's virtual engines) of ``β = b / m`` decodes
each, every one advancing once per ``τ = max(latency, m * interval)`` (:func:`iteration_cadence_s`).

Batch sizes fluctuate: ``b`` below is the *mean* number of decoding requests, and
``b_q = b + z_q √(b / ε)`` the ``q`` quantile of that occupancy, ``ε = d ln rate / d ln b``
(:func:`~servingcast.planner.queueing.occupancy_quantile`: Poisson far from the instance's
throughput knee, much wider near it). TPOT is checked at ``b_q`` (``TPOT_q``, the mean iteration
with ``b_q`` decodes and their share of prefill), and the KV cache and ``max_num_seqs`` must hold
``b_q`` sequences: the SLO then holds for a fraction ``q`` of the time, not only on average.

**Decode instance** (disaggregated). ``b`` such that ``b_q <= min(max_num_seqs, b_kv)``, where
``b_kv`` sequences of ``ceil(E[L] + E[O])`` tokens fit the KV cache::

    TPOT(b)   = τ(decode of β sequences at context C)
    rate(b)   = b / (n · TPOT(b))                        (Little's law)
    capacity  = max { rate(b) : TPOT(b_q) <= TPOT limit } (and what its links can receive)

**Prefill group** (disaggregated). Prompts are prefilled one at a time, in chunks of
``max_num_batched_tokens``; ``S(L)`` is the sum of its chunks' ``τ``. A group of ``k`` instances
behind one least-outstanding router is one pooled queue of ``c = k`` servers (DistServe section
3.1 models one instance as M/D/1, the group extends it to M/G/c; a pipelined instance is one
server whose service is the prompt's latency through every stage, since the simulator overlaps
a prefill instance's prompts much less than ``pp`` ways;
:func:`~servingcast.planner.queueing.jsq_wait_quantile_s`, with ``E[S]``, ``E[S²]`` over the
prompt lengths)::

    TTFT_q(λ; k) = W_q(λ; c = k, E[S], E[S²]) + S_q
    f(k)         = max { λ : TTFT_q(λ; k) <= TTFT limit }  (and what k instances' links send)

``f(k) / k`` grows with ``k`` (pooling): the MILP takes ``f`` for ``k = 1 … 64`` (beyond, the
per-instance rate of 64, a lower bound), :attr:`Candidate.pooled`.

Batching several short prompts into one iteration would serve them faster; the model does not
count on it (conservative for short prompts, exact for prompts of ``max_num_batched_tokens``).

**Aggregated instance** with chunked prefill (Sarathi-Serve, Agrawal et al., OSDI 2024). In
steady state each iteration of a virtual engine carries its ``β`` decodes and on average
``c = r E[L]`` prefill tokens, where ``r = β / n`` requests start per iteration (every request
spends ``n`` iterations decoding). A prefill chunk takes what the token budget ``K`` leaves,
``K' = K - β``. Prefill lands in pieces of ``p = min(K', max(E[L], c))`` tokens, so the mean
iteration mixes decode-only iterations (``τ_dec``) and iterations with a piece (``τ_p``):
``τ_avg = τ_dec + (c / p)(τ_p - τ_dec)`` (for a cost linear in the tokens, the iteration of
mean sums; for MoE experts, whose weights an iteration reads once, less); ``τ_full`` is an
iteration with a full chunk of ``K'``. A prompt's own prefill is its full chunks, then a last
iteration with its remainder ``r_L`` and — with probability ``ρ = c / K'``, the prefill share —
other prompts' tokens up to the budget (the cost model is linear in the chunk's tokens)::

    TPOT(b)   = τ_avg = τ_dec + (c / p)(τ_p - τ_dec)
    TPOT_q    = TPOT(b) + √((TPOT(b_q) - TPOT(b))² + (z_q σ)²),  σ = √(r n E[L²]) κ / n
    rate(b)   = m · r / τ_avg
    S(L)      = L · τ_full / K'            (the prefill queue works through tokens at K'/τ_full)
    own(L)    = (ceil(L/K') - 1) τ_full + τ_dec + (r_L + ρ (K' - r_L)) / K' · (τ_full - τ_dec)
    TTFT_q(b) = quantile_q(W + own(L))    (W: the M/G/1 wait at rate / m with E[S], E[S²])
    capacity  = max { rate(b) : TPOT_q <= TPOT limit, TTFT_q <= TTFT limit, c < K' }

where ``σ`` is the spread of a request's TPOT from the prefill that lands beside its decodes
(prompts start as a Poisson stream; each prefill token adds ``κ = (τ_full - τ_dec) / K'``), with
``b_q + pp`` sequences (one prompt in prefill per virtual engine) within the KV cache and
``max_num_seqs``. Chunk positions average out over a prompt: the attention pairs and KV reads
of a chunk are the prompt's totals per token (:func:`chunked_prefill_sums`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from servingcast.costmodel.batch import BatchStats
from servingcast.costmodel.memory import MemoryPlan, max_batch_size
from servingcast.costmodel.steady import (
    add_stats,
    chunked_prefill_sums,
    decode_batch_stats,
    iteration_cadence_s,
    prefill_chunk_series,
)
from servingcast.costmodel.step import CostModel
from servingcast.planner.lengths import length_max, length_points
from servingcast.planner.problem import Workload
from servingcast.planner.queueing import (
    occupancy_quantile,
    pooled_rates_per_s,
    rate_elasticity,
    ttft_quantile_s,
    wait_plus_service_quantile_s,
)

FloatArray = npt.NDArray[np.float64]


def per_slo_quantile(attainment: float) -> float:
    """The quantile each latency limit is planned at: ``q' = 1 - (1 - q) / 2``.

    The attainment ``q`` counts the requests that meet *every* limit; a request fails when its
    TTFT or its TPOT misses. Planning each limit at ``q'`` leaves half of the tail budget to
    each, so both hold together for at least ``q`` (Bonferroni: ``P(TTFT or TPOT misses) <=
    P(TTFT misses) + P(TPOT misses)``). Planning both at ``q`` alone let a plan whose two limits
    were binding fail together (the simulator showed 80 % attainment against a 90 % target on
    an aggregated instance at its planned load: 8 % of requests missing TTFT, 13 % TPOT)."""
    return 1.0 - (1.0 - attainment) / 2.0


@dataclass(frozen=True)
class Shape:
    """What capacities need from a workload's lengths and attainment target."""

    input_points: FloatArray
    input_mean: float
    input_sq_mean: float
    output_mean: float
    decode_steps: float
    decode_context: float
    seq_len: int
    quantile: float
    input_max: int = 0
    total_max: int = 0

    @classmethod
    def of(cls, workload: Workload) -> Shape:
        """Quantile points and moments of ``workload``."""
        inp = length_points(workload.input_len)
        out = length_points(workload.output_len)
        o1, o2 = float(out.mean()), float((out**2).mean())
        i1 = float(inp.mean())
        in_max = length_max(workload.input_len)
        return cls(inp, i1, float((inp**2).mean()), o1, max(o1 - 1.0, 1e-9),
                   i1 + o2 / (2.0 * o1), math.ceil(i1 + o1),
                   per_slo_quantile(workload.slo.attainment),
                   in_max, in_max + length_max(workload.output_len))

    def quantile_of(self, values: FloatArray) -> FloatArray:
        """The ``q`` quantile along the last axis of per-prompt values that grow with the prompt
        length (evaluated at :attr:`input_points`, which are sorted): equal weights, linear
        interpolation between order statistics, as ``np.quantile``."""
        n = values.shape[-1]
        pos = self.quantile * (n - 1)
        j = min(int(pos), n - 1)
        w = pos - j
        upper = values[..., min(j + 1, n - 1)]
        return (1.0 - w) * values[..., j] + w * upper  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=256)
def shape_of(workload: Workload) -> Shape:
    """:meth:`Shape.of`, cached (workloads are frozen)."""
    return Shape.of(workload)


@dataclass(frozen=True)
class StepRequest:
    """The iterations a profile needs costed: one micro-batch's stats and the number of
    micro-batches in flight, elementwise."""

    stats: BatchStats
    micro: FloatArray


@dataclass(frozen=True)
class Capacity:
    """An instance's capacity under given limits, and where it comes from: the mean batch
    ``batch`` and its ``q`` quantile ``max_batch``, TTFT and TPOT at the attainment quantile."""

    rate_per_s: float
    batch: float
    max_batch: float
    ttft_s: float | None
    tpot_s: float | None
    limited_by: str


@dataclass(frozen=True)
class Infeasible:
    """Why an instance cannot meet an SLO at any load: ``reason`` and the best it reaches."""

    reason: str
    best_s: float


@dataclass(frozen=True)
class OperatingPoint:
    """Predicted mean batch, TTFT and TPOT at the attainment quantile and mean TPOT at a planned
    load (None where not applicable)."""

    rate_per_s: float
    batch: float
    ttft_s: float | None
    tpot_s: float | None
    tpot_mean_s: float | None


def _interp_at(rate: FloatArray, values: FloatArray, at: float) -> float:
    """``values`` at the first grid point where the running maximum of ``rate`` reaches ``at``,
    interpolated linearly from the point before it."""
    rate = np.maximum.accumulate(rate)
    if at <= rate[0]:
        return float(values[0])
    j = int(np.searchsorted(rate, at))
    if j >= rate.size:
        return float(values[-1])
    lo, hi = rate[j - 1], rate[j]
    w = (at - lo) / (hi - lo) if hi > lo else 1.0
    return float(values[j - 1] + w * (values[j] - values[j - 1]))


class DecodeProfile:
    """TPOT and rate of a decode instance for every mean batch it can hold."""

    role = "decode"

    def __init__(self, cm: CostModel, shape: Shape, plan: MemoryPlan, max_num_seqs: int,
                 nic_rate_per_s: float) -> None:
        self.b_kv = max_batch_size(plan, shape.seq_len)
        self.cap = max_num_seqs
        self.nic_rate = nic_rate_per_s
        self.top = top = min(max_num_seqs, self.b_kv)
        b = np.arange(1, max(top, 0) + 1, dtype=np.float64)
        micro = np.minimum(float(cm.parallel.pp), np.maximum(b, 1.0))
        stats = decode_batch_stats(b / micro, shape.decode_context, cm.model.sliding_window)
        self.request = StepRequest(stats, micro)
        self.batch = b
        self._steps = shape.decode_steps
        self.quantile = shape.quantile
        self.tpot_mean = self.tpot = self.rate = self.max_batch = np.zeros(0)

    def complete(self, steps: FloatArray) -> None:
        """Take the cadences of :attr:`request` (see :func:`evaluate_profiles`)."""
        self.tpot_mean = steps
        self.rate = self.batch / (self._steps * steps)
        self.max_batch, self.tpot = _quantile_tpot(self.batch, self.rate, steps,
                                                   self.quantile, self.top)

    def capacity(self, ttft_limit_s: float, tpot_limit_s: float) -> Capacity | Infeasible:
        """The largest rate whose batch meets the TPOT limit (module docstring)."""
        if self.batch.size == 0:
            return Infeasible("kv_cache", 0.0)
        ok = self.tpot <= tpot_limit_s
        if not ok.any():
            if self.tpot_mean[0] > tpot_limit_s or not np.isfinite(self.tpot[0]):
                return Infeasible("tpot", float(self.tpot_mean[0]))
            return Infeasible("kv_cache", 0.0)
        j = int(np.flatnonzero(ok)[-1])
        if j + 1 < self.batch.size and np.isfinite(self.tpot[j + 1]):
            limit = "tpot"
        else:
            limit = "kv_cache" if self.b_kv <= self.cap else "max_num_seqs"
        rate = float(self.rate[j])
        if self.nic_rate < rate:
            rate, limit = self.nic_rate, "network"
        return Capacity(rate, float(self.batch[j]), float(self.max_batch[j]), None,
                        float(self.tpot[j]), limit)

    def at_rate(self, rate_per_s: float) -> OperatingPoint:
        """Batch and TPOT at a planned load."""
        return OperatingPoint(rate_per_s, _interp_at(self.rate, self.batch, rate_per_s), None,
                              _interp_at(self.rate, self.tpot, rate_per_s),
                              _interp_at(self.rate, self.tpot_mean, rate_per_s))


class PrefillProfile:
    """Service-time moments of a prefill instance; TTFT of a group of such instances behind a
    least-outstanding router at any rate, by the pooled queue of
    :func:`~servingcast.planner.queueing.jsq_wait_quantile_s` (each of the ``pp`` virtual
    engines of an instance is a server)."""

    role = "prefill"

    #: Group sizes whose capacity is computed exactly (:meth:`group_rates`); a larger group is
    #: credited the per-instance rate of this size (the per-instance rate grows with the group,
    #: so this is a lower bound).
    POOLED_EXACT = 64

    def __init__(self, cm: CostModel, shape: Shape, plan: MemoryPlan, chunk_tokens: int,
                 nic_rate_per_s: float) -> None:
        # A pipelined prefill instance is planned as one server whose service is a prompt's
        # latency through every stage: the simulator overlaps a prefill instance's prompts far
        # less than pp ways (5 tp1-pp2 instances at a modelled ρ = 0.6 as pp servers each were
        # 97.5 % busy, and overloaded at 0.9), so pp virtual engines are not counted: one
        # micro-batch in flight, each iteration its full latency.
        longest = max(int(shape.input_points.max()), shape.input_max)
        self.fits = max_batch_size(plan, longest) >= 1
        self.nic_rate = nic_rate_per_s
        self.quantile = shape.quantile
        stats, owner = prefill_chunk_series(shape.input_points, chunk_tokens,
                                            cm.model.sliding_window)
        self.request = StepRequest(stats, np.ones(owner.size))
        self._owner = owner
        self._shape = shape
        self.service = np.zeros(0)
        self.mean_s = self.second_moment_s2 = self.service_q = 0.0
        self._capacity: dict[float, Capacity] = {}
        self._groups: dict[float, FloatArray] = {}

    def complete(self, steps: FloatArray) -> None:
        """Take the cadences of :attr:`request` (see :func:`evaluate_profiles`)."""
        service = np.bincount(self._owner, weights=steps,
                              minlength=self._shape.input_points.size).astype(np.float64)
        self.service = service
        self.mean_s = float(service.mean())
        self.second_moment_s2 = float((service**2).mean())
        self.service_q = float(self._shape.quantile_of(service))

    def ttft_s(self, rate_per_s: float, count: int = 1) -> float:
        """TTFT percentile of a group of ``count`` instances receiving ``rate_per_s`` in all
        (wait plus own prefill over the prompt lengths,
        :func:`~servingcast.planner.queueing.ttft_quantile_s`)."""
        return ttft_quantile_s(self.quantile, count, float(rate_per_s), self.mean_s,
                               self.second_moment_s2, self.service)

    def group_rates(self, ttft_limit_s: float, max_count: int) -> FloatArray:
        """``f(n)`` for ``n = 1 … min(max_count, POOLED_EXACT)``: the largest rate a group of
        ``n`` instances serves with the TTFT percentile within the limit (and within what their
        links send). Zero when a prompt alone misses the limit."""
        top = max(1, min(max_count, self.POOLED_EXACT))
        cached = self._groups.get(ttft_limit_s)
        if cached is None or cached.size < top:
            n = np.arange(1, top + 1, dtype=np.float64)
            if not self.fits or self.service_q > ttft_limit_s:
                rates = np.zeros_like(n)
            else:
                rates = pooled_rates_per_s(self.quantile, n, self.mean_s,
                                           self.second_moment_s2, self.service, ttft_limit_s)
                rates = np.minimum(np.maximum.accumulate(rates), n * self.nic_rate)
            self._groups[ttft_limit_s] = cached = rates
        return cached[:top]

    def capacity(self, ttft_limit_s: float, tpot_limit_s: float) -> Capacity | Infeasible:
        """The largest rate of one instance whose TTFT percentile meets the limit (the TPOT
        limit does not apply to a prefill instance)."""
        if not self.fits:
            return Infeasible("kv_cache", 0.0)
        if self.service_q > ttft_limit_s:
            return Infeasible("ttft", self.service_q)
        cached = self._capacity.get(ttft_limit_s)
        if cached is not None:
            return cached
        rate = float(self.group_rates(ttft_limit_s, 1)[0])
        if rate <= 0.0:
            return Infeasible("ttft", self.service_q)
        limit = "network" if rate >= self.nic_rate * (1 - 1e-9) else "ttft"
        cap = Capacity(rate, 0.0, 0.0, float(self.ttft_s(rate)), None, limit)
        self._capacity[ttft_limit_s] = cap
        return cap

    def at_rate(self, rate_per_s: float, count: int = 1) -> OperatingPoint:
        """TTFT percentile with each of ``count`` pooled instances at ``rate_per_s``."""
        return OperatingPoint(rate_per_s, 0.0, self.ttft_s(rate_per_s * count, count), None,
                              None)


class AggregatedProfile:
    """Rate, TPOT and TTFT of an aggregated instance for every mean batch it can hold."""

    role = "aggregated"

    #: The prefill chunk keeps at least 1/16 of the token budget (beyond that, prompts of any
    #: useful length take hundreds of iterations and no SLO holds); the whole instance's batch
    #: stays within the budget, as vLLM requires ``max_num_seqs <= max_num_batched_tokens``.
    MIN_CHUNK_FRACTION = 1.0 / 16.0

    def __init__(self, cm: CostModel, shape: Shape, plan: MemoryPlan, max_num_seqs: int,
                 budget_tokens: int) -> None:
        pp = cm.parallel.pp
        window = cm.model.sliding_window
        self.b_kv = max_batch_size(plan, shape.seq_len) - pp
        self.cap = max_num_seqs - pp
        self.b_budget = budget_tokens * (1.0 - self.MIN_CHUNK_FRACTION)
        self.top = top = max(0.0, min(self.cap, self.b_kv, self.b_budget))
        b = np.arange(1, int(top) + 1, dtype=np.float64)
        micro = np.minimum(float(pp), np.maximum(b, 1.0))
        beta = b / micro
        r = beta / shape.decode_steps
        chunk = budget_tokens - beta
        lens = shape.input_points
        pairs, kv, _ = chunked_prefill_sums(lens[None, :], chunk[:, None], window)
        per_token_pairs = pairs.mean(axis=1) / shape.input_mean
        per_token_kv = kv.mean(axis=1) / shape.input_mean

        def prefill(tokens: FloatArray) -> BatchStats:
            zero = np.zeros_like(tokens)
            return BatchStats(prefill_tokens=tokens, prefill_pairs=tokens * per_token_pairs,
                              prefill_kv_tokens=tokens * per_token_kv, decode_seqs=zero,
                              decode_tokens=zero, decode_pairs=zero, decode_kv_tokens=zero,
                              logit_seqs=tokens / shape.input_mean)

        c_avg = r * shape.input_mean
        # Prefill lands in pieces of about a prompt (or of the chunk, or everything when every
        # iteration carries prefill): the mean iteration mixes decode-only iterations and
        # iterations with a piece, in proportion c_avg / piece. With a cost linear in the
        # tokens this is the iteration of mean sums; with MoE experts (weights read once per
        # iteration, whatever the tokens) it is not, and the mixture is the right one.
        piece = np.minimum(chunk, np.maximum(shape.input_mean, c_avg))
        decode = decode_batch_stats(beta, shape.decode_context, window)
        stats = _concat(add_stats(decode, prefill(piece)), add_stats(decode, prefill(chunk)),
                        decode)
        self.request = StepRequest(stats, np.concatenate([micro, micro, micro]))
        self.batch = b
        self.quantile = shape.quantile
        self._parts = (shape, micro, r, chunk, c_avg, piece)
        self.tpot_mean = self.tpot = self.rate = self.ttft = self.max_batch = np.zeros(0)

    def complete(self, steps: FloatArray) -> None:
        """Take the cadences of :attr:`request` (see :func:`evaluate_profiles`)."""
        shape, micro, r, chunk, c_avg, piece = self._parts
        n = self.batch.size
        tau_piece, tau_full, tau_dec = steps[:n], steps[n: 2 * n], steps[2 * n:]
        tau_avg = tau_dec + c_avg / piece * (tau_piece - tau_dec)
        self.tpot_mean = tau_avg
        self.rate = micro * r / tau_avg
        self.max_batch, tpot_q = _quantile_tpot(self.batch, self.rate, tau_avg,
                                                shape.quantile, self.top)
        # A request's TPOT also depends on how much prefill lands beside its decodes: prompts
        # start as a Poisson stream (r per iteration), each prefill token adds
        # κ = (τ_full - τ_dec) / K' to an iteration, so over the n iterations of a request the
        # added time is compound Poisson with variance r n E[L²] κ² and the TPOT's standard
        # deviation is √(r n E[L²]) κ / n. It adds to the batch's swing in quadrature.
        kappa = (tau_full - tau_dec) / chunk
        sigma = np.sqrt(r * shape.decode_steps * shape.input_sq_mean) * kappa / (
            shape.decode_steps)
        z = NormalDist().inv_cdf(shape.quantile)
        self.tpot = tau_avg + np.sqrt((tpot_q - tau_avg) ** 2 + (z * sigma) ** 2)
        self.prefill_share = c_avg / chunk
        per_token = tau_full / chunk
        # A prompt's own prefill: its full chunks, then a last iteration holding its remainder
        # and, with probability ρ (the prefill share), other prompts' tokens up to the budget.
        lens = shape.input_points[None, :]
        k, rho = chunk[:, None], self.prefill_share[:, None]
        full_chunks = np.ceil(lens / k) - 1.0
        rest = lens - full_chunks * k
        last = tau_dec[:, None] + (rest + rho * (k - rest)) / k * (tau_full - tau_dec)[:, None]
        # TTFT: the token queue's wait (one server, M/G/1) plus the prompt's own prefill, over
        # the prompt lengths (queueing item 8).
        ttft = wait_plus_service_quantile_s(
            shape.quantile, 1.0, r / tau_avg, shape.input_mean * per_token,
            shape.input_sq_mean * per_token**2, full_chunks * tau_full[:, None] + last)
        self.ttft = np.where(self.prefill_share < 1.0, ttft, np.inf)

    def capacity(self, ttft_limit_s: float, tpot_limit_s: float) -> Capacity | Infeasible:
        """The largest rate meeting both limits (module docstring)."""
        if self.batch.size == 0:
            return Infeasible("kv_cache", 0.0)
        tpot_ok = self.tpot <= tpot_limit_s
        ttft_ok = self.ttft <= ttft_limit_s
        ok = tpot_ok & ttft_ok
        if not ok.any():
            if self.tpot_mean[0] > tpot_limit_s:
                return Infeasible("tpot", float(self.tpot_mean[0]))
            if np.isfinite(self.tpot).any() and not (ttft_ok & np.isfinite(self.tpot)).any():
                return Infeasible("ttft", float(np.min(self.ttft)))
            if not np.isfinite(self.tpot).any():
                return Infeasible("kv_cache", 0.0)
            return Infeasible("tpot", float(np.min(self.tpot)))
        j = int(np.flatnonzero(ok)[np.argmax(self.rate[ok])])
        nxt = j + 1 < self.batch.size and bool(np.isfinite(self.tpot[j + 1]))
        if nxt:
            limit = "tpot" if not tpot_ok[j + 1] else "ttft"
        elif self.top == self.b_kv:
            limit = "kv_cache"
        elif self.top == self.cap:
            limit = "max_num_seqs"
        else:
            limit = "token_budget"
        return Capacity(float(self.rate[j]), float(self.batch[j]), float(self.max_batch[j]),
                        float(self.ttft[j]), float(self.tpot[j]), limit)

    def at_rate(self, rate_per_s: float) -> OperatingPoint:
        """Batch, TTFT percentile and TPOT at a planned load."""
        return OperatingPoint(rate_per_s, _interp_at(self.rate, self.batch, rate_per_s),
                              _interp_at(self.rate, self.ttft, rate_per_s),
                              _interp_at(self.rate, self.tpot, rate_per_s),
                              _interp_at(self.rate, self.tpot_mean, rate_per_s))


def _quantile_tpot(batch: FloatArray, rate: FloatArray, tau: FloatArray, quantile: float,
                   top: float) -> tuple[FloatArray, FloatArray]:
    """``(b_q, TPOT_q)`` along the batch grid: the batch quantile of a steady state of mean ``b``
    (:func:`occupancy_quantile` with the rate's elasticity) and the cadence at it (the mean
    iteration of ``b_q`` decodes and their share of prefill; inf when ``b_q`` exceeds ``top``,
    the most the instance holds)."""
    if batch.size == 0:
        return batch, batch
    bq = occupancy_quantile(batch, quantile, rate_elasticity(batch, rate))
    inside = bq <= min(top, float(batch[-1]))
    return bq, np.where(inside, np.interp(np.where(inside, bq, batch), batch, tau), np.inf)


def _concat(*parts: BatchStats) -> BatchStats:
    return BatchStats(**{f.name: np.concatenate([np.atleast_1d(getattr(p, f.name))
                                                 for p in parts])
                         for f in fields(BatchStats)})


Profile = DecodeProfile | PrefillProfile | AggregatedProfile


def evaluate_profiles(cm: CostModel, profiles: Sequence[Profile]) -> None:
    """Cost every profile's iterations with one cost-model call (they share ``cm``) and
    complete them: the cost model's per-call overhead is paid once per instance shape."""
    live = [p for p in profiles if p.request.micro.size]
    for p in profiles:
        if not p.request.micro.size:
            p.complete(np.zeros(0))
    if not live:
        return
    stats = _concat(*(p.request.stats for p in live))
    micro = np.concatenate([p.request.micro for p in live])
    steps = np.asarray(iteration_cadence_s(cm, stats, micro), dtype=np.float64)
    start = 0
    for p in live:
        end = start + p.request.micro.size
        p.complete(steps[start:end])
        start = end


__all__ = ["AggregatedProfile", "Capacity", "DecodeProfile", "Infeasible", "OperatingPoint",
           "PrefillProfile", "Profile", "Shape", "StepRequest", "evaluate_profiles",
           "shape_of"]
