import pytest

from servingcast.errors import ConfigError
from servingcast.units import parse_bandwidth, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100 GB/s", 100e9), ("400 Gb/s", 50e9), ("1.5 TB/s", 1.5e12), ("64 GiB/s", 64 * 2**30),
     (25, 25e9), ("25", 25e9)],
)
def test_bandwidth(text: str | int, expected: float) -> None:
    assert parse_bandwidth(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"), [("40 ms", 0.04), ("1 s", 1.0), ("250us", 250e-6), (40, 0.04)]
)
def test_duration(text: str | int, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


def test_size() -> None:
    assert parse_size("80 GiB") == 80 * 2**30
    assert parse_size("80 GB") == 80e9


@pytest.mark.parametrize("bad", ["fast", "100 GB", "100 furlongs/s", "-5 GB/s", "0 GB/s"])
def test_bad_bandwidth_names_the_value(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"GB/s|bandwidth"):
        parse_bandwidth(bad)


def test_bad_duration_unit() -> None:
    with pytest.raises(ConfigError, match="unknown time unit 'parsecs'"):
        parse_duration("3 parsecs")


@pytest.mark.parametrize("bare", ["400", 400, " 400 "])
def test_require_unit_refuses_bare_numbers(bare: str | int) -> None:
    with pytest.raises(ConfigError, match=r"has no unit.*'400 Gb/s' \(bits\) or '400 GB/s'"):
        parse_bandwidth(bare, require_unit=True)
    with pytest.raises(ConfigError, match="has no unit"):
        parse_duration(bare, require_unit=True)


@pytest.mark.parametrize("text", ["1e400 GB/s", "1e400 s", "1e400 GB"])
def test_overflow_is_refused(text: str) -> None:
    parse = {"/s": parse_bandwidth, " s": parse_duration, "GB": parse_size}
    with pytest.raises(ConfigError, match="too large"):
        next(f for suffix, f in parse.items() if text.endswith(suffix))(text)
