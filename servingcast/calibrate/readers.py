"""Benchmark result files → :class:`Measurement` records, one per measured run.

Formats (detected from the file's content; ``.csv`` from its name):

* ``vllm`` — ``vllm bench serve --save-result`` JSON (``--append-result`` files hold one JSON
  object per line). Keys read: ``completed``, ``failed``, ``num_prompts``,
  ``total_input_tokens``, ``total_output_tokens``, ``request_rate`` (``"inf"`` when unset),
  ``burstiness``, ``max_concurrency``, ``model_id``, ``{mean,median,p99}_{ttft,tpot}_ms``,
  ``output_throughput``, ``request_throughput``; and ``tp``/``pp``/``hardware``/``precision``
  when recorded with ``--metadata tp=2 ...``.
* ``sglang`` — ``python -m sglang.bench_serving`` JSONL, one run a line: the same metric keys,
  plus ``total_output_tokens_retokenized`` and ``random_input_len`` (how it is told from vLLM's).
  Its ``concurrency`` key is the *measured* mean concurrency; the client's limit is
  ``max_concurrency``.
* ``genai-perf`` / ``aiperf`` — ``profile_export_genai_perf.json`` and
  ``profile_export_aiperf.json``: one object per metric with ``unit``, ``avg``, ``p50``,
  ``p99`` (``time_to_first_token``, ``inter_token_latency``, ``output_token_throughput``,
  ``request_throughput``, ``input_sequence_length``, ``output_sequence_length``,
  ``request_count``) and the run's settings under ``input_config`` (model names,
  ``concurrency`` or ``request_rate``; the layout differs between versions, so they are
  looked up by key anywhere inside it).
* ``csv`` — one run a row, columns in :data:`CSV_COLUMNS`.

Lengths are means over the run (total tokens / completed requests). TPOT is the time per output
token after the first, per request (vLLM's ``tpot``; genai-perf's and AIPerf's
``inter_token_latency`` are defined the same way).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from servingcast._text import read_text
from servingcast.errors import ConfigError

Format = Literal["vllm", "sglang", "genai-perf", "aiperf", "csv"]

#: How each format is named in messages.
FORMAT_NAMES: dict[str, str] = {
    "vllm": "vllm bench serve result",
    "sglang": "SGLang bench_serving result",
    "genai-perf": "genai-perf profile export",
    "aiperf": "AIPerf profile export",
    "csv": "calibration CSV",
}
#: Largest result file read.
MAX_RESULT_BYTES = 64 * 2**20
#: Columns of the CSV format: name → meaning. ``model``/``tp`` may come from the command line.
CSV_COLUMNS: dict[str, str] = {
    "model": "catalog model name or Hugging Face id, e.g. llama-3.1-8b",
    "hardware": "device the run used (optional; must be the --hardware device)",
    "tp": "tensor-parallel size",
    "pp": "pipeline-parallel size (default 1)",
    "precision": "bf16, fp8, ... (default: --precision, else bf16)",
    "input_len": "mean prompt tokens",
    "output_len": "mean output tokens",
    "concurrency": "client's limit on requests in flight (closed loop)",
    "request_rate_per_s": "Poisson arrival rate, requests/s (open loop)",
    "num_prompts": "requests sent in the run",
    "ttft_ms": "mean TTFT, ms (alias: mean_ttft_ms)",
    "median_ttft_ms": "median TTFT, ms",
    "p99_ttft_ms": "99th-percentile TTFT, ms",
    "tpot_ms": "mean TPOT, ms (alias: mean_tpot_ms)",
    "median_tpot_ms": "median TPOT, ms",
    "p99_tpot_ms": "99th-percentile TPOT, ms",
    "output_throughput_tok_s": "output tokens/s over the run",
    "request_throughput_per_s": "completed requests/s over the run",
    "label": "free text (ignored)",
    "notes": "free text (ignored)",
}
_CSV_ALIASES = {"mean_ttft_ms": "ttft_ms", "mean_tpot_ms": "tpot_ms"}
_MS_PER_UNIT = {"ms": 1.0, "s": 1e3, "sec": 1e3, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}


@dataclass(frozen=True)
class Stat:
    """A latency's mean, median and 99th percentile over a run's requests, in ms (or None)."""

    mean: float | None = None
    median: float | None = None
    p99: float | None = None

    @property
    def empty(self) -> bool:
        """No statistic given."""
        return self.mean is None and self.median is None and self.p99 is None


@dataclass(frozen=True)
class Measurement:
    """One measured serving run, as a benchmark client reported it.

    ``concurrency`` is the client's limit on requests in flight (a closed loop when
    ``request_rate_per_s`` is None); ``request_rate_per_s`` the rate of Poisson arrivals (gamma
    when ``burstiness`` ≠ 1, as vLLM draws them). ``model``, ``tp`` and ``precision`` are None
    when the file does not record them.
    """

    source: str
    format: Format
    input_len: float
    output_len: float
    model: str | None = None
    hardware: str | None = None
    tp: int | None = None
    pp: int = 1
    precision: str | None = None
    concurrency: int | None = None
    request_rate_per_s: float | None = None
    burstiness: float = 1.0
    num_prompts: int | None = None
    ttft_ms: Stat = field(default_factory=Stat)
    tpot_ms: Stat = field(default_factory=Stat)
    output_throughput_tok_s: float | None = None
    request_throughput_per_s: float | None = None

    @property
    def describe(self) -> str:
        """Short description: model, parallelism, load and lengths."""
        par = f"tp{self.tp or '?'}" + (f" pp{self.pp}" if self.pp > 1 else "")
        if self.request_rate_per_s is not None:
            load = f"{self.request_rate_per_s:g} req/s"
        else:
            load = f"c={self.concurrency or self.num_prompts}"
        return (f"{self.model or '?'} {par} {load} in {self.input_len:.0f} "
                f"out {self.output_len:.0f}")


class _Record:
    """One JSON object or CSV row of a file, with the place to name in errors."""

    def __init__(self, data: dict[str, Any], where: str, fmt: Format) -> None:
        self.data = data
        self.where = where
        self.fmt = fmt

    def error(self, message: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.where} ({FORMAT_NAMES[self.fmt]}): {message}. To fix: {fix}")

    def number(self, key: str, value: Any = None, *, required: bool = False,
               positive: bool = False) -> float | None:
        """``data[key]`` (or ``value``) as a finite number; None when absent or empty."""
        raw = self.data.get(key) if value is None else value
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if required:
                raise self.error(f"no {key!r} field", f"pass the file the benchmark wrote, "
                                 f"unedited, or add {key!r}")
            return None
        try:
            number = float(raw)
            if isinstance(raw, bool):
                raise ValueError
        except (TypeError, ValueError):
            raise self.error(f"{key} is {raw!r}, not a number",
                             f"write {key} as a number") from None
        if not math.isfinite(number) or number < 0 or (positive and number == 0):
            raise self.error(f"{key} must be a finite number {'>' if positive else '>='} 0, "
                             f"got {raw!r}", f"correct {key}")
        return number

    def whole(self, key: str, value: Any = None, *, required: bool = False) -> int | None:
        """``data[key]`` as a whole number >= 1; None when absent."""
        number = self.number(key, value, required=required, positive=True)
        if number is None:
            return None
        if number != int(number):
            raise self.error(f"{key} must be a whole number, got {number:g}",
                             f"correct {key}")
        return int(number)

    def text(self, *keys: str) -> str | None:
        """The first of ``keys`` holding a non-empty string."""
        for key in keys:
            value = self.data.get(key)
            if isinstance(value, list) and value:
                value = value[0]
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None


# -- JSON formats -------------------------------------------------------------------------------


def _json_records(path: Path, text: str) -> list[tuple[dict[str, Any], str]]:
    """Objects of a JSON file (one object, a list of them) or of JSON lines, with places."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        out = []
        for n, line in lines:
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"{path}:{n}: not JSON ({exc.msg}, column {exc.colno}), nor is the file one "
                    "JSON document. To fix: pass the file the benchmark wrote, unedited") from None
            out.append((value, f"{path}:{n}" if len(lines) > 1 else str(path)))
    else:
        values = data if isinstance(data, list) else [data]
        out = [(v, f"{path} (record {k})" if len(values) > 1 else str(path))
               for k, v in enumerate(values, 1)]
    for value, where in out:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a JSON object of results, got "
                              f"{type(value).__name__}. To fix: pass the file the benchmark "
                              "wrote, unedited")
    if not out:
        raise ConfigError(f"{path}: holds no results. To fix: pass a result file that holds runs")
    return out


