"""How one instance is split over GPUs: tensor, pipeline, expert and data parallelism.

An *instance* (one serving engine) spans ``tp * pp`` GPUs: ``pp`` pipeline stages of ``tp``
GPUs each. Attention and dense MLPs are tensor-parallel over ``tp`` (Megatron-LM, Shoeybi et al.
2019). MoE experts are split ``ep`` ways by expert and ``tp / ep`` ways inside each expert, the
TensorRT-LLM layout (``moe_tp_size * moe_ep_size == tp_size``), so ``ep`` must divide ``tp``.
``dp`` counts independent replicas of the instance (separate engines behind a router).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

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

    @property
    def gpus_per_instance(self) -> int:
        """GPUs of one replica: ``tp * pp``."""
        return self.tp * self.pp

    @property
    def total_gpus(self) -> int:
        """GPUs of all replicas: ``tp * pp * dp``."""
        return self.tp * self.pp * self.dp

    def __str__(self) -> str:
        text = f"tp={self.tp} pp={self.pp}"
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
    if par.ep > 1:
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


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads held by each GPU: ``kv/tp``, or 1 (replicated) when ``tp > kv``."""
    return max(1, math.ceil(model.num_kv_heads / tp))
