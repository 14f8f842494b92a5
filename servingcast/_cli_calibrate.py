"""``servingcast calibrate RESULTS...``: fit a device to the user's own benchmarks.

The output file is checked before any work (a ``.yaml`` name, not there already unless
``--force``, a writable folder) and written atomically once the fit is done.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from servingcast._cli_common import debug_option, handle_errors
from servingcast.engines import ENGINES
from servingcast.errors import ConfigError


@click.command("calibrate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-g", "--hardware", required=True,
              help="Device the runs were measured on: catalog name (h100-sxm) or a hardware "
                   "YAML; its datasheet figures are kept, its factors are the starting point.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Hardware YAML to write, e.g. my-h100.yaml.")
@click.option("--engine", type=click.Choice(ENGINES), default=None,
              help="Serving engine the runs measured; recorded in the file.")
@click.option("-m", "--model", default=None,
              help="Model of runs whose files name none the catalog knows, e.g. llama-3.1-8b.")
@click.option("--tp", type=click.IntRange(min=1), default=None,
              help="Tensor-parallel size of runs whose files do not record it, e.g. 1.")
@click.option("-p", "--precision", default=None,
              help="Precision of runs whose files do not record it (default bf16), e.g. fp8.")
@click.option("--max-requests", type=click.IntRange(min=1), default=None,
              help="Requests simulated per run at most, e.g. 500 (default 200).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the simulated arrivals, e.g. 1.")
@click.option("-f", "--force", is_flag=True, help="Overwrite --output if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the fit as JSON.")
@debug_option
@handle_errors
def calibrate_command(
    results: tuple[Path, ...], hardware: str, output: Path, engine: str | None,
    model: str | None, tp: int | None, precision: str | None, max_requests: int | None,
    seed: int, force: bool, as_json: bool,
) -> None:
    """Fit the device's efficiency factors and overheads to measured serving runs and write
    them as a hardware file that estimate, simulate and solve accept.

    RESULTS: vllm bench serve --save-result JSON, SGLang bench_serving JSONL, genai-perf or
    AIPerf profile_export_*.json, or a CSV (one run a row; see README).

    Example: servingcast calibrate results/*.json --hardware h100-sxm --tp 1
    --output my-h100.yaml
    """
    from servingcast._output import check_output_dir, write_outputs
    from servingcast.calibrate import (
        Defaults,
        calibrate,
        calibration_dict,
        format_report,
        hardware_yaml,
        read_all,
    )
    from servingcast.calibrate.report import device_name
    from servingcast.calibrate.runs import DEFAULT_MAX_REQUESTS

    if output.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"--output {output}: a hardware file ends in .yaml. To fix: e.g. "
                          f"--output {output.with_suffix('.yaml').name}")
    check_output_dir(output.parent, [output.name], force)
    if output.exists() and not output.is_file():
        raise ConfigError(f"--output {output} is not a file. To fix: choose a file name")
    measurements = read_all(results)
    cal = calibrate(measurements, hardware,
                    defaults=Defaults(model=model, tp=tp, precision=precision), seed=seed,
                    max_requests=max_requests or DEFAULT_MAX_REQUESTS)
    text = hardware_yaml(cal, device_name(output.stem, cal.base.name), engine)
    written = write_outputs({output.name: text}, output.parent, force)[0]
    if as_json:
        click.echo(json.dumps(calibration_dict(cal) | {"output": str(written),
                                                        "engine": engine}, indent=2))
        return
    click.echo(format_report(cal))
    click.echo(f"\nWrote {written}; use it as a device, e.g. servingcast estimate "
               f"--hardware {written} ...")
