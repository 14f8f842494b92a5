import pytest

from servingcast.costmodel import allreduce_s, alltoall_s, kv_transfer_s, p2p_s


def test_allreduce_ring_bandwidth_and_tree_latency() -> None:
    # 8 GPUs, 1 MB at 100 GB/s, 5 us per hop: 2*7/8*1e6/1e11 + 2*3*5e-6.
    assert allreduce_s(1e6, 8, 1e11, 5e-6) == pytest.approx(1.75e-5 + 3e-5)
    assert allreduce_s(1e6, 1, 1e11, 5e-6) == 0.0


def test_alltoall_and_p2p() -> None:
    assert alltoall_s(8e6, 4, 1e11, 2e-6) == pytest.approx(0.75 * 8e6 / 1e11 + 3 * 2e-6)
    assert p2p_s(1e6, 1e11, 1e-6) == pytest.approx(1.1e-5)
    assert kv_transfer_s(1e9, 1e11) == pytest.approx(0.01)
