"""Steady-state building blocks over the cost model: decode batches, chunked prompts, pipelines.

The planner sizes instances from *typical* iterations rather than from one static batch. These
helpers build the :class:`~servingcast.costmodel.batch.BatchStats` of such iterations as arrays
(one element per candidate batch size), so that one :meth:`CostModel.iteration_s` call costs a
whole sweep, and compose the pipelined iteration cadence. They only count tokens, pairs and
sequences and combine the cost model's own times; every hardware time still comes from
:class:`~servingcast.costmodel.step.CostModel`.

* A decode batch of ``B`` sequences at a mean cached context ``C``: attention pairs and KV reads
  are linear in the context for one query token (``pairs(1, C) = C + 1``), so ``B`` sequences at
  mean context ``C`` have exactly the sums of any ``B`` sequences whose contexts average ``C``
  (without a sliding window).
* A prompt of ``L`` tokens prefilled in chunks of ``K`` (Sarathi-Serve, Agrawal et al., OSDI
  2024): chunk ``j`` computes ``c_j = min(K, L - jK)`` tokens after ``jK`` cached ones, for
  ``j = 0 .. ceil(L/K) - 1``. Summed over the chunks, the causal pairs are those of the whole
  prompt, ``L (L + 1) / 2``, while the KV entries read grow with the number of chunks:
  ``sum_j (jK + c_j) = L + K n (n - 1) / 2`` with ``n = ceil(L / K)``.
* With ``m`` micro-batches in flight on ``pp`` pipeline stages, each micro-batch advances one
  iteration every ``max(latency, m * interval)`` (GPipe, Huang et al. 2019; vLLM's virtual
  engines; :func:`servingcast.costmodel.spec.pipelined_step_s`): the stages are shared by the
  ``m`` micro-batches, and one iteration cannot take less than its latency through every stage.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import numpy.typing as npt

from servingcast.costmodel.batch import BatchStats, attention_pairs, kv_tokens_read
from servingcast.costmodel.roofline import ArrayOrFloat
from servingcast.costmodel.spec import pipelined_step_s
from servingcast.costmodel.step import CostModel

FloatArray = npt.NDArray[np.float64]


def add_stats(*parts: BatchStats) -> BatchStats:
    """Elementwise sum of iteration stats (every field of :class:`BatchStats` is additive)."""
    names = [f.name for f in fields(BatchStats)]
    return BatchStats(**{n: sum((getattr(p, n) for p in parts), 0.0) for n in names})


def scale_stats(stats: BatchStats, factor: ArrayOrFloat) -> BatchStats:
    """Every field times ``factor`` (a number or an array broadcast against the fields)."""
    return BatchStats(**{f.name: getattr(stats, f.name) * factor for f in fields(BatchStats)})


def decode_batch_stats(
    batch_sizes: npt.ArrayLike, context: float, window: int | None = None
) -> BatchStats:
    """Stats of decode iterations of ``batch_sizes[j]`` sequences at mean cached ``context``.

    Each sequence computes one token: ``B`` new tokens and logits, ``B (C + 1)`` attention pairs
    and KV entries read (``attention_pairs(1, C)`` and ``kv_tokens_read(1, C)`` per sequence).
    """
    b = np.asarray(batch_sizes, dtype=np.float64)
    zero = np.zeros_like(b)
    return BatchStats(
        prefill_tokens=zero,
        prefill_pairs=zero,
        prefill_kv_tokens=zero,
        decode_seqs=b,
        decode_tokens=b.copy(),
        decode_pairs=b * attention_pairs(1.0, float(context), window),
        decode_kv_tokens=b * kv_tokens_read(1.0, float(context), window),
        logit_seqs=b.copy(),
    )


def chunked_prefill_sums(
    prompt_len: npt.ArrayLike, chunk_tokens: npt.ArrayLike, window: int | None = None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(pairs, kv_tokens_read, chunks)`` of prefilling ``L`` tokens in chunks of ``K``.

    Elementwise over broadcast arrays. Without a sliding window the sums have the closed forms of
    the module docstring; with one, the chunks are summed one by one with
    :func:`attention_pairs` and :func:`kv_tokens_read`.
    """
    length, chunk = np.broadcast_arrays(np.asarray(prompt_len, dtype=np.float64),
                                        np.asarray(chunk_tokens, dtype=np.float64))
    chunk = np.maximum(chunk, 1.0)
    n = np.ceil(length / chunk)
    if window is None:
        pairs = np.asarray(attention_pairs(length, 0.0), dtype=np.float64)
        kv = length + chunk * n * (n - 1.0) / 2.0
        return pairs, kv, n
    pairs = np.zeros_like(length)
    kv = np.zeros_like(length)
    for j in range(int(np.max(n, initial=0.0))):
        prior = j * chunk
        tokens = np.clip(length - prior, 0.0, chunk)
        before: FloatArray = np.asarray(prior, dtype=np.float64)
        pairs += np.where(tokens > 0, attention_pairs(tokens, before, window), 0.0)
        kv += np.where(tokens > 0, kv_tokens_read(tokens, before, window), 0.0)
    return pairs, kv, n


def prefill_chunk_series(
    prompt_lens: npt.ArrayLike, chunk_tokens: int, window: int | None = None
) -> tuple[BatchStats, npt.NDArray[np.int64]]:
    """Every chunk iteration of prefilling each prompt alone, and the prompt each belongs to.

    Returns array-valued stats with one element per chunk (chunk ``j`` of prompt ``i``:
    ``min(K, L_i - jK)`` tokens after ``jK`` cached ones; logits on the last chunk only) and
    ``owner``, the index of the prompt of each element, so that
    ``np.bincount(owner, weights=time)`` sums a prompt's chunks.
    """
    lens = np.atleast_1d(np.asarray(prompt_lens, dtype=np.float64))
    k = float(max(1, int(chunk_tokens)))
    n = np.ceil(lens / k).astype(np.int64)
    owner = np.repeat(np.arange(lens.size), n)
    index = np.arange(owner.size) - np.repeat(np.cumsum(n) - n, n)
    prior: FloatArray = (index * k).astype(np.float64)
    tokens: FloatArray = np.minimum(k, lens[owner] - prior)
    last = (index == n[owner] - 1).astype(np.float64)
    zero = np.zeros_like(tokens)
    stats = BatchStats(
        prefill_tokens=tokens,
        prefill_pairs=np.asarray(attention_pairs(tokens, prior, window), dtype=np.float64),
        prefill_kv_tokens=np.asarray(kv_tokens_read(tokens, prior, window), dtype=np.float64),
        decode_seqs=zero,
        decode_tokens=zero,
        decode_pairs=zero,
        decode_kv_tokens=zero,
        logit_seqs=last,
    )
    return stats, owner


def iteration_cadence_s(
    cm: CostModel, stats: BatchStats, micro_batches: ArrayOrFloat | None = None
) -> ArrayOrFloat:
    """Seconds between two iterations of one micro-batch: ``max(latency, m * interval)``
    (:func:`servingcast.costmodel.spec.pipelined_step_s`, without a draft model).

    ``stats`` describe one micro-batch's iteration; ``m`` micro-batches (default: one per
    pipeline stage, ``pp``) share the stages. With ``pp = 1`` this is the iteration latency.
    """
    latency, interval = cm.iteration_s(stats)
    if cm.parallel.pp == 1:
        return latency
    m = float(cm.parallel.pp) if micro_batches is None else micro_batches
    return pipelined_step_s(latency, interval, m, cm.parallel.pp)  # type: ignore[arg-type]
