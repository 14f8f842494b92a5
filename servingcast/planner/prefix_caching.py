"""Prefix caching as a planner decision: the prompt mix of a workload with shared prefixes, and
what a warm prefix cache changes in an instance's capacity.

A workload's ``prefix`` (:data:`servingcast.workload.Prefix`) shapes its prompts: a system
prompt adds ``length`` tokens to each; ``sessions`` and ``agentic`` turns carry their whole
history (turn ``t`` of ``I``-token messages and ``O``-token answers has ``t (I + O) + I`` prompt
tokens in mean). :func:`prompt_mix` reduces the prompts the simulator would draw
(:func:`servingcast.workload.prompt_samples`, fixed seed) to the planner's equally weighted
points, as :mod:`servingcast.planner.lengths` does for plain lengths.

With prefix caching on (vLLM's automatic prefix caching, SGLang's radix cache; the simulator's
:mod:`servingcast.sim.kvcache`), a request whose prefix ``h`` is cached prefills only its
``u = L - c`` uncached tokens, ``c = b ⌊min(h, L - 1) / b⌋`` (whole blocks of ``b`` tokens, at
least one prompt token computed), but their attention still reads the cached context: chunk
``j`` of ``u`` computes ``t_j`` tokens after ``c + Σ_{i<j} t_i`` cached ones
(:func:`~servingcast.costmodel.batch.attention_pairs` with that prior: ``t_j (c + prior) +
t_j (t_j + 1) / 2`` pairs, ``c + prior + t_j`` KV entries read). Each point then carries ``u``
(the prefill work) and ``c`` (its cached context): :func:`with_cached_context` and
:func:`cached_context_sums` add the context's pairs and reads to the chunk iterations the
capacity model costs. The hit rate assumed is the warm cache's: the system prompts stay resident
(their blocks are reserved, below), and a session's next turn reaches the instance that holds its
history (the exported scenarios' agentic sessions route with affinity). On a disaggregated
prefill instance a session's cached history is its previous *prompt* only: the answer was
generated on a decode instance.

Cache space (what the warm cache holds besides the running requests' own KV):

* ``system_prompt``: the ``num_groups`` prompts, ``num_groups · c`` tokens, resident; a running
  request's own KV is its private part only, ``E[L] - c + E[O]`` (its shared blocks are pinned
  once for the group, :meth:`~servingcast.sim.kvcache.BlockPool.pin`).
* ``sessions``: the ``in_flight`` conversations' histories, ``in_flight · (E[L] + E[O])``.
* ``agentic``: the sessions in a tool pause keep their history, ``H = E[L] + E[O]`` each. By
  Little's law the requests followed by a pause (a fraction ``(E[T] - 1) / E[T]``) leave
  ``λ E[tool] (E[T] - 1) / E[T]`` sessions pausing against ``b = λ · E2E`` running, so each
  running request is charged ``E[tool] (E[T] - 1) / (E[T] · E2E) · H`` more tokens
  (:func:`idle_session_seq_len`), with ``E2E ≈ n τ(b)``, ``n = E[O] - 1`` decode steps of the
  decode-only iteration ``τ(b)`` at the batch ``b`` the KV cache then holds (a fixed point:
  a larger charge holds fewer sequences, whose faster iterations leave more sessions pausing per
  running one). The paused sessions are an M/G/∞ population, Poisson with mean
  ``I = b · p / E2E`` (``p = E[tool] (E[T] - 1) / E[T]``): they are charged at their ``q``
  quantile ``I + z_q √I`` (normal approximation), as the running ones are at ``b_q``. Counting
  no prefill in ``τ`` makes ``E2E`` short and the charge large: the estimate errs towards
  holding fewer sequences. The simulator shows why the charge matters:
  when the histories no longer fit, evicted sessions come back as misses, prefill whole
  histories, queue longer and evict more (Llama-3.1-8B on one H100, 8 turns of 400 + 100
  tokens, 2 s pauses: stable at 30 req/s with 81 % of the prompt tokens cached, collapsing to
  15 % at 36 req/s).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from servingcast.costmodel.batch import BatchStats, attention_pairs, kv_tokens_read
from servingcast.costmodel.memory import MemoryPlan, max_batch_size
from servingcast.costmodel.steady import decode_batch_stats, iteration_cadence_s
from servingcast.costmodel.step import CostModel
from servingcast.planner.lengths import QUANTILE_POINTS
from servingcast.planner.problem import Workload
from servingcast.workload import (
    SessionPrefix,
    SystemPromptPrefix,
    prompt_samples,
)

FloatArray = npt.NDArray[np.float64]

#: Requests drawn behind the points (fixed seed: plans are reproducible).
_SAMPLES = 20_000


@dataclass(frozen=True)
class PromptMix:
    """The prompts of a workload with a prefix, as the capacity model takes them.

    ``input_points``: equally weighted prompt tokens to prefill (all of the prompt without
    caching, the uncached ``u`` with it), sorted; ``context_points``: the cached tokens ``c``
    each point's prefill reads (None without caching); ``prompt_mean`` and ``prompt_max`` of the
    whole prompt; ``kv_tokens_per_request``: the KV a running request holds itself;
    ``resident_kv_tokens``: what the warm cache holds apart; ``idle_token_s``: agentic sessions'
    paused history, ``E[tool] (E[T] - 1) / E[T] · H`` token-seconds per request, charged to the
    running requests by :func:`idle_session_seq_len`."""

    input_points: FloatArray
    context_points: FloatArray | None
    prompt_mean: float
    prompt_max: int
    kv_tokens_per_request: float
    resident_kv_tokens: int
    idle_token_s: float = 0.0


def _points(values: FloatArray) -> FloatArray:
    """Midpoint quantiles, as :func:`servingcast.planner.lengths.length_points`."""
    q = (np.arange(QUANTILE_POINTS) + 0.5) / QUANTILE_POINTS
    points = np.asarray(np.quantile(values, q), dtype=np.float64)
    return points[:1] if np.all(points == points[0]) else points


def _binned(uncached: FloatArray, cached: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``QUANTILE_POINTS`` equal-count bins of the requests ordered by (uncached, cached), each
    bin's means: the means of both are exact, the spread within a bin is dropped."""
    order = np.lexsort((cached, uncached))
    u, c = uncached[order], cached[order]
    if np.all(u == u[0]) and np.all(c == c[0]):
        return u[:1].copy(), c[:1].copy()
    bins = np.array_split(np.arange(u.size), QUANTILE_POINTS)
    return (np.asarray([u[b].mean() for b in bins]), np.asarray([c[b].mean() for b in bins]))


