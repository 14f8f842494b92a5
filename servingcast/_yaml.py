"""YAML files validated by pydantic, with errors that name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from servingcast.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def _line_index(node: yaml.Node, path: tuple[Any, ...], index: dict[tuple[Any, ...], int]) -> None:
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            index[path + (key.value,)] = key.start_mark.line + 1
            _line_index(value, path + (key.value,), index)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (i,), index)


def read_yaml(path: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse ``path``; return the data and a map from field path to line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    index: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _line_index(node, (), index)
    return data, index


def _line_for(loc: tuple[Any, ...], index: dict[tuple[Any, ...], int]) -> int | None:
    # pydantic adds the discriminator tag or a validator name to some locations: walk back to the
    # deepest prefix that exists in the file.
    for cut in range(len(loc), -1, -1):
        line = index.get(tuple(loc[:cut]))
        if line is not None:
            return line
    return None


def format_validation_error(
    exc: ValidationError, source: str, index: dict[tuple[Any, ...], int] | None = None
) -> str:
    """One line per problem: ``file:line: field.path: message``."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        field = ".".join(str(part) for part in loc) or "(top level)"
        line = _line_for(loc, index) if index else None
        where = f"{source}:{line}" if line is not None else source
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field. To fix: remove it or check its spelling"
        elif err["type"] == "missing":
            message = "required field is missing. To fix: add it"
        lines.append(f"{where}: {field}: {message}")
    return "\n".join(lines)


def load_model(path: Path, cls: type[M], context: dict[str, Any] | None = None) -> M:
    """Read ``path`` and validate it as ``cls``; errors become :class:`ConfigError`."""
    data, index = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level")
    try:
        return cls.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path), index)) from None
