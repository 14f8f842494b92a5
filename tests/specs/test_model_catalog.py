"""The model catalog, ``configs/models/*.yaml``: every entry loads and is well formed."""

from __future__ import annotations

import re

import pytest

from servingcast.specs.catalog import config_dir, get_model, model_catalog, normalize

EXPECTED = {
    "llama-2-7b",
    "llama-2-13b",
    "llama-2-70b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "llama-3.2-1b",
    "mistral-7b",
    "mixtral-8x7b",
    "mixtral-8x22b",
    "gpt-j-6b",
    "falcon-7b",
    "falcon-180b",
    "qwen3-8b",
    "qwen3-32b",
    "qwen3-235b-a22b",
    "deepseek-v3",
}

PARAMETERS = re.compile(r"^(\d+(?:\.\d+)?)B parameters\b")


def test_every_yaml_loads_with_its_file_stem_as_name() -> None:
    catalog = model_catalog()
    stems = {path.stem for path in (config_dir() / "models").glob("*.yaml")}
    assert set(catalog) == stems
    assert stems >= EXPECTED


def test_aliases_are_unique_and_never_another_name() -> None:
    seen: dict[str, str] = {name: name for name in model_catalog()}
    for spec in model_catalog().values():
        for alias in spec.aliases:
            key = normalize(alias)
            assert key == alias, f"{spec.name}: alias {alias!r} is not in normal form"
            assert key not in seen, f"{spec.name}: alias {alias!r} also names {seen[key]}"
            seen[key] = spec.name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_entry_is_documented(name: str) -> None:
    spec = model_catalog()[name]
    assert spec.hf_id is not None
    assert normalize(spec.hf_id.split("/")[-1]) in {spec.name, *spec.aliases}
    assert PARAMETERS.match(spec.notes), spec.notes
    header = (config_dir() / "models" / f"{name}.yaml").read_text().splitlines()[0]
    assert header == f"# https://huggingface.co/{spec.hf_id}/blob/main/config.json"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_alias_resolves(name: str) -> None:
    spec = model_catalog()[name]
    for alias in spec.aliases:
        assert get_model(alias) is spec
        assert get_model(alias.upper().replace("-", "_")) is spec


def test_head_dim_is_explicit_except_for_mla() -> None:
    for spec in model_catalog().values():
        assert (spec.head_dim is None) == (spec.mla is not None), spec.name


def test_moe_dense_width_convention() -> None:
    for spec in model_catalog().values():
        if spec.moe is not None and spec.moe.first_dense_layers == 0:
            assert spec.intermediate_size == spec.moe.expert_intermediate_size, spec.name
