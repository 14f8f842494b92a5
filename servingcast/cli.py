"""Command-line interface: ``servingcast`` (a group), ``servingcast-solve`` and
``servingcast-simulate``.

The CLI is a thin layer over the Python API. User mistakes (:class:`ServingcastError`) become
one line on stderr and exit code 2; ``--debug`` (or ``SERVINGCAST_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from servingcast import __version__
from servingcast._cli_calibrate import calibrate_command
from servingcast._cli_common import debug_option, handle_errors
from servingcast._cli_compare import compare_command
from servingcast._cli_sim import simulate_command
from servingcast._cli_solve import solve_command


class _BatchSize(click.ParamType):  # type: ignore[type-arg]
    name = "N|max"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "max":
            return "max"
        try:
            number = int(text)
        except ValueError:
            self.fail(f"{value!r} is not a whole number or 'max'", param, ctx)
        if number <= 0:
            self.fail(f"must be > 0, got {number}", param, ctx)
        return number


class _Efficiency(click.ParamType):  # type: ignore[type-arg]
    name = "E|calibrated"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, float):
            return value
        text = str(value).strip().lower()
        if text == "calibrated":
            return None
        try:
            number = float(text)
        except ValueError:
            self.fail(f"{value!r} is not a number in (0, 1] or 'calibrated'", param, ctx)
        if not 0.0 < number <= 1.0:
            self.fail(f"must be in (0, 1], got {number}", param, ctx)
        return number


_POSITIVE = click.IntRange(min=1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="servingcast")
def main() -> None:
    """Plan LLM inference serving: cost model estimates, the planner and the simulator."""


@main.command()
@click.option("-m", "--model", required=True,
              help="Catalog name (llama-3.1-70b), HF config.json or its folder.")
@click.option("-g", "--hardware", required=True, help="Catalog device (h100-sxm).")
@click.option("--tp", type=_POSITIVE, default=1, show_default=True, help="Tensor parallel.")
@click.option("--pp", type=_POSITIVE, default=1, show_default=True, help="Pipeline parallel.")
@click.option("--ep", type=_POSITIVE, default=1, show_default=True,
              help="Expert parallel (MoE; divides tp).")
@click.option("--dp", type=_POSITIVE, default=1, show_default=True, help="Replicas.")
@click.option("--attn-dp", type=_POSITIVE, default=1, show_default=True,
              help="Attention data-parallel ranks per engine, experts over all attn-dp x tp "
              "GPUs (MoE), e.g. 16; --batch-size is then the engine's total.")
@click.option("-b", "--batch-size", type=_BatchSize(), default=1, show_default=True,
              help="Requests in the static batch, or 'max' (largest that fits).")
@click.option("-i", "--input-len", type=int, required=True, help="Prompt tokens, e.g. 2048.")
@click.option("-o", "--output-len", type=int, required=True, help="Output tokens, e.g. 256.")
@click.option("-p", "--precision", default="fp16", show_default=True,
              help="fp16, bf16, fp8, int8, w8a16, w4a16, w4a16-g32, fp4, fp32.")
@click.option("--kv-cache-dtype", default=None, help="Override the KV-cache dtype (fp8).")
@click.option("--efficiency", type=_Efficiency(), default="calibrated", show_default=True,
              help="Fraction of peak, e.g. 0.5, or 'calibrated' per-device defaults.")
@click.option("--decode-hardware", default=None,
              help="Disaggregated: run decode on this device.")
@click.option("--network-bandwidth", default="100 GB/s", show_default=True,
              help="Prefill->decode KV link, e.g. '400 Gb/s'.")
@click.option("--draft-model", default=None, help="Speculative decoding draft model.")
@click.option("--draft-acceptance-rate", type=float, default=0.7, show_default=True,
              help="Per-token acceptance rate in [0, 1].")
@click.option("--num-speculative-tokens", type=int, default=4, show_default=True,
              help="Draft tokens per step (k).")
@click.option("--cached-prefix-len", type=int, default=0, show_default=True,
              help="Prompt tokens already cached (< input-len).")
@click.option("--prefill-chunk-tokens", type=int, default=None,
              help="Chunked prefill budget per iteration, e.g. 512.")
@click.option("--gpu-memory-utilization", type=float, default=0.9, show_default=True,
              help="Fraction of HBM the engine may use (vLLM).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@debug_option
@handle_errors
def estimate(
    model: str, hardware: str, tp: int, pp: int, ep: int, dp: int, attn_dp: int,
    batch_size: int | str,
    input_len: int, output_len: int, precision: str, kv_cache_dtype: str | None,
    efficiency: float | None, decode_hardware: str | None, network_bandwidth: str,
    draft_model: str | None, draft_acceptance_rate: float, num_speculative_tokens: int,
    cached_prefix_len: int, prefill_chunk_tokens: int | None, gpu_memory_utilization: float,
    as_json: bool,
) -> None:
    """Estimate TTFT, TPOT, throughput and memory of one configuration.

    Example: servingcast estimate --model llama-3.1-70b --hardware h100-sxm --tp 4
    --batch-size 64 --input-len 2048 --output-len 256
    """
    from servingcast import report
    from servingcast._estimate import estimate as run_estimate

    result = run_estimate(
        model, hardware, seq_len=input_len, batch_size=batch_size, precision=precision,
        efficiency=efficiency, decode_hardware=decode_hardware,
        network_bandwidth=network_bandwidth, draft_model=draft_model,
        draft_acceptance_rate=draft_acceptance_rate, cached_prefix_len=cached_prefix_len,
        prefill_chunk_tokens=prefill_chunk_tokens, output_len=output_len, tp=tp, pp=pp, ep=ep,
        dp=dp, attn_dp=attn_dp,
        num_speculative_tokens=num_speculative_tokens, kv_cache_dtype=kv_cache_dtype,
        gpu_memory_utilization=gpu_memory_utilization,
    )
    label = "calibrated" if efficiency is None else f"flat {efficiency:g}"
    click.echo(report.estimate_json(result) if as_json else report.estimate_table(result, label))


@main.command()
@click.argument("kind", type=click.Choice(["hardware", "models"]))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@debug_option
@handle_errors
def catalog(kind: str, as_json: bool) -> None:
    """List the hardware or model catalog (configs/hardware, configs/models)."""
    import json

    from servingcast import report
    from servingcast.specs import hardware_catalog, model_catalog

    if kind == "hardware":
        hw = list(hardware_catalog().values())
        click.echo(json.dumps([h.model_dump() for h in hw], indent=2) if as_json
                   else report.hardware_table(hw))
    else:
        models = list(model_catalog().values())
        click.echo(json.dumps([m.model_dump() for m in models], indent=2) if as_json
                   else report.model_table(models))


@main.command()
@click.argument("csv_path", type=click.Path(path_type=Path), required=False)
@click.option("--worst", type=int, default=5, show_default=True, help="Worst rows per use.")
@click.option("--serving", is_flag=True, help="Reproduce MLPerf serving summaries through the "
              "simulator instead (default CSV: serving_measurements.csv; a few minutes).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@debug_option
@handle_errors
def validate(csv_path: Path | None, worst: int, serving: bool, as_json: bool) -> None:
    """Compare the cost model with published measurements (default: the bundled CSV)."""
    import dataclasses
    import json

    from servingcast.validation import compare, default_csv, format_report, read_rows

    if serving:
        from servingcast._validation_serving_format import (
            format_serving_report,
            serving_report_dict,
        )
        from servingcast.validation_serving import default_serving_csv, validate_serving

        report = validate_serving(
            read_rows(csv_path or default_serving_csv()),
            progress=lambda run: click.echo(f"simulating {run.run_id} {run.label}", err=True))
        click.echo(json.dumps(serving_report_dict(report), indent=2) if as_json
                   else format_serving_report(report))
        return
    comparisons = compare(read_rows(csv_path or default_csv()))
    click.echo(json.dumps([{**dataclasses.asdict(c), "error": c.error} for c in comparisons],
                          indent=2) if as_json else format_report(comparisons, worst))


main.add_command(simulate_command, "simulate")
main.add_command(solve_command, "solve")
main.add_command(calibrate_command, "calibrate")
main.add_command(compare_command, "compare")

if __name__ == "__main__":
    main()
