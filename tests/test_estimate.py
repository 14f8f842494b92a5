import pytest

from servingcast._estimate import estimate
from servingcast.errors import ConfigError, InfeasibleError

BASE = {"model": "llama-3.1-70b", "hardware": "h100-sxm", "seq_len": 2048, "batch_size": 16,
        "precision": "fp8", "efficiency": None, "output_len": 256, "tp": 4}


def run(**over: object) -> object:
    return estimate(**(BASE | over))  # type: ignore[arg-type]


def test_headline_numbers_are_consistent() -> None:
    e = run()
    assert e.e2e_ms == pytest.approx(e.ttft_ms + 255 * e.tpot_ms)
    assert e.output_tokens_per_s == pytest.approx(16 * 256 / (e.e2e_ms / 1e3))
    assert e.output_tokens_per_s_per_gpu == pytest.approx(e.output_tokens_per_s / 4)
    assert e.feasible and e.num_gpus == 4 and e.batch_size == 16
    assert sum(e.decode.by_operator_ms.values()) == pytest.approx(e.tpot_ms, rel=1e-6)
    assert sum(e.prefill.by_operator_ms.values()) == pytest.approx(e.ttft_ms, rel=1e-6)


def test_default_efficiency_is_calibrated_like_the_cli() -> None:
    calibrated = estimate("llama-3.1-8b", "h100-sxm", seq_len=512, output_len=32)
    explicit = estimate("llama-3.1-8b", "h100-sxm", seq_len=512, output_len=32, efficiency=None)
    assert calibrated == explicit and not any("flat efficiency" in n for n in calibrated.notes)
    flat = estimate("llama-3.1-8b", "h100-sxm", seq_len=512, output_len=32, efficiency=0.5)
    assert flat.efficiency == {"compute": 0.5, "memory": 0.5, "network": 0.5}
    assert any("flat efficiency 0.5" in n for n in flat.notes)
    assert calibrated.tpot_ms < flat.tpot_ms


def test_everything_after_model_and_hardware_is_keyword_only() -> None:
    with pytest.raises(TypeError, match="positional"):
        estimate("llama-3.1-8b", "h100-sxm", 512)  # type: ignore[misc]


def test_bare_network_bandwidth_needs_a_unit() -> None:
    with pytest.raises(ConfigError, match=r"'400' has no unit.*'400 Gb/s'"):
        run(decode_hardware="h200-sxm", network_bandwidth="400")


def test_batch_max_uses_the_largest_fitting_batch() -> None:
    e = run(batch_size="max")
    assert e.batch_size == e.max_batch_size > 16
    with pytest.raises(InfeasibleError, match="room for"):
        run(batch_size=e.max_batch_size + 1)


def test_disaggregated_transfer() -> None:
    e = run(decode_hardware="h200-sxm", network_bandwidth="50 GB/s")
    # 16 requests * 2048 tokens * 80 layers * 8 KV heads * 128 * 2 * 1 B (fp8).
    kv_gb = 16 * 2048 * 80 * 8 * 128 * 2 / 1e9
    assert e.kv_transfer_gb == pytest.approx(kv_gb)
    assert e.kv_transfer_ms == pytest.approx(kv_gb / 50 * 1e3)
    assert e.e2e_ms == pytest.approx(e.ttft_ms + 255 * e.tpot_ms + e.kv_transfer_ms)
    assert e.num_gpus == 8 and e.decode_hardware == "h200-sxm"
    colocated = run()
    assert e.tpot_ms < colocated.tpot_ms  # H200 has more HBM bandwidth


