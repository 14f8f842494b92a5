"""Hugging Face ``config.json`` loading: real files against the catalog, variants and errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from servingcast.errors import ConfigError
from servingcast.specs.catalog import get_model
from servingcast.specs.hf import SUPPORTED_MODEL_TYPES, load_hf_config
from servingcast.specs.model import ModelSpec

DATA = Path(__file__).resolve().parents[1] / "data" / "hf_configs"

#: Fields that describe the entry rather than the architecture.
META = {"name", "display_name", "aliases", "hf_id", "notes"}

#: Test-data folder -> catalog entry with the same architecture.
REAL_CONFIGS = {
    "llama-3.1-8b": "llama-3.1-8b",
    "mistral-7b-v0.1": "mistral-7b",
    "mixtral-8x7b": "mixtral-8x7b",
    "qwen3-32b": "qwen3-32b",
    "qwen3-235b-a22b": "qwen3-235b-a22b",
    "deepseek-v3": "deepseek-v3",
    "gpt-j-6b": "gpt-j-6b",
    "falcon-7b": "falcon-7b",
}


def architecture(spec: ModelSpec) -> dict[str, Any]:
    """Every field except the descriptive ones."""
    return spec.model_dump(exclude=META)


def real(folder: str) -> dict[str, Any]:
    """The parsed test-data config of ``folder``."""
    data: dict[str, Any] = json.loads((DATA / folder / "config.json").read_text())
    return data


def write(tmp_path: Path, config: dict[str, Any], folder: str = "model") -> Path:
    """``config`` saved as ``tmp_path/folder/config.json``; returns the folder."""
    target = tmp_path / folder
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return target


# ----------------------------------------------------------------------------------------------
# Real config.json files


@pytest.mark.parametrize(("folder", "catalog_name"), sorted(REAL_CONFIGS.items()))
def test_real_config_matches_catalog(folder: str, catalog_name: str) -> None:
    loaded = load_hf_config(DATA / folder)
    assert architecture(loaded) == architecture(get_model(catalog_name))


@pytest.mark.parametrize("folder", sorted(REAL_CONFIGS))
def test_name_comes_from_the_folder(folder: str) -> None:
    spec = load_hf_config(DATA / folder / "config.json")
    assert spec.name == folder
    assert spec.hf_id is None  # no _name_or_path in the published files
    assert "config.json" in spec.notes


def test_get_model_reads_a_config_folder_or_file() -> None:
    by_folder = get_model(str(DATA / "llama-3.1-8b"))
    by_file = get_model(str(DATA / "llama-3.1-8b" / "config.json"))
    assert by_folder == by_file
    assert architecture(by_folder) == architecture(get_model("llama-3.1-8b"))


def test_deepseek_v3_is_mla_moe() -> None:
    spec = load_hf_config(DATA / "deepseek-v3")
    assert spec.attention_kind == "MLA"
    assert spec.moe is not None and spec.mla is not None
    assert spec.num_moe_layers == 58
    assert spec.intermediate_size == 18432  # the dense width of the first three layers
    assert spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim == 576


def test_falcon_7b_old_naming_is_multi_query_and_parallel() -> None:
    spec = load_hf_config(DATA / "falcon-7b")
    assert spec.attention_kind == "MQA"
    assert spec.parallel_attention_mlp
    assert spec.tie_word_embeddings
    assert spec.max_position_embeddings == 2048  # not in the file: FalconConfig's default


def test_gpt_j_defaults() -> None:
    spec = load_hf_config(DATA / "gpt-j-6b")
    assert spec.intermediate_size == 4 * 4096  # n_inner is null
    assert spec.head_size == 256
    assert spec.mlp == "standard" and spec.parallel_attention_mlp


def test_qwen3_moe_without_dense_layers_uses_the_expert_width() -> None:
    spec = load_hf_config(DATA / "qwen3-235b-a22b")
    assert spec.moe is not None
    assert spec.intermediate_size == spec.moe.expert_intermediate_size == 1536
    assert spec.num_moe_layers == 94


def test_sliding_window() -> None:
    assert load_hf_config(DATA / "mistral-7b-v0.1").sliding_window == 4096
    assert load_hf_config(DATA / "mixtral-8x7b").sliding_window is None  # null
    assert load_hf_config(DATA / "qwen3-32b").sliding_window is None  # use_sliding_window false


# ----------------------------------------------------------------------------------------------
# Variants built from the real files


def test_missing_num_key_value_heads_means_mha(tmp_path: Path) -> None:
    config = real("llama-3.1-8b")
    del config["num_key_value_heads"]
    spec = load_hf_config(write(tmp_path, config))
    assert spec.num_kv_heads == 32 and spec.attention_kind == "MHA"


def test_tie_word_embeddings_defaults_per_family(tmp_path: Path) -> None:
    llama = real("llama-3.1-8b")
    del llama["tie_word_embeddings"]
    assert load_hf_config(write(tmp_path, llama, "llama")).tie_word_embeddings is False
    gemma = {**llama, "model_type": "gemma", "head_dim": 256}
    assert load_hf_config(write(tmp_path, gemma, "gemma")).tie_word_embeddings is True


def test_multimodal_wrapper_reads_text_config(tmp_path: Path) -> None:
    wrapper = {
        "model_type": "llava",
        "architectures": ["LlavaForConditionalGeneration"],
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024},
        "text_config": real("llama-3.1-8b"),
    }
    spec = load_hf_config(write(tmp_path, wrapper, "llava-llama"))
    assert spec.name == "llava-llama"
    assert architecture(spec) == architecture(get_model("llama-3.1-8b"))


def test_wrapper_tie_word_embeddings_falls_back_to_top_level(tmp_path: Path) -> None:
    text = real("llama-3.1-8b")
    del text["tie_word_embeddings"]
    wrapper = {"model_type": "llava", "tie_word_embeddings": True, "text_config": text}
    assert load_hf_config(write(tmp_path, wrapper)).tie_word_embeddings is True


def test_falcon_new_decoder_architecture(tmp_path: Path) -> None:
    falcon_40b = {
        "model_type": "falcon",
        "hidden_size": 8192,
        "num_attention_heads": 128,
        "num_hidden_layers": 60,
        "num_kv_heads": 8,
        "new_decoder_architecture": True,
        "multi_query": True,
        "parallel_attn": True,
        "bias": False,
        "vocab_size": 65024,
    }
    spec = load_hf_config(write(tmp_path, falcon_40b, "falcon-40b"))
    assert (spec.num_kv_heads, spec.attention_kind) == (8, "GQA")
    assert spec.intermediate_size == 4 * 8192 and spec.parallel_attention_mlp


def test_falcon_refinedweb_naming(tmp_path: Path) -> None:
    refinedweb = {
        "model_type": "RefinedWeb",
        "hidden_size": 8192,
        "n_head": 128,
        "n_head_kv": 8,
        "n_layer": 60,
        "parallel_attn": True,
        "bias": False,
        "vocab_size": 65024,
    }
    spec = load_hf_config(write(tmp_path, refinedweb))
    assert (spec.num_layers, spec.num_attention_heads, spec.num_kv_heads) == (60, 128, 8)


def test_falcon_without_multi_query_is_mha(tmp_path: Path) -> None:
    config = {**real("falcon-7b"), "model_type": "falcon", "multi_query": False}
    config["num_attention_heads"] = config.pop("n_head")
    config["num_hidden_layers"] = config.pop("n_layer")
    assert load_hf_config(write(tmp_path, config)).attention_kind == "MHA"


def test_qwen2_moe_shared_expert(tmp_path: Path) -> None:
    config = {
        "model_type": "qwen2_moe",
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "moe_intermediate_size": 1408,
        "shared_expert_intermediate_size": 5632,
        "num_experts": 60,
        "num_experts_per_tok": 4,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "vocab_size": 151936,
        "max_position_embeddings": 8192,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "use_sliding_window": False,
        "sliding_window": 32768,
    }
    spec = load_hf_config(write(tmp_path, config))
    assert spec.moe is not None
    assert (spec.moe.num_shared_experts, spec.moe.shared_expert_intermediate_size) == (1, 5632)
    assert spec.attention_bias  # Qwen2 q/k/v biases
    assert spec.sliding_window is None


def test_qwen_moe_leading_dense_layers(tmp_path: Path) -> None:
    config = {**real("qwen3-235b-a22b"), "mlp_only_layers": [0, 1]}
    spec = load_hf_config(write(tmp_path, config))
    assert spec.moe is not None and spec.moe.first_dense_layers == 2
    assert spec.intermediate_size == 12288


def test_qwen_moe_scattered_dense_layers_are_rejected(tmp_path: Path) -> None:
    config = {**real("qwen3-235b-a22b"), "mlp_only_layers": [5]}
    with pytest.raises(ConfigError, match=r"dense MLP layers \[5\].*To fix"):
        load_hf_config(write(tmp_path, config))


def test_deepseek_v2_lite_full_rank_query(tmp_path: Path) -> None:
    config = {
        **real("deepseek-v3"),
        "model_type": "deepseek_v2",
        "q_lora_rank": None,
        "first_k_dense_replace": 1,
    }
    spec = load_hf_config(write(tmp_path, config))
    assert spec.mla is not None and spec.mla.q_lora_rank is None
    assert spec.moe is not None and spec.moe.first_dense_layers == 1


def test_name_and_hf_id_from_name_or_path(tmp_path: Path) -> None:
    config = {**real("llama-3.1-8b"), "_name_or_path": "meta-llama/Llama-3.1-8B"}
    spec = load_hf_config(write(tmp_path, config, "Some Folder_Name"))
    assert spec.name == "some-folder-name"
    assert spec.hf_id == "meta-llama/Llama-3.1-8B"
    assert spec.display_name == "meta-llama/Llama-3.1-8B"


def test_name_in_the_hugging_face_cache_layout(tmp_path: Path) -> None:
    folder = Path("models--meta-llama--Llama-3.1-8B") / "snapshots" / ("0123abcd" * 5)
    spec = load_hf_config(write(tmp_path, real("llama-3.1-8b"), str(folder)))
    assert spec.name == "llama-3.1-8b"


def test_supported_model_types_listed() -> None:
    for model_type in ("llama", "mixtral", "qwen3_moe", "deepseek_v3", "gptj", "falcon"):
        assert model_type in SUPPORTED_MODEL_TYPES


# ----------------------------------------------------------------------------------------------
# Errors


def test_unknown_model_type(tmp_path: Path) -> None:
    folder = write(tmp_path, {**real("llama-3.1-8b"), "model_type": "foo"})
    with pytest.raises(ConfigError) as info:
        load_hf_config(folder)
    message = str(info.value)
    assert str(folder / "config.json") in message
    assert "model_type 'foo' is not supported (supported: " in message
    assert "llama" in message and "deepseek_v3" in message
    assert (
        "To fix: write a servingcast model YAML (see configs/models/llama-3.1-8b.yaml)" in message
    )


def test_missing_model_type(tmp_path: Path) -> None:
    config = real("llama-3.1-8b")
    del config["model_type"]
    with pytest.raises(ConfigError, match="required key 'model_type' is missing"):
        load_hf_config(write(tmp_path, config))


def test_missing_required_key(tmp_path: Path) -> None:
    config = real("llama-3.1-8b")
    del config["hidden_size"]
    folder = write(tmp_path, config)
    with pytest.raises(ConfigError) as info:
        load_hf_config(folder)
    message = str(info.value)
    assert str(folder / "config.json") in message
    assert "required key 'hidden_size' is missing (model_type 'llama')" in message
    assert "To fix: add it to the config.json" in message


def test_missing_gptj_key_names_both_spellings(tmp_path: Path) -> None:
    config = real("gpt-j-6b")
    del config["n_embd"]
    with pytest.raises(ConfigError, match="required key 'n_embd' or 'hidden_size' is missing"):
        load_hf_config(write(tmp_path, config))


def test_wrong_type(tmp_path: Path) -> None:
    config = {**real("llama-3.1-8b"), "num_hidden_layers": "thirty-two"}
    with pytest.raises(ConfigError, match="key 'num_hidden_layers' must be an integer"):
        load_hf_config(write(tmp_path, config))


def test_invalid_json(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama",\n  "hidden_size": }')
    with pytest.raises(ConfigError) as info:
        load_hf_config(folder)
    message = str(info.value)
    assert f"{folder / 'config.json'}:2: not valid JSON" in message
    assert "line 2" in message and "To fix" in message


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_hf_config(tmp_path / "config.json")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.json: no such file\. To fix"):
        load_hf_config(tmp_path / "nope.json")


def test_folder_without_config_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_hf_config(tmp_path)
    assert f"{tmp_path / 'config.json'}: no such file" in str(info.value)


def test_schema_violation_is_a_config_error(tmp_path: Path) -> None:
    config = {**real("llama-3.1-8b"), "num_key_value_heads": 5}
    with pytest.raises(ConfigError) as info:
        load_hf_config(write(tmp_path, config))
    message = str(info.value)
    assert "must be a multiple of num_kv_heads (5)" in message
    assert "config.json" in message and "To fix" in message


def test_schema_violation_in_moe_is_a_config_error(tmp_path: Path) -> None:
    config = {**real("mixtral-8x7b"), "num_experts_per_tok": 9}
    with pytest.raises(ConfigError, match=r"top_k \(9\) must be <= num_experts \(8\)"):
        load_hf_config(write(tmp_path, config))
