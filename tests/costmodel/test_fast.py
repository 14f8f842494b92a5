"""The fast evaluator equals CostModel.iteration_s (it is derived from it by probing)."""

import numpy as np
import pytest

from servingcast.costmodel import Batch, CostModel, Parallelism
from servingcast.costmodel.batch import BatchStats
from servingcast.costmodel.fast import FastCost
from servingcast.specs import get_hardware, get_model, get_precision

CASES = [
    ("llama-3.1-8b", "h100-sxm", "fp16", {}),
    ("llama-3.1-70b", "h100-sxm", "fp8", {"tp": 4, "pp": 2}),
    ("mixtral-8x7b", "h100-sxm", "fp16", {"tp": 2}),
    ("mixtral-8x7b", "a100-sxm4-80gb", "fp16", {"tp": 4, "ep": 2, "pp": 2}),
    ("deepseek-v3", "h200-sxm", "fp8", {"tp": 8, "ep": 8, "pp": 3}),
    ("mistral-7b", "l40s", "fp16", {}),
    ("gpt-j-6b", "a100-sxm4-80gb", "fp16", {"tp": 2, "pp": 3}),
]


def random_batch(rng: np.random.Generator, window: int | None) -> BatchStats:
    prefill = [(int(rng.integers(1, 3000)), int(rng.integers(0, 6000)))
               for _ in range(int(rng.integers(0, 3)))]
    decode = rng.integers(1, 9000, size=int(rng.integers(0, 200))).tolist()
    q = int(rng.choice([1, 1, 5]))
    stats = Batch.of(prefill=prefill, decode=decode, decode_query_tokens=q).stats(window)
    if stats.new_tokens == 0:
        stats = Batch.of(decode=[7]).stats(window)
    return stats


@pytest.mark.parametrize(("model", "hw", "prec", "par"), CASES)
def test_fast_equals_cost_model(model: str, hw: str, prec: str, par: dict[str, int]) -> None:
    cm = CostModel(get_model(model), get_hardware(hw), get_precision(prec), Parallelism(**par))
    fast = FastCost(cm, max_tokens=512)
    rng = np.random.default_rng(7)
    for _ in range(60):
        stats = random_batch(rng, cm.model.sliding_window)
        if rng.random() < 0.3:  # fractional stats, as micro-batches of a pipeline have
            stats = BatchStats(**{k: v / 3.0 for k, v in vars(stats).items()})
        want_lat, want_int = cm.iteration_s(stats)
        lat, interval = fast.iteration_s(stats)
        assert lat == pytest.approx(float(want_lat), rel=1e-9, abs=0)
        assert interval == pytest.approx(float(want_int), rel=1e-9, abs=0)


def test_fast_parts_give_the_interval_per_stage() -> None:
    cm = CostModel(get_model("llama-3.1-70b"), get_hardware("h100-sxm"), get_precision("fp8"),
                   Parallelism(tp=4, pp=4))
    fast = FastCost(cm)
    stats = Batch.of(prefill=[(512, 0)], decode=[1000] * 32).stats()
    latency, parts = fast.parts(*(float(getattr(stats, f)) for f in (
        "prefill_tokens", "prefill_pairs", "prefill_kv_tokens", "decode_seqs", "decode_tokens",
        "decode_pairs", "decode_kv_tokens", "logit_seqs")))
    assert len(parts) == 4
    assert max(parts) == pytest.approx(float(cm.iteration_s(stats)[1]), rel=1e-9)
    assert latency > max(parts)


@pytest.mark.parametrize(("model", "hw", "prec", "par"), [CASES[1], CASES[2], CASES[4]])
def test_fast_exact_with_partial_overlap(model: str, hw: str, prec: str,
                                         par: dict[str, int]) -> None:
    # GEMMs with partial compute/memory overlap and a TP all-reduce partly hidden behind them
    # are nonlinear in the token and logit counts; the tabulated parts stay exact.
    cm = CostModel(get_model(model), get_hardware(hw), get_precision(prec), Parallelism(**par),
                   tp_comm_overlap=0.6, gemm_non_overlap=0.3)
    fast = FastCost(cm, max_tokens=256)
    rng = np.random.default_rng(11)
    for _ in range(40):
        stats = random_batch(rng, cm.model.sliding_window)
        want_lat, want_int = cm.iteration_s(stats)
        lat, interval = fast.iteration_s(stats)
        assert lat == pytest.approx(float(want_lat), rel=1e-9, abs=0)
        assert interval == pytest.approx(float(want_int), rel=1e-9, abs=0)
