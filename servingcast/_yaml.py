"""YAML files validated by pydantic, with errors that name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from servingcast._text import read_text
from servingcast.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


#: Largest YAML file read (inputs are a few KB; this is far above any real one).
MAX_YAML_BYTES = 16 * 2**20
#: Most nodes a document may expand to, aliases counted at every use (billion-laughs guard).
MAX_YAML_NODES = 1_000_000


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(node: yaml.Node, path: Path) -> None:
    """Refuse documents whose aliases expand past :data:`MAX_YAML_NODES` nodes, or that refer
    to themselves. Sizes are memoised per node, so this is linear in the composed graph."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(
                f"{path}:{n.start_mark.line + 1}: an alias refers to a node that contains it "
                "(a recursive YAML structure). To fix: remove the alias (*name) inside its own "
                "anchor (&name)")
        open_nodes.add(key)
        total = 1
        for child in _children(n):
            total += size(child)
            if total > MAX_YAML_NODES:
                raise ConfigError(
                    f"{path}: the document expands to more than {MAX_YAML_NODES:,} YAML nodes "
                    "once its aliases (*name) are replaced by their anchors (&name); the limit "
                    "guards against alias bombs. To fix: write the values out, or use fewer "
                    "nested aliases")
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(node)


def _line_index(node: yaml.Node, path: tuple[Any, ...], index: dict[tuple[Any, ...], int]) -> None:
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            index[path + (key.value,)] = key.start_mark.line + 1
            _line_index(value, path + (key.value,), index)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (i,), index)


def _yaml_error(exc: yaml.YAMLError, path: Path, text: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        problem = f"character #x{exc.character:04x} is not allowed in YAML"
    else:
        problem = getattr(exc, "problem", None) or str(exc)
    where = f"{path}:{line}" if line is not None else str(path)
    fix = ("correct the syntax at that line (indentation, a missing ':' or an unclosed quote or "
           "bracket)")
    if "another document" in problem:
        fix = "keep one document in the file (remove the '---' line and what follows it)"
    elif isinstance(exc, yaml.reader.ReaderError):
        fix = "remove the character (or write it as an escape inside double quotes)"
    return ConfigError(f"{where}: not valid YAML ({problem}). To fix: {fix}")


def read_yaml(path: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse ``path``; return the data and a map from field path to line number.

    The document is composed once, checked against alias bombs (:func:`_check_expansion`), then
    constructed; every failure is one :class:`ConfigError` naming the file (and line).
    """
    text = read_text(path, "YAML file", MAX_YAML_BYTES)
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{path}: the file is empty (no YAML document). To fix: write "
                              "its fields (see the examples in configs/ and problems/)")
        _check_expansion(node, path)
        data = loader.construct_document(node)
        index: dict[tuple[Any, ...], int] = {}
        _line_index(node, (), index)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, path, text) from None
    except RecursionError:
        raise ConfigError(f"{path}: the YAML is nested too deeply to read. To fix: flatten "
                          "it (inputs need a few levels)") from None
    finally:
        if loader is not None:
            loader.dispose()
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
        lines.append(f"{where}: {field}: {_message(err)}")
    return "\n".join(lines)


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
           "less_than_equal": "<="}
_HINTS = {
    "int_type": "write a whole number, e.g. 8",
    "int_parsing": "write a whole number, e.g. 8",
    "int_from_float": "write a whole number, e.g. 8",
    "float_type": "write a number, e.g. 0.5",
    "float_parsing": "write a number, e.g. 0.5",
    "finite_number": "write a finite number (.inf and .nan are not allowed)",
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "string_type": "write text (quote it: 'name')",
    "string_pattern_mismatch": "use letters, digits, '_', '.' and '-', starting with a letter "
                               "or digit",
    "literal_error": "use one of the values listed",
    "union_tag_invalid": "use one of the kinds listed",
    "union_tag_not_found": "add kind: with one of the allowed kinds",
    "dict_type": "write a mapping (field: value lines, or {field: value})",
    "model_type": "write a mapping (field: value lines, or {field: value})",
    "model_attributes_type": "write a mapping (field: value lines, or {field: value})",
    "list_type": "write a list, e.g. [1, 2]",
    "tuple_type": "write a list, e.g. [1, 2]",
    "too_short": "give at least one entry",
}


def _message(err: Any) -> str:
    """Pydantic's message for one error, with a "To fix" when it has none."""
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        return "unknown field. To fix: remove it or check its spelling"
    if kind == "missing":
        return "required field is missing. To fix: add it"
    message = str(err["msg"])
    if "To fix" in message:
        return message
    if kind in ("int_parsing", "float_parsing") and isinstance(value, str) and (
            "e" in value.lower() and value.lower().lstrip("+-").replace("e", "", 1)
            .replace("+", "").replace("-", "").replace(".", "", 1).isdigit()):
        return (f"YAML reads {value} as text, not a number (YAML 1.1 needs a dot and a sign "
                f"in the exponent). To fix: write {float(value):.1e} or the digits")
    if kind in _BOUNDS and err.get("ctx"):
        limit = next(iter(err["ctx"].values()))
        return f"{message}, got {value!r}. To fix: use a value {_BOUNDS[kind]} {limit}"
    hint = _HINTS.get(kind)
    if hint is not None:
        shown = f", got {value!r}" if isinstance(value, (str, int, float)) else ""
        return f"{message}{shown}. To fix: {hint}"
    return message


def load_model(path: Path, cls: type[M], context: dict[str, Any] | None = None) -> M:
    """Read ``path`` and validate it as ``cls``; errors become :class:`ConfigError`."""
    data, index = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level")
    try:
        return cls.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path), index)) from None