def _detect(data: dict[str, Any]) -> Format | None:
    stats = data.get("time_to_first_token")
    if isinstance(stats, dict):
        aiperf = ("benchmark_duration", "request_count", "was_cancelled", "error_summary")
        return "aiperf" if any(k in data for k in aiperf) else "genai-perf"
    if any(k in data for k in ("mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms")):
        if "total_output_tokens_retokenized" in data or "random_input_len" in data:
            return "sglang"
        return "vllm"
    return None


def _find(data: Any, key: str, depth: int = 4) -> Any:
    """The value of ``key`` in ``data`` or in the mappings nested in it (breadth first)."""
    level = [data]
    for _ in range(depth + 1):
        nested: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                if item.get(key) is not None:
                    return item[key]
                nested.extend(v for v in item.values() if isinstance(v, dict))
        level = nested
    return None


def _rate_and_concurrency(rec: _Record, rate_raw: Any, conc_raw: Any) -> tuple[
        float | None, int | None]:
    """Open-loop rate (None for 'inf' or unset) and the client's concurrency limit."""
    rate = None
    if isinstance(rate_raw, str) and rate_raw.strip().lower() in ("inf", "infinity"):
        rate_raw = None
    if isinstance(rate_raw, (int, float)) and not isinstance(rate_raw, bool) and (
            math.isinf(rate_raw)):
        rate_raw = None
    if rate_raw is not None:
        rate = rec.number("request_rate", rate_raw, positive=True)
    concurrency = rec.whole("max_concurrency", conc_raw) if conc_raw is not None else None
    return rate, concurrency


