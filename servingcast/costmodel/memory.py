"""GPU memory of one instance: weights, KV cache, activation reserve, and what fits.

Per GPU (the fullest pipeline stage):

    usable      = HBM * gpu_memory_utilization                       (vLLM's knob, default 0.9)
    kv_cache    = usable - weights - activation_reserve
    kv_capacity = floor(kv_cache / kv_bytes_per_token) tokens, in whole blocks of block_size

Weights: every matrix of the stage's layers in the weight dtype (plus quantisation scales), the
embedding on the first stage and the LM head on the last, both kept in 16-bit as serving engines
do (TensorRT-LLM and vLLM do not quantise them by default); a tied head shares the embedding
when both sit on one stage. KV bytes per token: ``layers * kv_elements * b_kv`` (GQA and MLA
differ in ``kv_elements``, see :func:`layers.kv_elements_per_token_layer`).

Attention data-parallelism (``attn_dp = N > 1``, :mod:`~servingcast.costmodel.dep`): each of the
``N`` ranks holds the attention weights split over its ``tp`` GPUs and the experts are split
``ep = N tp`` ways, so a GPU's weights are those of a ``tp``-way layer with ``E / ep`` experts;
each rank's GPUs store the KV of that rank's requests only (an MLA latent is not split by ``tp``,
a GQA head set is), so ``kv_capacity = N * floor(kv_cache / kv_bytes_per_token)``, and a request
fits when it fits one rank's share. ``max_num_batched_tokens`` and ``max_num_seqs`` are the
per-rank limits (each rank has its own scheduler).

Activation reserve: vLLM sizes it by profiling one forward pass of ``max_num_batched_tokens``
tokens. We estimate that peak as the widest intermediate of a layer (the residual stream, QKV
and the MLP's gate/up output) for those tokens, plus fp32 logits for ``max_num_seqs``
sequences, plus a fixed runtime reserve for CUDA graphs, NCCL buffers and workspaces
(``RUNTIME_RESERVE_GIB``, about what vLLM reports as non-torch memory). An approximation: real
engines differ by a few hundred MB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from servingcast.costmodel import layers
from servingcast.costmodel.step import CostModel
from servingcast.errors import ConfigError, InfeasibleError

#: CUDA context, CUDA graphs, NCCL buffers and library workspaces per GPU.
RUNTIME_RESERVE_GIB = 1.0
GIB = 2.0**30


@dataclass(frozen=True)
class MemoryPlan:
    """Memory of one GPU of the fullest stage, and the KV capacity of the instance."""

    hbm_bytes_per_gpu: float
    usable_bytes_per_gpu: float
    weights_bytes_per_gpu: float
    activation_bytes_per_gpu: float
    kv_cache_bytes_per_gpu: float
    kv_bytes_per_token_per_gpu: float
    kv_capacity_tokens: int
    block_size: int
    ranks: int = 1
    """Attention data-parallel ranks (``attn_dp``): each holds ``kv_capacity_tokens / ranks``
    tokens of its own requests, so the instance holds ``ranks`` times a rank's KV."""

    @property
    def fits(self) -> bool:
        """Whether the weights and the activation reserve leave room for any KV cache."""
        return self.kv_capacity_tokens > 0


def weights_bytes_per_stage(cm: CostModel) -> list[float]:
    """Weight bytes on one GPU of each pipeline stage."""
    model, par = cm.model, cm.parallel
    wb = cm.precision.weight_bytes
    attn = sum(g.weights for g in layers.attention_gemms(model, par.tp)) * wb
    dense = sum(g.weights for g in layers.dense_mlp_gemms(model, par.tp)) * wb
    moe = 0.0
    if model.moe is not None:
        fixed = sum(g.weights for g in layers.moe_fixed_gemms(model, par.tp))
        experts = layers.experts_per_gpu(model, par) * sum(
            g.weights for g in layers.expert_gemms(model, par))
        moe = (fixed + experts) * wb
    norms = 2 * model.hidden_size * 2.0
    table = math.ceil(model.vocab_size / par.tp) * model.hidden_size * 2.0
    stages = []
    counts = layers.layer_counts(model, par.pp)
    for index, (n_dense, n_moe) in enumerate(counts):
        total = n_dense * (attn + dense + norms) + n_moe * (attn + moe + norms)
        first, last = index == 0, index == len(counts) - 1
        if first:
            total += table
        if last and not (first and model.tie_word_embeddings):
            total += table
        stages.append(total)
    return stages


