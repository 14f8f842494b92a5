"""``servingcast-simulate SCENARIO``: the simulator's command (wired in by :mod:`servingcast.cli`).

Everything is validated before anything is written: the scenario (and the files it names), the
options, and the output folder, which must be new or empty unless ``--force``. The results are
written to a temporary folder beside it and moved into place when complete, so an error leaves
nothing behind.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import click

from servingcast._cli_common import debug_option, handle_errors
from servingcast.errors import ConfigError

RESULT_FILES = ("summary.json", "requests.csv")


def _check_output(output: Path | None, force: bool, plots: bool, trace: bool) -> None:
    if output is None:
        needs = [flag for flag, on in (("--plots", plots), ("--trace", trace)) if on]
        if needs:
            raise ConfigError(f"{' and '.join(needs)} write files. To fix: add --output DIR")
        return
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file, not a folder. To fix: choose a folder "
                          "name")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise ConfigError(f"--output {output} already exists and is not empty. To fix: choose a "
                          "new folder, or pass --force to replace the result files in it "
                          f"({', '.join(RESULT_FILES)}, plots, trace.json)")
    parent = output.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot create --output {output}: {parent} is not writable")


def _write(output: Path, files: dict[str, str | bytes]) -> None:
    """Write ``files`` into ``output`` atomically (temp folder beside it, then rename)."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        for name, content in files.items():
            target = tmp / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        if not output.exists():
            tmp.rename(output)
            return
        for name in files:
            os.replace(tmp / name, output / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
@click.option("--seed", type=int, default=None, help="Override the scenario's seed, e.g. 1.")
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
        _write(output, files)
        if not quiet:
            click.echo(f"wrote {', '.join(files)} to {output}", err=True)
    if as_json:
        click.echo(summary_json(result), nl=False)
    elif not quiet:
        click.echo(summary_table(result))


def main() -> None:
    """Entry point of ``servingcast-simulate``."""
    simulate_command()
