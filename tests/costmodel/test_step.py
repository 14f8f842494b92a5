import numpy as np
import pytest

from servingcast.costmodel import Batch, CostModel, Parallelism, decode_series
from servingcast.errors import ConfigError
from servingcast.specs import get_hardware, get_model, get_precision


def cm(model: str, hw: str = "h100-sxm", prec: str = "fp16", **par: int) -> CostModel:
    return CostModel(get_model(model), get_hardware(hw), get_precision(prec), Parallelism(**par))


def test_time_grows_with_work() -> None:
    m = cm("llama-3.1-8b")
    small = m.step(Batch.of(decode=[100] * 8)).latency_s
    more_seqs = m.step(Batch.of(decode=[100] * 64)).latency_s
    longer = m.step(Batch.of(decode=[4000] * 8)).latency_s
    assert small < more_seqs and small < longer


def test_decode_memory_bound_prefill_compute_bound() -> None:
    m = cm("llama-3.1-8b")
    decode = m.step(Batch.of(decode=[512])).by_bound
    prefill = m.step(Batch.of(prefill=[(8192, 0)])).by_bound
    assert decode["memory"] > 10 * decode["compute"]
    assert prefill["compute"] > 5 * prefill["memory"]


def test_tensor_parallel_speeds_up_and_communicates() -> None:
    one = cm("llama-3.1-70b", tp=1, prec="fp8").step(Batch.of(decode=[1000] * 16))
    four = cm("llama-3.1-70b", tp=4, prec="fp8").step(Batch.of(decode=[1000] * 16))
    assert four.latency_s < one.latency_s
    assert one.by_operator["tp_comm"] == 0.0 and four.by_operator["tp_comm"] > 0.0


def test_parallel_attention_has_one_allreduce_per_layer() -> None:
    gptj = cm("gpt-j-6b", tp=2).step(Batch.of(decode=[100]))
    llama = cm("llama-2-7b", tp=2).step(Batch.of(decode=[100]))
    # GPT-J has 28 layers x 1 all-reduce, Llama-2-7B 32 x 2, same hidden size.
    assert gptj.by_operator["tp_comm"] == pytest.approx(
        llama.by_operator["tp_comm"] * 28 / 64, rel=1e-9)


def test_pipeline_latency_and_interval() -> None:
    pp1 = cm("llama-3.1-70b", tp=4, prec="fp8").step(Batch.of(decode=[1000] * 32))
    pp2 = cm("llama-3.1-70b", tp=4, pp=2, prec="fp8").step(Batch.of(decode=[1000] * 32))
    assert pp2.by_operator["pp_comm"] > 0.0
    assert pp2.interval_s < 0.6 * pp2.latency_s  # two stages in flight
    assert pp2.latency_s == pytest.approx(pp1.latency_s, rel=0.1)


def test_moe_batch_one_reads_only_routed_experts() -> None:
    m = cm("mixtral-8x7b", hw="a100-sxm4-80gb", tp=2)
    one = m.step(Batch.of(decode=[10])).by_operator["moe"]
    many = m.step(Batch.of(decode=[10] * 64)).by_operator["moe"]
    # Batch 1 touches 2 of 8 experts; 64 tokens touch all of them: about 4x the weight
    # traffic (plus 64x the small compute).
    assert 3.5 < many / one < 5.0


def test_expert_parallel_uses_all_to_all() -> None:
    m = cm("qwen3-235b-a22b", hw="h200-sxm", prec="fp8", tp=8, ep=8)
    step = m.step(Batch.of(decode=[1000] * 64))
    assert step.by_operator["ep_comm"] > 0.0


def test_mla_decode_reads_the_latent() -> None:
    m = cm("deepseek-v3", hw="h200-sxm", prec="fp8", tp=8)
    attn = m.step(Batch.of(decode=[10_000] * 32)).by_operator["attention"]
    # 61 layers * 32 seqs * 10,001 tokens * 576 B / 4.8 TB/s / 0.8 ~ 2.9 ms
    assert 1.5e-3 < attn < 5e-3


def test_vectorised_equals_scalar() -> None:
    m = cm("llama-3.1-8b")
    series = decode_series(16, 500 + np.arange(10))
    lat, _ = m.iteration_s(series)
    for j in (0, 9):
        scalar = m.step(Batch.of(decode=[500 + j] * 16)).latency_s
        assert float(np.asarray(lat)[j]) == pytest.approx(scalar, rel=1e-12)


def test_sliding_window_caps_attention() -> None:
    m = cm("mistral-7b")
    near = m.step(Batch.of(decode=[4096])).by_operator["attention"]
    far = m.step(Batch.of(decode=[30_000])).by_operator["attention"]
    assert far == pytest.approx(near, rel=0.01)


@pytest.mark.parametrize(
    ("model", "par", "message"),
    [("llama-3.1-8b", {"tp": 3}, "tp=3 does not divide the 32 attention heads"),
     ("llama-3.1-8b", {"ep": 2, "tp": 2}, "ep=2 needs a mixture-of-experts model"),
     ("mixtral-8x7b", {"ep": 4, "tp": 2}, "ep=4 must divide tp=2"),
     ("llama-3.2-1b", {"pp": 17}, "pp=17 exceeds the 16 layers")],
)
def test_bad_parallelism(model: str, par: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cm(model, **par)


def test_missing_dtype_is_an_error() -> None:
    with pytest.raises(ConfigError, match="a100-sxm4-80gb has no fp8 tensor cores"):
        cm("llama-3.1-8b", hw="a100-sxm4-80gb", prec="fp8")
