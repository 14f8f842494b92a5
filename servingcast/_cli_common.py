"""Options and error handling shared by every command (one place, per STYLE.md)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from servingcast.errors import ServingcastError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2


def fail(message: str) -> None:
    """Print ``error: message`` on stderr and exit with code 2."""
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def handle_errors(func: F) -> F:
    """Turn servingcast errors into a clean message and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = kwargs.pop("debug", False) or os.environ.get("SERVINGCAST_DEBUG") == "1"
        try:
            return func(*args, **kwargs)
        except ServingcastError as exc:
            if debug:
                raise
            fail(str(exc))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def debug_option(func: F) -> F:
    """``--debug``: show tracebacks."""
    return click.option("--debug", is_flag=True, help="Show the full traceback on errors.")(func)
