"""Routers: which instance of a pool gets a request. Each is a config (picked by ``kind``) that
builds a short policy class; a policy returns its decision (an index into the candidates) as
data.

* ``round_robin`` — instances in turn. O(1) per request.
* ``least_outstanding`` — the fewest requests assigned and not yet finished there (Vidur's
  least-outstanding-requests router; vLLM production-stack's default). O(log n) per request:
  the simulator keeps the candidates' loads in a heap (:meth:`Candidates.fewest_outstanding`).
* ``least_kv_load`` — the lowest KV-cache load: blocks in use plus blocks the queued requests
  will need, over the instance's capacity (llm-d's KV-cache-aware scorer, without prefix
  affinity). O(n) per request: it reads every candidate's load.
* ``power_of_two`` — two instances drawn at random, the one with fewer outstanding requests
  (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing", 2001). O(1).

Ties go to the lowest index, so routing is deterministic for a given seed.

The candidates are the instances of the pool (front: aggregated or prefill; back: decode) that
can serve the request. When the pool's instance groups carry weights, the simulator first picks
one group by smooth weighted round-robin and the router then chooses within it
(:mod:`servingcast.sim.core`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Annotated, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class Routable(Protocol):
    """What a router may look at on an instance."""

    @property
    def outstanding(self) -> int:
        """Requests assigned and not yet finished (or handed off)."""

    @property
    def kv_load(self) -> float:
        """(blocks in use + blocks the queue will need) / capacity."""


class Candidates(Protocol):
    """The instances a router chooses among, in index order."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Routable: ...

    def __iter__(self) -> Iterator[Routable]: ...

    def fewest_outstanding(self) -> int:
        """Index of the candidate with the fewest outstanding requests (lowest on ties)."""


R = TypeVar("R", bound=Routable)


class Scan(list[R]):
    """Candidates given as a plain list: :meth:`fewest_outstanding` reads all of them, O(n).

    The reference the simulator's heap (:class:`servingcast.sim.core.Group`) must agree with.
    """

    def fewest_outstanding(self) -> int:
        """Index of the candidate with the fewest outstanding requests (lowest on ties)."""
        loads = [inst.outstanding for inst in self]
        return loads.index(min(loads))


class Router(Protocol):
    """Picks an index into ``pool``."""

    def choose(self, pool: Candidates) -> int:
        """The chosen instance's index."""


class _RoundRobin:
    def __init__(self) -> None:
        self._next = 0

    def choose(self, pool: Candidates) -> int:
        index = self._next % len(pool)
        self._next = index + 1
        return index


class _LeastOutstanding:
    def choose(self, pool: Candidates) -> int:
        return pool.fewest_outstanding()


class _LeastKvLoad:
    def choose(self, pool: Candidates) -> int:
        loads = [(inst.kv_load, inst.outstanding) for inst in pool]
        return loads.index(min(loads))


class _PowerOfTwo:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, pool: Candidates) -> int:
        if len(pool) == 1:
            return 0
        a, b = sorted(self._rng.sample(range(len(pool)), 2))
        return b if pool[b].outstanding < pool[a].outstanding else a


class RoundRobinRouter(BaseModel):
    """Instances in turn."""

    model_config = _FROZEN
    kind: Literal["round_robin"]

    def build(self, rng: random.Random) -> Router:
        """A fresh policy (state per simulation)."""
        return _RoundRobin()


class LeastOutstandingRouter(BaseModel):
    """The instance with the fewest outstanding requests (O(log n) per request)."""

    model_config = _FROZEN
    kind: Literal["least_outstanding"]

    def build(self, rng: random.Random) -> Router:
        """A fresh policy (state per simulation)."""
        return _LeastOutstanding()


class LeastKvLoadRouter(BaseModel):
    """The instance with the lowest KV-cache load (in use plus queued demand); reads every
    candidate, O(n) per request."""

    model_config = _FROZEN
    kind: Literal["least_kv_load"]

    def build(self, rng: random.Random) -> Router:
        """A fresh policy (state per simulation)."""
        return _LeastKvLoad()


class PowerOfTwoRouter(BaseModel):
    """The less loaded of two instances drawn at random."""

    model_config = _FROZEN
    kind: Literal["power_of_two"]

    def build(self, rng: random.Random) -> Router:
        """A fresh policy drawing from ``rng``."""
        return _PowerOfTwo(rng)


#: A routing policy, picked by ``kind``.
RouterConfig = Annotated[
    RoundRobinRouter | LeastOutstandingRouter | LeastKvLoadRouter | PowerOfTwoRouter,
    Field(discriminator="kind"),
]
