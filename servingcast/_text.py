"""Text in and out: reading the files a user names (YAML, CSV, JSONL), with one clean error per
mistake, and the plain-text tables every report prints (:func:`table`).

Every failure is a :class:`ConfigError` naming the file (and, for bytes that are not UTF-8, the
line and column): a missing file, a folder, an unreadable file, a binary file, text in another
encoding, or a file too large to be an input.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from servingcast.errors import ConfigError

#: Bytes looked at to tell a binary file (one with NUL bytes) from text.
_SNIFF = 8192


def _position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based ``(line, column)`` of byte ``offset``."""
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, column


def read_text(path: Path, what: str, max_bytes: int | None = None, hint: str = "") -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark is dropped).

    ``what`` names the file in messages ("YAML file", "trace"); ``hint`` is appended to the
    "no such file" message (e.g. where relative paths start).
    """
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a {what}. To fix: name the file "
                              "inside it")
        with path.open("rb") as handle:
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: cannot read (no such file). To fix: check the "
                          f"path{hint}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc}). To fix: check the "
                          "file's permissions") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise ConfigError(f"{path}: larger than {max_bytes // 2**20} MiB, the limit for a "
                          f"{what}. To fix: pass the right file, or split it")
    if b"\0" in data[:_SNIFF]:
        raise ConfigError(f"{path}: is a binary file, not a {what} (it holds NUL bytes). "
                          f"To fix: pass the {what} itself, saved as UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = _position(data, exc.start)
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, "
            f"column {column}). To fix: save the {what} as UTF-8 (e.g. iconv -f latin1 -t "
            "utf-8), or remove the character") from None


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          right: Sequence[bool] | None = None, indent: str = "  ") -> list[str]:
    """A plain-text table, one string per line (header first): columns two spaces apart, each
    as wide as its widest cell, right-aligned where ``right`` says (default: every column but
    the first, as numbers are), trailing spaces dropped. Cells are already formatted."""
    if right is None:
        right = [i > 0 for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return (indent + "  ".join(c.rjust(w) if r else c.ljust(w)
                                   for c, w, r in zip(cells, widths, right, strict=True))).rstrip()

    return [line(headers)] + [line(r) for r in rows]
