"""Routing policies: decisions as data, deterministic for a seed."""

import random
from dataclasses import dataclass

from servingcast.sim.routers import (
    LeastKvLoadRouter,
    LeastOutstandingRouter,
    PowerOfTwoRouter,
    RoundRobinRouter,
)


@dataclass
class Fake:
    outstanding: int
    kv_load: float = 0.0


def test_round_robin_cycles() -> None:
    router = RoundRobinRouter(kind="round_robin").build(random.Random(0))
    pool = [Fake(0), Fake(0), Fake(0)]
    assert [router.choose(pool) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_least_outstanding_takes_the_lowest_index_on_ties() -> None:
    router = LeastOutstandingRouter(kind="least_outstanding").build(random.Random(0))
    assert router.choose([Fake(3), Fake(1), Fake(1)]) == 1


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
