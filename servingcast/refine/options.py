"""What a refinement run is asked to do (:class:`RefineOptions`) and the settings a study is
bound to (:class:`StudySettings`).

Options are checked when they are made: a bad value raises :class:`ConfigError` with the rule,
the value seen and a fix, before any storage is opened, so a mistake never touches a study.
The settings are the part of the options that change what a trial's value *means* (the
simulation size, the workload seed, the rate grid, the objective mode); they are stored in the
study and a rerun with different settings is refused rather than mixed in.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from servingcast.errors import ConfigError

#: ``"objective"``: the problem's own objective; ``"pareto"``: tokens/s per GPU against
#: tokens/s per user, both maximized (the simulated Pareto front).
Mode = Literal["objective", "pareto"]

DEFAULT_TRIALS = 50
#: A ``--storage`` path with one of these endings is an SQLite file given without its URL.
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


@dataclass(frozen=True)
class StudySettings:
    """The settings behind every trial value of a study (stored in it, compared on resume).

    ``seed`` seeds the workload of every simulation (common random numbers: every rate, and
    every trial of the same simulation size, sees the same requests, scaled in time) and the
    sampler of the main process. ``sim_requests``, ``sim_window_s``, ``requests_per_instance``,
    ``capacity_multiple`` and ``max_sim_requests`` size each simulation of a deployment's part:
    at least ``sim_window_s`` seconds of traffic, ``requests_per_instance`` per instance and
    ``capacity_multiple`` times the requests the part holds at once, rounded up to
    ``sim_requests × 2^j`` and at most ``max_sim_requests``; a run cut short by the cap, or whose
    measured window is under ``e2e_multiple`` mean E2E latencies, is *too short to judge* (see
    :mod:`servingcast.refine.evaluate`). ``rate_step`` is the relative spacing of the rate grid
    the search walks on.
    """

    mode: Mode = "objective"
    seed: int = 0
    sim_requests: int = 2000
    sim_window_s: float = 60.0
    requests_per_instance: int = 100
    max_sim_requests: int = 100_000
    capacity_multiple: float = 4.0
    e2e_multiple: float = 3.0
    rate_step: float = 0.03

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (stored as a study user attribute)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudySettings:
        """The settings stored in a study."""
        return cls(**data)


@dataclass(frozen=True)
class RefineOptions:
    """How to run the refinement.

    ``trials`` is the number of *simulated* trials the study should hold (a rerun tops it up,
    so rerunning the same command resumes a killed run; ``None`` for a worker: the study's own
    target); trials outside the GPU budget are recorded as infeasible but not counted.
    ``timeout_s`` bounds this run's wall time. ``jobs`` local worker processes share the
    storage. ``storage`` is the path of an Optuna journal file (``out/study.log``: one machine,
    any number of local processes) or an Optuna RDB URL (``postgresql://user:pw@host/db``
    across machines, ``sqlite:///out/study.db``); ``None`` keeps the study in a temporary
    journal file that is deleted at the end. ``study_name`` defaults to the problem's name
    (with ``-pareto`` in the Pareto mode).
    """

    trials: int | None = DEFAULT_TRIALS
    timeout_s: float | None = None
    jobs: int = 1
    storage: str | None = None
    study_name: str | None = None
    settings: StudySettings = StudySettings()
    count_spread: float = 0.3

    def __post_init__(self) -> None:
        if self.trials is not None and (isinstance(self.trials, bool) or self.trials < 1):
            raise ConfigError(f"--trials must be >= 1, got {self.trials}. To fix: ask for at "
                              "least one trial (e.g. --trials 50), or pass --no-refine to skip "
                              "the refinement")
        if self.timeout_s is not None and not (self.timeout_s > 0 and math.isfinite(
                self.timeout_s)):
            raise ConfigError(f"--timeout must be a number of seconds > 0, got {self.timeout_s}. "
                              "To fix: e.g. --timeout 600, or leave it out for no limit")
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {self.jobs}. To fix: e.g. --jobs 2 "
                              "(one worker process per core)")
        if self.study_name is not None and not self.study_name.strip():
            raise ConfigError("--study-name is empty. To fix: give a name, e.g. "
                              "--study-name quickstart-v2, or leave it out")
        if self.storage is not None and "://" not in self.storage and (
                not self.storage.strip() or self.storage.lower().endswith(_SQLITE_SUFFIXES)):
            raise ConfigError(
                f"--storage {self.storage!r} is neither a database URL nor an Optuna journal "
                "file (a plain path names a journal file; SQLite needs a URL). To fix: e.g. "
                f"--storage out/study.log, sqlite:///{self.storage.strip() or 'out/study.db'} "
                "or postgresql://user:password@host/db")
        s = self.settings
        if s.sim_requests < 50 or s.max_sim_requests < s.sim_requests:
            raise ConfigError(f"simulations need 50 <= sim_requests <= max_sim_requests, got "
                              f"sim_requests={s.sim_requests}, max_sim_requests="
                              f"{s.max_sim_requests}. To fix: e.g. --sim-requests 2000 "
                              "--max-sim-requests 100000")
        if not s.sim_window_s > 0:
            raise ConfigError(f"sim_window_s must be > 0 s, got {s.sim_window_s}. To fix: e.g. "
                              "60 (a minute of traffic per simulation)")
        if s.requests_per_instance < 1:
            raise ConfigError(f"requests_per_instance must be >= 1, got "
                              f"{s.requests_per_instance}. To fix: e.g. 100")
        if not (s.capacity_multiple >= 1 and s.e2e_multiple >= 1):
            raise ConfigError(f"capacity_multiple and e2e_multiple must be >= 1, got "
                              f"{s.capacity_multiple} and {s.e2e_multiple}. To fix: e.g. 4 and 3")
        if not 0.005 <= s.rate_step <= 0.5:
            raise ConfigError(f"rate_step must be in [0.005, 0.5], got {s.rate_step}. To fix: "
                              "e.g. 0.03 (rates 3% apart)")
        if not 0.0 <= self.count_spread <= 2.0:
            raise ConfigError(f"count_spread must be in [0, 2], got {self.count_spread}. To fix: "
                              "e.g. 0.3 (instance counts within ±30% of the MILP's)")
