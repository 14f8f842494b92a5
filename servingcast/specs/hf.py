"""Hugging Face ``config.json`` files converted to :class:`ModelSpec`, offline.

:func:`load_hf_config` reads a ``config.json`` (or the folder holding one) and maps the
``model_type``'s own key names onto the schema: Llama-style families (``llama``, ``mistral``,
``mixtral``, ``qwen2``, ``qwen2_moe``, ``qwen3``, ``qwen3_moe``, ``phi3``, ``gemma``, ``gemma2``,
``gemma3_text``), DeepSeek's MLA families (``deepseek_v2``, ``deepseek_v3``), GPT-J (``gptj``),
GPT-NeoX (``gpt_neox``) and Falcon (``falcon`` and the older ``RefinedWeb`` /
``RefinedWebModel`` names). A multimodal wrapper with a ``text_config`` is read through its text
model. Keys a family leaves out take the defaults of its ``transformers`` config class.

Things the schema cannot hold are resolved conservatively, so that memory is never
underestimated: a sliding window that covers only some layers (Gemma 2/3 alternate local and
global layers; Qwen's ``max_window_layers``) is dropped, and every layer keeps a full-length KV
cache. Rope scaling, norms and biases outside attention are ignored.

Every problem raises :class:`~servingcast.errors.ConfigError` naming the file, the key and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from servingcast._yaml import format_validation_error
from servingcast.errors import ConfigError
from servingcast.specs.model import MLASpec, ModelSpec, MoESpec

__all__ = ["SUPPORTED_MODEL_TYPES", "load_hf_config"]

_YAML_HINT = (
    "write a servingcast model YAML (see configs/models/llama-3.1-8b.yaml) and pass its path"
)
_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


class _Config:
    """Typed access to one config dictionary; every failure names the file and the key."""

    def __init__(self, data: dict[str, Any], source: Path, model_type: str) -> None:
        self.data = data
        self.source = source
        self.model_type = model_type

    def _missing(self, keys: tuple[str, ...]) -> ConfigError:
        names = " or ".join(repr(k) for k in keys)
        return ConfigError(
            f"{self.source}: required key {names} is missing (model_type {self.model_type!r}). "
            f"To fix: add it to the config.json, or {_YAML_HINT}"
        )

    def _bad(self, key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: key {key!r} must be {expected}, got {value!r}. To fix: correct it "
            f"in the config.json, or {_YAML_HINT}"
        )

    def _lookup(self, keys: tuple[str, ...]) -> tuple[str, Any] | None:
        for key in keys:
            if self.data.get(key) is not None:
                return key, self.data[key]
        return None

    def has(self, *keys: str) -> bool:
        """Whether any of ``keys`` is present with a non-null value."""
        return self._lookup(keys) is not None

    def int_(self, *keys: str, default: int | None = None) -> int:
        """The first non-null of ``keys`` as an integer, else ``default``, else an error."""
        found = self._lookup(keys)
        if found is None:
            if default is None:
                raise self._missing(keys)
            return default
        key, value = found
        # JSON writes some integers as floats (``2048.0``); accept those, reject booleans.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, value, "an integer")
        if isinstance(value, float) and not value.is_integer():
            raise self._bad(key, value, "an integer")
        return int(value)

    def opt_int(self, *keys: str) -> int | None:
        """The first non-null of ``keys`` as an integer, or ``None`` when all are absent."""
        return self.int_(*keys) if self.has(*keys) else None

    def bool_(self, key: str, default: bool) -> bool:
        """``key`` as a boolean (``default`` when absent or null)."""
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(key, value, "true or false")
        return value

    def int_list(self, key: str) -> list[int]:
        """``key`` as a list of integers (empty when absent or null)."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise self._bad(key, value, "a list of integers")
        return list(value)

    def unsupported(self, what: str) -> ConfigError:
        """An architecture feature the schema cannot represent."""
        return ConfigError(
            f"{self.source}: {what} (model_type {self.model_type!r}) cannot be represented. "
            f"To fix: {_YAML_HINT}, approximating the architecture"
        )


# ----------------------------------------------------------------------------------------------
# Shared pieces


def _window(value: int | None) -> int | None:
    """A sliding window, with ``0`` (written by some exporters) read as none."""
    return value if value else None