def kv_bytes_per_token_per_stage(cm: CostModel) -> list[float]:
    """KV-cache bytes one GPU of each stage stores per token."""
    per_layer = layers.kv_elements_per_token_layer(cm.model, cm.parallel.tp) * (
        cm.precision.kv_bytes)
    return [(d + m) * per_layer for d, m in layers.layer_counts(cm.model, cm.parallel.pp)]


def kv_bytes_per_token(cm: CostModel) -> float:
    """KV bytes of one token over the whole instance (all layers and GPUs, no replicas).

    What a prefill→decode transfer moves per token. With KV heads (or the MLA latent) replicated
    across TP ranks, only one copy is sent.
    """
    model = cm.model
    per_layer = layers.kv_elements_per_token_layer(model, 1) * cm.precision.kv_bytes
    return model.num_layers * per_layer


def activation_reserve_bytes(
    cm: CostModel, max_num_batched_tokens: int, max_num_seqs: int
) -> float:
    """Peak activation memory per GPU of one forward pass (see the module docstring)."""
    model, tp = cm.model, cm.parallel.tp
    widths = [g.out_features for g in layers.attention_gemms(model, tp)]
    widths += [g.out_features for g in layers.dense_mlp_gemms(model, tp)]
    if model.moe is not None:
        widths += [g.out_features * model.moe.top_k // max(1, cm.parallel.ep)
                   for g in layers.expert_gemms(model, cm.parallel)]
    per_token = (2 * model.hidden_size + max(widths)) * cm.precision.activation_bytes
    logits = max_num_seqs * math.ceil(model.vocab_size / tp) * 4.0
    return max_num_batched_tokens * per_token + logits + RUNTIME_RESERVE_GIB * GIB


