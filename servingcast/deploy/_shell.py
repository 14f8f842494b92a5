"""Shell text: commands one option a line, comment blocks, and values the shell expands.

Every command is built as an argument list first and turned into text last, so the text parses
back (``shlex.split``) into exactly that list; :class:`Raw` marks the few tokens the shell
must expand (``"$PORT"``, ``"${MODEL:?...}"``), which are written as they are.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from typing import Any

import yaml


class Raw(str):
    """A token written into the script as it is (already quoted for the shell)."""

    __slots__ = ()


Token = str | Raw


def quote(token: Token) -> str:
    """``token`` as shell text."""
    return str(token) if isinstance(token, Raw) else shlex.quote(token)


def command(argv: Sequence[Token], prefix: str = "") -> str:
    """``argv`` as one shell command: the program and its positional arguments on the first
    line, then each ``--option`` with its values on a line of its own (``\\`` continued)."""
    lines: list[list[str]] = [[]]
    for token in argv:
        if str(token).startswith("--") and lines[-1] and not isinstance(token, Raw):
            lines.append([])
        lines[-1].append(quote(token))
    text = " \\\n  ".join(" ".join(line) for line in lines)
    return prefix + text + "\n"


def comments(lines: Iterable[str]) -> str:
    """Each line as a ``#`` comment (blank lines kept as ``#``)."""
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


def script(header: Iterable[str], body: str) -> bytes:
    """A bash script: shebang, the header as comments, strict mode, ``body``."""
    return ("#!/usr/bin/env bash\n" + comments(header) + "set -euo pipefail\n\n"
            + body).encode()


def model_token(repo: str | None, placeholder: str | None) -> Token:
    """The model argument: the repository id, or (when it has to be chosen by hand) a
    ``${MODEL:?...}`` expansion that stops the script with ``placeholder`` until MODEL is set."""
    if placeholder is None and repo is not None:
        return repo
    safe = (placeholder or "a model").replace('"', "'").replace("}", ")").replace("$", "")
    safe = safe.replace("`", "'").replace("\\", "/")
    return Raw(f'"${{MODEL:?set MODEL to {safe}}}"')


class _NoAliases(yaml.SafeDumper):
    """Writes repeated objects out again instead of as YAML anchors (``&id001``)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def yaml_text(documents: Sequence[Any]) -> str:
    """``documents`` as YAML (``---`` between them), keys in order, no anchors."""
    return yaml.dump_all(documents, Dumper=_NoAliases, sort_keys=False, width=100)
