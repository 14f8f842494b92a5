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
``b_q = b + z_q √(b (1 + x) / ε) (1 + k (1/ε - 1))`` the ``q`` quantile of that occupancy,
``ε = d ln rate / d ln b`` (:func:`~servingcast.planner.queueing.occupancy_quantile`: Poisson far
from the instance's throughput knee, much wider near it; ``x`` the extra noise of prefill beside
the decodes, aggregated only; ``k`` an empirical correction near the knee, ``KNEE_SPREAD``). The
KV cache and ``max_num_seqs`` must hold ``b_q`` sequences. TPOT — a request's mean iteration over
its life — is checked at ``b_T = b + (b_q - b) √g(ε)`` (``TPOT_q``, the mean iteration with
``b_T`` decodes and their share of prefill; ``√g`` the spread of a life-long average,
:func:`~servingcast.planner.queueing.lifetime_spread`): the SLO then holds for a fraction ``q``
of the requests, not only on average.

**Decode instance** (disaggregated). ``b`` such that ``b_q <= min(max_num_seqs, b_kv)``, where
``b_kv`` sequences of ``ceil(E[L] + E[O])`` tokens fit the KV cache::

    TPOT(b)   = τ(decode of β sequences at context C)
    rate(b)   = b / (n · TPOT(b))                        (Little's law)
    capacity  = max { rate(b) : TPOT(b_q) <= TPOT limit } (and what its links can receive)

One of a **group** of ``k`` decode (or aggregated) instances behind one router swings less:
``b_q - b`` shrinks by :func:`~servingcast.planner.queueing.group_spread_factor` (``1/√k``
behind least-outstanding, queueing item 10), so it carries more at the same limit
(:meth:`DecodeProfile.group_capacities`; the prefill stalls of an aggregated instance do not
pool).

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

**Batched prompts.** When the budget holds ``m >= 2`` mean prompts (and every prompt fits it),
an instance prefills, each iteration, the prompts queued: an iteration of ``T`` prompt tokens
takes ``a + κ T`` (``a`` and ``κ`` from the cost model's iterations of one and of ``m`` mean
prompts, :func:`batched_prefill_costs`; ``a`` is what batching shares — a mixture of experts'
weights, read once per iteration). That is the gated-batch queue of queueing item 9 with
``τ_dec = a`` and a prompt's work ``κ L``, per instance at its share of the group's traffic,
or — whichever is longer, as for aggregated instances — the token queue of full iterations
(``a / budget + κ`` a token, :func:`capped_token_queue_ttft_s`: the engine caps an iteration at
its budget); TTFT is the shorter of that and the pooled queue's, ``f(k)`` the larger of their
rates (each model leaves out one of the two gains, pooling or batching; the real group has
both). On
Mixtral-8x7B (1024-token prompts, 8192-token budget) it plans 1.6 times one-at-a-time's rate,
where the simulator's TTFT p95 is within 3 % of the limit.

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
    TTFT_q(b) = max(quantile_q(W + own(L)),  (W: the M/G/1 wait at rate / m with E[S], E[S²])
                    gated_q(b))              (gated batches: queueing item 9)
    capacity  = max { rate(b) : TPOT_q <= TPOT limit, TTFT_q <= TTFT limit, c < K' }

The gated-batch TTFT: each iteration prefills the prompts that arrived during the previous one,
with ``S = L κ`` of work each beside ``τ_dec``; a prompt waits out the iteration it arrived in
and rides the next with the others — the M/G/1 token queue misses that everyone in a batch gets
the first token at its end (on Llama-3.1-70B tp2 H200 at 65 % prefill load: mean TTFT 224 ms
against the simulator's 223; the M/G/1 queue gave 203). Prefill work also shakes the batch:
``x = (b √E[S²] / (n τ_dec))² / 2`` (one second of prefill removes ``b / (n τ_dec)``
departures).

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

from servingcast.costmodel.batch import Batch, BatchStats
from servingcast.costmodel.memory import MemoryPlan, max_batch_size
from servingcast.costmodel.spec import micro_batches
from servingcast.costmodel.steady import (
    add_stats,
    chunked_prefill_sums,
    decode_batch_stats,
    iteration_cadence_s,
    prefill_chunk_series,
)
from servingcast.costmodel.step import CostModel
from servingcast.engines import Engine, mean_reserved_kv_tokens
from servingcast.planner.lengths import length_max, length_points
from servingcast.planner.prefix_caching import (
    cached_context_sums,
    prompt_mix,
    with_cached_context,
)
from servingcast.planner.problem import Workload
from servingcast.planner.queueing import (
    gated_batch_ttft_quantile_s,
    group_spread_factor,
    lifetime_spread,
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
    context_points: FloatArray | None = None
    """Prefix caching: the cached tokens each point's prefill reads before its
    :attr:`input_points` uncached ones (:mod:`servingcast.planner.prefix_caching`)."""
    prompt_mean: float | None = None
    """The whole prompt's mean when it differs from :attr:`input_mean` (prefix caching)."""
    resident_kv_tokens: int = 0
    """KV tokens a warm prefix cache holds apart from the running requests."""
    idle_token_s: float = 0.0
    """Paused agentic sessions' history per request, token-seconds, charged to the running
    requests (:func:`~servingcast.planner.prefix_caching.idle_session_seq_len`)."""

    @classmethod
    def of(cls, workload: Workload, engine: Engine | None = None,
           prefix_caching: bool = False, block_size: int = 16,
           prefill_side: bool = False) -> Shape:
        """Quantile points and moments of ``workload``; ``seq_len``, the KV tokens the cache
        must hold per running request, also covers what ``engine`` reserves at admission
        (:func:`servingcast.engines.mean_reserved_kv_tokens`: TensorRT-LLM's default reserves
        prompt + output for a request's whole life). A workload with a ``prefix`` takes its
        prompts (histories included) and, with ``prefix_caching``, their uncached and cached
        parts from :func:`~servingcast.planner.prefix_caching.prompt_mix`."""
        if workload.prefix is not None:
            return cls._of_prefix(workload, engine, prefix_caching, block_size, prefill_side)
        inp = length_points(workload.input_len)
        out = length_points(workload.output_len)
        o1, o2 = float(out.mean()), float((out**2).mean())
        i1 = float(inp.mean())
        in_max = length_max(workload.input_len)
        seq_len = math.ceil(i1 + o1)
        if engine is not None:
            seq_len = max(seq_len, math.ceil(mean_reserved_kv_tokens(engine, i1, o1, o2)))
        return cls(inp, i1, float((inp**2).mean()), o1, max(o1 - 1.0, 1e-9),
                   i1 + o2 / (2.0 * o1), seq_len,
                   per_slo_quantile(workload.slo.attainment),
                   in_max, in_max + length_max(workload.output_len))

    @classmethod
    def _of_prefix(cls, workload: Workload, engine: Engine | None, caching: bool,
                   block_size: int, prefill_side: bool) -> Shape:
        mix = prompt_mix(workload, caching, block_size, prefill_side)
        inp = mix.input_points
        out = length_points(workload.output_len)
        o1, o2 = float(out.mean()), float((out**2).mean())
        seq_len = math.ceil(mix.kv_tokens_per_request)
        if engine is not None:
            seq_len = max(seq_len, math.ceil(mean_reserved_kv_tokens(
                engine, mix.prompt_mean, o1, o2)))
        return cls(inp, float(inp.mean()), float((inp**2).mean()), o1, max(o1 - 1.0, 1e-9),
                   mix.prompt_mean + o2 / (2.0 * o1), seq_len,
                   per_slo_quantile(workload.slo.attainment),
                   mix.prompt_max, mix.prompt_max + length_max(workload.output_len),
                   mix.context_points, mix.prompt_mean, mix.resident_kv_tokens,
                   mix.idle_token_s)

    def quantile_of(self, values: FloatArray) -> FloatArray:
        """The ``q`` quantile along the last axis of per-prompt values that grow with the prompt
        length (evaluated at :attr:`input_points`, which are sorted): equal weights, linear
        interpolation between order statistics, as ``np.quantile``. With cached context the
        values need not grow with the uncached tokens alone, so they are sorted first."""
        if self.context_points is not None:
            values = np.sort(values, axis=-1)
        n = values.shape[-1]
        pos = self.quantile * (n - 1)
        j = min(int(pos), n - 1)
        w = pos - j
        upper = values[..., min(j + 1, n - 1)]
        return (1.0 - w) * values[..., j] + w * upper  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=256)
def shape_of(workload: Workload, engine: Engine | None = None, prefix_caching: bool = False,
             block_size: int = 16, prefill_side: bool = False) -> Shape:
    """:meth:`Shape.of`, cached (workloads and engine configs are frozen)."""
    return Shape.of(workload, engine, prefix_caching, block_size, prefill_side)


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
    j, w = _interp_index(rate, at)
    return _interp_value(values[max(j - 1, 0)], values[j], w)


def _interp_index(rate: FloatArray, at: float) -> tuple[int, float | None]:
    """``(j, w)`` of :func:`_interp_at`: the grid point and the weight of the step to it from
    the point before (None: the point itself)."""
    rate = np.maximum.accumulate(rate)
    if at <= rate[0]:
        return 0, None
    j = int(np.searchsorted(rate, at))
    if j >= rate.size:
        return rate.size - 1, None
    lo, hi = rate[j - 1], rate[j]
    return j, (at - lo) / (hi - lo) if hi > lo else 1.0


def _interp_value(before: float, at_j: float, w: float | None) -> float:
    if w is None or before == at_j:  # (also two infinite values: no step to interpolate)
        return float(at_j)
    return float(before + w * (at_j - before))


#: Group sizes at which a decode or aggregated group's capacity is computed (queueing item
#: 10); between two of them a group is credited the per-instance rate of the smaller one.
GROUP_LEVELS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

#: Below this mean batch the grid of mean batches is geometric (ratio ``_GRID_RATIO``) rather
#: than whole numbers: an instance planned at a mean batch of 1 or 2 — long prompts, tight
#: TPOT — would otherwise lose up to half its capacity to the grid (the simulator sustained
#: 1.44 times such a plan's rate with its batch between 1 and 2).
_GRID_FINE_BELOW = 16.0
_GRID_RATIO = 1.05
_GRID_FIRST = 0.25


def batch_grid(top: float) -> FloatArray:
    """The mean batches a profile is evaluated at: ``0.25 · 1.05^i`` up to 16, then every whole
    number up to ``top`` (none when ``top < 1``: an instance that cannot hold one request)."""
    if top < 1.0:
        return np.zeros(0)
    steps = math.ceil(math.log(_GRID_FINE_BELOW / _GRID_FIRST) / math.log(_GRID_RATIO))
    fine = _GRID_FIRST * _GRID_RATIO ** np.arange(steps)
    fine = fine[fine < min(_GRID_FINE_BELOW, top)]
    whole = np.arange(math.ceil(fine[-1] + 1e-9) if fine.size else 1, math.floor(top) + 1,
                      dtype=np.float64)
    return np.concatenate([fine, whole])


class _Occupancy:
    """What decode and aggregated profiles share: the batch's quantile and TPOT for a group of
    ``count`` instances behind one router (queueing item 10; :attr:`round_robin` picks the
    router's law), computed from the single instance's on first use."""

    batch: FloatArray
    rate: FloatArray
    tpot_mean: FloatArray
    tpot: FloatArray
    max_batch: FloatArray
    quantile: float
    top: float
    round_robin: bool = False
    _pooled: dict[int, tuple[FloatArray, FloatArray]]

    def _spread_tpot(self, factor: FloatArray | float) -> tuple[FloatArray, FloatArray]:
        raise NotImplementedError

    def capacity(self, ttft_limit_s: float, tpot_limit_s: float,
                 count: int = 1) -> Capacity | Infeasible:
        raise NotImplementedError

    def group_capacities(self, ttft_limit_s: float, tpot_limit_s: float,
                         max_count: int) -> list[tuple[int, Capacity]]:
        """``(n, capacity of one of n instances)`` for the :data:`GROUP_LEVELS` up to
        ``max_count`` where the per-instance rate grows over the level before (the others
        serve no more per instance); empty when one instance alone meets no limit."""
        out: list[tuple[int, Capacity]] = []
        for n in GROUP_LEVELS:
            if n > max_count:
                break
            cap = self.capacity(ttft_limit_s, tpot_limit_s, n)
            if isinstance(cap, Infeasible):
                break
            if not out or cap.rate_per_s > out[-1][1].rate_per_s * (1.0 + 1e-9):
                out.append((n, cap))
        return out

    def group_tpot(self, count: int) -> tuple[FloatArray, FloatArray]:
        """``(b_q, TPOT_q)`` along the grid for one of ``count`` instances behind one router."""
        if count <= 1:
            return self.max_batch, self.tpot
        hit = self._pooled.get(count)
        if hit is None:
            hit = self._pooled[count] = self._spread_tpot(
                group_spread_factor(count, self.round_robin))
        return hit


class DecodeProfile(_Occupancy):
    """TPOT and rate of a decode instance for every mean batch it can hold."""

    role = "decode"

    def __init__(self, cm: CostModel, shape: Shape, plan: MemoryPlan, max_num_seqs: int,
                 nic_rate_per_s: float) -> None:
        self.b_kv = max_batch_size(plan, shape.seq_len)
        self.cap = max_num_seqs
        self.nic_rate = nic_rate_per_s
        self.top = top = min(max_num_seqs, self.b_kv)
        b = batch_grid(top)
        micro = micro_batches(cm.parallel.pp, b)
        # A running iteration holds at least one sequence (a mean below 1 is idle time).
        stats = decode_batch_stats(np.maximum(b, 1.0) / micro, shape.decode_context,
                                   cm.model.sliding_window)
        self.request = StepRequest(stats, micro)
        self.batch = b
        self._steps = shape.decode_steps
        self.quantile = shape.quantile
        self.tpot_mean = self.tpot = self.rate = self.max_batch = np.zeros(0)
        self._pooled = {}

    def complete(self, steps: FloatArray) -> None:
        """Take the cadences of :attr:`request` (see :func:`evaluate_profiles`)."""
        self.tpot_mean = steps
        self.rate = self.batch / (self._steps * steps)
        self.max_batch, self.tpot = self._spread_tpot(1.0)

    def _spread_tpot(self, factor: FloatArray | float) -> tuple[FloatArray, FloatArray]:
        return _quantile_tpot(self.batch, self.rate, self.tpot_mean, self.quantile, self.top,
                              spread=factor)

    def capacity(self, ttft_limit_s: float, tpot_limit_s: float,
                 count: int = 1) -> Capacity | Infeasible:
        """The largest rate whose batch meets the TPOT limit (module docstring), for one of
        ``count`` instances behind one router (queueing item 10)."""
        if self.batch.size == 0:
            return Infeasible("kv_cache", 0.0)
        max_batch, tpot = self.group_tpot(count)
        ok = tpot <= tpot_limit_s
        if not ok.any():
            if self.tpot_mean[0] > tpot_limit_s or not np.isfinite(tpot[0]):
                return Infeasible("tpot", float(self.tpot_mean[0]))
            return Infeasible("kv_cache", 0.0)
        j = int(np.flatnonzero(ok)[-1])
        if j + 1 < self.batch.size and np.isfinite(tpot[j + 1]):
            limit = "tpot"
        else:
            limit = "kv_cache" if self.b_kv <= self.cap else "max_num_seqs"
        rate = float(self.rate[j])
        if self.nic_rate < rate:
            rate, limit = self.nic_rate, "network"
        return Capacity(rate, float(self.batch[j]), float(max_batch[j]), None,
                        float(tpot[j]), limit)

    def at_rate(self, rate_per_s: float, count: int = 1) -> OperatingPoint:
        """Batch and TPOT at a planned load of each of ``count`` instances."""
        _, tpot = self.group_tpot(count)
        return OperatingPoint(rate_per_s, _interp_at(self.rate, self.batch, rate_per_s), None,
                              _interp_at(self.rate, tpot, rate_per_s),
                              _interp_at(self.rate, self.tpot_mean, rate_per_s))


#: Prompts batch on a prefill instance (the gated model) when its budget holds at least this many
#: prompts of the mean length.
MIN_BATCHED_PROMPTS = 2


def batched_prefill(shape: Shape, budget_tokens: int, max_num_seqs: int | None,
                    pp: int) -> tuple[int, int] | None:
    """``(L̄, m)``: the mean prompt (whole tokens) and how many of them one iteration of a prefill
    instance holds (``⌊budget / L̄⌋``, at most ``max_num_seqs``), when every prompt fits the
    budget and ``m >= 2`` — else None: the instance prefills one prompt at a time (pipelined
    instances and prefix-cached prompts are planned that way too)."""
    length = max(1, round(shape.input_mean))
    many = budget_tokens // length
    if max_num_seqs is not None:
        many = min(many, max_num_seqs)
    longest = max(float(shape.input_points.max()), float(shape.input_max))
    if (pp > 1 or shape.context_points is not None or many < MIN_BATCHED_PROMPTS
            or longest > budget_tokens):
        return None
    return length, many


def batches_within_budget(rate_per_s: FloatArray, iteration_s: float, token_s: float,
                          shape: Shape, budget_tokens: int) -> npt.NDArray[np.bool_]:
    """Where the gated batches of a prefill instance fit its token budget on average, as the
    model needs (queueing item 9): the prompts that arrived during an iteration of mean length
    ``E[D] = a / (1 - ρ)`` carry ``E[T] = λ E[D] E[L] <= budget`` tokens. That is
    ``λ E[L] (a / budget + κ) <= 1``: the engine keeps up even when every iteration is capped
    at the budget. Past it the queue grows without bound, whatever the uncapped model says."""
    lam = np.asarray(rate_per_s, dtype=np.float64)
    return np.asarray(lam * shape.input_mean * (iteration_s / budget_tokens + token_s) < 1.0)


def capped_token_queue_ttft_s(quantile: float, rate_per_s: FloatArray, iteration_s: float,
                              token_s: float, shape: Shape, budget_tokens: int,
                              own_points_s: FloatArray) -> FloatArray:
    """TTFT percentile of a batching prefill instance seen as a queue of tokens served at the
    rate of full iterations, ``a / budget + κ`` seconds a token (queueing item 8 with one
    server, ``S = L (a / budget + κ)``): the gated model (item 9) does not know that the engine
    caps an iteration at the budget, and near that cap the queue, not the batching, sets TTFT
    (the simulator's TTFT p95 went from 0.2 to 0.7 s over the last 3 % of such a plan's
    load). The batched TTFT is the larger of the two, as for aggregated instances."""
    per_token = iteration_s / budget_tokens + token_s
    return wait_plus_service_quantile_s(
        quantile, 1.0, rate_per_s, shape.input_mean * per_token,
        shape.input_sq_mean * per_token**2, own_points_s)


def batched_prefill_costs(one_s: float, many_s: float, length: int,
                          many: int) -> tuple[float, float]:
    """``(a, κ)`` of a prefill iteration costing ``a + κ T`` for ``T`` prompt tokens, from the
    cost model's iteration of one mean prompt (``one_s``) and of ``many`` of them
    (``many_s``): ``κ = (many_s - one_s) / ((many - 1) L̄)``, ``a = one_s - κ L̄``. ``a`` is what
    batching shares — the weights read once per iteration (all of a mixture of experts' once
    enough tokens route to every expert), the per-iteration overhead."""
    token_s = max(0.0, (many_s - one_s) / ((many - 1) * length))
    return max(0.0, one_s - token_s * length), token_s


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
                 nic_rate_per_s: float, max_num_seqs: int | None = None) -> None:
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
        if shape.context_points is not None:  # prefix caching: the cached context is read
            stats = with_cached_context(stats, owner, shape.context_points,
                                        cm.model.sliding_window)
        # Batched prompts (the gated model, queueing item 9 on a prefill instance): an
        # iteration of one mean prompt and one of as many as the budget holds.
        self._batched = batched_prefill(shape, chunk_tokens, max_num_seqs, cm.parallel.pp)
        self._budget = chunk_tokens
        if self._batched is not None:
            length, many = self._batched
            stats = _concat(stats, *(Batch.of(prefill=[(length, 0)] * m).stats(
                cm.model.sliding_window) for m in (1, many)))
        self.request = StepRequest(stats, np.ones(np.size(stats.prefill_tokens)))
        self._owner = owner
        self._shape = shape
        self.service = np.zeros(0)
        self.mean_s = self.second_moment_s2 = self.service_q = 0.0
        self.iteration_s = self.token_s = 0.0
        self._batched_rates: dict[float, float] = {}
        self._capacity: dict[float, Capacity] = {}
        self._groups: dict[float, FloatArray] = {}

    def complete(self, steps: FloatArray) -> None:
        """Take the cadences of :attr:`request` (see :func:`evaluate_profiles`)."""
        n = self._owner.size
        service = np.bincount(self._owner, weights=steps[:n],
                              minlength=self._shape.input_points.size).astype(np.float64)
        self.service = service
        self.mean_s = float(service.mean())
        self.second_moment_s2 = float((service**2).mean())
        self.service_q = float(self._shape.quantile_of(service))
        if self._batched is not None:
            length, many = self._batched
            self.iteration_s, self.token_s = batched_prefill_costs(
                float(steps[n]), float(steps[n + 1]), length, many)

    def ttft_s(self, rate_per_s: float, count: int = 1) -> float:
        """TTFT percentile of a group of ``count`` instances receiving ``rate_per_s`` in all:
        the pooled queue's (wait plus own prefill over the prompt lengths,
        :func:`~servingcast.planner.queueing.ttft_quantile_s`) or, when prompts batch, the
        shorter of that and each instance's gated batches at its share
        (:meth:`batched_ttft_s`)."""
        pooled = ttft_quantile_s(self.quantile, count, float(rate_per_s), self.mean_s,
                                 self.second_moment_s2, self.service)
        if self._batched is None:
            return pooled
        return min(pooled, float(self.batched_ttft_s(np.array([rate_per_s / count]))[0]))

    def batched_ttft_s(self, rate_per_s: FloatArray) -> FloatArray:
        """TTFT percentile of one instance batching the prompts queued at each iteration, at
        each rate (queueing item 9 with ``τ_dec`` the iteration's fixed cost ``a`` and a prompt's
        work ``κ L``, :func:`batched_prefill_costs`); inf when prompts do not batch, or where the
        batches outgrow the budget (:func:`batches_within_budget`)."""
        rates = np.asarray(rate_per_s, dtype=np.float64)
        if self._batched is None or self.token_s <= 0.0:
            return np.full(rates.shape, np.inf)
        shape = self._shape
        own = np.broadcast_to(self.service, (*rates.shape, self.service.size))
        ttft = np.maximum(
            gated_batch_ttft_quantile_s(
                self.quantile, rates, self.iteration_s, self.token_s * shape.input_mean,
                self.token_s**2 * shape.input_sq_mean, own),
            capped_token_queue_ttft_s(self.quantile, rates, self.iteration_s, self.token_s,
                                      shape, self._budget, own))
        inside = batches_within_budget(rates, self.iteration_s, self.token_s, shape,
                                       self._budget)
        return np.where(inside, ttft, np.inf)

    def batched_rate(self, ttft_limit_s: float) -> float:
        """The largest rate (to 1 % of its stable range) at which one batching instance meets
        the TTFT limit (:meth:`batched_ttft_s`); 0 when prompts do not batch."""
        if self._batched is None or self.token_s <= 0.0 or not self.serves(ttft_limit_s):
            return 0.0
        cached = self._batched_rates.get(ttft_limit_s)
        if cached is None:
            top = 1.0 / (self.token_s * self._shape.input_mean)  # ρ = λ κ E[L] < 1
            rates = top * np.arange(1, 100, dtype=np.float64) / 100.0
            ok = np.flatnonzero(self.batched_ttft_s(rates) <= ttft_limit_s)
            cached = self._batched_rates[ttft_limit_s] = float(rates[ok[-1]]) if ok.size else 0.0
        return cached

    def group_rates(self, ttft_limit_s: float, max_count: int) -> FloatArray:
        """``f(n)`` for ``n = 1 … min(max_count, POOLED_EXACT)``: the largest rate a group of
        ``n`` instances serves with the TTFT percentile within the limit (and within what their
        links send). Zero when a prompt alone misses the limit. (:func:`solve_group_rates`
        solves many profiles' at once, with the same result.)"""
        top = max(1, min(max_count, self.POOLED_EXACT))
        cached = self._groups.get(ttft_limit_s)
        if cached is None or cached.size < top:
            n = np.arange(1, top + 1, dtype=np.float64)
            queue = None
            if self.serves(ttft_limit_s):
                queue = pooled_rates_per_s(self.quantile, n, self.mean_s, self.second_moment_s2,
                                           self.service, ttft_limit_s)
            cached = self._keep_group_rates(ttft_limit_s, queue, top)
        return cached[:top]

    def serves(self, ttft_limit_s: float) -> bool:
        """Whether a prompt alone (at the attainment quantile) meets the limit."""
        return self.fits and self.service_q <= ttft_limit_s

    def _keep_group_rates(self, ttft_limit_s: float, queue: FloatArray | None,
                          top: int) -> FloatArray:
        """Cache ``f(1 … top)`` from the pooled queue's rates (None: zero) or ``n`` batching
        instances' (:meth:`batched_rate`), whichever is more, non-decreasing and within the
        links."""
        n = np.arange(1, top + 1, dtype=np.float64)
        if queue is None:
            rates = np.zeros_like(n)
        else:
            rates = np.maximum(queue, n * self.batched_rate(ttft_limit_s))
            rates = np.minimum(np.maximum.accumulate(rates), n * self.nic_rate)
        self._groups[ttft_limit_s] = rates
        return rates

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
        # Where the pooled queue carries more than batching does, batching's TTFT there is
        # past the limit and the shorter one is the pooled queue's (not solved twice).
        ttft = (self.ttft_s(rate) if rate <= self.batched_rate(ttft_limit_s) * (1 + 1e-9)
                else ttft_quantile_s(self.quantile, 1, rate, self.mean_s,
                                     self.second_moment_s2, self.service))
        cap = Capacity(rate, 0.0, 0.0, float(ttft), None, limit)
        self._capacity[ttft_limit_s] = cap
        return cap

    def at_rate(self, rate_per_s: float, count: int = 1) -> OperatingPoint:
        """TTFT percentile with each of ``count`` pooled instances at ``rate_per_s``."""
        return OperatingPoint(rate_per_s, 0.0, self.ttft_s(rate_per_s * count, count), None,
                              None)


class AggregatedProfile(_Occupancy):
    """Rate, TPOT and TTFT of an aggregated instance for every mean batch it can hold;
    ``round_robin``: groups of it are routed round-robin (queueing item 10), not by least
    outstanding requests."""

    role = "aggregated"

    #: The prefill chunk keeps at least 1/16 of the token budget (beyond that, prompts of any
    #: useful length take hundreds of iterations and no SLO holds); the whole instance's batch
    #: stays within the budget, as vLLM requires ``max_num_seqs <= max_num_batched_tokens``.
    MIN_CHUNK_FRACTION = 1.0 / 16.0

    def __init__(self, cm: CostModel, shape: Shape, plan: MemoryPlan, max_num_seqs: int,
                 budget_tokens: int, round_robin: bool = False) -> None:
        pp = cm.parallel.pp
        self.round_robin = round_robin
        self._pooled = {}
        window = cm.model.sliding_window
        self.b_kv = max_batch_size(plan, shape.seq_len) - pp
        self.cap = max_num_seqs - pp
        self.b_budget = budget_tokens * (1.0 - self.MIN_CHUNK_FRACTION)
        self.top = top = max(0.0, min(self.cap, self.b_kv, self.b_budget))
        b = batch_grid(top)
        micro = micro_batches(pp, b)
        beta = b / micro
        r = beta / shape.decode_steps
        chunk = budget_tokens - beta
        lens = shape.input_points
        pairs, kv, chunks = chunked_prefill_sums(lens[None, :], chunk[:, None], window)
        if shape.context_points is not None:  # prefix caching: the cached context is read
            pairs, kv = cached_context_sums(pairs, kv, chunks, lens[None, :],
                                            shape.context_points[None, :], window)
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
        # A request's iterations hold at least its own decode (a mean below 1 is idle time).
        decode = decode_batch_stats(np.maximum(beta, 1.0), shape.decode_context, window)
        stats = _concat(add_stats(decode, prefill(piece)), add_stats(decode, prefill(chunk)),
                        decode)
        self.request = StepRequest(stats, np.concatenate([micro, micro, micro]))
        self.batch = b
        self.quantile = shape.quantile
        self._parts = (shape, micro, r, chunk, c_avg, piece)
        self.tpot_mean = self.tpot = self.rate = self.max_batch = np.zeros(0)
        self.prefill_share = self._ttft = self._tau_full = self._tau_dec = np.zeros(0)

    def complete(self, steps: FloatArray) -> None:
        """Take the cadences of :attr:`request` (see :func:`evaluate_profiles`)."""
        shape, micro, r, chunk, c_avg, piece = self._parts
        n = self.batch.size
        tau_piece, tau_full, tau_dec = steps[:n], steps[n: 2 * n], steps[2 * n:]
        tau_avg = tau_dec + c_avg / piece * (tau_piece - tau_dec)
        self.tpot_mean = tau_avg
        self.rate = micro * r / tau_avg
        # Prefill work arrives with the prompts (compound Poisson, E[S²] = E[L²] κ² seconds²
        # per prompt) and stalls every decode while it runs: one second of it removes
        # b / (n τ_dec) departures. As noise on the departures it adds
        # x = (b √E[S²] / (n τ_dec))² / 2 times the arrivals' and departures' own (queueing
        # item 5), so the batch swings wider than with decodes alone.
        kappa = (tau_full - tau_dec) / chunk
        self._noise = 0.5 * (self.batch * kappa / (shape.decode_steps * tau_dec)) ** 2 * (
            shape.input_sq_mean)
        # A request's TPOT also depends on how much prefill lands beside its decodes: prompts
        # start as a Poisson stream (r per iteration), each prefill token adds
        # κ = (τ_full - τ_dec) / K' to an iteration, so over the n iterations of a request the
        # added time is compound Poisson with variance r n E[L²] κ² and the TPOT's standard
        # deviation is √(r n E[L²]) κ / n. Each stall lengthens the request's life, during
        # which more prompts arrive: the stalls form the busy period that the prompts of its
        # life start, whose variance is 1 / (1 - ρ_p)³ times the work's (Takács: an M/G/1
        # busy period started by work w has variance w λ E[S²] / (1 - ρ)³), ρ_p the prefill's
        # share of the time. It adds to the batch's swing in quadrature.
        rho_p = np.clip(c_avg / piece * (tau_piece - tau_dec) / tau_avg, 0.0, 0.95)
        sigma = np.sqrt(r * shape.decode_steps * shape.input_sq_mean) * kappa / (
            shape.decode_steps) * (1.0 - rho_p) ** -1.5
        # The stalls are the instance's own prompts: they do not pool over a group (item 10).
        self._stall = NormalDist().inv_cdf(shape.quantile) * sigma
        self.max_batch, self.tpot = self._spread_tpot(1.0)
        self.prefill_share = c_avg / chunk
        # TTFT is solved per batch size when first asked for (:meth:`ttft_at`: a capacity
        # needs it only where TPOT holds); NaN until then, inf where prefill cannot keep up.
        self._tau_full, self._tau_dec = tau_full, tau_dec
        self._ttft = np.where(self.prefill_share < 1.0, np.nan, np.inf)

    def _spread_tpot(self, factor: FloatArray | float) -> tuple[FloatArray, FloatArray]:
        tau_avg = self.tpot_mean
        max_batch, tpot_q = _quantile_tpot(self.batch, self.rate, tau_avg, self.quantile,
                                           self.top, self._noise, spread=factor)
        return max_batch, tau_avg + np.sqrt((tpot_q - tau_avg) ** 2 + self._stall ** 2)

    @property
    def ttft(self) -> FloatArray:
        """TTFT at the attainment quantile for every mean batch (module docstring)."""
        return self.ttft_at(np.ones(self.batch.size, dtype=bool))

    def ttft_at(self, rows: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> FloatArray:
        """TTFT at the batches ``rows`` (a mask or indices), solved for those not yet known
        (:func:`solve_ttft` solves many profiles' at once, with the same result)."""
        todo = self._unsolved(rows)
        if todo.size:
            solve_ttft([(self, todo)])
        return self._ttft[rows]

    def pending_ttft(self, tpot_limit_s: float, count: int = 1) -> npt.NDArray[np.intp]:
        """The batches whose TTFT :meth:`capacity` needs at this TPOT limit (those within it)
        for groups of up to ``count`` instances (their TPOT holds at more batches) and that are
        not solved yet: what to pass to :func:`solve_ttft` beforehand."""
        return self._unsolved(self.group_tpot(count)[1] <= tpot_limit_s)

    def _unsolved(self, rows: npt.NDArray[np.bool_] | npt.NDArray[np.intp]
                  ) -> npt.NDArray[np.intp]:
        wanted = np.zeros(self.batch.size, dtype=bool)
        wanted[rows] = True
        return np.flatnonzero(wanted & np.isnan(self._ttft))

    def _ttft_queues(self, rows: npt.NDArray[np.intp]) -> tuple[FloatArray, ...]:
        """For the batches ``rows``: the arrival rate, the token queue's ``E[S]``, ``E[S²]`` and
        own times (M/G/1, queueing item 8), and the gated batches' ``τ_dec``, ``E[S]``,
        ``E[S²]`` and own times (queueing item 9)."""
        shape, _, r, chunk, _, _ = self._parts
        tau_full, tau_dec, chunk = self._tau_full[rows], self._tau_dec[rows], chunk[rows]
        arrivals = r[rows] / self.tpot_mean[rows]
        kappa = (tau_full - tau_dec) / chunk
        per_token = tau_full / chunk
        # A prompt's own prefill: its full chunks, then a last iteration holding its remainder
        # and, with probability ρ (the prefill share), other prompts' tokens up to the budget.
        lens = shape.input_points[None, :]
        k, rho = chunk[:, None], self.prefill_share[rows][:, None]
        full_chunks = np.ceil(lens / k) - 1.0
        rest = lens - full_chunks * k
        last = tau_dec[:, None] + (rest + rho * (k - rest)) / k * (tau_full - tau_dec)[:, None]
        own = full_chunks * tau_full[:, None] + last
        pure = full_chunks * tau_full[:, None] + tau_dec[:, None] + rest * kappa[:, None]
        return (arrivals, shape.input_mean * per_token, shape.input_sq_mean * per_token**2, own,
                tau_dec, shape.input_mean * kappa, shape.input_sq_mean * kappa**2, pure)

    def capacity(self, ttft_limit_s: float, tpot_limit_s: float,
                 count: int = 1) -> Capacity | Infeasible:
        """The largest rate meeting both limits (module docstring), for one of ``count``
        instances behind one router (queueing item 10: the batch swings less; the TTFT is
        an instance's own)."""
        if self.batch.size == 0:
            return Infeasible("kv_cache", 0.0)
        max_batch, tpot = self.group_tpot(count)
        tpot_ok = tpot <= tpot_limit_s
        ok = tpot_ok.copy()
        ok[tpot_ok] = self.ttft_at(tpot_ok) <= ttft_limit_s
        if not ok.any():
            if self.tpot_mean[0] > tpot_limit_s:
                return Infeasible("tpot", float(self.tpot_mean[0]))
            ttft_ok = self.ttft <= ttft_limit_s
            if np.isfinite(tpot).any() and not (ttft_ok & np.isfinite(tpot)).any():
                return Infeasible("ttft", float(np.min(self.ttft)))
            if not np.isfinite(tpot).any():
                return Infeasible("kv_cache", 0.0)
            return Infeasible("tpot", float(np.min(tpot)))
        j = int(np.flatnonzero(ok)[np.argmax(self.rate[ok])])
        nxt = j + 1 < self.batch.size and bool(np.isfinite(tpot[j + 1]))
        if nxt:
            limit = "tpot" if not tpot_ok[j + 1] else "ttft"
        elif self.top == self.b_kv:
            limit = "kv_cache"
        elif self.top == self.cap:
            limit = "max_num_seqs"
        else:
            limit = "token_budget"
        return Capacity(float(self.rate[j]), float(self.batch[j]), float(max_batch[j]),
                        float(self._ttft[j]), float(tpot[j]), limit)

    def at_rate(self, rate_per_s: float, count: int = 1) -> OperatingPoint:
        """Batch, TTFT percentile and TPOT at a planned load of each of ``count`` instances."""
        j, w = _interp_index(self.rate, rate_per_s)
        ttft = self.ttft_at(np.array([max(j - 1, 0), j]))
        return OperatingPoint(rate_per_s, _interp_at(self.rate, self.batch, rate_per_s),
                              _interp_value(float(ttft[0]), float(ttft[1]), w),
                              _interp_at(self.rate, self.group_tpot(count)[1], rate_per_s),
                              _interp_at(self.rate, self.tpot_mean, rate_per_s))


#: Batch sizes solved together by :func:`solve_ttft` (fewer, larger calls pay numpy's
#: per-call overhead less often; larger arrays fall out of the CPU caches).
_TTFT_BLOCK = 2048


def solve_ttft(requests: Sequence[tuple[AggregatedProfile, npt.NDArray[np.intp]]]) -> None:
    """Solve the TTFT of aggregated profiles at the batches asked for: the token queue's wait
    (one server, M/G/1) plus the prompt's own prefill, over the prompt lengths (queueing item
    8) — or, whichever is longer, the engine's gated batches: a prompt rides the iteration
    after the one it arrived in, with every prompt that arrived during that one (queueing item
    9). Vectorised over blocks of ``_TTFT_BLOCK`` batches of any profiles with the same
    attainment quantile and prompt grid; each batch size is solved on its own, so the result
    does not depend on what is solved beside it."""
    groups: dict[tuple[float, int], list[tuple[AggregatedProfile, npt.NDArray[np.intp]]]] = {}
    for profile, rows in requests:
        key = (profile.quantile, profile._parts[0].input_points.size)
        for start in range(0, rows.size, _TTFT_BLOCK):
            groups.setdefault(key, []).append((profile, rows[start:start + _TTFT_BLOCK]))
    for (quantile, _), pieces in groups.items():
        block: list[tuple[AggregatedProfile, npt.NDArray[np.intp]]] = []
        size = 0
        for i, (profile, rows) in enumerate(pieces):
            block.append((profile, rows))
            size += rows.size
            if size >= _TTFT_BLOCK or i == len(pieces) - 1:
                _solve_ttft_block(quantile, block)
                block, size = [], 0


def _solve_ttft_block(quantile: float,
                      block: list[tuple[AggregatedProfile, npt.NDArray[np.intp]]]) -> None:
    parts = [profile._ttft_queues(rows) for profile, rows in block]
    lam, es, es2, own, tau_dec, work, work2, pure = (
        np.concatenate([p[i] for p in parts]) for i in range(8))
    mg1 = wait_plus_service_quantile_s(quantile, 1.0, lam, es, es2, own)
    gated = gated_batch_ttft_quantile_s(quantile, lam, tau_dec, work, work2, pure)
    ttft = np.maximum(mg1, gated)
    start = 0
    for profile, rows in block:
        profile._ttft[rows] = ttft[start:start + rows.size]
        start += rows.size


def solve_group_rates(requests: Sequence[tuple[PrefillProfile, float, int]]) -> None:
    """:meth:`PrefillProfile.group_rates` of many ``(profile, TTFT limit, largest group)`` at
    once: one vectorised pooled-queue solve per attainment quantile and prompt grid, and one set
    of rows for profiles whose queues are the same (same service times and limit: a token
    budget above the longest prompt changes nothing). The caches then answer ``group_rates``
    with exactly what it would compute alone."""
    todo: dict[tuple[object, ...], list[tuple[PrefillProfile, float, int]]] = {}
    for profile, limit, count in requests:
        top = max(1, min(count, profile.POOLED_EXACT))
        cached = profile._groups.get(limit)
        if cached is not None and cached.size >= top:
            continue
        if not profile.serves(limit):
            profile._keep_group_rates(limit, None, top)
            continue
        key = (profile.quantile, profile.service.size, limit, profile.mean_s,
               profile.second_moment_s2, profile.service.tobytes())
        todo.setdefault(key, []).append((profile, limit, top))
    batches: dict[tuple[object, ...], list[list[tuple[PrefillProfile, float, int]]]] = {}
    for queue, same in todo.items():
        batches.setdefault(queue[:2], []).append(same)
    for queues in batches.values():
        first = [same[0][0] for same in queues]
        tops = np.array([max(top for _, _, top in same) for same in queues])
        servers = np.arange(1, tops.max() + 1, dtype=np.float64)[None, :]
        rates = pooled_rates_per_s(  # no servers (and no solve) past each queue's largest group
            first[0].quantile, np.where(servers <= tops[:, None], servers, 0.0),
            np.array([p.mean_s for p in first])[:, None],
            np.array([p.second_moment_s2 for p in first])[:, None],
            np.stack([p.service for p in first])[:, None, :],
            np.array([same[0][1] for same in queues])[:, None])
        for row, same in zip(rates, queues, strict=True):
            for profile, limit, top in same:
                profile._keep_group_rates(limit, row[:top], top)


def _quantile_tpot(batch: FloatArray, rate: FloatArray, tau: FloatArray, quantile: float,
                   top: float, extra_noise: FloatArray | float = 0.0,
                   spread: FloatArray | float = 1.0) -> tuple[FloatArray, FloatArray]:
    """``(b_q, TPOT_q)`` along the batch grid: the batch quantile of a steady state of mean ``b``
    (:func:`occupancy_quantile` with the rate's elasticity; what the KV cache and
    ``max_num_seqs`` must hold) and the TPOT quantile: the cadence at the batch a request sees
    on average over its life (:func:`~servingcast.planner.queueing.lifetime_spread`), the mean
    iteration of that many decodes and their share of prefill; inf when ``b_q`` exceeds
    ``top``, the most the instance holds. ``spread`` scales ``b_q - b`` (one of a group behind
    one router, queueing item 10)."""
    if batch.size == 0:
        return batch, batch
    elasticity = rate_elasticity(batch, rate)
    bq = batch + spread * (occupancy_quantile(batch, quantile, elasticity, extra_noise) - batch)
    seen = batch + (bq - batch) * lifetime_spread(elasticity)
    inside = bq <= min(top, float(batch[-1]))
    return bq, np.where(inside, np.interp(np.where(inside, seen, batch), batch, tau), np.inf)


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


__all__ = ["GROUP_LEVELS", "AggregatedProfile", "Capacity", "DecodeProfile", "Infeasible",
           "OperatingPoint", "PrefillProfile", "Profile", "Shape", "StepRequest", "batch_grid",
           "evaluate_profiles", "shape_of", "solve_group_rates", "solve_ttft"]
