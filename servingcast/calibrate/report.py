"""A calibration as text, as JSON, and as the hardware YAML file it produces (strings only)."""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from servingcast.calibrate.fit import Calibration, ParameterFit
from servingcast.calibrate.readers import FORMAT_NAMES
from servingcast.engines import ENGINES
from servingcast.errors import ConfigError

_UNITS = {"compute": "", "memory": "", "network": "", "iteration_ms": "ms", "layer_us": "µs"}


def _pct(error: float | None) -> str:
    return "-" if error is None else f"{error * 100:+.1f}%"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if abs(value) < 1e5 else f"{value:,.0f}"


def _status(p: ParameterFit) -> str:
    if p.status == "fitted":
        return "fitted"
    if p.status == "at_bound":
        return f"fitted, {p.reason}"
    return f"kept at base: {p.reason.removeprefix('not identified: ')}"


def _figures(cal: Calibration) -> int:
    return sum(len(run.metrics) for run in cal.runs)


def format_report(cal: Calibration) -> str:
    """Fit error before and after, the factors, then every run's figures."""
    lines = [
        f"Calibrated {cal.base.name} on {len(cal.runs)} run{'s' * (len(cal.runs) != 1)} "
        f"({cal.simulations} simulations, {cal.runtime_s:.1f} s)",
        "",
        f"Fit error, median |error| over {_figures(cal)} figures: "
        f"{cal.median_abs_error_before * 100:.1f}% before -> "
        f"{cal.median_abs_error_after * 100:.1f}% after "
        f"(RMS log error {cal.rms_log_error_before:.3f} -> {cal.rms_log_error_after:.3f})",
        "",
        "Factors",
        f"  {'parameter':<14}{'base':>9}{'fitted':>9}{'bounds':>14}  status",
    ]
    for p in cal.parameters:
        bounds = f"{p.lower:g}-{p.upper:g} {_UNITS[p.name]}".rstrip()
        lines.append(f"  {p.name:<14}{p.base:>9.3f}{p.fitted:>9.3f}{bounds:>14}  {_status(p)}")
    lines += ["", "Runs: measured, then predicted by the base and the fitted device",
              f"  {'figure':<26}{'measured':>12}{'before':>12}{'error':>9}"
              f"{'after':>12}{'error':>9}{'weight':>8}"]
    for run in cal.runs:
        lines.append(f"  {run.source} [{run.format}]: {run.label}, "
                     f"{run.simulated_requests} requests simulated")
        for m in run.metrics:
            lines.append(
                f"    {m.observation.label:<24}{_num(m.observation.measured):>12}"
                f"{_num(m.before):>12}{_pct(m.error_before):>9}{_num(m.after):>12}"
                f"{_pct(m.error_after):>9}{m.weight:>8.2f}")
    if any(m.weight < 0.99 for run in cal.runs for m in run.metrics):
        lines.append("  (weight < 1: the simulated figure depends on the random arrivals, which "
                     "the benchmark's seed decided; it counts less in the fit)")
    return "\n".join(lines)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def calibration_dict(cal: Calibration) -> dict[str, Any]:
    """JSON-ready summary: errors, parameters and runs."""
    return {
        "base_hardware": cal.base.name,
        "hardware": cal.hardware.name,
        "median_abs_error_before": _finite(cal.median_abs_error_before),
        "median_abs_error_after": _finite(cal.median_abs_error_after),
        "rms_log_error_before": cal.rms_log_error_before,
        "rms_log_error_after": cal.rms_log_error_after,
        "simulations": cal.simulations,
        "runtime_s": cal.runtime_s,
        "parameters": [{"name": p.name, "base": p.base, "fitted": p.fitted, "lower": p.lower,
                        "upper": p.upper, "status": p.status, "reason": p.reason}
                       for p in cal.parameters],
        "runs": [{
            "source": run.source, "format": run.format, "label": run.label,
            "simulated_requests": run.simulated_requests,
            "metrics": [{"metric": m.observation.metric, "statistic": m.observation.statistic,
                         "unit": m.observation.unit, "measured": m.observation.measured,
                         "before": m.before, "after": m.after, "weight": m.weight,
                         "error_before": m.error_before, "error_after": m.error_after}
                        for m in run.metrics],
        } for run in cal.runs],
    }


def device_name(stem: str, base: str) -> str:
    """The ``name`` of a calibrated device written to ``<stem>.yaml``: the stem made a valid
    device name (lower case, ``[a-z0-9.-]``), with ``-calibrated`` added when it would be a
    catalog device's name or alias (a lookup by name must not find the catalog's instead)."""
    from servingcast.specs.catalog import hardware_catalog, normalize

    name = re.sub(r"[^a-z0-9.\-]+", "-", normalize(stem)).strip("-.")
    if not name:
        name = f"{base}-calibrated"
    taken = {n for spec in hardware_catalog().values()
             for n in (spec.name, *(normalize(a) for a in spec.aliases))}
    return f"{name}-calibrated" if name in taken else name


def hardware_yaml(cal: Calibration, name: str, engine: str | None = None) -> str:
    """The fitted device as a hardware YAML file named ``name``, with a comment header that
    records the runs, the engine and the fit error."""
    if engine is not None and engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}. To fix: use one of {', '.join(ENGINES)}")
    base = cal.base
    fitted = [p for p in cal.parameters if p.status != "kept"]
    kept = [p for p in cal.parameters if p.status == "kept"]
    engine_text = engine or "not given"
    header = [
        f"{base.display_name}, calibrated: efficiency factors and overheads fitted by",
        f"`servingcast calibrate` to {len(cal.runs)} measured serving runs, starting from "
        f"{base.name}. Engine: {engine_text}.",
        f"Use it as a device: servingcast estimate --hardware {name}.yaml ...",
        "Runs:",
        *(f"  {run.source} ({FORMAT_NAMES.get(run.format, run.format)}): {run.label}"
          for run in cal.runs),
        f"Fit error, median |error| over {_figures(cal)} figures (TTFT, TPOT, throughput): "
        f"{cal.median_abs_error_before * 100:.1f}% with {base.name}'s factors, "
        f"{cal.median_abs_error_after * 100:.1f}% with these.",
        "Fitted: " + (", ".join(f"{p.name} {p.base:g} -> {p.fitted:g}" + (
            " (at its bound)" if p.status == "at_bound" else "") for p in fitted) or "none"),
        *(f"Kept at {base.name}'s value: {p.name} {p.base:g} ({p.reason})" for p in kept),
    ]
    data = cal.hardware.model_dump(mode="json")
    data["name"] = name
    data["display_name"] = f"{base.display_name} (calibrated)"
    data["aliases"] = []
    note = (f"Efficiency and overheads calibrated by servingcast calibrate from "
            f"{len(cal.runs)} runs (engine: {engine_text}); other figures from {base.name}.")
    data["notes"] = f"{note} {base.notes}".strip()
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    return "".join(f"# {line}\n" for line in header) + body