def _parallel(rec: _Record) -> tuple[int | None, int]:
    tp_key = next((k for k in ("tp", "tensor_parallel_size", "tp_size") if k in rec.data), None)
    pp_key = next((k for k in ("pp", "pipeline_parallel_size", "pp_size") if k in rec.data), None)
    tp = rec.whole(tp_key) if tp_key else None
    pp = rec.whole(pp_key) if pp_key else None
    return tp, pp or 1


def _lengths(rec: _Record) -> tuple[float, float, int]:
    completed = rec.whole("completed", required=True)
    assert completed is not None
    total_in = rec.number("total_input_tokens", required=True, positive=True)
    total_out = rec.number("total_output_tokens", required=True, positive=True)
    assert total_in is not None and total_out is not None
    return total_in / completed, total_out / completed, completed


def _bench_serve(rec: _Record) -> Measurement:
    """vLLM's ``bench serve`` and SGLang's ``bench_serving`` (the same keys)."""
    input_len, output_len, completed = _lengths(rec)
    failed = rec.whole("failed") if rec.data.get("failed") else None
    rate, concurrency = _rate_and_concurrency(rec, rec.data.get("request_rate"),
                                              rec.data.get("max_concurrency"))
    tp, pp = _parallel(rec)
    num_prompts = rec.whole("num_prompts") or completed + (failed or 0)
    burstiness = rec.number("burstiness", positive=True) or 1.0

    def stat(metric: str) -> Stat:
        return Stat(*(rec.number(f"{s}_{metric}_ms") for s in ("mean", "median", "p99")))

    return Measurement(
        source=rec.where, format=rec.fmt, input_len=input_len, output_len=output_len,
        model=rec.text("model_id", "model", "tokenizer_id"), hardware=rec.text("hardware", "gpu"),
        tp=tp, pp=pp, precision=rec.text("precision", "dtype"), concurrency=concurrency,
        request_rate_per_s=rate, burstiness=burstiness, num_prompts=num_prompts,
        ttft_ms=stat("ttft"), tpot_ms=stat("tpot"),
        output_throughput_tok_s=rec.number("output_throughput"),
        request_throughput_per_s=rec.number("request_throughput"),
    )


