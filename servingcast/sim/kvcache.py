"""Paged KV blocks of one instance, with vLLM's block-level prefix cache.

Capacity comes from the cost model (:func:`~servingcast.costmodel.memory.memory_plan`, in whole
blocks of ``block_size`` tokens; :func:`~servingcast.costmodel.memory.blocks_for` rounds tokens
up to blocks). Blocks are *private* (held by one running request), *cached* (full blocks of a
prefix group, shareable) or free. A cached block is *pinned* while a running request uses it;
unpinned cached blocks count as free and are evicted, least recently used group first and from
the end of the group's prefix, when an allocation needs them (vLLM's free-block queue evicts
cached blocks in LRU order, a request's tail blocks first).

A prefix group caches a leading run of ``extent`` full blocks (a system prompt, or a conversation
so far). A request of the group that prefills ``prefix_len`` shared tokens finds
``min(extent, prefix_len // block_size)`` blocks (at least one prompt token is always computed,
as in vLLM). When its prompt is computed its shared full blocks join the cache; when it finishes
or is preempted its whole context does (the next turn of a session starts with it).

Invariant: ``used + cached <= total`` and ``available() = total - used - pinned``.

The same cache stands for SGLang's radix tree and TensorRT-LLM's block reuse (block sizes 1 and
32 by default): all three reuse whole cached blocks of a shared prefix and evict least recently
used ones (:mod:`servingcast.sim.engines`).
"""

from __future__ import annotations

from collections import OrderedDict

from servingcast.costmodel.memory import blocks_for


class _Group:
    __slots__ = ("extent", "pin", "pins")

    def __init__(self) -> None:
        self.extent = 0
        self.pin = 0
        self.pins: dict[int, int] = {}


class BlockPool:
    """The KV blocks of one instance (module docstring)."""

    def __init__(self, total: int, block_size: int, prefix_caching: bool = False) -> None:
        self.total = total
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.used = 0
        self.cached = 0
        self.pinned = 0
        self.hit_blocks = 0
        self._groups: OrderedDict[int, _Group] = OrderedDict()

    def available(self) -> int:
        """Blocks an allocation may take: free ones plus unpinned cached ones."""
        return self.total - self.used - self.pinned

    def in_use(self) -> int:
        """Blocks running requests hold (private and pinned shared)."""
        return self.used + self.pinned

    def blocks(self, tokens: int) -> int:
        """Blocks holding ``tokens`` tokens."""
        return blocks_for(tokens, self.block_size)

    def allocate(self, n: int) -> None:
        """Take ``n`` blocks (the caller checked :meth:`available`), evicting if needed."""
        self.used += n
        overflow = self.used + self.cached - self.total
        if overflow > 0:
            self._evict(overflow)

    def free(self, n: int) -> None:
        """Give back ``n`` private blocks."""
        self.used -= n

    def _evict(self, n: int) -> None:
        for key in list(self._groups):
            group = self._groups[key]
            take = min(n, group.extent - group.pin)
            if take > 0:
                group.extent -= take
                self.cached -= take
                n -= take
            if group.extent == 0 and not group.pins:
                del self._groups[key]
            if n <= 0:
                return
        raise AssertionError(f"KV pool over-committed by {n} blocks")

    # -- prefix cache ----------------------------------------------------------------------

    def lookup(self, group: int, prefix_len: int, prompt_tokens: int) -> int:
        """Cached leading blocks a request of ``group`` may reuse (0 without caching)."""
        if not self.prefix_caching or group < 0:
            return 0
        entry = self._groups.get(group)
        if entry is None:
            return 0
        return max(0, min(entry.extent, prefix_len // self.block_size,
                          (prompt_tokens - 1) // self.block_size))

    def pin(self, group: int, level: int) -> None:
        """A running request uses the group's first ``level`` cached blocks."""
        if not self.prefix_caching or group < 0:
            return
        entry = self._groups.get(group)
        if entry is None:
            entry = self._groups[group] = _Group()
        self._groups.move_to_end(group)
        entry.pins[level] = entry.pins.get(level, 0) + 1
        if level > entry.pin:
            self.pinned += level - entry.pin
            entry.pin = level

    def unpin(self, group: int, level: int) -> None:
        """Undo one :meth:`pin` of ``level``."""
        if not self.prefix_caching or group < 0:
            return
        entry = self._groups[group]
        count = entry.pins[level] - 1
        if count:
            entry.pins[level] = count
        else:
            del entry.pins[level]
        top = max(entry.pins, default=0)
        self.pinned -= entry.pin - top
        entry.pin = top
        if entry.extent == 0 and not entry.pins:
            del self._groups[group]

    def publish(self, group: int, full_blocks: int, private_blocks: int) -> int:
        """Move a request's leading ``full_blocks`` into the group's cache, taking at most its
        ``private_blocks``; return how many blocks moved from private to cached."""
        if not self.prefix_caching or group < 0:
            return 0
        entry = self._groups.get(group)
        if entry is None:
            entry = self._groups[group] = _Group()
        self._groups.move_to_end(group)
        moved = max(0, min(full_blocks - entry.extent, private_blocks))
        entry.extent += moved
        self.cached += moved
        self.used -= moved
        return moved
