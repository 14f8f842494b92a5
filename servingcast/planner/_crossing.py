"""Where a nonincreasing function of one variable crosses zero, for many rows at once.

The planner's quantiles — a TTFT percentile for every batch size of an aggregated instance, the
rate a prefill group of every size serves within a TTFT limit — are each the zero of a monotone
function of one variable, one per row. Bisection needs about 50 evaluations of the whole grid
to reach double precision. The Illinois method (regula falsi that halves the value kept at one
end when the same end moves twice in a row; Dowell & Jarratt, "A modified regula falsi method
for computing the root of an equation", BIT 11, 1971) needs 5-10 on the smooth functions here,
and each step evaluates only the rows not yet converged. Where a function jumps (a mixture over
prompt lengths steps at each prompt's own service time) regula falsi can stall: after
``ILLINOIS_STEPS`` a row's bracket is split at a jump point it holds (the point and just above
it are evaluated together), else halved, so every row converges at least as fast as bisection
from then on.

No queueing or hardware formula lives here: only the numerical method.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

#: ``value(rows, t)``: the function of each row in ``rows`` at its point ``t`` (same shapes).
Value = Callable[[IntArray, FloatArray], FloatArray]

#: A row is solved when its bracket is this narrow relative to its upper end (bisection's 50
#: halvings of the planner's brackets reached about 1e-14; the quantities solved for are known
#: to far less than either).
REL_TOL = 1e-12
#: ... or when the value at an end is within this of zero: the function is then flat to rounding
#: there, and any point of the flat part is as good a zero as another.
FLAT = 1e-14
#: Illinois steps before a row that has not converged is split at its jumps or halved.
ILLINOIS_STEPS = 12
#: Steps in all (bisection from the widest bracket needs about 60 to reach ``REL_TOL``).
MAX_STEPS = 120


def crossing(value: Value, lo: npt.ArrayLike, hi: npt.ArrayLike,
             jumps: FloatArray | None = None) -> tuple[FloatArray, FloatArray]:
    """The bracket ``(a, b)`` of every row's zero, ``value(a) > 0 >= value(b)`` with
    ``b - a <= REL_TOL |b|``, searched between ``lo`` and ``hi`` (1-D, one entry per row).

    ``value`` must be nonincreasing in ``t``. As bisection would converge to them, a row with
    ``value(lo) <= 0`` (or ``hi <= lo``) gets ``(lo, lo)`` and one with ``value(hi) > 0`` gets
    ``(hi, hi)``; a row whose value at ``b`` (or ``a``) is within ``FLAT`` of zero gets
    ``(b, b)`` (or ``(a, a)``).
    ``jumps[row]`` (2-D, optional): the points where that row's ``value`` may jump.
    """
    lo = np.array(lo, dtype=np.float64, ndmin=1)
    hi = np.array(hi, dtype=np.float64, ndmin=1)
    out_a, out_b = lo.copy(), hi.copy()
    rows = np.flatnonzero(hi > lo)
    out_b[hi <= lo] = lo[hi <= lo]
    if rows.size == 0:
        return out_a, out_b
    ends = value(np.concatenate([rows, rows]), np.concatenate([lo[rows], hi[rows]]))
    f_lo, f_hi = ends[:rows.size], ends[rows.size:]
    below = f_lo <= 0  # the zero is at lo (or below it)
    above = ~below & (f_hi > 0)  # the zero is at hi (or above it)
    out_b[rows[below]] = lo[rows[below]]
    out_a[rows[above]] = hi[rows[above]]
    live = ~below & ~above
    act = rows[live]
    a, b, fa, fb = lo[act], hi[act], f_lo[live], f_hi[live]
    va, vb = fa, fb  # the values at a and b (fa, fb: Illinois's weights, halved at times)
    side = np.zeros(act.size, dtype=np.int8)  # which end moved last: 1 a, -1 b, 0 a split
    for step in range(1, MAX_STEPS + 1):
        if act.size == 0:
            break
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            c = b - fb * ((b - a) / (fb - fa))
        mid = 0.5 * (a + b)
        # A secant point that rounding puts on an end (or just past it: the zero is that close
        # to it) moves just inside; one far outside the bracket gives way to the midpoint.
        nudge = 0.25 * REL_TOL * np.abs(b)
        near = ((b - a > 4.0 * nudge) & (c >= a - nudge) & (c <= b + nudge)
                & np.isfinite(fa) & np.isfinite(fb))
        c = np.where(near, np.clip(c, a + nudge, b - nudge), mid)
        split = np.zeros(act.size, dtype=bool)
        if step > ILLINOIS_STEPS:
            c = mid
            if jumps is not None:
                pts = jumps[act]
                inside = (pts > a[:, None]) & (pts < b[:, None])
                split = np.asarray(inside.any(axis=-1), dtype=bool)
                closest = np.where(inside, np.abs(pts - mid[:, None]), np.inf).argmin(axis=-1)
                c = np.where(split, pts[np.arange(act.size), closest], mid)
        # A split evaluates the jump point and the point just above it in the same call.
        just_above = np.minimum(c + REL_TOL * np.abs(c), b)
        pair = np.flatnonzero(split)
        both = value(np.concatenate([act, act[pair]]), np.concatenate([c, just_above[pair]]))
        fc = both[:act.size]
        up = fc > 0  # the zero is above c
        fb = np.where(up & (side > 0), 0.5 * fb, fb)  # Illinois: the same end moved twice
        fa = np.where(~up & (side < 0), 0.5 * fa, fa)
        a, fa, va = np.where(up, c, a), np.where(up, fc, fa), np.where(up, fc, va)
        b, fb, vb = np.where(up, b, c), np.where(up, fb, fc), np.where(up, vb, fc)
        if pair.size:
            fu = both[act.size:]
            u, t_u = up[pair], just_above[pair]
            gone = u & (fu <= 0)  # the zero is the jump itself
            still = u & (fu > 0)
            b[pair[gone]], fb[pair[gone]], vb[pair[gone]] = t_u[gone], fu[gone], fu[gone]
            a[pair[still]], fa[pair[still]], va[pair[still]] = t_u[still], fu[still], fu[still]
        side = np.where(split, 0, np.where(up, 1, -1)).astype(np.int8)
        flat_b, flat_a = vb >= -FLAT, va <= FLAT
        done = flat_b | flat_a | (b - a <= REL_TOL * np.abs(b))
        out_a[act[done]] = np.where(flat_b, b, a)[done]
        out_b[act[done]] = np.where(flat_b | ~flat_a, b, a)[done]
        keep = ~done
        act, a, b, fa, fb, va, vb, side = (
            x[keep] for x in (act, a, b, fa, fb, va, vb, side))
    out_a[act], out_b[act] = a, b
    return out_a, out_b
