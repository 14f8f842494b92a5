"""What one engine iteration processes, reduced to the sums the cost model needs.

An iteration carries prefill chunks (``tokens`` new tokens after ``prior`` cached ones) and
decode sequences (``context`` cached tokens, ``query_tokens`` new ones each: 1, or ``k + 1`` when
verifying ``k`` speculative tokens). Every operator's cost is linear in a handful of sums —
new tokens, sequences, attention (query, key) pairs and KV tokens read — so the cost of a batch
depends on those sums only. The simulator keeps them up to date incrementally and can evaluate
many future iterations at once as numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from servingcast.costmodel.roofline import ArrayOrFloat


def attention_pairs(
    query_tokens: ArrayOrFloat, prior: ArrayOrFloat, window: int | None = None
) -> ArrayOrFloat:
    """Causal (query, key) pairs of ``q`` new tokens after ``p`` cached ones.

    Token ``i`` (1-based) attends to ``p + i`` keys, so the pairs are
    ``sum_{i=1..q} (p + i) = q p + q (q + 1) / 2``. With a sliding window ``W`` (Mistral) token
    ``i`` attends to ``min(p + i, W)`` keys:
    ``sum_i min(p + i, W) = S(min(q, W - p)) + W * (q - min(q, W - p))`` with
    ``S(m) = m p + m (m + 1) / 2`` and ``W - p`` floored at 0.
    """
    full = query_tokens * prior + query_tokens * (query_tokens + 1) / 2.0
    if window is None:
        return full
    m = np.clip(window - prior, 0, query_tokens)
    return m * prior + m * (m + 1) / 2.0 + window * (query_tokens - m)  # type: ignore[no-any-return]


def kv_tokens_read(
    query_tokens: ArrayOrFloat, prior: ArrayOrFloat, window: int | None = None
) -> ArrayOrFloat:
    """KV entries an attention kernel reads for ``q`` new tokens after ``p`` cached ones.

    FlashAttention-style kernels stream the cached keys/values once per query block and write the
    new ones: ``p + q`` token entries, or ``min(p, W) + q`` with a sliding window ``W``.
    """
    if window is None:
        return prior + query_tokens
    return np.minimum(prior, window) + query_tokens


@dataclass(frozen=True)
class BatchStats:
    """The sums one iteration's cost depends on. Fields may be floats or equal-shape arrays."""

    prefill_tokens: ArrayOrFloat = 0.0
    prefill_pairs: ArrayOrFloat = 0.0
    prefill_kv_tokens: ArrayOrFloat = 0.0
    decode_seqs: ArrayOrFloat = 0.0
    decode_tokens: ArrayOrFloat = 0.0
    decode_pairs: ArrayOrFloat = 0.0
    decode_kv_tokens: ArrayOrFloat = 0.0
    logit_seqs: ArrayOrFloat = 0.0

    @property
    def new_tokens(self) -> ArrayOrFloat:
        """Tokens that go through every GEMM this iteration."""
        return self.prefill_tokens + self.decode_tokens


@dataclass(frozen=True)
class Batch:
    """One iteration's work, request by request.

    ``prefill`` holds ``(new_tokens, prior_context)`` per chunk; ``decode`` the cached context of
    each decoding sequence; ``decode_query_tokens`` the tokens each decode step verifies (1, or
    ``k + 1`` with ``k`` speculative tokens). ``prefill_logits`` counts the chunks that finish a
    prompt (and so need logits); by default every chunk does.
    """

    prefill: tuple[tuple[int, int], ...] = ()
    decode: tuple[int, ...] = ()
    decode_query_tokens: int = 1
    prefill_logits: int | None = None

    @classmethod
    def of(
        cls,
        prefill: Sequence[tuple[int, int]] = (),
        decode: Sequence[int] = (),
        decode_query_tokens: int = 1,
    ) -> Batch:
        """Build a batch from any sequences."""
        return cls(tuple((int(t), int(p)) for t, p in prefill), tuple(int(c) for c in decode),
                   decode_query_tokens)

    def stats(self, window: int | None = None) -> BatchStats:
        """Reduce to :class:`BatchStats` (``window``: the model's sliding window, if any)."""
        q = float(self.decode_query_tokens)
        pre = np.asarray(self.prefill, dtype=np.float64).reshape(-1, 2)
        dec = np.asarray(self.decode, dtype=np.float64)
        chunk_tokens, prior = pre[:, 0], pre[:, 1]
        n_logits = len(self.prefill) if self.prefill_logits is None else self.prefill_logits
        return BatchStats(
            prefill_tokens=float(chunk_tokens.sum()),
            prefill_pairs=float(np.sum(attention_pairs(chunk_tokens, prior, window))),
            prefill_kv_tokens=float(np.sum(kv_tokens_read(chunk_tokens, prior, window))),
            decode_seqs=float(len(dec)),
            decode_tokens=q * len(dec),
            decode_pairs=float(np.sum(attention_pairs(q + 0.0 * dec, dec, window))),
            decode_kv_tokens=float(np.sum(kv_tokens_read(q + 0.0 * dec, dec, window))),
            logit_seqs=float(len(dec) + n_logits),
        )


def decode_series(
    batch_size: float,
    contexts: npt.ArrayLike,
    window: int | None = None,
    query_tokens: int = 1,
) -> BatchStats:
    """Stats of a series of decode iterations of ``batch_size`` equal sequences.

    Element ``j`` is an iteration with every sequence at cached context ``contexts[j]``, each
    computing ``query_tokens`` new tokens (1, or ``k + 1`` verifying ``k`` speculative ones) —
    the static-batch decode phase, as arrays for one vectorised cost-model call.
    """
    ctx = np.asarray(contexts, dtype=np.float64)
    q = np.full_like(ctx, float(query_tokens))
    zero = np.zeros_like(ctx)
    b = float(batch_size)
    return BatchStats(
        prefill_tokens=zero,
        prefill_pairs=zero,
        prefill_kv_tokens=zero,
        decode_seqs=b + zero,
        decode_tokens=b * q,
        decode_pairs=b * attention_pairs(q, ctx, window),
        decode_kv_tokens=b * kv_tokens_read(q, ctx, window),
        logit_seqs=b * q,
    )
