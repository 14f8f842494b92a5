"""The refinement's command-line options, for ``servingcast-solve`` (one decorator).

::

    @click.command()
    @click.argument("problem", ...)
    @click.option("-o", "--output", ...)
    @refine_options            # adds the options below, passes them as refine_cli: RefineCli
    @debug_option
    @handle_errors
    def solve_command(problem, output, ..., refine_cli):
        if refine_cli.worker:
            click.echo(run_worker_command(spec, refine_cli)); return
        result = solve(...)
        refined = refine_plan(spec, result, refine_cli, output)   # None with --no-refine

Options: ``--trials N --timeout S -j/--jobs N --storage URL --study-name NAME --worker
--seed N --no-refine --refine-pareto --sim-requests N --max-sim-requests N``. Values are
checked when :meth:`RefineCli.options` turns them into :class:`RefineOptions` (inside the
command, so that :func:`servingcast._cli_common.handle_errors` reports a mistake as one line
and exit code 2). Progress goes to stderr: a bar on a terminal, else a line every few trials
and at least every 20 s.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from servingcast.errors import ConfigError
from servingcast.refine.options import DEFAULT_TRIALS, RefineOptions, StudySettings

if TYPE_CHECKING:
    from servingcast.planner.planning import PlanningResult
    from servingcast.planner.problem import Problem
    from servingcast.refine.result import RefinedResult

F = TypeVar("F", bound=Callable[..., Any])

#: The file the default study lives in, inside ``--output DIR``: an Optuna journal file, for
#: any ``--jobs`` (one format, so a study started with one job resumes with four and back).
STUDY_FILE = "study.log"
#: The SQLite study of folders written before the journal file; still resumed where it is.
LEGACY_STUDY_FILE = "study.db"
#: Files the refinement adds to ``--output DIR`` (check them with the planner's before work).
#: The study file is not among them: it is never replaced, only resumed (:func:`local_studies`).
REFINE_OUTPUT_FILES = ("refine_history.png", "refine_pareto.png")


def local_studies(output: Path) -> dict[str, str]:
    """The study files ``output`` holds: file name → storage (``DIR/study.log``, or
    ``sqlite:///DIR/study.db`` from an earlier servingcast)."""
    found = {}
    if (output / STUDY_FILE).is_file():
        found[STUDY_FILE] = str(output / STUDY_FILE)
    if (output / LEGACY_STUDY_FILE).is_file():
        found[LEGACY_STUDY_FILE] = f"sqlite:///{output / LEGACY_STUDY_FILE}"
    return found


def default_storage(output: Path) -> str:
    """The study kept in ``output``: its journal file ``study.log`` (new or resumed), or the
    ``study.db`` an earlier servingcast wrote there (resumed as SQLite, never started over);
    :class:`ConfigError` when the folder holds both."""
    found = local_studies(output)
    if len(found) > 1:
        raise ConfigError(
            f"{output} holds two studies, {STUDY_FILE} (Optuna journal) and "
            f"{LEGACY_STUDY_FILE} (SQLite, from an earlier servingcast), and a rerun could "
            "resume either; nothing was done. To fix: name one with --storage "
            f"{output / STUDY_FILE} or --storage sqlite:///{output / LEGACY_STUDY_FILE}, or "
            "move the other out of the folder")
    return found.get(LEGACY_STUDY_FILE, str(output / STUDY_FILE))


@dataclass(frozen=True)
class RefineCli:
    """The refinement options as given on the command line (unchecked)."""

    trials: int | None = None
    timeout_s: float | None = None
    jobs: int = 1
    storage: str | None = None
    study_name: str | None = None
    worker: bool = False
    seed: int | None = None
    no_refine: bool = False
    pareto: bool = False
    sim_requests: int = 2000
    max_sim_requests: int | None = None

    def options(self, output: Path | None) -> RefineOptions:
        """Checked :class:`RefineOptions`. Without ``--storage``, the study is the journal
        file ``OUTPUT/study.log`` (the folder is created; see :func:`default_storage`) when
        ``--output`` is given, else a temporary file."""
        storage = self.storage
        if storage is None and output is not None and not self.worker:
            if output.exists() and not output.is_dir():
                raise ConfigError(f"--output {output} is a file, not a folder. To fix: choose a "
                                  "folder")
            try:
                output.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create {output} ({exc.strerror}). To fix: choose a "
                                  "writable --output folder") from None
            storage = default_storage(output)
        trials = self.trials if self.trials is not None or self.worker else DEFAULT_TRIALS
        settings = StudySettings(mode="pareto" if self.pareto else "objective",
                                 seed=0 if self.seed is None else self.seed,
                                 sim_requests=self.sim_requests,
                                 max_sim_requests=(max(StudySettings.max_sim_requests,
                                                       self.sim_requests)
                                                   if self.max_sim_requests is None
                                                   else self.max_sim_requests))
        return RefineOptions(trials=trials, timeout_s=self.timeout_s, jobs=self.jobs,
                             storage=storage, study_name=self.study_name, settings=settings)


