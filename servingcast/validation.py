"""Comparing the cost model with published measurements on real hardware.

Each usable row of a measurements CSV (the format of ``shared/validation``) becomes one
:func:`~servingcast.estimate` call with the device's calibrated efficiency factors —
the same for every row, never fitted per row — and one predicted number in the row's unit:

* use ``a`` (small-batch decode): tokens/s per user = 1000 / TPOT.
* use ``b`` (prefill): TTFT in ms of one request with one output token.
* use ``c`` (max throughput): static batch — output tokens/s per GPU at the row's batch;
  in-flight batching (batch "runtime-chosen") — total output tokens/s at the largest batch whose
  KV cache fits, capped at :data:`RUNTIME_MAX_BATCH` (TensorRT-LLM reserves each request's full
  ``isl + osl`` blocks at admission, its default scheduling policy, so that is the concurrency).

Rows whose model, device or precision is unknown, or whose configuration does not fit, are
reported as skipped with the reason.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from servingcast._estimate import estimate
from servingcast._text import read_text
from servingcast.errors import ConfigError, ServingcastError
from servingcast.specs.catalog import get_hardware
from servingcast.specs.hardware import HardwareSpec

#: The in-flight benchmark's engine limit on concurrent requests (trtllm-bench builds engines
#: with max_batch_size up to 2048 for these models).
RUNTIME_MAX_BATCH = 2048
#: gpt-fast's default generation length (``max_new_tokens=200``); those rows do not state one.
GPT_FAST_OUTPUT_LEN = 200

_PRECISIONS = {
    "fp8 (w8a8 + fp8 kv cache)": "fp8",
    "fp8 (fp8 kv cache)": "fp8",
    "fp16 (fp16 kv cache)": "fp16",
    "fp16": "fp16",
    "bf16": "bf16",
    "int8 weight-only": "w8a16",
    "int4 weight-only (g=32)": "w4a16-g32",
}

USES = {"a": "small-batch decode", "b": "prefill / TTFT", "c": "max throughput"}


@dataclass(frozen=True)
class Comparison:
    """One row: what was measured, what the model predicts, or why it was skipped."""

    row_id: str
    use: str
    description: str
    measured: float
    predicted: float | None
    unit: str
    skipped: str | None = None

    @property
    def error(self) -> float | None:
        """Signed relative error ``(predicted - measured) / measured``."""
        if self.predicted is None:
            return None
        return (self.predicted - self.measured) / self.measured


@dataclass(frozen=True)
class UseSummary:
    """Accuracy over the rows of one validation use."""

    use: str
    rows: int
    median_ape: float
    mean_ape: float
    worst: list[Comparison]


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


#: TensorRT-LLM gives the KV cache 90% of the memory free after loading (its default
#: ``free_gpu_memory_fraction``); gpt-fast preallocates only what it needs.
TRTLLM_FREE_GPU_MEMORY_FRACTION = 0.9


def predict_row(
    row: dict[str, str], hardware: Callable[[str], HardwareSpec] = get_hardware
) -> Comparison:
    """Predict one CSV row with the calibrated cost model (``hardware`` resolves device names)."""
    use = row["validation_use"][:1]
    desc = (f"{row['model']} {row['precision'].split(' ')[0]} {row['gpu_type']} "
            f"tp{row['tp']} isl{row['isl']} osl{row['osl'].split(' ')[0]} bs{row['batch_size']}")
    measured = float(row["value"])

    def skip(reason: str) -> Comparison:
        return Comparison(row["id"], use, desc, measured, None, row["unit"], reason)

    if use not in USES:
        return skip(f"validation use {row['validation_use']!r} not modelled")
    precision = _PRECISIONS.get(row["precision"].strip().lower())
    if precision is None:
        return skip(f"precision {row['precision']!r} not mapped")
    tp = _int(row["tp"]) or 1
    pp = _int(row["pp"]) or 1
    isl = _int(row["isl"])
    if isl is None:
        return skip("no input length")
    osl = _int(row["osl"].split(" ")[0]) or GPT_FAST_OUTPUT_LEN
    batch: int | str = _int(row["batch_size"]) or "max"
    trt = "tensorrt" in row["framework"].lower()
    fraction = TRTLLM_FREE_GPU_MEMORY_FRACTION if trt else None
    try:
        hw = hardware(row["gpu_type"])
        if use == "b":
            e = estimate(row["model"], hw, seq_len=isl, precision=precision, output_len=1,
                         tp=tp, pp=pp, kv_cache_free_memory_fraction=fraction)
            return Comparison(row["id"], use, desc, measured, e.ttft_ms, row["unit"])
        e = estimate(row["model"], hw, seq_len=isl, batch_size=batch, precision=precision,
                     output_len=osl, tp=tp, pp=pp, kv_cache_free_memory_fraction=fraction)
        if batch == "max" and e.batch_size > RUNTIME_MAX_BATCH:
            e = estimate(row["model"], hw, seq_len=isl, batch_size=RUNTIME_MAX_BATCH,
                         precision=precision, output_len=osl, tp=tp, pp=pp,
                         kv_cache_free_memory_fraction=fraction)
    except ConfigError as exc:
        return skip(str(exc).split(". To fix")[0])
    except ServingcastError as exc:
        return skip(str(exc).split(". To fix")[0])
    if use == "a":
        predicted = 1000.0 / e.tpot_ms
    elif "per gpu" in row["metric"].lower():
        predicted = e.output_tokens_per_s_per_gpu
    else:
        predicted = e.output_tokens_per_s
    return Comparison(row["id"], use, desc, measured, predicted, row["unit"])


def default_csv() -> Path:
    """The bundled copy of the published measurements (``tests/data`` in the source tree)."""
    root = Path(__file__).resolve().parents[1]
    name = "published_measurements.csv"
    candidates = [root / "tests" / "data" / name, root.parent / "shared" / "validation" / name]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        "no measurements CSV found next to the source tree. To fix: pass its path, e.g. "
        "'servingcast validate shared/validation/published_measurements.csv'"
    )


#: Columns :func:`predict_row` reads.
COLUMNS = ("id", "validation_use", "model", "precision", "gpu_type", "framework", "tp", "pp",
           "isl", "osl", "batch_size", "metric", "value", "unit")


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a measurements CSV (every column of :data:`COLUMNS` present)."""
    text = read_text(path, "measurements CSV")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
    except csv.Error as exc:
        raise ConfigError(f"{path}:{reader.line_num}: not valid CSV ({exc}). To fix: repair "
                          "the file, e.g. from tests/data/published_measurements.csv") from None
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(f"{path}:1: missing column(s) {', '.join(missing)}. To fix: use the "
                          "header of tests/data/published_measurements.csv")
    return rows


