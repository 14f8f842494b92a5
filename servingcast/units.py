"""Parsing quantities with units.

Inside servingcast every quantity is SI: seconds, bytes, bytes per second, FLOP/s. Users may
write quantities with units (``"100 GB/s"``, ``"40 ms"``, ``"80 GiB"``) or plain numbers in the
unit a parameter documents. Decimal prefixes are powers of 1000, binary ones (KiB, GiB) powers of
1024, and a lower-case ``b`` means bits (``"400 Gb/s"`` is 50 GB/s).

Files write durations and bandwidths with their unit: the pydantic field types
:data:`Duration`, :data:`Limit` and :data:`Bandwidth` are defined here once, for the problem,
the scenario and the workload.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer
from pydantic_core import PydanticCustomError

from servingcast.errors import ConfigError

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-zµ/]*)\s*$")

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}
_TIME_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}


def _split(text: str, what: str) -> tuple[float, str]:
    match = _QUANTITY.match(text)
    if match is None:
        raise ConfigError(
            f"cannot read {text!r} as a {what}. To fix: write a number and a unit, e.g. "
            f"{_EXAMPLES[what]!r}"
        )
    return float(match.group(1)), match.group(2)


_EXAMPLES = {"bandwidth": "100 GB/s", "duration": "40 ms", "size": "80 GB"}
_UNIT_HINTS = {"bandwidth": "'{n} Gb/s' (bits) or '{n} GB/s' (bytes)",
               "duration": "'{n} ms' or '{n} s'", "size": "'{n} GB' or '{n} GiB'"}


def _no_unit(value: object, what: str) -> ConfigError:
    number = str(value).strip()
    return ConfigError(f"{value!r} has no unit, so the {what} is ambiguous. To fix: write "
                       + _UNIT_HINTS[what].format(n=number))


def _finite(result: float, text: object, what: str) -> float:
    if not math.isfinite(result):
        raise ConfigError(f"{text!r} is too large for a {what}. To fix: e.g. "
                          f"{_EXAMPLES[what]!r}")
    return result


def _bytes_factor(unit: str, text: str, what: str) -> float:
    """Factor from ``unit`` (e.g. ``GB``, ``GiB``, ``Gb``) to bytes."""
    if unit.endswith("B"):
        bits = 1.0
        prefix = unit[:-1]
    elif unit.endswith("b"):
        bits = 1.0 / 8.0
        prefix = unit[:-1]
    else:
        raise ConfigError(
            f"unknown unit in {text!r} for a {what}. To fix: use B or b with an optional "
            f"prefix (k, M, G, T, Ki, Mi, Gi, Ti), e.g. {_EXAMPLES[what]!r}"
        )
    if prefix in _BINARY:
        return _BINARY[prefix] * bits
    if prefix in _DECIMAL:
        return _DECIMAL[prefix] * bits
    raise ConfigError(f"unknown prefix {prefix!r} in {text!r}. To fix: e.g. {_EXAMPLES[what]!r}")


def parse_bandwidth(value: str | float | int, *, default_unit: str = "GB/s",
                    require_unit: bool = False) -> float:
    """Return a bandwidth in bytes/s; plain numbers are read in ``default_unit``, or refused
    with ``require_unit`` (bits or bytes is too easy to get wrong by 8x)."""
    if isinstance(value, bool):
        raise ConfigError(
            f"a bandwidth must be a number or a string like '100 GB/s', got {value!r}")
    if isinstance(value, (int, float)):
        if require_unit:
            raise _no_unit(value, "bandwidth")
        number, unit = float(value), default_unit
        text = f"{value} {default_unit}"
    else:
        number, unit = _split(value, "bandwidth")
        text = value
        if not unit:
            if require_unit:
                raise _no_unit(value, "bandwidth")
            unit = default_unit
    if not unit.endswith("/s"):
        raise ConfigError(
            f"{text!r} is not a bandwidth (no '/s'). To fix: write e.g. '100 GB/s' or '400 Gb/s'"
        )
    result = _finite(number * _bytes_factor(unit[:-2], text, "bandwidth"), text, "bandwidth")
    if result <= 0:
        raise ConfigError(f"a bandwidth must be > 0, got {text!r}. To fix: e.g. '100 GB/s'")
    return result


def parse_duration(value: str | float | int, *, default_unit: str = "ms",
                   require_unit: bool = False) -> float:
    """Return a duration in seconds; plain numbers are read in ``default_unit``, or refused
    with ``require_unit``."""
    if isinstance(value, bool):
        raise ConfigError(f"a duration must be a number or a string like '40 ms', got {value!r}")
    if isinstance(value, (int, float)):
        if require_unit:
            raise _no_unit(value, "duration")
        number, unit = float(value), default_unit
    else:
        number, unit = _split(value, "duration")
        if not unit:
            if require_unit:
                raise _no_unit(value, "duration")
            unit = default_unit
    if unit not in _TIME_S:
        raise ConfigError(
            f"unknown time unit {unit!r} in {value!r}. To fix: use one of "
            f"{', '.join(_TIME_S)} (e.g. '40 ms')"
        )
    return _finite(number * _TIME_S[unit], value, "duration")


def parse_size(value: str | float | int, *, default_unit: str = "GB") -> float:
    """Return a size in bytes; plain numbers are read in ``default_unit``."""
    if isinstance(value, bool):
        raise ConfigError(f"a size must be a number or a string like '80 GB', got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), default_unit
        text = f"{value} {default_unit}"
    else:
        number, unit = _split(value, "size")
        text = value
        if not unit:
            unit = default_unit
    return _finite(number * _bytes_factor(unit, text, "size"), text, "size")


# -- pydantic field types ------------------------------------------------------------------------
# One definition of each quantity a file writes with its unit; the problem, the scenario and the
# workload use these. A bare number is refused (ms or s? bits or bytes?), and the values dump
# back with a unit, so a model round-trips through its JSON.


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is ``message``, verbatim."""
    return PydanticCustomError("value_error", "{message}", {"message": message})


