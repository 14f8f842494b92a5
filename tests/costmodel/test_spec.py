"""The speculative-decoding and pipeline helpers shared by the estimate and the simulator."""

import numpy as np
import pytest

from servingcast.costmodel import CostModel, Parallelism
from servingcast.costmodel.memory import kv_bytes_per_token, weights_bytes_per_stage
from servingcast.costmodel.spec import (
    draft_memory_extras,
    draft_parallelism,
    expected_tokens_per_step,
    pipelined_step_s,
)
from servingcast.specs import get_hardware, get_model, get_precision


@pytest.mark.parametrize(("a", "k", "want"), [(0.0, 4, 1.0), (1.0, 4, 5.0), (0.5, 1, 1.5),
                                              (0.8, 4, (1 - 0.8**5) / 0.2)])
def test_expected_tokens_per_step(a: float, k: int, want: float) -> None:
    assert expected_tokens_per_step(a, k) == pytest.approx(want)


def test_draft_parallelism_shards_what_it_can() -> None:
    assert draft_parallelism(get_model("llama-3.2-1b"), 4).tp == 4      # 32 heads, 8 KV heads
    assert draft_parallelism(get_model("llama-3.2-1b"), 64).tp == 32    # 32 heads at most


def test_pipelined_step() -> None:
    assert pipelined_step_s(10.0, 10.0, 1, 1) == 10.0
    assert pipelined_step_s(10.0, 4.0, 2, 2) == 10.0        # latency-bound
    assert pipelined_step_s(10.0, 6.0, 2, 2) == 12.0        # the stages are the bottleneck
    assert pipelined_step_s(10.0, 6.0, 2, 2, 2.0) == 14.0   # draft spread over the stages
    np.testing.assert_allclose(pipelined_step_s(np.array([1.0, 5.0]), 2.0, 2, 2), [4.0, 5.0])


def test_draft_memory_extras() -> None:
    hw, prec = get_hardware("h100-sxm"), get_precision("bf16")
    draft = CostModel(get_model("llama-3.2-1b"), hw, prec, Parallelism(tp=2))
    weights, kv = draft_memory_extras(draft, pp=2)
    assert weights == pytest.approx(max(weights_bytes_per_stage(draft)) / 2)
    assert kv == pytest.approx(kv_bytes_per_token(draft) / 4)


def test_micro_batches_is_one_per_stage_at_most_and_at_least_one() -> None:
    from servingcast.costmodel.spec import micro_batches

    assert micro_batches(4, 2) == 2 and micro_batches(4, 9) == 4
    assert micro_batches(2, 0) == 1 and micro_batches(1, 50) == 1
    got = micro_batches(4, np.array([0.0, 0.5, 3.0, 10.0]))
    assert got.tolist() == [1.0, 1.0, 3.0, 4.0]
