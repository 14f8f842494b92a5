"""The shapes of a model's operators on one GPU: GEMMs, attention, MoE experts, embeddings.

This is the single place where an architecture becomes matrices. Parameter counts, weight memory
and FLOPs all derive from the same :class:`Gemm` list, so they cannot disagree. Conventions
follow the papers that introduced each piece: Megatron-LM tensor parallelism (column-parallel
QKV and MLP-up, row-parallel output and MLP-down, Shoeybi et al. 2019), GQA (Ainslie et al.
2023), SwiGLU gated MLPs (Shazeer 2020), MLA (DeepSeek-V2, arXiv:2405.04434) and MoE with
shared experts (DeepSeekMoE, arXiv:2401.06066).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from servingcast.costmodel.parallel import Parallelism, kv_heads_per_gpu
from servingcast.costmodel.roofline import ArrayOrFloat
from servingcast.specs.model import ModelSpec


@dataclass(frozen=True)
class Gemm:
    """One weight matrix as a GEMM on one GPU: ``tokens x in_features @ in x out``.

    FLOPs per token are ``2 * in * out`` (one multiply and one add per weight); the weights are
    ``in * out`` elements. ``op`` is the operator class it is reported under.
    """

    name: str
    op: str
    in_features: int
    out_features: int

    @property
    def weights(self) -> int:
        """Weight elements."""
        return self.in_features * self.out_features

    @property
    def flops_per_token(self) -> int:
        """``2 * in * out``."""
        return 2 * self.in_features * self.out_features


def _mlp(name: str, op: str, hidden: int, width: int, gated: bool) -> list[Gemm]:
    """A (gated) MLP of ``width`` on one GPU: gate+up then down (SwiGLU: 3 matrices; else 2)."""
    up = Gemm(f"{name}.gate_up" if gated else f"{name}.up", op, hidden, (2 if gated else 1) * width)
    return [up, Gemm(f"{name}.down", op, width, hidden)]


def attention_gemms(model: ModelSpec, tp: int) -> list[Gemm]:
    """Attention projections of one layer on one of ``tp`` GPUs."""
    h = model.hidden_size
    q_local = model.num_attention_heads // tp
    if model.mla is not None:
        mla = model.mla
        qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        gemms = []
        if mla.q_lora_rank is not None:
            # q_a is replicated on every TP rank, q_b is column-parallel (vLLM, SGLang).
            gemms.append(Gemm("q_a", "qkv", h, mla.q_lora_rank))
            gemms.append(Gemm("q_b", "qkv", mla.q_lora_rank, q_local * qk))
        else:
            gemms.append(Gemm("q", "qkv", h, q_local * qk))
        gemms.append(Gemm("kv_a", "qkv", h, mla.kv_lora_rank + mla.qk_rope_head_dim))
        # kv_b up-projects the latent to per-head keys and values. In absorbed decode its two
        # halves fold into the query and output projections: the same weights and FLOPs per token.
        gemms.append(
            Gemm("kv_b", "qkv", mla.kv_lora_rank, q_local * (mla.qk_nope_head_dim + mla.v_head_dim))
        )
        gemms.append(Gemm("o", "attn_out", q_local * mla.v_head_dim, h))
        return gemms
    d = model.head_size
    kv_local = kv_heads_per_gpu(model, tp)
    return [
        Gemm("qkv", "qkv", h, (q_local + 2 * kv_local) * d),
        Gemm("o", "attn_out", q_local * d, h),
    ]


def dense_mlp_gemms(model: ModelSpec, tp: int) -> list[Gemm]:
    """The dense MLP of one layer on one of ``tp`` GPUs."""
    return _mlp("mlp", "mlp", model.hidden_size, model.intermediate_size // tp,
                model.mlp == "gated")


def moe_fixed_gemms(model: ModelSpec, tp: int) -> list[Gemm]:
    """Router and shared experts of one MoE layer on one GPU (every token runs them)."""
    moe = model.moe
    assert moe is not None
    gemms = [Gemm("router", "moe", model.hidden_size, moe.num_experts)]
    if moe.num_shared_experts:
        width = moe.num_shared_experts * (
            moe.shared_expert_intermediate_size or moe.expert_intermediate_size
        )
        gemms += _mlp("shared_expert", "moe", model.hidden_size, max(1, width // tp),
                      model.mlp == "gated")
    return gemms


def expert_gemms(model: ModelSpec, par: Parallelism) -> list[Gemm]:
    """One routed expert's matrices on one GPU (the expert split ``tp / ep`` ways)."""
    moe = model.moe
    assert moe is not None
    tp_expert = par.tp * par.attn_dp // par.ep  # attn_dp > 1: experts span every rank
    return _mlp("expert", "moe", model.hidden_size,
                max(1, moe.expert_intermediate_size // tp_expert), model.mlp == "gated")


def experts_per_gpu(model: ModelSpec, par: Parallelism) -> int:
    """Routed experts held by one GPU: ``E / ep``."""
    assert model.moe is not None
    return model.moe.num_experts // par.ep


def kv_elements_per_token_layer(model: ModelSpec, tp: int) -> int:
    """KV-cache elements one GPU stores per token and layer.

    MHA/GQA/MQA: ``2 * kv_heads_per_gpu * head_dim`` (keys and values; KV heads are replicated
    when ``tp`` exceeds their number). MLA: ``kv_lora_rank + qk_rope_head_dim``, the compressed
    latent plus the decoupled RoPE key, replicated on every TP rank (DeepSeek-V2, eq. 9–10).
    """
    if model.mla is not None:
        return model.mla.kv_lora_rank + model.mla.qk_rope_head_dim
    return 2 * kv_heads_per_gpu(model, tp) * model.head_size


def attention_flops_per_pair(model: ModelSpec, tp: int, decode: bool) -> int:
    """FLOPs of the attention core for one (query token, key token) pair and layer on one GPU.

    Scores ``Q K^T`` and the weighted sum ``P V`` cost ``2 * d_qk + 2 * d_v`` per head
    (FlashAttention, Dao et al. 2022, counts ``4 * d`` for ``d_qk = d_v = d``). MLA prefill uses
    ``d_qk = nope + rope`` and ``d_v = v_head_dim``; MLA decode runs in the absorbed form over the
    latent, ``d_qk = kv_lora_rank + rope`` and ``d_v = kv_lora_rank`` (DeepSeek-V2, appendix C).
    """
    q_local = model.num_attention_heads // tp
    if model.mla is not None:
        mla = model.mla
        if decode:
            return 2 * q_local * (2 * mla.kv_lora_rank + mla.qk_rope_head_dim)
        return 2 * q_local * (mla.qk_nope_head_dim + mla.qk_rope_head_dim + mla.v_head_dim)
    return 4 * q_local * model.head_size


def layer_counts(model: ModelSpec, pp: int) -> list[tuple[int, int]]:
    """``(dense layers, MoE layers)`` of each pipeline stage.

    Layers are split as evenly as possible, the first ``L mod pp`` stages taking one more; leading
    dense layers of a MoE model (DeepSeek-V3's first three) sit in the first stages.
    """
    base, extra = divmod(model.num_layers, pp)
    dense_left = model.num_layers - model.num_moe_layers
    counts = []
    for stage in range(pp):
        n = base + (1 if stage < extra else 0)
        dense = min(n, dense_left)
        dense_left -= dense
        counts.append((dense, n - dense))
    return counts


def parameter_count(model: ModelSpec) -> int:
    """Total parameters of ``model`` (tp=1): every matrix, expert, embedding and norm.

    Biases count only for ``attention_bias`` models (QKV biases, as in Qwen2); other biases
    (GPT-J, Falcon) are under 0.1% of the total and left out.
    """
    h = model.hidden_size
    par = Parallelism()
    attention = sum(g.weights for g in attention_gemms(model, 1))
    if model.attention_bias:
        attention += (model.num_attention_heads + 2 * model.num_kv_heads) * model.head_size
    if model.mla is not None:
        attention += model.mla.kv_lora_rank + (model.mla.q_lora_rank or 0)  # latent norms
    norms = 2 * h
    dense_mlp = sum(g.weights for g in dense_mlp_gemms(model, 1))
    total = model.num_layers * (attention + norms)
    n_moe = model.num_moe_layers
    total += (model.num_layers - n_moe) * dense_mlp
    if model.moe is not None:
        per_expert = sum(g.weights for g in expert_gemms(model, par))
        fixed = sum(g.weights for g in moe_fixed_gemms(model, 1))
        total += n_moe * (model.moe.num_experts * per_expert + fixed)
    embeddings = model.vocab_size * h * (1 if model.tie_word_embeddings else 2)
    return total + embeddings + h


def active_parameter_count(model: ModelSpec) -> int:
    """Parameters one token uses: routed experts count ``top_k`` times, not ``num_experts``."""
    total = parameter_count(model)
    if model.moe is None:
        return total
    per_expert = sum(g.weights for g in expert_gemms(model, Parallelism()))
    return total - model.num_moe_layers * (model.moe.num_experts - model.moe.top_k) * per_expert


def expected_distinct_experts(
    num_experts: int, top_k: int, tokens: ArrayOrFloat
) -> ArrayOrFloat:
    """Expected number of distinct experts ``tokens`` tokens route to (uniform top-k routing).

    Each expert is missed by one token with probability ``1 - k/E``, so it is hit by at least one
    of ``T`` tokens with probability ``1 - (1 - k/E)^T`` (occupancy problem; Feller, vol. 1,
    ch. II). A batch of one Mixtral token touches 2 of 8 experts; a batch of 64, nearly all.
    """
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


def expert_load_imbalance(assignments: ArrayOrFloat, ep: int) -> ArrayOrFloat:
    """Load of the busiest of ``ep`` expert-parallel ranks relative to the mean.

    With ``A`` token-expert assignments spread uniformly, a rank's load is Binomial(A, 1/ep);
    the expected maximum of ``ep`` such loads is about ``mean + sigma * sqrt(2 ln ep)`` (Gumbel
    bound on the maximum of Gaussians), i.e. a factor ``1 + sqrt(2 ln(ep) (ep-1) / A)``. Loads come
    in whole assignments, so with ``A < ep`` the busiest rank holds at least one: a factor of at
    least ``ep / A``. Never more than ``ep`` (one rank takes everything).
    """
    if ep <= 1:
        return assignments * 0.0 + 1.0
    safe = np.maximum(assignments, 1e-9)
    gaussian = 1.0 + np.sqrt(2.0 * math.log(ep) * (ep - 1) / safe)
    return np.minimum(float(ep), np.maximum(gaussian, ep / np.maximum(safe, 1.0)))
