import re

import pytest

from servingcast.costmodel import layers
from servingcast.costmodel.layers import (
    active_parameter_count,
    expected_distinct_experts,
    expert_load_imbalance,
    kv_elements_per_token_layer,
    parameter_count,
)
from servingcast.specs import get_model, model_catalog


@pytest.mark.parametrize("name", sorted(model_catalog()))
def test_parameter_count_matches_published(name: str) -> None:
    """Counted from the architecture, within 1% of the figure the model card publishes."""
    model = get_model(name)
    published = float(re.search(r"([0-9.]+)B parameters", model.notes).group(1)) * 1e9  # type: ignore[union-attr]
    assert parameter_count(model) == pytest.approx(published, rel=0.01)


def test_active_parameters_of_moe() -> None:
    assert active_parameter_count(get_model("mixtral-8x7b")) == pytest.approx(12.9e9, rel=0.01)
    assert active_parameter_count(get_model("deepseek-v3")) == pytest.approx(37.5e9, rel=0.02)
    assert active_parameter_count(get_model("qwen3-235b-a22b")) == pytest.approx(22.2e9, rel=0.02)


def test_kv_elements_gqa_mqa_mla() -> None:
    llama70 = get_model("llama-3.1-70b")  # 8 KV heads of 128
    assert kv_elements_per_token_layer(llama70, 1) == 2 * 8 * 128
    assert kv_elements_per_token_layer(llama70, 4) == 2 * 2 * 128
    # tp beyond the KV heads replicates them: one head per GPU.
    assert kv_elements_per_token_layer(llama70, 16) == 2 * 1 * 128
    # MLA: latent 512 + rope 64, the same on every TP rank.
    ds = get_model("deepseek-v3")
    assert kv_elements_per_token_layer(ds, 1) == kv_elements_per_token_layer(ds, 8) == 576
    # MHA: all 32 heads.
    assert kv_elements_per_token_layer(get_model("llama-2-7b"), 1) == 2 * 32 * 128


def test_tied_embeddings_counted_once() -> None:
    m = get_model("llama-3.2-1b")
    untied = m.model_copy(update={"tie_word_embeddings": False})
    assert parameter_count(untied) - parameter_count(m) == m.vocab_size * m.hidden_size


def test_expected_distinct_experts() -> None:
    assert expected_distinct_experts(8, 2, 1.0) == pytest.approx(2.0)
    assert expected_distinct_experts(8, 2, 64.0) == pytest.approx(8.0, rel=1e-6)
    assert 2.0 < expected_distinct_experts(256, 8, 4.0) < 32.0


def test_expert_load_imbalance() -> None:
    assert expert_load_imbalance(1000.0, 1) == 1.0
    assert expert_load_imbalance(1.0, 8) == 8.0  # one assignment: one rank does everything
    assert 1.0 < expert_load_imbalance(10_000.0, 8) < 1.1


def test_deepseek_stage_split() -> None:
    counts = layers.layer_counts(get_model("deepseek-v3"), 4)
    assert sum(d + m for d, m in counts) == 61
    assert counts[0] == (3, 13)  # the 3 dense layers sit in the first stage