def memory_plan(
    cm: CostModel,
    gpu_memory_utilization: float = 0.9,
    max_num_batched_tokens: int = 8192,
    max_num_seqs: int = 256,
    block_size: int = 16,
    extra_weights_bytes_per_gpu: float = 0.0,
    extra_kv_bytes_per_token_per_gpu: float = 0.0,
    kv_cache_free_memory_fraction: float | None = None,
) -> MemoryPlan:
    """Memory of the fullest stage; ``extra_*`` add a co-located draft model's share.

    ``kv_cache_free_memory_fraction`` switches to TensorRT-LLM's rule: the KV cache gets that
    fraction of what is left after weights and activations
    (``KvCacheConfig.free_gpu_memory_fraction``), instead of vLLM's ``gpu_memory_utilization``
    cap on the whole.
    """
    if kv_cache_free_memory_fraction is not None and not 0.0 < kv_cache_free_memory_fraction <= 1.0:
        raise ConfigError(
            f"kv_cache_free_memory_fraction must be in (0, 1], got {kv_cache_free_memory_fraction}"
        )
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ConfigError(
            f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}"
        )
    if block_size < 1:
        raise ConfigError(f"block_size must be >= 1, got {block_size}")
    hbm = cm.hardware.hbm_bytes
    usable = hbm * gpu_memory_utilization
    weights = [w + extra_weights_bytes_per_gpu for w in weights_bytes_per_stage(cm)]
    kv_tok = [k + extra_kv_bytes_per_token_per_gpu for k in kv_bytes_per_token_per_stage(cm)]
    reserve = activation_reserve_bytes(cm, max_num_batched_tokens, max_num_seqs)
    capacities = []
    frees = []
    for w, k in zip(weights, kv_tok, strict=True):
        if kv_cache_free_memory_fraction is None:
            free = usable - w - reserve
        else:
            free = (hbm - w - reserve) * kv_cache_free_memory_fraction
        frees.append(free)
        tokens = int(free // k) if free > 0 else 0
        # attn_dp > 1: each rank's GPUs store that rank's own tokens (module docstring).
        capacities.append(tokens // block_size * block_size * cm.parallel.attn_dp)
    worst = min(range(len(capacities)), key=lambda i: capacities[i])
    if kv_cache_free_memory_fraction is not None:
        usable = weights[worst] + reserve + max(0.0, frees[worst])
    return MemoryPlan(
        hbm_bytes_per_gpu=hbm,
        usable_bytes_per_gpu=usable,
        weights_bytes_per_gpu=max(weights),
        activation_bytes_per_gpu=reserve,
        kv_cache_bytes_per_gpu=max(0.0, frees[worst]),
        kv_bytes_per_token_per_gpu=kv_tok[worst],
        kv_capacity_tokens=capacities[worst],
        block_size=block_size,
        ranks=cm.parallel.attn_dp,
    )


def blocks_for(tokens: int, block_size: int) -> int:
    """Paged-KV blocks holding ``tokens`` tokens: ``ceil(tokens / block_size)``."""
    return -(-tokens // block_size)


def max_batch_size(plan: MemoryPlan, seq_len: int) -> int:
    """The most sequences of ``seq_len`` tokens whose KV fits at once (whole blocks each; with
    ``ranks`` attention data-parallel ranks, whole sequences in each rank's share)."""
    per_seq = blocks_for(seq_len, plan.block_size) * plan.block_size
    return plan.ranks * (plan.kv_capacity_tokens // plan.ranks // per_seq)


def require_fit(cm: CostModel, plan: MemoryPlan, seq_len: int, batch_size: int) -> None:
    """Raise :class:`InfeasibleError`, with the numbers, when ``batch_size`` sequences don't fit."""
    where = f"{cm.model.name} in {cm.precision.name} on {cm.hardware.name} ({cm.parallel})"
    gb = 1e9
    if not plan.fits:
        raise InfeasibleError(
            f"{where} does not fit: each GPU needs {plan.weights_bytes_per_gpu / gb:.1f} GB of "
            f"weights + {plan.activation_bytes_per_gpu / gb:.1f} GB of activations but has "
            f"{plan.usable_bytes_per_gpu / gb:.1f} GB usable. To fix: raise tp or pp, use a "
            f"smaller precision (fp8, w4a16), or a GPU with more memory"
        )
    need = max_batch_size(plan, seq_len)
    if need < batch_size:
        per_seq_gb = blocks_for(seq_len, plan.block_size) * plan.block_size * (
            plan.kv_bytes_per_token_per_gpu) / gb
        if need == 0:
            raise InfeasibleError(
                f"{where}: one sequence of {seq_len} tokens needs {per_seq_gb:.1f} GB of KV "
                f"cache per GPU, but only {plan.kv_cache_bytes_per_gpu / gb:.1f} GB is free "
                "after the weights and activations. To fix: shorten the sequence, raise tp or "
                "pp, use an fp8 KV cache (--kv-cache-dtype fp8), or a GPU with more memory")
        raise InfeasibleError(
            f"{where}: a batch of {batch_size} sequences of {seq_len} tokens needs "
            f"{batch_size * per_seq_gb:.1f} GB of KV cache per GPU, but only "
            f"{plan.kv_cache_bytes_per_gpu / gb:.1f} GB is free (room for {need} sequences). "
            f"To fix: use --batch-size {need} (or 'max'), raise tp/pp, or use an fp8 KV cache"
        )