def prompt_mix(workload: Workload, caching: bool, block_size: int,
               prefill_side: bool = False) -> PromptMix:
    """The prompt mix of ``workload`` (module docstring); ``prefill_side``: as a disaggregated
    prefill instance caches it (a session's previous prompt, not its answer)."""
    prefix = workload.prefix
    rng = np.random.default_rng(0)
    prompt, shared, previous, output = (a.astype(np.float64) for a in prompt_samples(
        prefix, workload.input_len, workload.output_len, rng, _SAMPLES))
    p1, o1 = float(prompt.mean()), float(output.mean())
    prompt_max = int(prompt.max())
    if not caching or prefix is None:
        return PromptMix(_points(prompt), None, p1, prompt_max, p1 + o1, 0)
    if prefill_side and not isinstance(prefix, SystemPromptPrefix):
        shared = shared - previous
    cached = np.floor(np.minimum(shared, prompt - 1.0) / block_size) * block_size
    cached = np.maximum(cached, 0.0)
    u, c = _binned(prompt - cached, cached)
    per_request = p1 + o1
    resident, idle = 0, 0.0
    if isinstance(prefix, SystemPromptPrefix):
        per_request -= float(cached.mean())
        resident = prefix.num_groups * (prefix.length // block_size) * block_size
    elif isinstance(prefix, SessionPrefix):
        resident = prefix.in_flight * math.ceil(p1 + o1)
    elif not prefill_side:  # a prefill instance keeps only prompts in flight besides them
        t1 = prefix.turns_mean
        idle = prefix.tool_time.mean_s * (t1 - 1.0) / t1 * (p1 + o1)
    return PromptMix(u, c, p1, prompt_max, per_request, resident, idle)


def idle_session_seq_len(cm: CostModel, plan: MemoryPlan, seq_len: int, idle_token_s: float,
                         history_tokens: float, decode_steps: float, decode_context: float,
                         quantile: float) -> int:
    """KV tokens per running request with the paused agentic sessions' histories charged to it
    at the fixed point ``b = ⌊KV / S'⌋`` (module docstring)::

        I / b = p / E2E,  E2E = n τ(b),  p = idle_token_s / H
        S'    = S + H (I + z_q √I) / b

    (``τ(b)``: the cost model's decode-only iteration of ``b`` sequences at the mean context,
    :func:`~servingcast.costmodel.steady.iteration_cadence_s``; ``H``: ``history_tokens``).
    Iterated from the batch of ``S`` alone: each step lowers ``b``, so it ends at the largest
    consistent batch."""
    if idle_token_s <= 0.0 or history_tokens <= 0.0:
        return seq_len
    z = NormalDist().inv_cdf(quantile)
    pause = idle_token_s / history_tokens
    batch = max(1, max_batch_size(plan, seq_len))
    charged = seq_len
    for _ in range(64):
        micro = min(float(cm.parallel.pp), float(batch))
        tau_s = float(np.asarray(iteration_cadence_s(
            cm, decode_batch_stats(np.asarray([batch / micro]), decode_context,
                                   cm.model.sliding_window), np.asarray([micro])))[0])
        idle = batch * pause / (decode_steps * tau_s)
        charged = math.ceil(seq_len + history_tokens * (idle + z * math.sqrt(idle)) / batch)
        nxt = max(1, max_batch_size(plan, charged))
        if nxt >= batch:
            break
        batch = nxt
    return charged


def with_cached_context(stats: BatchStats, owner: npt.NDArray[np.int64],
                        context: FloatArray, window: int | None = None) -> BatchStats:
    """The chunk iterations of :func:`~servingcast.costmodel.steady.prefill_chunk_series`
    (chunk ``j`` of prompt ``i``: ``t`` tokens after ``prior`` computed ones) with
    ``context[i]`` cached tokens before each prompt: pairs and KV reads of ``t`` tokens after
    ``context[i] + prior`` (module docstring)."""
    tokens = np.asarray(stats.prefill_tokens, dtype=np.float64)
    start = np.cumsum(tokens) - tokens
    begin = np.full(int(owner.max(initial=-1)) + 1, np.inf)  # each prompt's first chunk
    np.minimum.at(begin, owner, start)
    prior = start - begin[owner] + context[owner]
    return dataclasses.replace(
        stats,
        prefill_pairs=np.asarray(attention_pairs(tokens, prior, window), dtype=np.float64),
        prefill_kv_tokens=np.asarray(kv_tokens_read(tokens, prior, window), dtype=np.float64))


def cached_context_sums(pairs: FloatArray, kv: FloatArray, chunks: FloatArray,
                        lens: FloatArray, context: FloatArray,
                        window: int | None = None) -> tuple[FloatArray, FloatArray]:
    """:func:`~servingcast.costmodel.steady.chunked_prefill_sums` of ``lens`` uncached tokens
    with ``context`` cached ones before them: every token attends ``c`` more keys
    (``+ u · c`` pairs) and every chunk reads the ``c`` cached entries (``+ n · c``). Exact
    without a sliding window; with one, the extra pairs are a single chunk's,
    ``attention_pairs(u, c, W) - attention_pairs(u, 0, W)``, and reads ``n · min(c, W)``."""
    if window is None:
        return pairs + lens * context, kv + chunks * context
    extra = (np.asarray(attention_pairs(lens, context, window), dtype=np.float64)
             - np.asarray(attention_pairs(lens, 0.0, window), dtype=np.float64))
    return pairs + extra, kv + chunks * np.minimum(context, window)


__all__ = ["PromptMix", "cached_context_sums", "idle_session_seq_len", "prompt_mix",
           "with_cached_context"]
