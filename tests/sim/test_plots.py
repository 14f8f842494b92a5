"""Plots: each group's KV usage comes from its own instances, matched by index."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from servingcast.groups import group_of_instances
from servingcast.sim import scenario_from_dict, simulate
from servingcast.sim.plots import group_kv_usage, plot_pngs


def test_group_kv_usage_averages_each_groups_own_instances() -> None:
    data = {
        "model": "llama-3.1-8b",
        "instance_groups": [
            {"name": "small", "count": 2, "hardware": "h100-sxm", "max_num_seqs": 8,
             "gpu_memory_utilization": 0.5, "weight": 1},
            {"name": "big", "count": 1, "hardware": "h100-sxm", "max_num_seqs": 64,
             "weight": 3},
        ],
        "workload": {"num_requests": 60, "arrival": {"kind": "poisson", "rate": 6},
                     "input_len": 1000, "output_len": 50},
        "seed": 2,
    }
    result = simulate(scenario_from_dict(data), timeseries=True)
    usage = group_kv_usage(result)
    assert set(usage) == {"small", "big"}
    assert result.timeseries is not None
    curves = list(result.timeseries.kv_usage.values())
    owner = group_of_instances([2, 1])
    # "big" is the third instance alone: its curve is that instance's own.
    (big_t, big_u), = [c for c, g in zip(curves, owner, strict=True) if g == 1]
    grid, mean = usage["big"]
    assert np.array_equal(grid, np.unique(big_t))
    assert np.allclose(mean, np.interp(grid, big_t, big_u))
    # "small" averages its two instances on the union of their sample times.
    small = [c for c, g in zip(curves, owner, strict=True) if g == 0]
    grid, mean = usage["small"]
    expected = np.mean([np.interp(grid, t, u) for t, u in small], axis=0)
    assert np.allclose(mean, expected) and 0.0 < float(mean.max()) <= 1.0
    assert plot_pngs(result)["kv_usage.png"].startswith(b"\x89PNG")
