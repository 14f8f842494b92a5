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


def test_moe_tile_padding_is_half_a_tile_per_touched_expert(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Mixtral fp16, h100: each touched expert adds `pad` rows of 6 h I FLOPs (gate, up, down).
    from servingcast.costmodel import step as step_mod

    hw = get_hardware("h100-sxm")
    m = CostModel(get_model("mixtral-8x7b"), hw, get_precision("fp16"), Parallelism())
    batch = Batch.of(prefill=[(4096, 0)])  # touches all 8 experts
    pad = step_mod.MOE_PAD_TOKENS_PER_EXPERT
    assert pad > 0.0
    with_pad = m.step(batch).by_operator["moe"]
    monkeypatch.setattr(step_mod, "MOE_PAD_TOKENS_PER_EXPERT", 0.0)
    without = m.step(batch).by_operator["moe"]
    rate = 989.4e12 * hw.efficiency.compute * step_mod.MOE_COMPUTE_EFFICIENCY
    extra_flops = 32 * 8 * pad * 6 * 4096 * 14336  # layers x experts x rows x FLOPs per row
    assert with_pad - without == pytest.approx(extra_flops / rate, rel=1e-6)


def test_moe_padding_weighs_on_few_tokens_per_expert() -> None:
    # Compute per routed token is 33x dearer at batch 1 (2 rows + 2 x 32 padding) than with
    # 4096 tokens (8192 rows + 8 x 32).
    m = CostModel(get_model("mixtral-8x7b"), get_hardware("h100-sxm"), get_precision("fp16"),
                  Parallelism())
    one = m.step(Batch.of(prefill=[(1, 0)])).by_bound
    assert one["memory"] > one["compute"] > 0.0
    big = m.step(Batch.of(prefill=[(4096, 0)]))
    assert big.by_bound["compute"] > big.by_bound["memory"]


def test_fp4_uses_its_own_compute_efficiency() -> None:
    from servingcast.specs.hardware import Efficiency

    hw = get_hardware("b200")
    model, prec = get_model("llama-3.1-70b"), get_precision("fp4")
    batch = Batch.of(prefill=[(8192, 0)])  # compute-bound
    base = Efficiency(compute=0.6, memory=0.8, network=0.5)
    plain = CostModel(model, hw, prec, Parallelism(), base)
    slower = CostModel(model, hw, prec, Parallelism(),
                       base.model_copy(update={"compute_fp4": 0.3}))
    ratio = slower.step(batch).by_operator["mlp"] / plain.step(batch).by_operator["mlp"]
    assert 1.8 < ratio < 2.0  # compute halves; the small memory term does not change
    # fp8 GEMMs ignore the fp4 factor.
    fp8 = get_precision("fp8")
    assert CostModel(model, hw, fp8, Parallelism(), base).step(batch).latency_s == (
        CostModel(model, hw, fp8, Parallelism(), base.model_copy(
            update={"compute_fp4": 0.3})).step(batch).latency_s)


def test_tp_comm_overlap_hides_part_of_the_allreduce() -> None:
    model, hw, prec = get_model("llama-3.1-70b"), get_hardware("h100-sxm"), get_precision("fp8")
    batch = Batch.of(prefill=[(4096, 0)])
    plain = CostModel(model, hw, prec, Parallelism(tp=8)).step(batch)
    half = CostModel(model, hw, prec, Parallelism(tp=8), tp_comm_overlap=0.5).step(batch)
    # Long prefill: the GEMMs outlast the all-reduce, so exactly half of it is hidden.
    assert half.by_operator["tp_comm"] == pytest.approx(0.5 * plain.by_operator["tp_comm"])
    assert plain.latency_s - half.latency_s == pytest.approx(
        0.5 * plain.by_operator["tp_comm"], rel=1e-9)
    # Decode of one token: the GEMMs are short, so no more than their time is hidden.
    one = Batch.of(decode=[100])
    d_plain = CostModel(model, hw, prec, Parallelism(tp=8)).step(one).by_operator
    d_half = CostModel(model, hw, prec, Parallelism(tp=8), tp_comm_overlap=0.9).step(
        one).by_operator
    gemms = sum(d_plain[k] for k in ("qkv", "attn_out", "mlp"))
    assert d_plain["tp_comm"] - d_half["tp_comm"] <= gemms * (1 + 1e-9)


def test_tp_comm_overlap_out_of_range_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"tp_comm_overlap .* must be in \[0, 1\), got 1.5"):
        CostModel(get_model("llama-3.1-8b"), get_hardware("h100-sxm"), get_precision("fp16"),
                  Parallelism(tp=2), tp_comm_overlap=1.5)
