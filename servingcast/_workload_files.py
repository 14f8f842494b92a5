"""Reading the files a workload names: trace replays (CSV or JSONL) and lists of lengths.

Errors name the file and line and say how to fix them; :mod:`servingcast.workload` turns them into
validation errors of the scenario field that named the file.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from servingcast._text import read_text
from servingcast.errors import ConfigError

_TRACE_REQUIRED = ("arrival_time", "input_len", "output_len")
_TRACE_OPTIONAL = ("prefix_group", "prefix_len")
_RELATIVE = " (relative paths start at the scenario file's folder)"
#: Most requests a trace may hold (the simulator's limit on requests).
MAX_TRACE_ROWS = 10_000_000
#: Longest prompt or output of one request, in tokens.
MAX_TRACE_TOKENS = 10_000_000


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` of a CSV (header first) or JSONL file."""
    lines = read_text(path, "trace", hint=_RELATIVE).splitlines()
    if path.suffix in (".jsonl", ".ndjson"):
        rows = []
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise ConfigError(f"{path}:{number}: expected a JSON object per line")
                rows.append((number, row))
        return rows
    reader = csv.DictReader(line for line in lines if not line.startswith("#"))
    first = next((i for i, line in enumerate(lines, 1) if not line.startswith("#")), 1)
    try:
        return [(first + i + 1, dict(row)) for i, row in enumerate(reader)]
    except csv.Error as exc:
        raise ConfigError(f"{path}:{first + reader.line_num - 1}: not valid CSV ({exc}). To fix: "
                          "write a header line, then one comma-separated row per request") \
            from None


def _number(path: Path, line: int, row: dict[str, Any], column: str, kind: type) -> Any:
    value = row.get(column)
    if value is None or value == "":
        raise ConfigError(f"{path}:{line}: column {column!r} is missing. To fix: give every row "
                          f"{', '.join(_TRACE_REQUIRED)}")
    what = "whole number" if kind is int else "number"
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    else:
        if not math.isfinite(number):  # nan, inf: read by float() but never a time or length
            what = f"finite {what}"
    if not math.isfinite(number) or (kind is int and number != int(number)):
        raise ConfigError(f"{path}:{line}: {column} = {value!r} is not a {what}. To fix: write "
                          f"e.g. {'512' if kind is int else '0.25'} (no nan or inf)")
    return kind(number)


def read_trace(path: Path, default_prefix_len: int | None = None) -> dict[str, npt.NDArray[Any]]:
    """Read and check a trace file (module docstring) into arrays."""
    rows = _rows(path)
    if not rows:
        raise ConfigError(f"{path}: the trace has no rows. To fix: add a header line "
                          f"({','.join(_TRACE_REQUIRED)}) and one row per request")
    if len(rows) > MAX_TRACE_ROWS:
        raise ConfigError(f"{path}: {len(rows):,} requests, more than the {MAX_TRACE_ROWS:,} a "
                          "simulation takes. To fix: replay a part of the trace")
    columns: dict[str, list[Any]] = {c: [] for c in _TRACE_REQUIRED + _TRACE_OPTIONAL}
    last = -math.inf
    for line, row in rows:
        arrival = _number(path, line, row, "arrival_time", float)
        if arrival < last:
            raise ConfigError(f"{path}:{line}: arrival_time {arrival:g} comes after {last:g}: "
                              "arrival times must not decrease. To fix: sort the trace by "
                              "arrival_time")
        if arrival < 0:
            raise ConfigError(f"{path}:{line}: arrival_time must be >= 0, got {arrival:g}")
        last = arrival
        values = [arrival] + [_number(path, line, row, c, int) for c in _TRACE_REQUIRED[1:]]
        if min(values[1:]) < 1 or max(values[1:]) > MAX_TRACE_TOKENS:
            raise ConfigError(f"{path}:{line}: input_len and output_len must be >= 1 and <= "
                              f"{MAX_TRACE_TOKENS:,} tokens, got {values[1]} and {values[2]}")
        group = row.get("prefix_group")
        if group in (None, "", -1, "-1"):
            values += [-1, 0]
        else:
            prefix = (_number(path, line, row, "prefix_len", int)
                      if row.get("prefix_len") not in (None, "") else default_prefix_len)
            if prefix is None:
                raise ConfigError(f"{path}:{line}: prefix_group {group!r} has no prefix_len. "
                                  "To fix: add a prefix_len column, or set trace.prefix_len "
                                  "in the scenario")
            values += [_number(path, line, row, "prefix_group", int), prefix]
        for name, value in zip(columns, values, strict=True):
            columns[name].append(value)
    return {"arrival_time": np.asarray(columns["arrival_time"], dtype=np.float64),
            **{c: np.asarray(columns[c], dtype=np.int64) for c in list(columns)[1:]}}


def read_lengths_file(path: Path, column: str | None = None) -> tuple[int, ...]:
    """Lengths listed one per line, or in ``column`` (default: the first) of a CSV."""
    lines = [line for line in read_text(path, "lengths file", hint=_RELATIVE).splitlines()
             if line.strip() and not line.startswith("#")]
    if not lines:
        raise ConfigError(f"{path}: no lengths in the file")
    header = next(csv.reader([lines[0]]))
    has_header = not header[0].strip().lstrip("-").isdigit()
    index = 0
    if column is not None:
        if not has_header or column not in header:
            raise ConfigError(f"{path}: no column {column!r} (columns: {', '.join(header)})")
        index = header.index(column)
    values = []
    for number, cells in enumerate(csv.reader(lines[1:] if has_header else lines),
                                   2 if has_header else 1):
        try:
            values.append(int(cells[index]))
        except (ValueError, IndexError):
            raise ConfigError(f"{path}:{number}: {cells!r} has no whole-number length") from None
    return tuple(values)
