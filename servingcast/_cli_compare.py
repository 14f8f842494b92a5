"""``servingcast compare PROBLEM``: the hardware what-if, a thin layer over
:func:`servingcast.planner.compare.compare_hardware`.

It plans PROBLEM's workloads on each GPU type in turn and prints GPUs, $/h, output tokens/s,
tokens/s per GPU and $ per million output tokens side by side; ``--output DIR`` writes
compare.csv, compare.json and compare.png (checked before any work, never over existing files
without ``--force``).
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from servingcast._cli_common import debug_option, handle_errors
from servingcast.errors import ConfigError


def parse_prices(values: tuple[str, ...]) -> dict[str, float]:
    """``('mi300x=2.5,b200=5',)`` → ``{'mi300x': 2.5, 'b200': 5.0}``; :class:`ConfigError` on
    anything else."""
    out: dict[str, float] = {}
    for item in (part.strip() for value in values for part in value.split(",")):
        if not item:
            continue
        name, sep, number = item.partition("=")
        try:
            price = float(number) if sep and name.strip() else math.nan
        except ValueError:
            price = math.nan
        if not (math.isfinite(price) and price > 0):
            raise ConfigError(f"--price {item!r}: expected TYPE=USD_PER_GPU_HOUR with a price "
                              "> 0. To fix: e.g. --price mi300x=2.5,b200=5.2")
        out[name.strip()] = price
    return out


@click.command(name="compare", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("problem", type=click.Path(path_type=Path))
@click.option("-g", "--hardware", default=None,
              help="GPU types to compare, comma-separated, e.g. h100-sxm,h200-sxm,b200,mi300x "
                   "(default: the problem's compare section).")
@click.option("--price", "prices", multiple=True,
              help="USD per GPU-hour by type, e.g. mi300x=2.5,b200=5.2 (default: the compare "
                   "section, then the problem's pool of that type, then the catalog).")
@click.option("-n", "--gpus", type=click.IntRange(min=1), default=None,
              help="GPUs of each type, e.g. 16 (default: compare.gpus, else the problem's GPUs; "
                   "for min_cost at least enough for the demands).")
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), default=None,
              help="Folder for compare.csv, compare.json and compare.png, e.g. out/.")
@click.option("--force", is_flag=True, help="Overwrite those files if the folder has them.")
@click.option("-t", "--time-limit", "time_limit_s", type=click.FloatRange(min=0.01),
              default=60.0, show_default=True, help="Seconds per MILP solve, e.g. 10.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@debug_option
@handle_errors
def compare_command(problem: Path, hardware: str | None, prices: tuple[str, ...],
                    gpus: int | None, output: Path | None, force: bool, time_limit_s: float,
                    as_json: bool) -> None:
    """Plan the workloads of PROBLEM on each GPU type at its price, side by side: GPUs
    needed, $/h, output tokens/s, tokens/s per GPU and $ per million output tokens (* marks
    the cheapest tokens).

    Example: servingcast compare problems/compare-llama-3.1-70b.yaml
    --hardware h100-sxm,h200-sxm,b200,mi300x --price mi300x=2.5 --output out/
    """
    from servingcast._output import check_output_dir, write_outputs
    from servingcast.planner.compare import (
        OUTPUT_FILES,
        compare_hardware,
        compare_json,
        compare_table,
        render_outputs,
    )
    from servingcast.planner.problem import load_problem

    spec = load_problem(problem)
    types = [h.strip() for h in hardware.split(",") if h.strip()] if hardware else None
    if hardware is not None and not types:
        raise ConfigError(f"--hardware {hardware!r} names no GPU type. To fix: e.g. "
                          "--hardware h100-sxm,h200-sxm")
    price_map = parse_prices(prices)
    if output is not None:
        check_output_dir(output, OUTPUT_FILES, force)

    def progress(line: str) -> None:
        click.echo(f"servingcast compare: {line}", err=True)

    result = compare_hardware(spec, types, price_map, gpus, time_limit_s=time_limit_s,
                              progress=progress)
    written = write_outputs(render_outputs(result), output, force) if output is not None else []
    if as_json:
        click.echo(compare_json(result))
        return
    click.echo(compare_table(result))
    if written:
        click.echo(f"Wrote {', '.join(p.name for p in written)} to {output}/")
