"""How one instance is split over GPUs: tensor, pipeline, expert and data parallelism.

An *instance* (one serving engine) spans ``tp * pp`` GPUs: ``pp`` pipeline stages of ``tp``
GPUs each. Attention and dense MLPs are tensor-parallel over ``tp`` (Megatron-LM, Shoeybi et al.
2019). MoE experts are split ``ep`` ways by expert and ``tp / ep`` ways inside each expert, the
TensorRT-LLM layout (``moe_tp_size * moe_ep_size == tp_size``), so ``ep`` must divide ``tp``.
``dp`` counts independent replicas of the instance (separate engines behind a router).

``attn_dp > 1`` is attention data-parallelism with expert parallelism ("DEP", DeepSeek-V3
technical report 2024, sec. 3.4; SGLang's DP attention; vLLM's ``--data-parallel-size`` with
``--enable-expert-parallel``): one engine of ``attn_dp`` attention ranks of ``tp`` GPUs each.
Every rank holds the attention (and dense MLP, shared expert, embedding) weights, tensor-parallel
over its ``tp`` GPUs, and its own requests and KV cache; the routed experts are expert-parallel
over all ``attn_dp * tp`` GPUs (``ep = attn_dp * tp``, filled in when left at 1). The cost of
such a step is in :mod:`servingcast.costmodel.dep`.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from servingcast.errors import ConfigError
from servingcast.specs.hardware import HardwareSpec
from servingcast.specs.model import ModelSpec


class Parallelism(BaseModel):
    """Parallel degrees of one instance (and its number of replicas)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    ep: int = Field(1, ge=1)
    dp: int = Field(1, ge=1)
    attn_dp: int = Field(1, ge=1)
    """Attention data-parallel ranks of one engine (1: off; see the module docstring)."""

    @model_validator(mode="before")
    @classmethod
    def _dep_expert_parallel(cls, data: Any) -> Any:
        """With ``attn_dp > 1`` and ``ep`` left at 1, experts span every GPU of the engine."""
        if isinstance(data, dict) and int(data.get("attn_dp", 1) or 1) > 1 and int(
                data.get("ep", 1) or 1) == 1:
            return {**data, "ep": int(data["attn_dp"]) * int(data.get("tp", 1) or 1)}
        return data

    @property
    def gpus_per_instance(self) -> int:
        """GPUs of one replica: ``attn_dp * tp * pp``."""
        return self.attn_dp * self.tp * self.pp

    @property
    def total_gpus(self) -> int:
        """GPUs of all replicas: ``attn_dp * tp * pp * dp``."""
        return self.gpus_per_instance * self.dp

    def __str__(self) -> str:
        text = f"tp={self.tp} pp={self.pp}"
        if self.attn_dp > 1:
            text = f"attn_dp={self.attn_dp} " + text
        if self.ep > 1:
            text += f" ep={self.ep}"
        if self.dp > 1:
            text += f" dp={self.dp}"
        return text


def check_parallelism(model: ModelSpec, hardware: HardwareSpec, par: Parallelism) -> None:
    """Raise :class:`ConfigError` when ``par`` cannot shard ``model``; say which rule broke."""
    heads, kv_heads = model.num_attention_heads, model.num_kv_heads
    if heads % par.tp:
        divisors = [d for d in range(1, heads + 1) if heads % d == 0 and d <= 64]
        raise ConfigError(
            f"tp={par.tp} does not divide the {heads} attention heads of {model.name}. "
            f"To fix: use tp in {divisors}"
        )
    if model.mla is None and kv_heads % par.tp and par.tp % kv_heads:
        raise ConfigError(
            f"tp={par.tp} neither divides nor is a multiple of the {kv_heads} KV heads of "
            f"{model.name}. To fix: use a tp that divides {kv_heads} or a multiple of it"
        )
    if par.pp > model.num_layers:
        raise ConfigError(
            f"pp={par.pp} exceeds the {model.num_layers} layers of {model.name}. "
            f"To fix: use pp <= {model.num_layers}"
        )
    if par.attn_dp > 1:
        _check_dep(model, hardware, par)
    elif par.ep > 1:
        if model.moe is None:
            raise ConfigError(
                f"ep={par.ep} needs a mixture-of-experts model; {model.name} is dense. "
                "To fix: use ep=1"
            )
        if par.tp % par.ep:
            raise ConfigError(
                f"ep={par.ep} must divide tp={par.tp} (experts are split ep ways and each "
                "expert tp/ep ways). To fix: raise tp or lower ep"
            )
        if model.moe.num_experts % par.ep:
            raise ConfigError(
                f"ep={par.ep} does not divide the {model.moe.num_experts} experts of "
                f"{model.name}. To fix: use an ep that divides {model.moe.num_experts}"
            )
    if par.tp > hardware.gpus_per_node and par.tp % hardware.gpus_per_node:
        raise ConfigError(
            f"tp={par.tp} spans nodes of {hardware.gpus_per_node} {hardware.name} GPUs unevenly. "
            f"To fix: use tp <= {hardware.gpus_per_node} or a multiple of it"
        )


def _check_dep(model: ModelSpec, hardware: HardwareSpec, par: Parallelism) -> None:
    """The rules of attention data-parallelism + expert parallelism (module docstring)."""
    if model.moe is None:
        raise ConfigError(
            f"attn_dp={par.attn_dp} (attention data-parallel + expert-parallel) needs a "
            f"mixture-of-experts model; {model.name} is dense. To fix: use attn_dp=1 and "
            "replicate the engine instead")
    if par.pp > 1:
        raise ConfigError(
            f"attn_dp={par.attn_dp} with pp={par.pp}: attention data-parallelism is modelled "
            "without pipeline stages (SGLang's DP attention has none). To fix: use pp=1")
    world = par.attn_dp * par.tp
    if par.ep != world:
        raise ConfigError(
            f"attn_dp={par.attn_dp} spreads the experts over all attn_dp*tp={world} GPUs, so "
            f"ep must be {world}, got ep={par.ep}. To fix: set ep={world} or leave ep at 1")
    if model.moe.num_experts % world:
        raise ConfigError(
            f"ep={world} (attn_dp={par.attn_dp} x tp={par.tp}) does not divide the "
            f"{model.moe.num_experts} experts of {model.name}. To fix: use attn_dp*tp among "
            f"{[d for d in range(2, model.moe.num_experts + 1) if model.moe.num_experts % d == 0]}")
    if world > hardware.gpus_per_node and world % hardware.gpus_per_node:
        raise ConfigError(
            f"attn_dp*tp={world} GPUs span nodes of {hardware.gpus_per_node} {hardware.name} "
            f"GPUs unevenly. To fix: use attn_dp*tp <= {hardware.gpus_per_node} or a multiple "
            "of it")


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads held by each GPU: ``kv/tp``, or 1 (replicated) when ``tp > kv``."""
    return max(1, math.ceil(model.num_kv_heads / tp))
