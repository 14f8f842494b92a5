"""Routing policies: decisions as data, deterministic for a seed."""

import random
from dataclasses import dataclass
from typing import Any

import pytest

from servingcast.sim import routers
from servingcast.sim.core import Eligible, Group
from servingcast.sim.routers import (
    LeastKvLoadRouter,
    LeastOutstandingRouter,
    PowerOfTwoRouter,
    RoundRobinRouter,
    Scan,
)
from tests.sim.conftest import group, make_scenario, run


@dataclass
class Fake:
    outstanding: int
    kv_load: float = 0.0
    index: int = 0


def test_round_robin_cycles() -> None:
    router = RoundRobinRouter(kind="round_robin").build(random.Random(0))
    pool = [Fake(0), Fake(0), Fake(0)]
    assert [router.choose(pool) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_least_outstanding_takes_the_lowest_index_on_ties() -> None:
    router = LeastOutstandingRouter(kind="least_outstanding").build(random.Random(0))
    assert router.choose(Scan([Fake(3), Fake(1), Fake(1)])) == 1


def test_least_kv_load_breaks_ties_on_outstanding() -> None:
    router = LeastKvLoadRouter(kind="least_kv_load").build(random.Random(0))
    assert router.choose([Fake(0, 0.5), Fake(4, 0.2), Fake(1, 0.2)]) == 2


def test_power_of_two_picks_the_less_loaded_of_two_and_is_seeded() -> None:
    pool = [Fake(5), Fake(0), Fake(9), Fake(2)]
    a = PowerOfTwoRouter(kind="power_of_two").build(random.Random(42))
    b = PowerOfTwoRouter(kind="power_of_two").build(random.Random(42))
    picks = [a.choose(pool) for _ in range(50)]
    assert picks == [b.choose(pool) for _ in range(50)]
    assert 2 not in picks  # the busiest instance always loses its pairing
    assert a.choose([Fake(1)]) == 0


def test_the_load_heaps_agree_with_a_scan_over_random_arrivals_and_completions() -> None:
    rng = random.Random(7)
    sizes = [1, 5, 16, 3]
    fakes = [Fake(0, index=i) for i in range(sum(sizes))]
    groups, first = [], 0
    for size in sizes:
        groups.append(Group(fakes[first:first + size], (0, 0, 0), None))  # type: ignore[arg-type]
        first += size
    subsets = [[0, 1, 2, 3], [2], [1, 3], [0, 2], [3]]
    views = [Eligible([groups[k] for k in ks]) for ks in subsets]
    router = LeastOutstandingRouter(kind="least_outstanding").build(rng)
    for _ in range(20_000):
        busy = [f for f in fakes if f.outstanding]
        if busy and rng.random() < 0.45:  # a completion (or a hand-off out)
            inst = rng.choice(busy)
            inst.outstanding -= rng.choice([1, 1, 1, min(2, inst.outstanding)])
        else:  # an arrival, routed among one of the candidate sets
            view = rng.choice(views)
            position = router.choose(view)
            assert position == Scan(view).fewest_outstanding()
            inst = view[position]
            inst.outstanding += 1
        groups[_group_of(inst.index, sizes)].touch(inst)  # type: ignore[arg-type]
    assert max(len(g._heap) for g in groups) <= 2 * max(sizes) + 16


def _group_of(index: int, sizes: list[int]) -> int:
    for k, size in enumerate(sizes):
        if index < size:
            return k
        index -= size
    raise AssertionError


CHECKED = {
    "aggregated": dict(groups=[group(count=6, max_num_seqs=16)]),
    "non-uniform limits": dict(groups=[
        group("short", count=2, max_model_len=1500, max_num_seqs=16),
        group("whole", count=3, enable_chunked_prefill=False, max_num_batched_tokens=8000,
              max_num_seqs=16),
        group("a100", count=2, hardware="a100-sxm4-80gb", max_num_seqs=16)]),
    "weighted": dict(groups=[group("a", count=3, weight=2, max_num_seqs=16),
                             group("b", count=2, weight=1, max_num_seqs=16)]),
    "disaggregated": dict(groups=[
        group("p", count=3, role="prefill"),
        group("d1", count=2, role="decode", max_num_seqs=16),
        group("d2", count=3, role="decode", max_num_seqs=16, max_model_len=2000)],
        network={"bandwidth": "50 GB/s"}),
}


@pytest.mark.parametrize("case", CHECKED)
def test_least_outstanding_in_a_simulation_picks_what_a_scan_picks(
        case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = [0]

    def checked(self: Any, pool: Any) -> int:
        calls[0] += 1
        position: int = pool.fewest_outstanding()
        assert position == Scan(pool).fewest_outstanding()
        return position

    monkeypatch.setattr(routers._LeastOutstanding, "choose", checked)
    fields: dict[str, Any] = dict(CHECKED[case])
    sc = make_scenario(fields.pop("groups"), workload={
        "num_requests": 1500, "arrival": {"kind": "poisson", "rate": 60},
        "input_len": {"kind": "lognormal", "mean": 1200, "std": 1200, "max": 6000},
        "output_len": {"kind": "lognormal", "mean": 200, "std": 200, "max": 1500}}, **fields)
    result = run(sc)
    assert result.summary.completed > 1000
    assert calls[0] >= result.summary.completed