def _llama_like(
    cfg: _Config,
    *,
    tie_default: bool,
    bias_default: bool = False,
    sliding_window: int | None = None,
) -> dict[str, Any]:
    """Fields shared by the Llama family: RMSNorm, gated (SwiGLU/GeGLU) MLP, optional GQA."""
    heads = cfg.int_("num_attention_heads")
    hidden = cfg.int_("hidden_size")
    return {
        "num_layers": cfg.int_("num_hidden_layers"),
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": cfg.int_("num_key_value_heads", default=heads),
        "head_dim": cfg.int_("head_dim", default=hidden // heads),
        "intermediate_size": cfg.int_("intermediate_size"),
        "mlp": "gated",
        "vocab_size": cfg.int_("vocab_size"),
        "tie_word_embeddings": cfg.bool_("tie_word_embeddings", tie_default),
        "max_position_embeddings": cfg.int_("max_position_embeddings"),
        "attention_bias": cfg.bool_("attention_bias", bias_default),
        "sliding_window": sliding_window,
    }


def _qwen_window(cfg: _Config) -> int | None:
    """Qwen's window: used only with ``use_sliding_window``, and then only from layer
    ``max_window_layers`` on; a window on only some layers is dropped (see the module notes)."""
    if not cfg.bool_("use_sliding_window", False):
        return None
    layers = cfg.int_("num_hidden_layers")
    if cfg.int_("max_window_layers", default=layers) > 0:
        return None
    return _window(cfg.opt_int("sliding_window"))


def _leading_dense_layers(cfg: _Config) -> int:
    """Qwen-MoE layers with a dense MLP: must be the first ``k`` layers to fit the schema."""
    dense = sorted(set(cfg.int_list("mlp_only_layers")))
    if cfg.int_("decoder_sparse_step", default=1) != 1:
        raise cfg.unsupported("decoder_sparse_step other than 1 (MoE on every n-th layer)")
    if dense != list(range(len(dense))):
        raise cfg.unsupported(f"dense MLP layers {dense} that are not the leading layers")
    return len(dense)


# ----------------------------------------------------------------------------------------------
# Families


def _llama(cfg: _Config) -> dict[str, Any]:
    return _llama_like(cfg, tie_default=False)


def _mistral(cfg: _Config) -> dict[str, Any]:
    return _llama_like(
        cfg, tie_default=False, sliding_window=_window(cfg.opt_int("sliding_window"))
    )


def _mixtral(cfg: _Config) -> dict[str, Any]:
    fields = _mistral(cfg)
    fields["moe"] = MoESpec(
        num_experts=cfg.int_("num_local_experts"),
        top_k=cfg.int_("num_experts_per_tok"),
        expert_intermediate_size=fields["intermediate_size"],
    )
    return fields


def _qwen2(cfg: _Config) -> dict[str, Any]:
    # Qwen2 has biases on the q/k/v projections and no attention_bias key.
    return _llama_like(cfg, tie_default=False, bias_default=True, sliding_window=_qwen_window(cfg))


def _qwen3(cfg: _Config) -> dict[str, Any]:
    return _llama_like(cfg, tie_default=False, sliding_window=_qwen_window(cfg))


def _qwen_moe(cfg: _Config, *, shared: bool) -> dict[str, Any]:
    fields = _qwen2(cfg) if shared else _qwen3(cfg)
    expert = cfg.int_("moe_intermediate_size")
    dense = _leading_dense_layers(cfg)
    shared_size = cfg.opt_int("shared_expert_intermediate_size") if shared else None
    fields["moe"] = MoESpec(
        num_experts=cfg.int_("num_experts"),
        top_k=cfg.int_("num_experts_per_tok"),
        expert_intermediate_size=expert,
        num_shared_experts=1 if shared_size else 0,
        shared_expert_intermediate_size=shared_size,
        first_dense_layers=dense,
    )
    if dense == 0:
        # No layer uses the dense width: record the expert width instead.
        fields["intermediate_size"] = expert
    return fields


def _phi3(cfg: _Config) -> dict[str, Any]:
    return _llama_like(
        cfg, tie_default=False, sliding_window=_window(cfg.opt_int("sliding_window"))
    )


def _gemma(cfg: _Config) -> dict[str, Any]:
    # Gemma 2/3 alternate sliding-window and global layers: the window is dropped.
    return _llama_like(cfg, tie_default=True)


def _deepseek(cfg: _Config) -> dict[str, Any]:
    heads = cfg.int_("num_attention_heads")
    layers = cfg.int_("num_hidden_layers")
    fields: dict[str, Any] = {
        "num_layers": layers,
        "hidden_size": cfg.int_("hidden_size"),
        "num_attention_heads": heads,
        "num_kv_heads": cfg.int_("num_key_value_heads", default=heads),
        "head_dim": None,
        "intermediate_size": cfg.int_("intermediate_size"),
        "mlp": "gated",
        "vocab_size": cfg.int_("vocab_size"),
        "tie_word_embeddings": cfg.bool_("tie_word_embeddings", False),
        "max_position_embeddings": cfg.int_("max_position_embeddings"),
        "attention_bias": cfg.bool_("attention_bias", False),
        "mla": MLASpec(
            kv_lora_rank=cfg.int_("kv_lora_rank"),
            q_lora_rank=cfg.opt_int("q_lora_rank"),
            qk_nope_head_dim=cfg.int_("qk_nope_head_dim"),
            qk_rope_head_dim=cfg.int_("qk_rope_head_dim"),
            v_head_dim=cfg.int_("v_head_dim"),
        ),
    }
    if cfg.has("n_routed_experts"):
        if cfg.int_("moe_layer_freq", default=1) != 1:
            raise cfg.unsupported("moe_layer_freq other than 1 (MoE on every n-th layer)")
        fields["moe"] = MoESpec(
            num_experts=cfg.int_("n_routed_experts"),
            top_k=cfg.int_("num_experts_per_tok"),
            expert_intermediate_size=cfg.int_("moe_intermediate_size"),
            num_shared_experts=cfg.int_("n_shared_experts", default=0),
            first_dense_layers=cfg.int_("first_k_dense_replace", default=0),
        )
    # DeepSeek-V3's multi-token-prediction module (not part of the served model; the draft of
    # speculative decoding with draft_model: mtp).
    fields["mtp_layers"] = cfg.int_("num_nextn_predict_layers", default=0)
    return fields


def _gptj(cfg: _Config) -> dict[str, Any]:
    hidden = cfg.int_("n_embd", "hidden_size")
    heads = cfg.int_("n_head", "num_attention_heads")
    return {
        "num_layers": cfg.int_("n_layer", "num_hidden_layers"),
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": heads,
        "head_dim": hidden // heads,
        "intermediate_size": cfg.int_("n_inner", default=4 * hidden),
        "mlp": "standard",
        "vocab_size": cfg.int_("vocab_size"),
        "tie_word_embeddings": cfg.bool_("tie_word_embeddings", False),
        "max_position_embeddings": cfg.int_("n_positions", "max_position_embeddings"),
        "attention_bias": False,
        "parallel_attention_mlp": True,
    }


def _gpt_neox(cfg: _Config) -> dict[str, Any]:
    hidden = cfg.int_("hidden_size")
    heads = cfg.int_("num_attention_heads")
    return {
        "num_layers": cfg.int_("num_hidden_layers"),
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": heads,
        "head_dim": hidden // heads,
        "intermediate_size": cfg.int_("intermediate_size"),
        "mlp": "standard",
        "vocab_size": cfg.int_("vocab_size"),
        "tie_word_embeddings": cfg.bool_("tie_word_embeddings", False),
        "max_position_embeddings": cfg.int_("max_position_embeddings"),
        "attention_bias": cfg.bool_("attention_bias", True),
        "parallel_attention_mlp": cfg.bool_("use_parallel_residual", True),
    }


def _falcon(cfg: _Config) -> dict[str, Any]:
    """Falcon, including the pre-``transformers`` names: ``RefinedWebModel`` (7B: multi-query)
    and ``RefinedWeb`` (40B/180B: the new decoder architecture with KV groups)."""
    hidden = cfg.int_("hidden_size")
    heads = cfg.int_("num_attention_heads", "n_head")
    new_arch = cfg.bool_("new_decoder_architecture", cfg.model_type == "RefinedWeb")
    if new_arch:
        kv_heads = cfg.int_("num_kv_heads", "n_head_kv", default=heads)
    elif cfg.bool_("multi_query", True):
        kv_heads = 1
    else:
        kv_heads = heads
    if cfg.bool_("alibi", False):
        raise cfg.unsupported("ALiBi position encoding")
    return {
        "num_layers": cfg.int_("num_hidden_layers", "n_layer"),
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": cfg.int_("head_dim", default=hidden // heads),
        "intermediate_size": cfg.int_("ffn_hidden_size", default=4 * hidden),
        "mlp": "standard",
        "vocab_size": cfg.int_("vocab_size"),
        "tie_word_embeddings": cfg.bool_("tie_word_embeddings", True),
        "max_position_embeddings": cfg.int_("max_position_embeddings", default=2048),
        "attention_bias": cfg.bool_("bias", False),
        "parallel_attention_mlp": new_arch or cfg.bool_("parallel_attn", True),
    }


_FAMILIES: dict[str, Callable[[_Config], dict[str, Any]]] = {
    "llama": _llama,
    "mistral": _mistral,
    "mixtral": _mixtral,
    "qwen2": _qwen2,
    "qwen2_moe": lambda cfg: _qwen_moe(cfg, shared=True),
    "qwen3": _qwen3,
    "qwen3_moe": lambda cfg: _qwen_moe(cfg, shared=False),
    "phi3": _phi3,
    "gemma": _gemma,
    "gemma2": _gemma,
    "gemma3_text": _gemma,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "gptj": _gptj,
    "gpt_neox": _gpt_neox,
    "falcon": _falcon,
    "RefinedWeb": _falcon,
    "RefinedWebModel": _falcon,
}

#: The ``model_type`` values :func:`load_hf_config` understands.
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_FAMILIES))


