"""KV-transfer links per instance group: a transfer runs at the slower end's bandwidth, and each
link is busy for the bytes at its own bandwidth (``InstanceGroup.network_bandwidth``)."""

from __future__ import annotations

import numpy as np

from tests.sim.conftest import batch_requests, group, make_scenario, run


def _finishes(decode_bandwidth: str | None) -> np.ndarray:
    decode = group("d", role="decode", max_num_seqs=64, max_num_batched_tokens=64)
    if decode_bandwidth is not None:
        decode["network_bandwidth"] = decode_bandwidth
    scenario = make_scenario(
        [group("p", role="prefill", count=4, max_num_batched_tokens=8192), decode],
        network={"bandwidth": "5 GB/s"})
    # Four prompts at once, one per prefill instance: four transfers into one decode instance.
    result = run(scenario, batch_requests(4, 4000, 4))
    return np.sort(result.requests.finish_s)


def test_a_fast_decode_link_takes_several_slow_streams_at_once() -> None:
    slow = _finishes(None)        # every link 5 GB/s: transfers one after another
    fast = _finishes("20 GB/s")   # the decode link carries four 5 GB/s streams
    gaps_slow, gaps_fast = np.diff(slow), np.diff(fast)
    transfer = gaps_slow.min()
    assert transfer > 0.05                 # ~0.5 GB at 5 GB/s
    assert np.all(gaps_fast < transfer / 3)
    assert fast[-1] < slow[-1] - 2 * transfer


def test_group_bandwidth_must_have_a_unit() -> None:
    import pytest

    from servingcast.errors import ConfigError

    with pytest.raises(ConfigError, match="network_bandwidth"):
        make_scenario([group("p", role="prefill"), group("d", role="decode",
                                                         network_bandwidth=400)],
                      network={"bandwidth": "5 GB/s"})
