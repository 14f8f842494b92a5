"""Paged blocks and the prefix cache: pins, publishing, LRU eviction, conservation."""

import pytest

from servingcast.sim.kvcache import BlockPool


def test_blocks_are_conserved_without_caching() -> None:
    pool = BlockPool(total=10, block_size=16)
    assert pool.blocks(17) == 2 and pool.blocks(16) == 1
    pool.allocate(7)
    assert pool.available() == 3 and pool.in_use() == 7
    pool.free(7)
    assert pool.available() == 10
    assert pool.lookup(group=1, prefix_len=64, prompt_tokens=100) == 0  # caching off


def test_prefix_hits_pins_and_eviction() -> None:
    pool = BlockPool(total=20, block_size=16, prefix_caching=True)
    # Request A (group 7, 64-token prefix) computes its prompt of 100 tokens: 7 blocks.
    assert pool.lookup(7, 64, 100) == 0
    pool.pin(7, 0)
    pool.allocate(7)
    moved = pool.publish(7, 64 // 16, private_blocks=7)   # its 4 prefix blocks join the cache
    assert moved == 4 and pool.cached == 4 and pool.used == 3
    pool.pin(7, 4)
    pool.unpin(7, 0)
    assert pool.pinned == 4 and pool.available() == 20 - 3 - 4
    # B of the same group hits 4 blocks; a prompt that is all prefix recomputes its last block.
    assert pool.lookup(7, 64, 100) == 4
    assert pool.lookup(7, 64, 64) == 3
    pool.pin(7, 4)
    pool.unpin(7, 4)   # A finishes: frees its 3 private blocks; B still pins the prefix
    pool.free(3)
    assert pool.pinned == 4
    pool.unpin(7, 4)   # B finishes: the prefix stays cached but is evictable
    assert pool.pinned == 0 and pool.cached == 4 and pool.available() == 20
    pool.allocate(18)  # needs 2 of the cached blocks: evicted from the end of the prefix
    assert pool.cached == 2 and pool.lookup(7, 64, 100) == 2
    assert pool.used + pool.cached <= pool.total


def test_least_recently_used_group_is_evicted_first() -> None:
    pool = BlockPool(total=10, block_size=4, prefix_caching=True)
    for group in (1, 2):
        pool.pin(group, 0)
        pool.allocate(3)
        pool.publish(group, 3, 3)
        pool.unpin(group, 0)
    pool.pin(1, 0)          # group 1 used again: group 2 is now the least recent
    pool.unpin(1, 0)
    pool.allocate(6)
    assert pool.lookup(2, 100, 101) == 1 and pool.lookup(1, 100, 101) == 3


def test_over_commit_is_a_bug() -> None:
    pool = BlockPool(total=4, block_size=4, prefix_caching=True)
    pool.pin(1, 0)
    pool.allocate(2)
    pool.publish(1, 2, 2)
    pool.pin(1, 2)
    with pytest.raises(AssertionError, match="over-committed"):
        pool.allocate(3)
