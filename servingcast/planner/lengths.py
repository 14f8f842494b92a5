"""Token-length distributions of a workload, reduced to the quantile points the planner uses.

A problem writes lengths exactly as the simulator does (:data:`servingcast.workload.
LengthDistribution`: a whole number, or ``fixed``, ``uniform``, ``normal``, ``lognormal``,
``empirical``). The planner reduces a distribution to ``QUANTILE_POINTS`` equally weighted
quantile points — deterministic: the quantiles of a fixed-seed sample — from which it takes
means, second moments and percentiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from servingcast.workload import FixedLength, LengthDistribution

#: Quantile points per distribution (midpoints of 32 equal-probability bins).
QUANTILE_POINTS = 32
#: Sample size behind the quantile points (fixed seed: plans are reproducible).
_SAMPLES = 20_000

Length = LengthDistribution


def length_points(dist: Any) -> npt.NDArray[np.float64]:
    """Equally weighted quantile points of a length distribution (one point when fixed)."""
    if isinstance(dist, FixedLength):
        return np.asarray([float(dist.value)])
    rng = np.random.default_rng(0)
    samples = np.asarray(dist.sample(rng, _SAMPLES), dtype=np.float64)
    q = (np.arange(QUANTILE_POINTS) + 0.5) / QUANTILE_POINTS
    points = np.quantile(samples, q)
    if np.all(points == points[0]):
        return points[:1]
    return np.asarray(points, dtype=np.float64)


def length_max(dist: Any) -> int:
    """The longest length the planner provisions for: the distribution's value when fixed, else
    the largest of the same fixed-seed sample behind :func:`length_points` (a distribution with
    no ``max`` may, rarely, draw longer ones in a simulation)."""
    if isinstance(dist, FixedLength):
        return int(dist.value)
    rng = np.random.default_rng(0)
    return int(np.max(dist.sample(rng, _SAMPLES)))


def describe_length(dist: Any) -> str:
    """Short text: ``4000`` or ``normal(mean 1000, std 200)``."""
    if isinstance(dist, FixedLength):
        return str(dist.value)
    data = dist.model_dump(exclude={"kind", "path", "column", "values", "weights"},
                           exclude_none=True, exclude_defaults=True)
    inner = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in data.items())
    if getattr(dist, "values", None) is not None:
        inner = f"{len(dist.values)} values, mean {float(np.mean(length_points(dist))):.0f}"
    return f"{dist.kind}({inner})"
