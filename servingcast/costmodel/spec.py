"""Speculative decoding and pipelined iterations: the maths the estimate and the simulator share.

Speculative decoding (Leviathan, Kalman & Matias, "Fast Inference from Transformers via
Speculative Decoding", ICML 2023): each step a draft model proposes ``k`` tokens in ``k`` decode
iterations of its own, then the target verifies ``k + 1`` tokens per sequence in one iteration.
With a per-token acceptance rate ``a`` the expected tokens a step yields are (eq. 1)

    E[tokens] = (1 - a^(k+1)) / (1 - a)        (k + 1 when a = 1)

Pipelined iterations (GPipe, Huang et al. 2019; vLLM's virtual engines): a batch of ``n``
sequences on ``pp`` stages runs as ``m = min(pp, max(n, 1))`` micro-batches in flight
(:func:`micro_batches`), and a micro-batch advances once per

    step = max(latency + draft, m * (interval + draft / pp))

where ``latency`` runs through every stage, ``interval`` is the slowest stage (plus hand-off and
overhead), and ``draft`` the draft model's ``k`` iterations (which run on the same GPUs, spread
over the ``pp`` stages). Without a draft and with ``pp = 1`` this is the iteration latency.

Multi-token prediction (MTP; DeepSeek-AI, "DeepSeek-V3 Technical Report", 2024, section 2.2):
the draft is the target's own MTP module — one transformer block (sharded like the target's
layers, a mixture of experts for DeepSeek-V3) with the shared embedding and output head — run
once per speculative token, as vLLM and SGLang (``NEXTN``) reuse it for ``k > 1``. Its cost is a
one-layer model of the target's shape (:func:`mtp_draft_spec`); its checkpoint stores its own
copy of the embedding and head (DeepSeek-V3's 14B MTP weights), which the memory plan counts.

The planner's steady state (:func:`speculative_cadence_s`): an iteration of ``β`` decodes at
mean context ``C`` and ``p`` prefill tokens becomes, per emitted token,

    cadence = step(verify β × (k+1) tokens at C, prefill E·p; draft Σ_{j<k} β at C + j) / E

with ``E = E[tokens]``: every decoding sequence emits ``E`` tokens a step, so requests finish
(and new prompts arrive) ``E`` times as often per step, and the prefill a step carries is ``E``
times what one token's time carries. Dividing by ``E`` makes the cadence the TPOT and keeps the
planner's Little's-law rates (one token per cadence) exact. The draft's own prefill of a prompt
is not costed (as in the estimate and the simulator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from servingcast.costmodel.batch import BatchStats, attention_pairs, kv_tokens_read
from servingcast.costmodel.memory import kv_bytes_per_token, weights_bytes_per_stage
from servingcast.costmodel.parallel import Parallelism
from servingcast.costmodel.roofline import ArrayOrFloat
from servingcast.costmodel.step import CostModel
from servingcast.errors import ConfigError
from servingcast.specs.catalog import get_model
from servingcast.specs.model import ModelSpec

#: The ``draft_model`` value that selects the target's own multi-token-prediction layers.
MTP = "mtp"


def expected_tokens_per_step(acceptance_rate: float, num_speculative_tokens: int) -> float:
    """``(1 - a^(k+1)) / (1 - a)``, or ``k + 1`` at ``a = 1`` (Leviathan et al. 2023, eq. 1)."""
    a, k = float(acceptance_rate), int(num_speculative_tokens)
    if a >= 1.0:
        return k + 1.0
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def draft_parallelism(draft: ModelSpec, tp: int) -> Parallelism:
    """The draft runs on the target's GPUs with the largest tp <= the target's that shards it."""
    for cand in range(tp, 0, -1):
        kv_ok = draft.num_kv_heads % cand == 0 or cand % draft.num_kv_heads == 0
        if draft.num_attention_heads % cand == 0 and (draft.mla is not None or kv_ok):
            return Parallelism(tp=cand)
    return Parallelism(tp=1)


def draft_memory_extras(draft: CostModel, pp: int) -> tuple[float, float]:
    """``(weight bytes, KV bytes per token)`` a co-located draft adds to each target GPU.

    The draft's weights and KV cache are spread over the target's ``pp`` stages: its fullest
    stage's weights ``/ pp`` and its KV bytes per token ``/ (tp_draft * pp)``. Pass them to
    :func:`~servingcast.costmodel.memory.memory_plan` as ``extra_*``.
    """
    weights = max(weights_bytes_per_stage(draft)) / pp
    kv = kv_bytes_per_token(draft) / draft.parallel.tp / pp
    return weights, kv


@overload
def micro_batches(pp: int, sequences: int) -> int: ...
@overload
def micro_batches(pp: int, sequences: float) -> float: ...
@overload
def micro_batches(pp: int, sequences: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...
def micro_batches(pp: int, sequences: Any) -> Any:
    """Micro-batches in flight on ``pp`` stages with ``n`` sequences in the batch (module
    docstring; vLLM's virtual engines): ``m = min(pp, max(n, 1))`` — at most one per stage, and
    an iteration with no sequence still runs as one. Elementwise for an array ``n``."""
    if isinstance(sequences, np.ndarray):
        return np.minimum(float(pp), np.maximum(sequences, 1.0))
    return min(pp, max(sequences, 1))


def pipelined_step_s(
    latency: ArrayOrFloat,
    interval: ArrayOrFloat,
    micro_batches: float,
    pp: int,
    draft_s: ArrayOrFloat = 0.0,
) -> ArrayOrFloat:
    """Seconds between two steps of one micro-batch (module docstring), elementwise."""
    return np.maximum(latency + draft_s,
                      micro_batches * (interval + draft_s / pp))


def mtp_draft_spec(target: ModelSpec) -> ModelSpec:
    """The target's MTP module as a one-layer model of the same shape (module docstring).

    DeepSeek-V3's MTP block is a mixture-of-experts layer, so no leading dense layer is kept.
    Raises :class:`ConfigError` for a model without MTP layers (``mtp_layers`` in its spec)."""
    if target.mtp_layers < 1:
        raise ConfigError(
            f"{target.name} has no multi-token-prediction layers (mtp_layers: 0 in its spec), so "
            "it cannot draft its own tokens. To fix: use a separate draft_model (e.g. "
            "llama-3.2-1b for Llama-3 targets), or a model trained with MTP (deepseek-v3)")
    moe = None if target.moe is None else target.moe.model_copy(update={"first_dense_layers": 0})
    return target.model_copy(update={"name": f"{target.name}-mtp", "num_layers": 1, "moe": moe,
                                      "mtp_layers": 0})


def draft_cost_model(target: CostModel, draft_model: str) -> CostModel:
    """The cost model of a draft on ``target``'s GPUs: ``"mtp"`` for the target's MTP layer
    (sharded like the target's layers, ``tp`` and ``ep``, in one pipeline stage), else a
    catalog model at :func:`draft_parallelism`."""
    if draft_model == MTP:
        return CostModel(mtp_draft_spec(target.model), target.hardware, target.precision,
                         Parallelism(tp=target.parallel.tp, ep=target.parallel.ep),
                         target.efficiency)
    spec = get_model(draft_model)
    return CostModel(spec, target.hardware, target.precision,
                     draft_parallelism(spec, target.parallel.tp), target.efficiency)


@dataclass(frozen=True)
class SpeculativeDecoding:
    """Speculative decoding on one instance: ``draft`` proposes ``num_speculative_tokens`` per
    step, each accepted with probability ``acceptance_rate``."""

    draft: CostModel
    num_speculative_tokens: int
    acceptance_rate: float

    @property
    def tokens_per_step(self) -> float:
        """``E[tokens]`` of a step (:func:`expected_tokens_per_step`)."""
        return expected_tokens_per_step(self.acceptance_rate, self.num_speculative_tokens)


def verify_stats(stats: BatchStats, query_tokens: int, prefill_scale: ArrayOrFloat = 1.0,
                 window: int | None = None) -> BatchStats:
    """``stats`` with every decode verifying ``query_tokens`` tokens and the prefill ``×
    prefill_scale``.

    One-token decodes at a mean context ``C`` read ``min(C, W) + 1`` KV entries each, so the
    effective context is ``c = kv / seqs - 1``; ``q`` tokens after it attend
    :func:`~servingcast.costmodel.batch.attention_pairs` ``(q, c)`` pairs and read
    ``kv_tokens_read(q, c)`` entries (exact without a sliding window, where both are linear in
    ``C``), and each needs the target's logits at every verified position (the rejection
    sampler compares the two distributions there), as :func:`~servingcast.costmodel.batch.
    decode_series` counts them."""
    seqs = np.asarray(stats.decode_seqs, dtype=np.float64)
    safe = np.where(seqs > 0, seqs, 1.0)
    ctx = np.maximum(np.asarray(stats.decode_kv_tokens, dtype=np.float64) / safe - 1.0, 0.0)
    q = float(query_tokens)
    prefill_logits = np.asarray(stats.logit_seqs, dtype=np.float64) - seqs
    return BatchStats(
        prefill_tokens=stats.prefill_tokens * prefill_scale,
        prefill_pairs=stats.prefill_pairs * prefill_scale,
        prefill_kv_tokens=stats.prefill_kv_tokens * prefill_scale,
        decode_seqs=seqs,
        decode_tokens=seqs * q,
        decode_pairs=seqs * attention_pairs(q, ctx, window),
        decode_kv_tokens=seqs * kv_tokens_read(q, ctx, window),
        logit_seqs=seqs * q + prefill_logits * prefill_scale,
    )


def _draft_s(spec: SpeculativeDecoding, stats: BatchStats) -> ArrayOrFloat:
    """Seconds of the draft's ``k`` decode iterations for the decodes of ``stats`` (contexts
    ``C, C + 1, …, C + k - 1``, :func:`verify_stats`'s effective ``C``); 0 without decodes."""
    seqs = np.asarray(stats.decode_seqs, dtype=np.float64)
    safe = np.where(seqs > 0, seqs, 1.0)
    ctx = np.maximum(np.asarray(stats.decode_kv_tokens, dtype=np.float64) / safe - 1.0, 0.0)
    window = spec.draft.model.sliding_window
    zero = np.zeros_like(seqs)
    total = np.zeros_like(seqs)
    for j in range(spec.num_speculative_tokens):
        step = BatchStats(prefill_tokens=zero, prefill_pairs=zero, prefill_kv_tokens=zero,
                          decode_seqs=seqs, decode_tokens=seqs,
                          decode_pairs=seqs * attention_pairs(1.0, ctx + j, window),
                          decode_kv_tokens=seqs * kv_tokens_read(1.0, ctx + j, window),
                          logit_seqs=seqs)
        total = total + np.where(seqs > 0, spec.draft.iteration_s(step)[0], 0.0)
    return total


class SpeculativeCostModel(CostModel):
    """``target`` under speculative decoding, per emitted token: :meth:`iteration_s` of an
    iteration with one query token per decode returns ``((lat(verify) + draft) / E,
    (interval(verify) + draft / pp) / E)`` (module docstring), so that the pipelined cadence
    ``max(latency, m · interval)`` built from them is :func:`speculative_cadence_s`, the time
    per emitted token. Anything that costs steady-state iterations through ``iteration_s`` (the
    planner's profiles, its re-check) then plans speculative instances unchanged. Only
    ``iteration_s`` is speculative: :meth:`CostModel.step` still costs a plain iteration."""

    def __init__(self, target: CostModel, spec: SpeculativeDecoding) -> None:
        super().__init__(target.model, target.hardware, target.precision, target.parallel,
                         target.efficiency, tp_comm_overlap=target.tp_comm_overlap,
                         gemm_non_overlap=target.gemm_non_overlap)
        self.speculative = spec

    def iteration_s(self, stats: BatchStats) -> tuple[ArrayOrFloat, ArrayOrFloat]:
        """Per emitted token: ``(latency_s, interval_s)`` of the verification and the draft."""
        spec = self.speculative
        e = spec.tokens_per_step
        verify = verify_stats(stats, spec.num_speculative_tokens + 1, e,
                              self.model.sliding_window)
        latency, interval = super().iteration_s(verify)
        draft = _draft_s(spec, stats)
        return (latency + draft) / e, (interval + draft / self.parallel.pp) / e


def speculative_cadence_s(cm: CostModel, spec: SpeculativeDecoding, stats: BatchStats,
                          micro_batches: ArrayOrFloat | None = None) -> ArrayOrFloat:
    """Seconds per emitted token of a micro-batch's steady-state iterations ``stats`` (one
    query token per decode) under speculative decoding (module docstring)::

        verify  = stats with k + 1 query tokens per decode, prefill × E
        draft   = Σ_{j<k} draft latency(decodes at C + j)
        cadence = max(lat(verify) + draft, m (interval(verify) + draft / pp)) / E

    ``m`` micro-batches share the ``pp`` stages (default ``pp``); elementwise. Matches
    :func:`servingcast.estimate`'s TPOT for a decode batch at the same context."""
    latency, interval = SpeculativeCostModel(cm, spec).iteration_s(stats)
    pp = cm.parallel.pp
    m = float(pp) if micro_batches is None else micro_batches
    return pipelined_step_s(latency, interval, m, pp)  # type: ignore[arg-type]
