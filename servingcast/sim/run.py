"""How long an instance's iterations take: the cost model's step time, one iteration or a run.

One iteration carries prefill chunks and the decodes of a :class:`DecodeSet`; ``x`` is its
:class:`~servingcast.costmodel.batch.BatchStats` (decodes verify ``q`` tokens each: 1, or
``k + 1`` with speculative decoding). With ``pp`` pipeline stages the batch is split into
``m = min(pp, sequences)`` micro-batches of ``x / m`` each (vLLM's virtual engines,
:func:`~servingcast.costmodel.spec.micro_batches`), and an
iteration takes (:func:`~servingcast.costmodel.spec.pipelined_step_s`)

    lat, interval = CostModel.iteration_s(x / m)
    draft         = sum_{r<k} draft.iteration_s(decodes of the micro-batch at contexts p_i + r)
    step          = max(lat + draft, m (interval + draft / pp))

A *run* is ``k`` decode-only iterations with the same members: nothing but the contexts changes,
by ``E`` tokens per member per iteration, so ``x`` is affine in the iteration index ``j``. With
``ROOFLINE_P == 1`` every cost-model term is affine in ``x`` at a fixed token count, so, writing
``interval = max_s (stage_s + I)``, each candidate of

    step(j) = max(lat(j) + draft(j),  max_s m (stage_s(j) + I + draft(j) / pp))

is an affine function ``c_i + s_i j`` (read off the cost model at ``j = 0`` and ``j = 1``). The
time of ``k`` iterations is a sum over the upper envelope of these lines, and the iterations done
by a given time a quadratic's root — O(1), whatever ``k``. Without ``ROOFLINE_P == 1`` the
iterations of a run are evaluated as arrays in one vectorised cost-model call instead.

As in :func:`servingcast.estimate`, the draft model's own prefill of a prompt is not
costed (it is small next to the target's), and a chunked prefill's tokens are split across the
micro-batches like any others.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from servingcast.costmodel.batch import BatchStats
from servingcast.costmodel.fast import FastCost
from servingcast.costmodel.spec import micro_batches, pipelined_step_s
from servingcast.costmodel.step import CostModel
from servingcast.sim.decodeset import DecodeSet

#: Longest run evaluated as arrays when the fast evaluator is not available.
ARRAY_RUN_STEPS = 512

#: Prefill part of an iteration: (tokens, attention pairs, KV tokens read, logits, chunks).
Prefill = tuple[float, float, float, float, int]
NO_PREFILL: Prefill = (0.0, 0.0, 0.0, 0.0, 0)


class Run(Protocol):
    """``k`` iterations that start together."""

    def elapsed(self, steps: int) -> float:
        """Seconds taken by the first ``steps`` iterations."""

    def steps_done(self, seconds: float) -> int:
        """The most iterations whose elapsed time is <= ``seconds``."""


class LineRun:
    """Iterations ``j`` lasting ``max_i (c_i + s_i j)`` seconds (module docstring)."""

    __slots__ = ("_c", "_s", "_segments")

    def __init__(self, first: list[float], second: list[float]) -> None:
        self._segments: list[tuple[int, float, float, float]] | None = None
        if len(first) == 1:
            self._c, self._s = first[0], max(0.0, second[0] - first[0])
            return
        lines = [(c, max(0.0, d - c)) for c, d in zip(first, second, strict=True)]
        self._c, self._s = max(lines)
        self._segments = _envelope(lines)

    def elapsed(self, steps: int) -> float:
        if self._segments is None:
            return steps * self._c + self._s * steps * (steps - 1) / 2.0
        total = 0.0
        for j0, e0, c, s in self._segments:
            if j0 >= steps:
                break
            total = e0 + _sum_from(c + s * j0, s, steps - j0)
        return total

    def steps_done(self, seconds: float) -> int:
        if self._segments is None:
            return _solve(self._c, self._s, seconds)
        segs = self._segments
        for index, (j0, e0, c, s) in enumerate(segs):
            nxt = segs[index + 1] if index + 1 < len(segs) else None
            if nxt is None or nxt[1] > seconds:
                n = _solve(c + s * j0, s, seconds - e0)
                return j0 + (n if nxt is None else min(n, nxt[0] - j0))
        raise AssertionError("unreachable")


def _sum_from(c: float, s: float, n: int) -> float:
    """``sum_{j<n} (c + s j)``."""
    return n * c + s * n * (n - 1) / 2.0


def _solve(c: float, s: float, seconds: float) -> int:
    """Largest ``n`` with ``n c + s n (n-1) / 2 <= seconds`` (``c > 0``, ``s >= 0``)."""
    if seconds <= 0.0:
        return 0
    b = c - s / 2.0
    n = int(2.0 * seconds / (b + math.sqrt(b * b + 2.0 * s * seconds)))
    while _sum_from(c, s, n + 1) <= seconds:
        n += 1
    while n > 0 and _sum_from(c, s, n) > seconds:
        n -= 1
    return n


def _envelope(lines: list[tuple[float, float]]) -> list[tuple[int, float, float, float]]:
    """Segments ``(first j, elapsed before it, c, s)`` of the upper envelope over j >= 0."""
    n = len(lines)
    cur = max(range(n), key=lambda i: lines[i])
    j, elapsed = 0, 0.0
    segments = [(0, 0.0, *lines[cur])]
    while True:
        c0, s0 = lines[cur]
        nxt = None
        for c, s in lines:
            if s > s0:
                cross = max(j + 1, math.floor((c0 - c) / (s - s0)) + 1)
                nxt = cross if nxt is None else min(nxt, cross)
        if nxt is None:
            return segments
        best = max(range(n), key=lambda i: (lines[i][0] + lines[i][1] * nxt, lines[i][1]))
        elapsed += _sum_from(c0 + s0 * j, s0, nxt - j)
        j = nxt
        if best != cur:
            cur = best
            segments.append((j, elapsed, *lines[cur]))
        else:
            segments.append((j, elapsed, c0, s0))


class ArrayRun:
    """Iterations whose times were evaluated as an array (no fast evaluator)."""

    __slots__ = ("_cum",)

    def __init__(self, times: np.ndarray) -> None:
        self._cum = np.concatenate(([0.0], np.cumsum(times)))

    @property
    def max_steps(self) -> int:
        """Iterations evaluated."""
        return int(self._cum.size - 1)

    def elapsed(self, steps: int) -> float:
        return float(self._cum[steps])

    def steps_done(self, seconds: float) -> int:
        return int(np.searchsorted(self._cum, seconds, side="right")) - 1


class StepCost:
    """Iteration times of one instance's engine (module docstring)."""

    def __init__(self, cm: CostModel, draft: CostModel | None = None,
                 num_speculative_tokens: int = 0, max_tokens: int = 0) -> None:
        self.cm = cm
        self.draft = draft
        self.pp = cm.parallel.pp
        self.k = num_speculative_tokens if draft is not None else 0
        self.q = self.k + 1
        self.fast: FastCost | None = None
        self.draft_fast: FastCost | None = None
        try:
            self.fast = FastCost(cm, max_tokens)
            self.draft_fast = FastCost(draft) if draft is not None else None
        except ValueError:  # ROOFLINE_P != 1: evaluate the cost model itself
            self.fast = None

    def _candidates(self, pre: Prefill, dec: DecodeSet, step: int) -> list[float]:
        fast = self.fast
        assert fast is not None
        tokens, pairs, kv, logits, chunks = pre
        b = dec.count
        q = self.q
        dpairs, dkv = dec.sums(step, q) if b else (0.0, 0.0)
        if self.pp == 1 and not self.k:  # the common case, without the micro-batch algebra
            return [fast.parts(tokens, pairs, kv, b, b, dpairs, dkv, b + logits)[0]]
        m = micro_batches(self.pp, b + chunks)
        lat, parts = fast.parts(tokens / m, pairs / m, kv / m, b / m, b * q / m, dpairs / m,
                                dkv / m, (b * q + logits) / m)
        draft = 0.0
        if self.k and b:
            assert self.draft_fast is not None
            for r in range(self.k):
                p, k = dec.sums(step, 1, r)
                draft += self.draft_fast.parts(0.0, 0.0, 0.0, b / m, b / m, p / m, k / m,
                                               b / m)[0]
        if self.pp == 1:  # interval == latency: one stage, no hand-off
            return [lat + draft]
        return [lat + draft] + [m * (x + draft / self.pp) for x in parts]

    def _stats(self, pre: Prefill, dec: DecodeSet, steps: np.ndarray) -> tuple[
            BatchStats, list[BatchStats], float]:
        """Array-valued stats of iterations ``steps`` (exact path), the draft's, and ``m``."""
        tokens, pairs, kv, logits, chunks = pre
        b, q = dec.count, self.q
        m = float(micro_batches(self.pp, b + chunks))
        sums = np.array([dec.sums(int(s), q) if b else (0.0, 0.0) for s in steps]).reshape(-1, 2)
        one = np.ones(steps.size)
        stats = BatchStats(tokens / m * one, pairs / m * one, kv / m * one, b / m * one,
                           b * q / m * one, sums[:, 0] / m, sums[:, 1] / m,
                           (b * q + logits) / m * one)
        drafts = []
        for r in range(self.k if b else 0):
            d = np.array([dec.sums(int(s), 1, r) for s in steps]).reshape(-1, 2)
            drafts.append(BatchStats(0.0 * one, 0.0 * one, 0.0 * one, b / m * one, b / m * one,
                                     d[:, 0] / m, d[:, 1] / m, b / m * one))
        return stats, drafts, m

    def _exact(self, pre: Prefill, dec: DecodeSet, steps: np.ndarray) -> np.ndarray:
        stats, drafts, m = self._stats(pre, dec, steps)
        lat, interval = self.cm.iteration_s(stats)
        draft = np.zeros(steps.size)
        for d in drafts:
            assert self.draft is not None
            draft = draft + self.draft.iteration_s(d)[0]
        return np.asarray(pipelined_step_s(lat, interval, m, self.pp, draft), dtype=np.float64)

    def step_s(self, pre: Prefill, dec: DecodeSet, step: int) -> float:
        """Seconds of one iteration with prefill ``pre`` and the decodes of ``dec`` at ``step``."""
        if self.fast is None:
            return float(self._exact(pre, dec, np.array([step]))[0])
        return max(self._candidates(pre, dec, step))

    def run(self, pre: Prefill, dec: DecodeSet, step: int, steps: int) -> Run:
        """Timing of up to ``steps`` iterations from ``step`` (``steps == 1`` with prefill)."""
        if self.fast is None:
            count = min(steps, ARRAY_RUN_STEPS)
            return ArrayRun(self._exact(pre, dec, step + np.arange(count)))
        first = self._candidates(pre, dec, step)
        if steps == 1:
            return LineRun(first, first)
        return LineRun(first, self._candidates(pre, dec, step + 1))