def test_speculative_decoding() -> None:
    plain = estimate("llama-3.1-70b", "h100-sxm", seq_len=1024, batch_size=1, precision="fp8",
                     output_len=128, tp=4)
    good = estimate("llama-3.1-70b", "h100-sxm", seq_len=1024, batch_size=1, precision="fp8",
                    draft_model="llama-3.2-1b", draft_acceptance_rate=0.8, output_len=128, tp=4)
    bad = estimate("llama-3.1-70b", "h100-sxm", seq_len=1024, batch_size=1, precision="fp8",
                   draft_model="llama-3.2-1b", draft_acceptance_rate=0.0, output_len=128, tp=4)
    assert good.spec_tokens_per_step == pytest.approx((1 - 0.8**5) / 0.2)
    assert bad.spec_tokens_per_step == pytest.approx(1.0)
    assert good.tpot_ms < plain.tpot_ms < bad.tpot_ms
    perfect = estimate("llama-3.1-70b", "h100-sxm", seq_len=1024, batch_size=1, precision="fp8",
                       draft_model="llama-3.2-1b", draft_acceptance_rate=1.0, output_len=128,
                       tp=4)
    assert perfect.spec_tokens_per_step == 5.0


def test_cached_prefix_shortens_prefill_not_memory() -> None:
    cold = run()
    warm = run(cached_prefix_len=1536)
    assert warm.ttft_ms < 0.5 * cold.ttft_ms
    assert warm.kv_cache_used_gb_per_gpu == cold.kv_cache_used_gb_per_gpu
    assert warm.max_batch_size == cold.max_batch_size


def test_chunked_prefill_bounds_the_decode_stall() -> None:
    whole = run(batch_size=1, prefill_chunk_tokens=2048)
    chunked = run(batch_size=1, prefill_chunk_tokens=256)
    assert chunked.prefill_chunks == 8 and whole.prefill_chunks == 1
    assert chunked.max_chunk_stall_ms < 0.4 * whole.max_chunk_stall_ms
    assert chunked.ttft_ms >= whole.ttft_ms  # chunking costs a little extra prefill time
    assert run().max_chunk_stall_ms is None


def test_pipeline_bubble_reported() -> None:
    e = estimate("llama-3.1-70b", "h100-sxm", seq_len=512, batch_size=1, precision="fp8",
                 output_len=16, tp=2, pp=4)
    assert e.pipeline_bubble_fraction == 0.75
    assert any("pipeline bubble" in n for n in e.notes)


def test_moe_and_mla_models_estimate() -> None:
    ds = estimate("deepseek-v3", "h200-sxm", seq_len=4000, batch_size=32, precision="fp8",
                  output_len=500, tp=8)
    qwen = estimate("qwen3-235b-a22b", "h100-sxm", seq_len=2000, batch_size=32, precision="fp8",
                    output_len=200, tp=8, ep=8)
    assert ds.decode.by_operator_ms["moe"] > 0 and qwen.decode.by_operator_ms["ep_comm"] > 0


@pytest.mark.parametrize(
    ("over", "message"),
    [({"cached_prefix_len": 2048},
      r"cached_prefix_len \(--cached-prefix-len\) must be >= 0 and < seq_len"),
     ({"draft_acceptance_rate": 1.5},
      r"draft_acceptance_rate \(--draft-acceptance-rate\) must be in \[0, 1\]"),
     ({"batch_size": 0}, r"batch_size \(--batch-size\) must be a whole number > 0"),
     ({"seq_len": -3}, r"seq_len \(--input-len\) must be a whole number > 0"),
     ({"output_len": 0}, r"output_len \(--output-len\) must be a whole number > 0"),
     ({"batch_size": "lots"}, "batch_size \\(--batch-size\\) must be a whole number > 0 or 'max'"),
     ({"model": "llama-3.1-7b"}, "unknown model 'llama-3.1-7b'.*did you mean"),
     ({"efficiency": 1.5}, r"efficiency must be in \(0, 1\]")],
)
def test_bad_input(over: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run(**over)


def test_model_that_does_not_fit() -> None:
    with pytest.raises(InfeasibleError, match="does not fit"):
        estimate("llama-3.1-405b", "l4", seq_len=100, output_len=10)


def test_hf_config_as_model() -> None:
    from pathlib import Path

    folder = Path(__file__).parent / "data" / "hf_configs" / "llama-3.1-8b"
    via_file = estimate(str(folder), "h100-sxm", seq_len=1000, batch_size=8, output_len=100)
    via_catalog = estimate("llama-3.1-8b", "h100-sxm", seq_len=1000, batch_size=8, output_len=100)
    assert via_file.tpot_ms == pytest.approx(via_catalog.tpot_ms)