def _profile_stat(rec: _Record, key: str, *, to_ms: bool) -> Stat:
    entry = rec.data.get(key)
    if entry is None:
        return Stat()
    if not isinstance(entry, dict):
        raise rec.error(f"{key} is {entry!r}, not an object with avg/p50/p99",
                        "pass the file the benchmark wrote, unedited")
    scale = 1.0
    if to_ms:
        unit = str(entry.get("unit", "ms")).strip().lower()
        if unit not in _MS_PER_UNIT:
            raise rec.error(f"{key} is in {unit!r}, not a time unit",
                            "pass the file the benchmark wrote, unedited")
        scale = _MS_PER_UNIT[unit]

    def value(name: str) -> float | None:
        number = rec.number(f"{key}.{name}", entry.get(name))
        return None if number is None else number * scale

    return Stat(value("avg"), value("p50"), value("p99"))


def _profile_export(rec: _Record) -> Measurement:
    """genai-perf's and AIPerf's aggregated profile exports."""
    lengths = [_profile_stat(rec, k, to_ms=False).mean
               for k in ("input_sequence_length", "output_sequence_length")]
    for key, mean in zip(("input_sequence_length", "output_sequence_length"), lengths,
                         strict=True):
        if mean is None or mean <= 0:
            raise rec.error(f"no {key}.avg > 0", "pass the file the benchmark wrote, unedited")
    config = rec.data.get("input_config") or {}
    model = _find(config, "model_names") or _find(config, "model")
    if isinstance(model, list):
        model = model[0] if model else None
    rate, concurrency = _rate_and_concurrency(rec, _find(config, "request_rate"),
                                              _find(config, "concurrency"))
    count = _profile_stat(rec, "request_count", to_ms=False).mean or _find(config,
                                                                           "request_count")
    tp, pp = _parallel(rec)
    return Measurement(
        source=rec.where, format=rec.fmt, input_len=float(lengths[0] or 0),
        output_len=float(lengths[1] or 0), model=model if isinstance(model, str) else None,
        tp=tp, pp=pp, concurrency=concurrency, request_rate_per_s=rate,
        num_prompts=rec.whole("request_count", count) if count else None,
        ttft_ms=_profile_stat(rec, "time_to_first_token", to_ms=True),
        tpot_ms=_profile_stat(rec, "inter_token_latency", to_ms=True),
        output_throughput_tok_s=_profile_stat(rec, "output_token_throughput", to_ms=False).mean,
        request_throughput_per_s=_profile_stat(rec, "request_throughput", to_ms=False).mean,
    )


# -- CSV ----------------------------------------------------------------------------------------


def _csv_rows(path: Path, text: str) -> Iterator[_Record]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise ConfigError(f"{path}: empty CSV. To fix: write a header row, e.g. "
                          "model,tp,input_len,output_len,concurrency,ttft_ms,tpot_ms,"
                          "output_throughput_tok_s")
    for name in header:
        if _CSV_ALIASES.get(name, name) not in CSV_COLUMNS:
            close = difflib.get_close_matches(name, [*CSV_COLUMNS, *_CSV_ALIASES], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{path}: unknown column {name!r}. To fix: {hint}use the columns "
                              f"{', '.join(CSV_COLUMNS)}")
    for required in ("input_len", "output_len"):
        if required not in header:
            raise ConfigError(f"{path}: no {required!r} column. To fix: add it "
                              f"({CSV_COLUMNS[required]})")
    for number, row in enumerate(reader, 2):
        data = {_CSV_ALIASES.get(k.strip(), k.strip()): v.strip() if isinstance(v, str) else v
                for k, v in row.items() if k is not None}
        if any(isinstance(v, list) for v in data.values()) or None in row:
            raise ConfigError(f"{path}:{number}: more cells than columns. To fix: quote cells "
                              "that hold commas")
        if all(not v for v in data.values()):
            continue
        yield _Record(data, f"{path}:{number}", "csv")


