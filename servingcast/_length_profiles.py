"""Benchmark datasets' request lengths as shipped distributions (``configs/workloads/*.yaml``).

A profile holds a dataset's ``input_len`` and ``output_len`` (any
:data:`~servingcast.workload.LengthDistribution`, pasteable into a scenario's workload) and the
mean and maximum its source states (``stated``), which the distributions reproduce.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from servingcast._yaml import load_model
from servingcast.errors import ConfigError
from servingcast.workload import EmpiricalLength, FixedLength, LengthDistribution

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class StatedLengths(BaseModel):
    """The mean and maximum a source states for one length, in tokens."""

    model_config = _FROZEN
    mean: float = Field(gt=0)
    max: int = Field(ge=1)


class LengthProfile(BaseModel):
    """A benchmark dataset's input and output lengths."""

    model_config = _FROZEN
    name: str
    description: str
    stated: dict[str, StatedLengths]
    input_len: LengthDistribution
    output_len: LengthDistribution


def workloads_dir() -> Path:
    """``configs/workloads`` beside the catalogs."""
    from servingcast.specs.catalog import config_dir

    return config_dir() / "workloads"


def profile_names() -> list[str]:
    """The shipped profiles."""
    folder = workloads_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_length_profile(name: str | Path) -> LengthProfile:
    """A profile by name (``openorca-llama2``) or by path (``*.yaml``)."""
    path = Path(name)
    if not str(name).endswith((".yaml", ".yml")):
        path = workloads_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no length profile {str(name)!r} (looked for {path}). To fix: use one "
                          f"of {', '.join(profile_names()) or '(none shipped)'}")
    return load_model(path, LengthProfile)


def length_mean_max(dist: Any) -> tuple[float, int]:
    """Mean and maximum, in tokens, of a fixed or empirical length distribution."""
    if isinstance(dist, FixedLength):
        return float(dist.value), dist.value
    if isinstance(dist, EmpiricalLength) and dist.values is not None:
        values = np.asarray(dist.values, dtype=np.float64)
        weights = (np.ones_like(values) if dist.weights is None
                   else np.asarray(dist.weights, dtype=np.float64))
        return float(values @ weights / weights.sum()), int(values.max())
    raise ConfigError(f"length distribution {getattr(dist, 'kind', dist)!r} has no closed-form "
                      "mean here. To fix: use an empirical or fixed distribution")


__all__ = ["LengthProfile", "StatedLengths", "length_mean_max", "load_length_profile",
           "profile_names", "workloads_dir"]
