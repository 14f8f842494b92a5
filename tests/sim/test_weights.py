"""Per-group traffic weights: smooth weighted round-robin between groups, then the router."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from servingcast.errors import ConfigError
from servingcast.sim.scenario import load_scenario
from tests.sim.conftest import fixed_requests, group, make_scenario, run

WORKLOAD = {"num_requests": 2000, "arrival": {"kind": "poisson", "rate": 20},
            "input_len": {"kind": "lognormal", "mean": 500, "std": 400, "max": 3000},
            "output_len": {"kind": "lognormal", "mean": 60, "std": 50, "max": 400}}
NETWORK = {"bandwidth": "50 GB/s", "latency": "10 us"}


def test_weights_three_to_one_send_three_quarters_of_the_arrivals_to_the_first_group() -> None:
    sc = make_scenario([group("a", count=2, weight=3), group("b", count=2, weight=1)],
                       workload=WORKLOAD)
    result = run(sc)
    instance = result.requests.prefill_instance
    assert result.summary.completed == 2000
    assert np.mean(instance < 2) == pytest.approx(0.75, abs=0.01)
    # Within a group the router still spreads the load.
    assert set(instance.tolist()) == {0, 1, 2, 3}


def test_decode_weights_split_the_hand_offs() -> None:
    sc = make_scenario([group("p", count=2, role="prefill"),
                        group("d1", role="decode", weight=1),
                        group("d2", count=2, role="decode", weight=4)],
                       workload=WORKLOAD, network=NETWORK)
    result = run(sc)
    decode = result.requests.decode_instance
    assert result.summary.completed == 2000
    assert np.mean(decode == 2) == pytest.approx(0.2, abs=0.01)
    assert set(decode.tolist()) == {2, 3, 4}
    # The prefill groups carry no weight: the router alone spreads the arrivals.
    assert set(result.requests.prefill_instance.tolist()) == {0, 1}


def test_smooth_weighted_round_robin_follows_nginx() -> None:
    # nginx's example: weights {a: 5, b: 1, c: 1} give a a b a c a a, then repeat.
    sc = make_scenario([group("a", weight=5), group("b", weight=1), group("c", weight=1)])
    result = run(sc, fixed_requests([float(t) for t in range(14)], [100] * 14, [2] * 14))
    assert result.requests.prefill_instance.tolist() == [0, 0, 1, 0, 2, 0, 0] * 2


def test_a_group_that_cannot_serve_a_request_is_left_out_of_the_split() -> None:
    sc = make_scenario([group("short", weight=1, max_model_len=1000),
                        group("long", weight=1)])
    prompts = [500, 2000, 500, 2000, 500, 500]
    result = run(sc, fixed_requests([float(t) for t in range(6)], prompts, [10] * 6))
    # The long prompts only fit "long"; the short ones alternate over both groups.
    assert result.requests.prefill_instance.tolist() == [0, 1, 1, 1, 0, 1]


def test_mixing_weighted_and_unweighted_groups_of_a_role_is_refused(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "model": "llama-3.1-8b",
        "instance_groups": [group("p", role="prefill"),
                            group("d1", role="decode", weight=2),
                            group("d2", role="decode"),
                            group("d3", role="decode", weight=1)],
        "network": NETWORK,
        "workload": {"num_requests": 10, "arrival": {"kind": "poisson", "rate": 1},
                     "input_len": 100, "output_len": 10},
    }
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    message = str(err.value)
    assert message.startswith(f"{path}:")
    assert ": instance_groups.2: group 'd2' has no weight, but the other decode groups (d1, d3) " \
        "have one: weights split a role's traffic, so they go on every decode group or on " \
        "none. To fix: add weight: to group 'd2', or remove weight: from d1, d3" in message
    assert len(message.splitlines()) == 1  # the prefill pool (no weights) is fine


@pytest.mark.parametrize("weight", [0, -1, float("inf"), float("nan")])
def test_a_weight_must_be_positive_and_finite(weight: float) -> None:
    with pytest.raises(ConfigError, match=r"instance_groups\.0\.weight"):
        make_scenario([group(weight=weight)])


def test_equal_weights_on_identical_groups_complete_like_no_weights() -> None:
    groups = [group("a", count=2), group("b", count=2)]
    plain = run(make_scenario(groups, workload=WORKLOAD)).summary
    weighted = run(make_scenario([{**g, "weight": 1} for g in groups],
                                 workload=WORKLOAD)).summary
    assert plain.completed == weighted.completed == 2000
    assert weighted.ttft_ms.p50 == pytest.approx(plain.ttft_ms.p50, rel=0.25)


def test_weighted_runs_are_reproducible() -> None:
    sc = make_scenario([group("a", weight=0.7), group("b", count=2, weight=0.3)],
                       workload=WORKLOAD, router={"kind": "power_of_two"})
    first, second = run(sc), run(sc)
    assert first.summary == second.summary
    assert np.array_equal(first.requests.prefill_instance, second.requests.prefill_instance)
