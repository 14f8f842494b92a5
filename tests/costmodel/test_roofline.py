"""The operator time: partial overlap of compute and memory, and its split into bounds."""

import numpy as np
import pytest

from servingcast.costmodel.roofline import op_time_s, split_bounds


def test_no_overlap_is_the_sum() -> None:
    t, tc, tm = op_time_s(2e12, 1e9, 1e15, 1e12)  # 2 ms of compute, 1 ms of memory
    assert (tc, tm) == pytest.approx((2e-3, 1e-3))
    assert t == pytest.approx(3e-3, rel=1e-12)


@pytest.mark.parametrize(("beta", "want_s"), [(0.0, 2e-3), (0.25, 2.25e-3), (1.0, 3e-3)])
def test_partial_overlap_is_max_plus_exposed_minimum(beta: float, want_s: float) -> None:
    t, _, _ = op_time_s(2e12, 1e9, 1e15, 1e12, beta)
    assert t == pytest.approx(want_s, rel=1e-12)


def test_overlap_matters_only_near_the_ridge() -> None:
    # Batch-1-like GEMV: compute is 1% of memory; the overlap moves the time by under 1%.
    far, _, _ = op_time_s(1e10, 1e9, 1e15, 1e12, 0.0)
    far_sum, _, _ = op_time_s(1e10, 1e9, 1e15, 1e12, 1.0)
    assert far_sum / far == pytest.approx(1.01, rel=1e-9)
    # At the ridge (equal terms) no overlap doubles the time.
    ridge, _, _ = op_time_s(1e12, 1e9, 1e15, 1e12, 0.0)
    ridge_sum, _, _ = op_time_s(1e12, 1e9, 1e15, 1e12, 1.0)
    assert ridge_sum / ridge == pytest.approx(2.0, rel=1e-9)


def test_elementwise_on_arrays() -> None:
    flops = np.array([1e9, 1e12, 1e13])
    t, tc, tm = op_time_s(flops, 1e9, 1e15, 1e12, 0.5)
    want = np.maximum(tc, tm) + 0.5 * np.minimum(tc, tm)
    np.testing.assert_allclose(t, want, rtol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
def test_bounds_add_up_and_the_larger_term_is_the_bound(beta: float) -> None:
    for flops in (1e10, 1e12, 5e12):
        t, tc, tm = op_time_s(flops, 1e9, 1e15, 1e12, beta)
        compute, memory = split_bounds(t, tc, tm)
        assert compute + memory == pytest.approx(t, rel=1e-12)
        bound = compute if tc >= tm else memory
        assert bound == pytest.approx(max(tc, tm), rel=1e-12)