def _csv_measurement(rec: _Record) -> Measurement:
    input_len = rec.number("input_len", required=True, positive=True)
    output_len = rec.number("output_len", required=True, positive=True)
    assert input_len is not None and output_len is not None
    rate = rec.number("request_rate_per_s", positive=True)
    concurrency = rec.whole("concurrency")
    num_prompts = rec.whole("num_prompts")
    if rate is None and concurrency is None and num_prompts is None:
        raise rec.error("neither concurrency nor request_rate_per_s is given",
                        "add the client's concurrency limit (concurrency) or its arrival rate "
                        "(request_rate_per_s)")

    def stat(metric: str) -> Stat:
        return Stat(rec.number(f"{metric}_ms"), rec.number(f"median_{metric}_ms"),
                    rec.number(f"p99_{metric}_ms"))

    tp, pp = _parallel(rec)
    return Measurement(
        source=rec.where, format="csv", input_len=input_len, output_len=output_len,
        model=rec.text("model"), hardware=rec.text("hardware"), tp=tp, pp=pp,
        precision=rec.text("precision"), concurrency=concurrency, request_rate_per_s=rate,
        num_prompts=num_prompts, ttft_ms=stat("ttft"), tpot_ms=stat("tpot"),
        output_throughput_tok_s=rec.number("output_throughput_tok_s"),
        request_throughput_per_s=rec.number("request_throughput_per_s"),
    )


# -- entry points -------------------------------------------------------------------------------

_PARSERS: dict[Format, Callable[[_Record], Measurement]] = {
    "vllm": _bench_serve, "sglang": _bench_serve, "genai-perf": _profile_export,
    "aiperf": _profile_export, "csv": _csv_measurement,
}


def _check(m: Measurement, rec: _Record) -> Measurement:
    if m.ttft_ms.empty and m.tpot_ms.empty and m.output_throughput_tok_s is None and (
            m.request_throughput_per_s is None):
        raise rec.error("no TTFT, TPOT or throughput figure",
                        "keep the metrics in the file (e.g. mean_ttft_ms, mean_tpot_ms, "
                        "output_throughput)")
    if m.request_rate_per_s is None and m.concurrency is None and m.num_prompts is None:
        raise rec.error("neither a request rate, a concurrency limit nor the number of "
                        "requests is recorded", "pass the file the benchmark wrote, unedited")
    return m


def read_results(path: str | Path) -> list[Measurement]:
    """Every run in the result file ``path`` (format detected; see the module docstring)."""
    path = Path(path)
    text = read_text(path, "benchmark result file", MAX_RESULT_BYTES)
    if path.suffix.lower() == ".csv":
        records: Iterable[_Record] = list(_csv_rows(path, text))
    else:
        records = []
        for data, where in _json_records(path, text):
            fmt = _detect(data)
            if fmt is None:
                raise ConfigError(
                    f"{where}: not a benchmark result this reads (no mean_ttft_ms as vllm bench "
                    "serve and SGLang bench_serving write, nor a time_to_first_token object as "
                    "genai-perf and AIPerf write). To fix: pass a vllm bench serve "
                    "--save-result JSON, an SGLang bench_serving JSONL, a genai-perf or AIPerf "
                    "profile_export_*.json, or a .csv with the columns "
                    + ", ".join(CSV_COLUMNS))
            records.append(_Record(data, where, fmt))
    out = [_check(_PARSERS[rec.fmt](rec), rec) for rec in records]
    if not out:
        raise ConfigError(f"{path}: holds no runs. To fix: add one row per measured run")
    return out


def read_all(paths: Iterable[str | Path]) -> list[Measurement]:
    """Every run of every file, in order."""
    return [m for path in paths for m in read_results(path)]