# ----------------------------------------------------------------------------------------------
# Reading the file


def _config_file(path: Path) -> Path:
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such file. To fix: pass a Hugging Face config.json or the folder "
            f"that holds one, or {_YAML_HINT}"
        )
    return path


def _read_json(path: Path) -> dict[str, Any]:
    from servingcast._text import read_text

    text = read_text(path, "config.json")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}). To fix: download the config.json again or repair it"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return data


def _text_config(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The language model's settings: a multimodal wrapper's ``text_config``, else ``data``."""
    text = data.get("text_config")
    if text is None:
        return data
    if not isinstance(text, dict):
        raise ConfigError(f"{path}: key 'text_config' must be a JSON object, got {text!r}")
    merged = dict(text)
    # Wrappers (Llava, Mistral3, ...) keep some settings at the top level only.
    for key in ("tie_word_embeddings", "_name_or_path"):
        if key not in merged and key in data:
            merged[key] = data[key]
    return merged


def _sanitise(raw: str) -> str:
    name = re.sub(r"[^a-z0-9.\-]+", "-", raw.strip().lower())
    return name.strip("-.")


def _derive_name(path: Path, data: dict[str, Any], model_type: str) -> str:
    """Catalog-style name: the model's folder, else ``_name_or_path``, else ``model_type``."""
    folder = path.parent
    candidates = [folder.name]
    if _COMMIT_HASH.match(folder.name) and folder.parent.name == "snapshots":
        # Hugging Face cache: models--org--name/snapshots/<commit>/config.json
        candidates.insert(0, folder.parent.parent.name.split("--")[-1])
    name_or_path = data.get("_name_or_path")
    if isinstance(name_or_path, str):
        candidates.append(name_or_path.rstrip("/").split("/")[-1])
    candidates.append(model_type)
    for candidate in candidates:
        name = _sanitise(candidate)
        if _NAME_PATTERN.match(name):
            return name
    return "hf-model"


def _hf_id(data: dict[str, Any]) -> str | None:
    value = data.get("_name_or_path")
    if isinstance(value, str) and re.fullmatch(r"[\w.\-]+/[\w.\-]+", value):
        return value
    return None


def load_hf_config(path: Path) -> ModelSpec:
    """Read a Hugging Face ``config.json`` (or the folder holding one) as a :class:`ModelSpec`.

    No network access. Raises :class:`ConfigError` for a missing file, invalid JSON, an
    unsupported ``model_type``, a missing required key, or values the schema rejects.
    """
    file = _config_file(Path(path))
    top = _read_json(file)
    data = _text_config(top, file)
    model_type = data.get("model_type", top.get("model_type"))
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(
            f"{file}: required key 'model_type' is missing (supported: {supported}). "
            f"To fix: add it to the config.json, or {_YAML_HINT}"
        )
    family = _FAMILIES.get(model_type)
    if family is None:
        raise ConfigError(
            f"{file}: model_type {model_type!r} is not supported (supported: {supported}). "
            f"To fix: {_YAML_HINT}"
        )
    cfg = _Config(data, file, model_type)
    try:
        fields = family(cfg)
        name = _derive_name(file, data, model_type)
        return ModelSpec(
            name=name,
            display_name=str(data.get("_name_or_path") or name),
            hf_id=_hf_id(data),
            notes=f"from {file} (model_type {model_type})",
            **fields,
        )
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, str(file))
            + f"\nTo fix: correct the config.json, or {_YAML_HINT}"
        ) from None