def _seconds(value: Any, noun: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str):
        raise _invalid(f"{value!r} has no unit. To fix: write {noun}, e.g. '{value} ms' or "
                       f"'{value} s'")
    try:
        return parse_duration(value, require_unit=True)
    except ConfigError as exc:
        raise _invalid(str(exc)) from None


def duration_s(value: Any) -> float:
    """A duration written with its unit (``'200 ms'``, ``'1 s'``) in seconds, >= 0."""
    seconds = _seconds(value, "the unit")
    if seconds < 0:
        raise _invalid(f"must be >= 0, got {value!r}")
    return seconds


def limit_s(value: Any) -> float:
    """A time limit written with its unit (``'500 ms'``) in seconds, > 0."""
    seconds = _seconds(value, "the limit with a unit")
    if seconds <= 0:
        raise _invalid(f"a limit must be > 0, got {value!r}. To fix: e.g. '500 ms'")
    return seconds


def bandwidth_bytes_s(value: Any) -> float:
    """A bandwidth written with its unit (``'400 Gb/s'``, ``'50 GB/s'``) in bytes/s."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise _invalid(f"{value!r} has no unit. To fix: write e.g. '400 Gb/s' or '50 GB/s'")
    try:
        return parse_bandwidth(value, require_unit=True)
    except ConfigError as exc:
        raise _invalid(str(exc)) from None


def _dump_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.12g} ms"


def _dump_gb_s(bytes_s: float) -> str:
    return f"{bytes_s / 1e9:.12g} GB/s"


#: Seconds >= 0, written with a unit in files (``'40 ms'``); a bare number is an error.
Duration = Annotated[float, BeforeValidator(duration_s),
                     PlainSerializer(_dump_ms, return_type=str)]
#: Seconds > 0, a latency limit (``'500 ms'``).
Limit = Annotated[float, BeforeValidator(limit_s), PlainSerializer(_dump_ms, return_type=str)]
#: Bytes per second, written with a unit (``'100 GB/s'``, ``'400 Gb/s'``).
Bandwidth = Annotated[float, BeforeValidator(bandwidth_bytes_s),
                      PlainSerializer(_dump_gb_s, return_type=str)]
