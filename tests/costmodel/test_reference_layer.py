"""Hand-computed numbers for one Llama-2-7B layer on an A100 pin the cost model.

h = 4096, I = 11008, 32 heads of 128 (MHA), fp16 (2 bytes). Peak 312 TFLOP/s and 2039 GB/s at
efficiency 0.5: P = 156e12 FLOP/s, BW = 1019.5e9 B/s. Time of an operator = F/P + B/BW
(GEMM_NON_OVERLAP = 1: no overlap). The layer is 32 of the 32 layers, so per-layer figures are
totals / 32.
"""

import pytest

from servingcast.costmodel import Batch, CostModel

P = 156e12
BW = 1019.5e9
LAYERS = 32


def test_decode_batch1_layer(llama7b_a100: CostModel) -> None:
    # One token at context 1023 (attends to 1024 keys).
    # qkv:      F = 2*4096*12288 = 100,663,296    B = 100,663,296 + (4096+12288)*2 = 100,696,064
    # o:        F = 2*4096*4096  =  33,554,432    B =  33,554,432 + 8192*2          =  33,570,816
    # gate_up:  F = 2*4096*22016 = 180,355,072    B = 180,355,072 + 26112*2         = 180,407,296
    # down:     F = 2*11008*4096 =  90,177,536    B =  90,177,536 + 15104*2         =  90,207,744
    # attention F = 4*32*128*1024 = 16,777,216    B = 1024*8192*2 + 8192*2          =  16,793,600
    flops = 100_663_296 + 33_554_432 + 180_355_072 + 90_177_536 + 16_777_216
    moved = 100_696_064 + 33_570_816 + 180_407_296 + 90_207_744 + 16_793_600
    expected_layer_s = flops / P + moved / BW  # 4.1631e-4 s
    step = llama7b_a100.step(Batch.of(decode=[1023]))
    ops = step.by_operator
    layer_s = (ops["qkv"] + ops["attn_out"] + ops["mlp"] + ops["attention"]) / LAYERS
    assert layer_s == pytest.approx(expected_layer_s, rel=1e-9)
    assert expected_layer_s == pytest.approx(4.1631e-4, rel=1e-4)
    # Decode at batch 1 is memory-bound: under 1% of the time is compute.
    assert step.by_bound["compute"] < 0.01 * step.by_bound["memory"]


def test_prefill_2048_layer(llama7b_a100: CostModel) -> None:
    # qkv over 2048 tokens: F = 100,663,296 * 2048, B = 100,663,296 + 2048 * 32,768.
    qkv_s = 100_663_296 * 2048 / P + (100_663_296 + 2048 * 32_768) / BW  # 1.4861e-3 s
    # attention: pairs = 2048*2049/2 = 2,098,176; F = 16,384 * pairs;
    # B = KV written 2048*8192*2 + Q and O 2048*8192*2 = 67,108,864.
    attn_s = 16_384 * 2_098_176 / P + 67_108_864 / BW  # 2.8619e-4 s
    ops = llama7b_a100.step(Batch.of(prefill=[(2048, 0)])).by_operator
    assert ops["qkv"] / LAYERS == pytest.approx(qkv_s, rel=1e-9)
    assert ops["attention"] / LAYERS == pytest.approx(attn_s, rel=1e-9)
    assert qkv_s == pytest.approx(1.4861e-3, rel=1e-4)


def test_breakdowns_add_up(llama7b_a100: CostModel) -> None:
    step = llama7b_a100.step(Batch.of(prefill=[(512, 100)], decode=[10, 2000, 300]))
    assert sum(step.by_operator.values()) == pytest.approx(step.latency_s)
    assert sum(step.by_bound.values()) == pytest.approx(step.latency_s)
