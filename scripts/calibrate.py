"""Calibrate each device's default efficiency factors and overheads against measurements.

For every device with published rows, a coordinate search over (compute, memory, network
efficiency, iteration_ms, layer_us) minimises the sum over validation uses of the median absolute
percentage error of *that device's rows*, plus half their mean. One set of factors per device,
shared by all its rows and models — never fitted row by row. The result is printed as YAML to
paste into ``configs/hardware/<device>.yaml``; ``scripts/validate.py`` then checks the whole set.

    python scripts/calibrate.py [--csv PATH] [--device h100-sxm]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from servingcast.specs import get_hardware
from servingcast.specs.hardware import Efficiency, HardwareSpec, Overheads
from servingcast.validation import compare, read_rows

#: Physically plausible ranges only: serving GEMMs sustain 45-85% of the dense tensor peak and
#: 70-92% of HBM bandwidth on every device we know of; a fit outside them would be absorbing
#: some other effect.
GRID = {
    "compute": [0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85],
    "memory": [0.7, 0.75, 0.8, 0.85, 0.9, 0.92],
    "network": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
    "iteration_ms": [0.0, 0.25, 0.5, 1.0, 1.5, 2.0],
    "layer_us": [0.0, 10.0, 20.0, 30.0, 40.0, 60.0, 80.0],
}


def _spec(base: HardwareSpec, p: dict[str, float]) -> HardwareSpec:
    return base.model_copy(update={
        "efficiency": Efficiency(compute=p["compute"], memory=p["memory"], network=p["network"]),
        "overheads": Overheads(iteration_ms=p["iteration_ms"], layer_us=p["layer_us"]),
    })


def _loss(rows: list[dict[str, str]], spec: HardwareSpec) -> float:
    comparisons = compare(rows, lambda _name: spec)
    total = 0.0
    for use in "abc":
        apes = [abs(c.error) for c in comparisons if c.use == use and c.error is not None]
        if apes:
            total += statistics.median(apes) + 0.5 * statistics.fmean(apes)
    return total


def calibrate(base: HardwareSpec, rows: list[dict[str, str]], passes: int = 3) -> dict[str, float]:
    params = {**base.efficiency.model_dump(), **base.overheads.model_dump()}
    best = _loss(rows, _spec(base, params))
    for _ in range(passes):
        improved = False
        for key, values in GRID.items():
            for value in values:
                trial = params | {key: value}
                loss = _loss(rows, _spec(base, trial))
                if loss < best - 1e-9:
                    best, params, improved = loss, trial, True
        if not improved:
            break
    print(f"# {base.name}: {len(rows)} rows, loss {best:.3f}")
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path,
                        default=Path(__file__).parents[1] / "tests/data/published_measurements.csv")
    parser.add_argument("--device", action="append", help="only this device (repeatable)")
    args = parser.parse_args()
    by_device: dict[str, list[dict[str, str]]] = {}
    for row in read_rows(args.csv):
        try:
            name = get_hardware(row["gpu_type"]).name
        except Exception:
            continue
        by_device.setdefault(name, []).append(row)
    for name, rows in sorted(by_device.items()):
        if args.device and name not in args.device:
            continue
        p = calibrate(get_hardware(name), rows)
        print(f"{name}:\n  efficiency: {{compute: {p['compute']}, memory: {p['memory']}, "
              f"network: {p['network']}}}\n  overheads: {{iteration_ms: {p['iteration_ms']}, "
              f"layer_us: {p['layer_us']}}}", flush=True)


if __name__ == "__main__":
    main()