def compare(
    rows: Iterable[dict[str, str]], hardware: Callable[[str], HardwareSpec] = get_hardware
) -> list[Comparison]:
    """Predict every row."""
    return [predict_row(row, hardware) for row in rows]


def summarize(comparisons: list[Comparison], worst: int = 5) -> list[UseSummary]:
    """Median and mean absolute percentage error per use, with the worst rows."""
    out = []
    for use in USES:
        done = [c for c in comparisons if c.use == use and c.error is not None]
        if not done:
            continue
        apes = [abs(c.error) for c in done if c.error is not None]
        ranked = sorted(done, key=lambda c: -abs(c.error or 0.0))
        out.append(UseSummary(use, len(done), statistics.median(apes),
                              statistics.fmean(apes), ranked[:worst]))
    return out


def format_report(comparisons: list[Comparison], worst: int = 5) -> str:
    """A readable accuracy table."""
    lines = [f"{'use':<22} {'rows':>5} {'median APE':>11} {'mean APE':>9}"]
    summaries = summarize(comparisons, worst)
    for s in summaries:
        lines.append(f"{s.use + ' ' + USES[s.use]:<22} {s.rows:>5} {s.median_ape:>10.1%} "
                     f"{s.mean_ape:>9.1%}")
    skipped = [c for c in comparisons if c.skipped]
    lines.append(f"skipped rows: {len(skipped)}")
    for c in skipped:
        lines.append(f"  {c.row_id} {c.description}: {c.skipped}")
    for s in summaries:
        lines.append(f"worst rows, use {s.use} ({USES[s.use]}):")
        for c in s.worst:
            assert c.predicted is not None and c.error is not None
            lines.append(f"  {c.row_id:<6} {c.description:<58} measured {c.measured:>9.1f} "
                         f"predicted {c.predicted:>9.1f} {c.unit:<20} {c.error:+7.1%}")
    return "\n".join(lines)


def median_ape_by_use(comparisons: list[Comparison]) -> dict[str, float]:
    """``{use: median absolute percentage error}``."""
    return {s.use: s.median_ape for s in summarize(comparisons)}


__all__ = ["Comparison", "UseSummary", "compare", "format_report", "median_ape_by_use",
           "predict_row", "read_rows", "summarize"]
