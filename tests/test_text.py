"""The plain-text tables every report prints."""

from __future__ import annotations

from servingcast._text import table


def test_numbers_right_aligned_by_default_and_no_trailing_spaces() -> None:
    lines = table(["name", "GPUs"], [["a", "8"], ["longer", "16"]])
    assert lines == ["  name    GPUs", "  a          8", "  longer    16"]


def test_columns_follow_right_and_indent() -> None:
    lines = table(["x", "y", "note"], [["1", "22", "ok"], ["333", "4", ""]],
                  [True, True, False], indent="    ")
    assert lines == ["      x   y  note", "      1  22  ok", "    333   4"]
