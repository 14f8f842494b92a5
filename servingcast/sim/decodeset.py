"""The decoding sequences of one instance, kept as sums so that a run of iterations costs O(1).

Notation. ``S`` counts the instance's decode iterations; each advances every member by ``E``
tokens (1, or the expected tokens of a speculative step). Positions are integers in units of
``1/D`` token (``D = 1`` when ``E = 1``, else ``2^16`` and ``e = round(E D)``), so that all the
bookkeeping is exact integer arithmetic. Member ``i`` joined at step ``S_i`` with ``p_i`` tokens in
its KV cache; at step ``S`` it holds

    p_i(S) = (Phi_i + e S) / D,        Phi_i = D p_i - e S_i

tokens. What the cost model needs of the decodes of one iteration are sums over members of
:func:`~servingcast.costmodel.batch.attention_pairs` and
:func:`~servingcast.costmodel.batch.kv_tokens_read` of ``q`` query tokens at ``p_i``. Both are
affine in ``p`` while ``p + q <= W`` (sliding window ``W``; always without one) and constant once
``p >= W``, so members are kept in three sets: *affine* (sums from ``sum Phi_i``, evaluated at
the mean context — exact, since the functions are affine there), *saturated* (a count) and the
rare *transition* members in between (speculative decoding only; summed one by one). Members
move between sets at precomputed steps, the *crossings*.

Paged KV blocks. Member ``i`` holds ``ceil(p_i(S) / B)`` blocks of ``B`` tokens (vLLM allocates a
block when a token needs one). With ``U = B D``, ``Phi_i = n_i U + r_i`` (``0 <= r_i < U``) and
``e S = m U + g``::

    sum_i ceil((Phi_i + e S) / U) = sum_i n_i + N m + #{r_i + g > 0} + #{r_i > U - g}

so a sorted list of the residues ``r_i`` gives the blocks of any future step in
``O(log N)``: the growth of a run, and the longest run the free blocks allow. With speculative
decoding the cache grows by the expected accepted tokens ``E`` per step (the ``k + 1`` slots
vLLM reserves for a step's verification are not modelled), and a request finishes after
``ceil(remaining tokens / E)`` steps — the estimate's expected-value model, step by step.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator

from servingcast.costmodel.batch import attention_pairs, kv_tokens_read
from servingcast.sim.entities import Request

_AFFINE, _TRANSITION, _SATURATED = 0, 1, 2
_FAR = 1 << 62


class DecodeSet:
    """Decoding members of one instance (module docstring)."""

    def __init__(self, block_size: int, tokens_per_step: float = 1.0, query_tokens: int = 1,
                 window: int | None = None) -> None:
        self.scale = 1 if tokens_per_step == 1.0 else 1 << 16
        self.e = max(1, round(tokens_per_step * self.scale))
        self.unit = block_size * self.scale
        self.q = query_tokens
        self.window = window
        self.count = 0
        self._n_aff = 0
        self._phi_aff = 0
        self._n_sat = 0
        self._trans: dict[Request, None] = {}
        self._residues: list[int] = []
        self._floor_sum = 0
        #: sum over members of (remaining output at join * D + e * join step)
        self._out_sum = 0
        self._done: list[tuple[int, int, int, Request]] = []
        self._cross: list[tuple[int, int, int, Request]] = []
        self._seq = itertools.count()

    # -- membership ------------------------------------------------------------------------

    def join(self, req: Request, step: int, prior: int, remaining: int) -> None:
        """``req`` starts decoding at ``step`` with ``prior`` tokens cached and ``remaining``
        output tokens to go; it finishes after ``ceil(remaining D / e)`` iterations."""
        phi = prior * self.scale - self.e * step
        req.phi, req.join_step, req.gen0 = phi, step, req.generated
        req.inc += 1
        self.count += 1
        insort(self._residues, phi % self.unit)
        self._floor_sum += phi // self.unit
        self._out_sum += remaining * self.scale + self.e * step
        finish = step + -(-remaining * self.scale // self.e)
        heapq.heappush(self._done, (finish, next(self._seq), req.inc, req))
        req.wstate = -1
        self._place(req, step)

    def leave(self, req: Request, step: int) -> int:
        """Remove ``req`` at ``step``; return the blocks it holds. Updates ``req.generated``."""
        self._unplace(req)
        req.inc += 1
        self.count -= 1
        phi = req.phi
        del self._residues[bisect_left(self._residues, phi % self.unit)]
        self._floor_sum -= phi // self.unit
        self._out_sum -= (req.output_len - req.gen0) * self.scale + self.e * req.join_step
        advanced = (step - req.join_step) * self.e // self.scale
        req.generated = min(req.output_len, req.gen0 + advanced)
        return -(-(phi + self.e * step) // self.unit)

    def _state(self, phi: int, step: int) -> int:
        if self.window is None:
            return _AFFINE
        pos, w = phi + self.e * step, self.window * self.scale
        if pos + self.q * self.scale <= w:
            return _AFFINE
        return _SATURATED if pos >= w else _TRANSITION

    def _place(self, req: Request, step: int) -> None:
        state = self._state(req.phi, step)
        req.wstate = state
        if state == _AFFINE:
            self._n_aff += 1
            self._phi_aff += req.phi
        elif state == _SATURATED:
            self._n_sat += 1
            return
        else:
            self._trans[req] = None
        assert self.window is not None or state == _AFFINE
        if self.window is not None:  # the step at which req leaves this set
            w = self.window * self.scale
            edge = w - self.q * self.scale if state == _AFFINE else w - 1
            heapq.heappush(self._cross, ((edge - req.phi) // self.e + 1, next(self._seq), req.inc,
                                         req))

    def _unplace(self, req: Request) -> None:
        if req.wstate == _AFFINE:
            self._n_aff -= 1
            self._phi_aff -= req.phi
        elif req.wstate == _SATURATED:
            self._n_sat -= 1
        else:
            del self._trans[req]

    # -- events ----------------------------------------------------------------------------

    def _top(self, heap: list[tuple[int, int, int, Request]]) -> int:
        while heap and heap[0][2] != heap[0][3].inc:
            heapq.heappop(heap)
        return heap[0][0] if heap else _FAR

    def steps_to_event(self, step: int) -> int:
        """Iterations from ``step`` until a member finishes or changes window set (>= 1)."""
        if self._trans:
            return 1
        return max(1, min(self._top(self._done), self._top(self._cross)) - step)

    def pop_finished(self, step: int) -> list[Request]:
        """Members whose last token came at ``step`` or before (removed by the caller)."""
        done = []
        while self._top(self._done) <= step:
            done.append(heapq.heappop(self._done)[3])
        return done

    def cross(self, step: int) -> None:
        """Move members whose window set changes by ``step``."""
        while self._top(self._cross) <= step:
            req = heapq.heappop(self._cross)[3]
            self._unplace(req)
            self._place(req, step)

    def generated(self, req: Request, step: int) -> int:
        """Output tokens member ``req`` has at ``step``."""
        return min(req.output_len, req.gen0 + (step - req.join_step) * self.e // self.scale)

    def remaining_tokens(self, step: int) -> float:
        """Output tokens the members have still to generate at ``step``, summed (members join
        with ``remaining = output_len - generated``, as the instance does)."""
        return max(0.0, (self._out_sum - self.count * self.e * step) / self.scale)

    # -- sums for the cost model -----------------------------------------------------------

    def sums(self, step: int, q: int, shift: float = 0.0) -> tuple[float, float]:
        """``(sum attention_pairs, sum kv_tokens_read)`` of ``q`` query tokens per member at
        contexts ``p_i(step) + shift``."""
        w = self.window
        pairs = kv = 0.0
        if self._n_aff:
            n = self._n_aff
            mean = (self._phi_aff + n * self.e * step) / (n * self.scale) + shift
            pairs = n * float(attention_pairs(q, mean, w))
            kv = n * float(kv_tokens_read(q, mean, w))
        if self._n_sat:
            assert w is not None
            pairs += self._n_sat * float(attention_pairs(q, w + shift, w))
            kv += self._n_sat * float(kv_tokens_read(q, w + shift, w))
        for req in self._trans:
            p = (req.phi + self.e * step) / self.scale + shift
            pairs += float(attention_pairs(q, p, w))
            kv += float(kv_tokens_read(q, p, w))
        return pairs, kv

    # -- paged blocks ----------------------------------------------------------------------

    def blocks(self, step: int) -> int:
        """KV blocks all members hold at ``step`` (module docstring)."""
        n = self.count
        if not n:
            return 0
        m, g = divmod(self.e * step, self.unit)
        r = self._residues
        zeros = bisect_right(r, 0) if g == 0 else 0
        over = n - bisect_right(r, self.unit - g)
        return self._floor_sum + n * m + (n - zeros) + over

    def growth(self, step: int, steps: int, base: int | None = None) -> int:
        """Blocks the members need to run ``steps`` iterations from ``step`` (``base``: the
        blocks at ``step``, if known)."""
        if not self.count:
            return 0
        return self.blocks(step + steps) - (self.blocks(step) if base is None else base)

    def max_steps(self, step: int, free_blocks: int, limit: int) -> int:
        """The most iterations (<= ``limit``) whose growth fits in ``free_blocks``."""
        n = self.count
        if not n or n * (limit * self.e // self.unit + 1) <= free_blocks:
            return limit
        base = self.blocks(step)
        lo, hi = 0, limit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.blocks(step + mid) - base <= free_blocks:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def members(self) -> Iterator[Request]:
        """Every member (for checks and tests; not on the hot path)."""
        seen: set[int] = set()
        for _, _, inc, req in self._done:
            if inc == req.inc and req.id not in seen:
                seen.add(req.id)
                yield req
