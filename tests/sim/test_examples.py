"""Every example scenario in configs/scenarios runs end to end (on its first 300 requests)."""

from pathlib import Path

import pytest

from servingcast.sim import load_scenario, simulate

SCENARIOS = sorted((Path(__file__).parents[2] / "configs" / "scenarios").glob("*.yaml"))


def test_there_are_examples() -> None:
    names = {p.stem for p in SCENARIOS}
    assert {"single-instance", "aggregated-4x-chunked", "disaggregated-2p1d",
            "heterogeneous-h100-a100", "trace-replay"} <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_example_runs(path: Path) -> None:
    scenario = load_scenario(path)
    result = simulate(scenario, num_requests=300)
    s = result.summary
    assert s.num_requests == 300 and s.completed + s.rejected == 300
    assert s.completed > 250
    assert s.ttft_ms.p50 is not None and s.ttft_ms.p50 > 0
    assert s.mean_in_system == pytest.approx(s.request_throughput_per_s * s.e2e_ms.mean / 1e3,
                                             rel=1e-6)
