"""Speculative decoding and pipelined iterations: the maths the estimate and the simulator share.

Speculative decoding (Leviathan, Kalman & Matias, "Fast Inference from Transformers via
Speculative Decoding", ICML 2023): each step a draft model proposes ``k`` tokens in ``k`` decode
iterations of its own, then the target verifies ``k + 1`` tokens per sequence in one iteration.
With a per-token acceptance rate ``a`` the expected tokens a step yields are (eq. 1)

    E[tokens] = (1 - a^(k+1)) / (1 - a)        (k + 1 when a = 1)

Pipelined iterations (GPipe, Huang et al. 2019; vLLM's virtual engines): with ``m`` micro-batches
in flight on ``pp`` stages, a micro-batch advances once per

    step = max(latency + draft, m * (interval + draft / pp))

where ``latency`` runs through every stage, ``interval`` is the slowest stage (plus hand-off and
overhead), and ``draft`` the draft model's ``k`` iterations (which run on the same GPUs, spread
over the ``pp`` stages). Without a draft and with ``pp = 1`` this is the iteration latency.
"""

from __future__ import annotations

import numpy as np

from servingcast.costmodel.memory import kv_bytes_per_token, weights_bytes_per_stage
from servingcast.costmodel.parallel import Parallelism
from servingcast.costmodel.roofline import ArrayOrFloat
from servingcast.costmodel.step import CostModel
from servingcast.specs.model import ModelSpec


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
