"""The model schema: the architecture facts the cost model needs, nothing else.

Catalog entries live in ``configs/models/*.yaml``; Hugging Face ``config.json`` files are
converted by :mod:`servingcast.specs.hf`. Attention variants: MHA (``num_kv_heads ==
num_attention_heads``), GQA (fewer KV heads), MQA (one KV head) and MLA (``mla`` set: the
compressed latent KV of DeepSeek-V2/V3). MLPs are ``gated`` (SwiGLU: gate, up, down) or
``standard`` (up, down); MoE layers carry routed experts, top-k and shared experts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class MoESpec(BaseModel):
    """Mixture-of-experts layers (Mixtral, Qwen3-MoE, DeepSeek-V3)."""

    model_config = _FROZEN

    num_experts: int = Field(ge=2)
    top_k: int = Field(ge=1)
    expert_intermediate_size: int = Field(ge=1)
    num_shared_experts: int = Field(0, ge=0)
    shared_expert_intermediate_size: int | None = Field(
        None, ge=1, description="per shared expert; defaults to expert_intermediate_size"
    )
    first_dense_layers: int = Field(
        0, ge=0, description="leading layers with a dense MLP of intermediate_size (DeepSeek-V3: 3)"
    )

    @model_validator(mode="after")
    def _top_k_le_experts(self) -> MoESpec:
        if self.top_k > self.num_experts:
            raise ValueError(
                f"top_k ({self.top_k}) must be <= num_experts ({self.num_experts})"
            )
        return self


class MLASpec(BaseModel):
    """Multi-head latent attention (DeepSeek-V2/V3): the KV cache holds one compressed latent.

    Per token and layer the cache stores ``kv_lora_rank + qk_rope_head_dim`` values, shared by all
    heads (DeepSeek-V2 paper, arXiv:2405.04434, section 2.1).
    """

    model_config = _FROZEN

    kv_lora_rank: int = Field(ge=1)
    q_lora_rank: int | None = Field(None, ge=1, description="None: full-rank query projection")
    qk_nope_head_dim: int = Field(ge=1)
    qk_rope_head_dim: int = Field(ge=0)
    v_head_dim: int = Field(ge=1)


class ModelSpec(BaseModel):
    """A decoder-only transformer."""

    model_config = _FROZEN

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    display_name: str
    aliases: tuple[str, ...] = ()
    hf_id: str | None = None
    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_kv_heads: int = Field(ge=1)
    head_dim: int | None = Field(None, ge=1, description="defaults to hidden_size / heads")
    intermediate_size: int = Field(ge=1, description="dense MLP width")
    mlp: Literal["gated", "standard"]
    vocab_size: int = Field(ge=1)
    tie_word_embeddings: bool
    max_position_embeddings: int = Field(ge=1)
    attention_bias: bool = False
    parallel_attention_mlp: bool = Field(
        False, description="attention and MLP read the same input (GPT-J, Falcon): one all-reduce"
    )
    sliding_window: int | None = Field(None, ge=1)
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    mtp_layers: int = Field(
        0, ge=0, description="multi-token-prediction modules shipped with the weights "
        "(DeepSeek-V3's num_nextn_predict_layers): speculative decoding with draft_model: mtp")
    notes: str = ""

    @model_validator(mode="after")
    def _heads_consistent(self) -> ModelSpec:
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.moe is not None and self.moe.first_dense_layers > self.num_layers:
            raise ValueError("moe.first_dense_layers exceeds num_layers")
        return self

    @property
    def attention_kind(self) -> str:
        """``MLA``, ``MHA``, ``MQA`` or ``GQA``."""
        if self.mla is not None:
            return "MLA"
        if self.num_kv_heads == self.num_attention_heads:
            return "MHA"
        if self.num_kv_heads == 1:
            return "MQA"
        return "GQA"

    @property
    def head_size(self) -> int:
        """Per-head dimension of query/key/value (non-MLA)."""
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def num_moe_layers(self) -> int:
        """Layers whose MLP is a mixture of experts."""
        if self.moe is None:
            return 0
        return self.num_layers - self.moe.first_dense_layers