_OPTIONS = (
    click.option("--trials", "trials", type=int, default=None,
                 help=f"Simulated trials the refinement study should hold, e.g. 50 (default "
                      f"{DEFAULT_TRIALS}); rerunning the same command tops the study up to N, "
                      "so a killed run resumes."),
    click.option("--timeout", "timeout_s", type=float, default=None,
                 help="Wall-clock limit of the refinement in seconds, e.g. 600."),
    click.option("-j", "--jobs", "jobs", type=int, default=1, show_default=True,
                 help="Local worker processes sharing the study, e.g. 4 (one per core)."),
    click.option("--storage", "storage", default=None, metavar="URL",
                 help="Optuna storage: a journal file path, e.g. out/study.log, or a database "
                      "URL, e.g. postgresql://user:password@host/db (default: DIR/study.log "
                      "with --output DIR, else a temporary file)."),
    click.option("--study-name", "study_name", default=None, metavar="NAME",
                 help="Study name, e.g. quickstart-v2 (default: the problem's name)."),
    click.option("--worker", "worker", is_flag=True,
                 help="Join the existing study on --storage and run trials (no MILP, no "
                      "files), e.g. on another machine."),
    click.option("--seed", "seed", type=int, default=None,
                 help="Seed of the sampler and of the simulated workload, e.g. 7 (default 0)."),
    click.option("--no-refine", "no_refine", is_flag=True,
                 help="Skip the simulated refinement: the MILP plan is final."),
    click.option("--refine-pareto", "pareto", is_flag=True,
                 help="Search the simulated Pareto front of tokens/s per GPU against tokens/s "
                      "per user instead of the problem's objective."),
    click.option("--sim-requests", "sim_requests", type=int, default=2000, show_default=True,
                 help="Requests per simulation, at least (more on larger clusters: 4 x the "
                      "requests they hold at once, a minute of traffic), e.g. 4000 for tighter "
                      "figures."),
    click.option("--max-sim-requests", "max_sim_requests", type=int, default=None,
                 help="Cap on the requests per simulation, e.g. 200000 (default 100000); a "
                      "run cut short by it is reported as too short to judge."),
)

_NAMES = ("trials", "timeout_s", "jobs", "storage", "study_name", "worker", "seed", "no_refine",
          "pareto", "sim_requests", "max_sim_requests")


def refine_options(func: F) -> F:
    """Add the refinement options to a click command; the command receives them as one
    ``refine_cli: RefineCli`` keyword argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cli = RefineCli(**{name: kwargs.pop(name) for name in _NAMES})
        return func(*args, refine_cli=cli, **kwargs)

    wrapper.__dict__["__click_params__"] = list(getattr(func, "__click_params__", []))
    command: Any = wrapper
    for option in reversed(_OPTIONS):
        command = option(command)
    return command  # type: ignore[no-any-return]


class _Bar:
    """A click progress bar opened on the first update (its length is known only then); its
    label carries the best trial so far."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.last = 0

    def update(self, done: int, total: int, best: str = "") -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        if best:
            self.bar.label = f"{self.label} ({best})"
        self.bar.update(max(0, done - self.last))
        self.last = max(done, self.last)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


class _Lines:
    """Progress as plain lines on stderr, for logs and pipes: ``Refining by simulation: trial
    10/50: best 33.7 req/s (trial 7), 41 s`` every ``every`` trials and at the end, and a
    ``running`` line after ``quiet_s`` seconds without one (a long trial is never silent)."""

    every = 5
    quiet_s = 20.0

    def __init__(self, label: str) -> None:
        self.label = label
        self.t0 = time.monotonic()
        self.last_line = self.t0
        self.done = 0
        self.total = 0
        self.printed = 0
        self.best = ""
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def _line(self, running: bool) -> None:
        now = time.monotonic()
        total = f"/{self.total}" if self.total else ""
        state = f"trial {self.done}{total}" + (" (running)" if running else "")
        best = f": {self.best}" if self.best else ""
        click.echo(f"{self.label}: {state}{best}, {now - self.t0:.0f} s", err=True)
        self.last_line = now

    def update(self, done: int, total: int, best: str = "") -> None:
        with self.lock:
            if best:
                self.best = best
            self.total = total
            if done == self.done:
                return
            self.done = done
            if done - self.printed >= self.every or done >= total:
                self.printed = done
                self._line(running=False)

    def _beat(self) -> None:
        while not self.stop.wait(min(1.0, self.quiet_s / 4)):
            with self.lock:
                if time.monotonic() - self.last_line >= self.quiet_s:
                    self._line(running=True)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int, str], None]]:
    """Progress on stderr as a ``progress(done, total, best)`` callback: a click progress bar
    when stderr is a terminal, else plain lines (:class:`_Lines`)."""
    bar: _Bar | _Lines = _Bar(label) if sys.stderr.isatty() else _Lines(label)
    try:
        yield bar.update
    finally:
        bar.close()


def refine_plan(problem: Problem, planning: PlanningResult, cli: RefineCli,
                output: Path | None) -> RefinedResult | None:
    """Run the refinement as the options say (None with ``--no-refine``)."""
    from servingcast.refine.run import refine, storage_in_folder

    if cli.no_refine:
        return None
    options = cli.options(output)
    with progress_bar("Refining by simulation") as bar:
        result = refine(problem, planning, options, progress=bar)
    if output is None or options.storage is None:
        return result
    notes = result.notes
    if cli.storage is None and options.storage.startswith("sqlite"):
        notes += (f"the study was resumed from {LEGACY_STUDY_FILE} (SQLite), written by an "
                  f"earlier servingcast; new --output folders keep it in {STUDY_FILE}, an "
                  "Optuna journal file",)
    return result.model_copy(update={
        "storage_in_folder": storage_in_folder(options.storage, output), "notes": notes})


def run_worker_command(problem: Problem, cli: RefineCli) -> str:
    """``--worker``: join the study and run trials; the line to print."""
    from servingcast.refine.run import join

    options = cli.options(None)
    with progress_bar("Worker trials") as bar:
        report = join(problem, options, progress=bar)
    return (f"Worker: {report.new_trials} trials added to study {report.study_name!r} in "
            f"{report.storage} in {report.elapsed_s:.1f} s; it holds {report.simulated} of "
            f"{report.target} simulated trials.")
