"""Speculative decoding in steady-state iterations: the verification batch, the per-token cadence
(checked against the static-batch estimate), and MTP drafts."""

import numpy as np
import pytest

import servingcast as sc
from servingcast.costmodel import CostModel, Parallelism
from servingcast.costmodel.batch import Batch, decode_series
from servingcast.costmodel.memory import weights_bytes_per_stage
from servingcast.costmodel.spec import (
    SpeculativeCostModel,
    SpeculativeDecoding,
    draft_cost_model,
    expected_tokens_per_step,
    mtp_draft_spec,
    speculative_cadence_s,
    verify_stats,
)
from servingcast.costmodel.steady import decode_batch_stats, iteration_cadence_s
from servingcast.errors import ConfigError
from servingcast.specs import get_hardware, get_model, get_precision


def _target(model: str = "llama-3.1-8b", tp: int = 1, pp: int = 1, ep: int = 1,
            precision: str = "bf16", hardware: str = "h100-sxm") -> CostModel:
    return CostModel(get_model(model), get_hardware(hardware), get_precision(precision),
                     Parallelism(tp=tp, pp=pp, ep=ep))


def test_verify_stats_are_the_k_plus_1_token_decode_batch() -> None:
    # Eight decodes at context 700 verifying 5 tokens: the estimate's verification batch
    # (logits at every verified position).
    one = Batch.of(decode=[700] * 8).stats()
    want = decode_series(8, [700], query_tokens=5)
    got = verify_stats(one, 5)
    for name in ("decode_seqs", "decode_tokens", "decode_pairs", "decode_kv_tokens",
                 "logit_seqs"):
        expected = float(np.asarray(getattr(want, name))[0])
        assert float(getattr(got, name)) == pytest.approx(expected), name
    # Prefill beside the decodes scales with E (and so do its logits).
    mixed = Batch.of(prefill=[(512, 0)], decode=[700] * 8).stats()
    scaled = verify_stats(mixed, 5, 2.5)
    assert float(scaled.prefill_tokens) == pytest.approx(512 * 2.5)
    assert float(scaled.logit_seqs) == pytest.approx(8 * 5 + 2.5)


@pytest.mark.parametrize(("tp", "pp", "batch"), [(1, 1, 1), (1, 1, 32), (2, 2, 16)])
def test_cadence_is_the_estimates_tpot(tp: int, pp: int, batch: int) -> None:
    """A decode batch at the estimate's mean context: time per token within 0.5 % of
    ``servingcast.estimate`` with the same draft, k and acceptance rate."""
    target = _target(tp=tp, pp=pp)
    k, a = 4, 0.7
    spec = SpeculativeDecoding(draft_cost_model(target, "llama-3.2-1b"), k, a)
    seq_len, out = 512, 257
    e = expected_tokens_per_step(a, k)
    micro = min(pp, batch)
    # The estimate's steps run at contexts seq_len + j E, j < ceil((out - 1) / E): their mean.
    steps = int(np.ceil((out - 1) / e))
    context = seq_len + e * (steps - 1) / 2
    stats = decode_batch_stats([batch / micro], context)
    tpot_s = float(np.asarray(speculative_cadence_s(target, spec, stats, micro))[0])
    est = sc.estimate("llama-3.1-8b", "h100-sxm", seq_len=seq_len, output_len=out,
                      batch_size=batch, tp=tp, pp=pp, draft_model="llama-3.2-1b",
                      num_speculative_tokens=k, draft_acceptance_rate=a)
    assert tpot_s * 1e3 == pytest.approx(est.tpot_ms, rel=5e-3)


def test_speculative_cost_model_gives_the_cadence_through_iteration_cadence() -> None:
    target = _target(tp=2, pp=2)
    spec = SpeculativeDecoding(draft_cost_model(target, "llama-3.2-1b"), 2, 0.8)
    stats = decode_batch_stats(np.array([1.0, 8.0, 64.0]), 900.0)
    micro = np.array([1.0, 2.0, 2.0])
    via_model = iteration_cadence_s(SpeculativeCostModel(target, spec), stats, micro)
    np.testing.assert_allclose(via_model, speculative_cadence_s(target, spec, stats, micro))
    # Speculation pays at small batches on a memory-bound target (8B with a 1B draft: ~25 %).
    plain = np.asarray(iteration_cadence_s(target, stats, micro))
    assert float(np.asarray(via_model)[0]) < 0.85 * float(plain[0])


def test_cadence_by_hand() -> None:
    """pp = 1: (verify latency + k draft latencies) / E, each costed on its own."""
    target = _target()
    draft = draft_cost_model(target, "llama-3.2-1b")
    k, a, b, ctx = 3, 0.6, 4, 1000
    spec = SpeculativeDecoding(draft, k, a)
    verify = decode_series(b, [ctx], query_tokens=k + 1)
    drafts = sum(float(np.asarray(draft.iteration_s(decode_series(b, [ctx + j]))[0])[0])
                 for j in range(k))
    want = (float(np.asarray(target.iteration_s(verify)[0])[0]) + drafts) / (
        (1 - a ** (k + 1)) / (1 - a))
    got = speculative_cadence_s(target, spec, decode_batch_stats([b], ctx))
    assert float(np.asarray(got)[0]) == pytest.approx(want, rel=1e-9)


def test_mtp_draft_is_one_layer_of_the_target() -> None:
    ds = get_model("deepseek-v3")
    assert ds.mtp_layers == 1
    mtp = mtp_draft_spec(ds)
    assert mtp.num_layers == 1 and mtp.moe is not None and mtp.moe.first_dense_layers == 0
    assert mtp.hidden_size == ds.hidden_size and mtp.mla == ds.mla
    target = _target("deepseek-v3", tp=8, ep=8, precision="fp8", hardware="h200-sxm")
    draft = draft_cost_model(target, "mtp")
    assert (draft.parallel.tp, draft.parallel.ep, draft.parallel.pp) == (8, 8, 1)
    # One MoE layer (DeepSeek-V3: ~11.5B parameters) plus its embedding and head copies
    # (~1.85B), fp8, over 8 GPUs: 1.5-2 GB per GPU.
    assert 1.5e9 < weights_bytes_per_stage(draft)[0] < 2.0e9
    # A decode step of the MTP layer costs a small fraction of the 61-layer target's.
    stats = decode_batch_stats([16.0], 2000.0)
    ratio = float(np.asarray(draft.iteration_s(stats)[0])[0]) / float(
        np.asarray(target.iteration_s(stats)[0])[0])
    assert 0.01 < ratio < 0.15


def test_mtp_needs_mtp_layers() -> None:
    with pytest.raises(ConfigError, match="has no multi-token-prediction layers"):
        mtp_draft_spec(get_model("llama-3.1-8b"))
