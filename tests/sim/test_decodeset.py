"""The decode set's sums and block counts equal the per-sequence brute force."""

import math

import numpy as np
import pytest

from servingcast.costmodel.batch import attention_pairs, kv_tokens_read
from servingcast.sim.decodeset import DecodeSet
from servingcast.sim.entities import Request


def contexts(dec: DecodeSet, members: list[Request], step: int) -> list[float]:
    return [(r.phi + dec.e * step) / dec.scale for r in members]


@pytest.mark.parametrize(("tokens_per_step", "q", "window"), [
    (1.0, 1, None), (1.0, 1, 300), (2.77, 5, None), (2.77, 5, 300), (1.6, 3, 250)])
def test_sums_and_blocks_match_brute_force(tokens_per_step: float, q: int,
                                           window: int | None) -> None:
    rng = np.random.default_rng(0)
    block = 16
    dec = DecodeSet(block, tokens_per_step, q, window)
    members: list[Request] = []
    step = 0
    for round_ in range(60):
        if rng.random() < 0.6 or not members:  # someone joins
            req = Request(round_, 0.0, int(rng.integers(1, 400)), int(rng.integers(2, 300)))
            req.generated = 1
            dec.join(req, step, req.input_len, req.output_len - 1)
            members.append(req)
        if rng.random() < 0.2 and len(members) > 1:  # someone leaves early (preemption)
            req = members.pop(int(rng.integers(len(members))))
            held = dec.leave(req, step)
            ctx = (req.phi + dec.e * step) / dec.scale
            assert held == math.ceil(ctx / block - 1e-12)
        k = int(rng.integers(1, 6))
        before = sum(math.ceil(c / block - 1e-12) for c in contexts(dec, members, step))
        after = sum(math.ceil(c / block - 1e-12) for c in contexts(dec, members, step + k))
        assert dec.growth(step, k) == after - before
        step += k
        for req in list(dec.pop_finished(step)):
            dec.leave(req, step)
            members.remove(req)
            assert req.generated == req.output_len
        dec.cross(step)
        ctx = contexts(dec, members, step)
        after_all = sum(math.ceil(c / block - 1e-12) for c in ctx)
        assert dec.count == len(members)
        assert dec.blocks(step) == after_all
        if not members:
            continue
        pairs, kv = dec.sums(step, q)
        assert pairs == pytest.approx(sum(float(attention_pairs(q, c, window)) for c in ctx))
        assert kv == pytest.approx(sum(float(kv_tokens_read(q, c, window)) for c in ctx))
        if q > 1:  # the draft's k = q - 1 iterations run at contexts c + r, r < k
            r = q - 2
            dp, dk = dec.sums(step, 1, r)
            assert dp == pytest.approx(sum(float(attention_pairs(1, c + r, window)) for c in ctx))
            assert dk == pytest.approx(sum(float(kv_tokens_read(1, c + r, window)) for c in ctx))


def test_run_ends_at_completion_and_blocks_limit() -> None:
    dec = DecodeSet(block_size=16)
    a, b = Request(0, 0.0, 100, 50), Request(1, 0.0, 31, 10)
    for req in (a, b):
        req.generated = 1
        dec.join(req, 0, req.input_len, req.output_len - 1)
    assert dec.steps_to_event(0) == 9          # b needs 9 more tokens
    assert dec.blocks(0) == 7 + 2
    # b needs block 3 when its context goes 32 -> 33 (2 steps), a block 8 at 112 -> 113 (13)
    assert dec.growth(0, 1) == 0 and dec.growth(0, 2) == 1 and dec.growth(0, 13) == 2
    assert dec.max_steps(0, free_blocks=1, limit=40) == 12
    assert dec.max_steps(0, free_blocks=0, limit=40) == 1


def test_window_crossings_are_events() -> None:
    dec = DecodeSet(block_size=16, window=120)
    req = Request(0, 0.0, 100, 500)
    req.generated = 1
    dec.join(req, 0, 100, 499)
    assert dec.steps_to_event(0) == 20          # context reaches the window
    dec.cross(20)
    assert dec.sums(20, 1) == (120.0, 121.0)    # saturated: W pairs, W + 1 KV entries
    assert dec.steps_to_event(20) == 479
