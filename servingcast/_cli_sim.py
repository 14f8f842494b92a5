"""``servingcast-simulate SCENARIO``: the simulator's command (wired in by :mod:`servingcast.cli`).

Everything is validated before anything is written: the scenario (and the files it names), the
options, and the output folder (see :mod:`servingcast._output`: result files already there are
replaced only with ``--force``; an error leaves nothing behind).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from servingcast._cli_common import debug_option, handle_errors
from servingcast._output import check_output_dir, write_outputs
from servingcast.errors import ConfigError

RESULT_FILES = ("summary.json", "requests.csv")


def _check_output(output: Path | None, force: bool, plots: bool, trace: bool) -> None:
    if output is None:
        needs = [flag for flag, on in (("--plots", plots), ("--trace", trace)) if on]
        if needs:
            raise ConfigError(f"{' and '.join(needs)} write files. To fix: add --output DIR")
        return
    names = [*RESULT_FILES, *(["trace.json"] if trace else [])]
    check_output_dir(output, names, force)


def _progress(quiet: bool, total: int) -> tuple[Callable[[int, int], None] | None, object]:
    if quiet or not sys.stderr.isatty():
        return None, None
    bar = click.progressbar(length=total, label="simulating", file=sys.stderr)
    bar.__enter__()
    state = {"done": 0}

    def update(done: int, _total: int) -> None:
        bar.update(done - state["done"])
        state["done"] = done

    return update, bar


@click.command("simulate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("scenario", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Folder for summary.json and requests.csv (and plots, trace), e.g. results/.")
@click.option("--plots", is_flag=True,
              help="Also write PNGs: latency CDFs, throughput and queue, KV usage over time.")
@click.option("--trace", "chrome_trace", is_flag=True,
              help="Also write trace.json, the batches of every instance (chrome://tracing).")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No table and no progress bar.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Override the scenario's seed (>= 0), e.g. 1.")
@click.option("-f", "--force", is_flag=True,
              help="Write into an existing non-empty --output folder, replacing result files.")
@debug_option
@handle_errors
def simulate_command(scenario: Path, output: Path | None, plots: bool, chrome_trace: bool,
                     as_json: bool, quiet: bool, seed: int | None, force: bool) -> None:
    """Simulate serving SCENARIO (a YAML file) and report latency, throughput and SLOs.

    Example: servingcast-simulate configs/scenarios/single-instance.yaml --output results/
    """
    from servingcast.sim.api import simulate
    from servingcast.sim.report import chrome_trace as trace_json
    from servingcast.sim.report import summary_json, summary_table
    from servingcast.sim.scenario import load_scenario
    from servingcast.workload import generate_requests

    _check_output(output, force, plots, chrome_trace)
    loaded = load_scenario(scenario, seed)
    import numpy as np

    requests = generate_requests(loaded.workload, np.random.default_rng(loaded.seed))
    progress, bar = _progress(quiet, len(requests))
    try:
        result = simulate(loaded, requests=requests, timeseries=plots, trace=chrome_trace,
                          progress=progress)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)  # type: ignore[attr-defined]
    if output is not None:
        files: dict[str, str | bytes] = {"summary.json": summary_json(result),
                                         "requests.csv": result.requests.to_csv()}
        if chrome_trace:
            files["trace.json"] = trace_json(result)
        if plots:
            from servingcast.sim.plots import plot_pngs

            files.update(plot_pngs(result))
        write_outputs(files, output, force=force)
        if not quiet:
            click.echo(f"wrote {', '.join(files)} to {output}", err=True)
    if as_json:
        click.echo(summary_json(result), nl=False)
    elif not quiet:
        click.echo(summary_table(result))


def main() -> None:
    """Entry point of ``servingcast-simulate``."""
    simulate_command()
