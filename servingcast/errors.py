"""The exception hierarchy.

Every error a user can cause derives from :class:`ServingcastError`; the CLI turns it into one
clean line on stderr and exit code 2 (``--debug`` shows the traceback). Messages state the broken
rule and the values seen, then how to fix it ("To fix: ...").
"""

from __future__ import annotations


class ServingcastError(Exception):
    """Base class of every error servingcast raises on purpose."""


class ConfigError(ServingcastError, ValueError):
    """A catalog entry, input file or argument is malformed or unknown."""


class InfeasibleError(ServingcastError):
    """The request cannot be served as asked (e.g. the model does not fit in memory)."""


class SolverError(ServingcastError):
    """The MILP solver failed or returned no usable solution."""


class SimulationError(ServingcastError):
    """The simulation could not be run as configured."""
