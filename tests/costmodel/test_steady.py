"""The steady-state helpers agree with explicit batches and with the pipelined cadence."""

import numpy as np
import pytest

from servingcast.costmodel import Batch, CostModel, Parallelism
from servingcast.costmodel.spec import pipelined_step_s
from servingcast.costmodel.steady import (
    add_stats,
    chunked_prefill_sums,
    decode_batch_stats,
    iteration_cadence_s,
    prefill_chunk_series,
    scale_stats,
)
from servingcast.specs import get_hardware, get_model, get_precision


def _chunks(length: int, chunk: int) -> list[tuple[int, int]]:
    return [(min(chunk, length - start), start) for start in range(0, length, chunk)]


@pytest.mark.parametrize("window", [None, 700])
@pytest.mark.parametrize(("length", "chunk"), [(1000, 256), (1000, 1000), (1000, 4096),
                                               (3001, 512), (17, 4)])
def test_chunked_prefill_sums_match_batches(length: int, chunk: int, window: int | None) -> None:
    pairs, kv, n = chunked_prefill_sums(length, chunk, window)
    want = [Batch.of(prefill=[piece]).stats(window) for piece in _chunks(length, chunk)]
    assert float(n) == len(want)
    assert float(pairs) == pytest.approx(sum(s.prefill_pairs for s in want))
    assert float(kv) == pytest.approx(sum(s.prefill_kv_tokens for s in want))


def test_chunked_prefill_pairs_do_not_depend_on_chunking() -> None:
    pairs, _, _ = chunked_prefill_sums(np.array([4000.0, 4000.0]), np.array([256.0, 8192.0]))
    assert pairs[0] == pairs[1] == 4000 * 4001 / 2


def test_prefill_chunk_series_lists_every_chunk() -> None:
    stats, owner = prefill_chunk_series([1000, 300], 256)
    assert list(owner) == [0, 0, 0, 0, 1, 1]
    assert list(stats.prefill_tokens) == [256, 256, 256, 232, 256, 44]
    assert list(stats.logit_seqs) == [0, 0, 0, 1, 0, 1]
    one = Batch.of(prefill=[(232, 768)]).stats()
    assert stats.prefill_pairs[3] == one.prefill_pairs


def test_decode_batch_stats_match_batches() -> None:
    stats = decode_batch_stats([1, 7, 64], 1500)
    for i, b in enumerate((1, 7, 64)):
        want = Batch.of(decode=[1500] * b).stats()
        assert stats.decode_pairs[i] == want.decode_pairs
        assert stats.decode_kv_tokens[i] == want.decode_kv_tokens
        assert stats.logit_seqs[i] == want.logit_seqs


def test_add_and_scale_stats() -> None:
    a = Batch.of(prefill=[(100, 0)]).stats()
    b = Batch.of(decode=[50, 60]).stats()
    both = Batch.of(prefill=[(100, 0)], decode=[50, 60]).stats()
    total = add_stats(a, b)
    assert total == both
    assert scale_stats(a, 2.0).prefill_tokens == 200


def test_cadence_is_latency_without_pipeline_and_pipelined_with_one() -> None:
    model, hw, prec = get_model("llama-3.1-8b"), get_hardware("h100-sxm"), get_precision("bf16")
    stats = decode_batch_stats([8.0, 64.0], 2000)
    flat = CostModel(model, hw, prec, Parallelism(tp=1))
    lat, _ = flat.iteration_s(stats)
    assert np.allclose(iteration_cadence_s(flat, stats), lat)
    piped = CostModel(model, hw, prec, Parallelism(tp=1, pp=4))
    lat, interval = piped.iteration_s(stats)
    got = iteration_cadence_s(piped, stats, np.array([4.0, 4.0]))
    assert np.allclose(got, pipelined_step_s(lat, interval, 4.0, 4))
    assert np.all(got >= lat)
