"""The study: storage, identity (a problem fingerprint), the enqueued MILP plans, and running
trials in this process or in local worker processes that share the storage.

Everything about coordination is Optuna's own: a storage that records every trial as it
finishes and hands enqueued trials out once — on one machine an Optuna journal file
(``DIR/study.log``, :class:`optuna.storages.JournalStorage`; Optuna advises it over SQLite for
several writing processes), across machines an RDB (PostgreSQL or MySQL; SQLite URLs still
work). Trials of a process that died are failed and enqueued again: by heartbeats on an RDB,
on a journal file when the next run finds no other process using it (:class:`JournalUse`).
A study carries, as user attributes, what a worker on another machine needs to join it: the
problem's fingerprint (a study made for another problem is refused, never mixed), the settings
behind its values, the search space, the MILP's predictions and the target number of trials.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from servingcast.errors import ConfigError, SimulationError
from servingcast.planner.problem import Problem
from servingcast.refine.objective import (
    Objective,
    directions,
    is_simulated,
    metric_names,
    metrics_of,
)
from servingcast.refine.options import StudySettings
from servingcast.refine.space import SearchSpace

PREFIX = "servingcast:"
#: Seconds between a running trial's heartbeats, and before a silent trial counts as dead.
HEARTBEAT_S = 10
GRACE_S = 60

#: ``progress(done, total, best)``: simulated trials done out of ``total``, and the best
#: feasible trial so far in words (:func:`best_text`).
Progress = Callable[[int, int, str], None]


def fingerprint(problem: Problem) -> str:
    """SHA-256 of the problem's canonical JSON: equal problems, equal fingerprints."""
    text = json.dumps(problem.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def masked(url: str) -> str:
    """The URL with its password hidden."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Within the block: no per-trial log lines, no experimental-feature warnings. Optuna's
    verbosity and the process's warning filters are restored on leaving it (the caller's
    logging and warnings are not ours to change)."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(verbosity)


def driver_url(url: str) -> str:
    """``url`` with a PostgreSQL driver that is installed: SQLAlchemy 2.1 reads a bare
    ``postgresql://`` as psycopg 3; with only psycopg2 installed, name it explicitly."""
    import importlib.util

    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare) and importlib.util.find_spec("psycopg") is None and (
                importlib.util.find_spec("psycopg2") is not None):
            return "postgresql+psycopg2://" + url[len(bare):]
    return url


def _serialize_sqlite(engine: Any) -> None:
    """Make every SQLite transaction take the write lock when it begins (``BEGIN
    IMMEDIATE``; SQLAlchemy's pysqlite recipe). SQLite has no ``SELECT ... FOR UPDATE``, so
    without this two processes can both pop the same enqueued trial (optuna#4002, #4621)."""
    from sqlalchemy import event

    def connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite must not emit its own BEGIN

    def begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", connect)
    event.listen(engine, "begin", begin)
    engine.dispose()  # connections opened before the listeners are dropped


def is_journal(url: str) -> bool:
    """Whether ``url`` names an Optuna journal file (a path, no ``scheme://``)."""
    return "://" not in url


_SQLITE_HEADER = b"SQLite format 3\x00"


def open_storage(url: str) -> Any:
    """The Optuna storage ``url`` names: a journal file for a path (:func:`is_journal`, created
    if missing), else an RDB storage with heartbeats; :class:`ConfigError` when it cannot be
    opened."""
    if is_journal(url):
        return _open_journal(url)
    if url.startswith("sqlite") and (":memory:" in url or url.rstrip("/") in (
            "sqlite:", "sqlite:/", "sqlite://")):
        raise ConfigError(f"--storage {url} is an in-memory database: worker processes cannot "
                          "share it and a rerun cannot resume it. To fix: use a file, e.g. "
                          "sqlite:///out/study.db, or leave --storage out")
    with quiet_optuna():
        return _open_storage(url)


def _open_storage(url: str) -> Any:
    import optuna

    retry: dict[str, Any]
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9
        retry = {"heartbeat_stale_trial_callback":
                 optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)}
    else:
        retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=2)}
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    else:
        kwargs["pool_pre_ping"] = True
    for attempt in range(3):
        try:
            storage = optuna.storages.RDBStorage(
                driver_url(url), engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S, **retry)
            break
        except ImportError as exc:
            raise ConfigError(f"cannot open the Optuna storage {masked(url)}: its database "
                              f"driver is not installed ({exc.__cause__ or exc}). To fix: pip "
                              "install psycopg2-binary (PostgreSQL) or pymysql (MySQL)") from None
        except Exception as exc:  # sqlalchemy raises many kinds; all mean the same to a user
            if attempt < 2 and (type(exc).__name__ == "IntegrityError"
                                or "already exists" in str(exc)):
                time.sleep(0.2)  # another process created the schema at the same moment
                continue
            text = str(exc).strip()
            reason = text.splitlines()[0] if text else type(exc).__name__
            raise ConfigError(
                f"cannot open the Optuna storage {masked(url)} ({reason}). To fix: check the "
                "URL, that the database server is running and reachable from here, and the "
                "credentials (e.g. sqlite:///out/study.db or "
                "postgresql://user:password@host:5432/db)") from None
    if url.startswith("sqlite"):
        _serialize_sqlite(storage.engine)
    return storage


def _open_journal(path: str) -> Any:
    """A journal storage on the file ``path``. Its writers take the lock file ``PATH.lock``
    with ``O_EXCL`` (:class:`JournalFileOpenLock`: works on Windows and NFS v3+, and excludes
    optuna-dashboard's symlink lock, which uses the same file)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    fix = "To fix: choose a writable file path, e.g. --storage out/study.log"
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        head = b""
    except OSError as exc:
        raise ConfigError(f"cannot open the Optuna journal file {path} ({exc.strerror}). "
                          f"{fix}") from None
    if head == _SQLITE_HEADER:
        raise ConfigError(f"--storage {path} is an SQLite database, not an Optuna journal file. "
                          f"To fix: pass it as a URL, --storage sqlite:///{path}")
    try:
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    except OSError as exc:
        raise ConfigError(f"cannot open the Optuna journal file {path} ({exc.strerror}). "
                          f"{fix}") from None
    except (ValueError, KeyError, TypeError) as exc:  # a line that is not a journal record
        raise ConfigError(f"{path} is not an Optuna journal file ({exc}); nothing was written. "
                          "To fix: pass the study's file, or a new path for a new study"
                          ) from None


class JournalUse:
    """This process's use of a journal file, as an advisory ``flock`` on it (no-op for a
    database URL, and without ``fcntl``): every process running trials holds a shared lock, so
    a run that obtains the exclusive lock (:attr:`sole`) knows that no other process is using
    the file — its trials still marked running were left by processes that died, and
    :func:`reclaim_stale` may fail and re-enqueue them (what heartbeats do on a database).
    Call :meth:`share` before running trials; the lock goes with the process, however it ends.
    """

    def __init__(self, url: str, *, claim: bool = False) -> None:
        self.url = url
        self.claim = claim
        self.sole = False
        self.fd: int | None = None

    def __enter__(self) -> JournalUse:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        if not is_journal(self.url):
            return self
        self.fd = os.open(self.url, os.O_RDONLY)
        if self.claim:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.sole = True
            except OSError:
                pass  # another process runs trials of it: its running trials are alive
        if not self.sole:
            self.share()
        return self

    def share(self) -> None:
        """Hold the lock shared (from exclusive: let this run's workers and others join)."""
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_SH)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None


def reclaim_stale(storage: Any, study: Any) -> int:
    """Fail the trials of ``study`` still marked running and enqueue each again (at most twice
    per trial, as :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` does for
    heartbeats); the number failed. Only for a study no live process runs trials of
    (:attr:`JournalUse.sole`)."""
    import optuna

    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if not running:
        return 0
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in running:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
        retry(study, storage.get_trial(trial_id))
    return len(running)


def make_sampler(seed: int | None) -> Any:
    """Seeded multivariate TPE (grouped for the conditional space; constant liar for
    parallel workers)."""
    import optuna

    with quiet_optuna():
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          constant_liar=True)


@dataclass(frozen=True)
class StudyInfo:
    """What a study's attributes say (see the module docstring)."""

    settings: StudySettings
    space: SearchSpace
    predictions: dict[str, dict[str, Any]]
    plan_keys: dict[str, str]
    target: int


def _exists(storage: Any, name: str) -> bool:
    return any(s.study_name == name for s in storage.get_all_studies())


def _check_identity(study: Any, problem: Problem, url: str) -> None:
    attrs = study.user_attrs
    seen = attrs.get(PREFIX + "fingerprint")
    if seen is None:
        raise ConfigError(f"study {study.study_name!r} in {masked(url)} was not made by "
                          "servingcast; refusing to add trials to it. To fix: pass another "
                          "--study-name")
    if seen != fingerprint(problem):
        other = attrs.get(PREFIX + "problem", "?")
        raise ConfigError(
            f"study {study.study_name!r} in {masked(url)} belongs to a different problem "
            f"({other!r}, fingerprint {seen[:12]}; this problem {problem.name!r} has "
            f"{fingerprint(problem)[:12]}); refusing to mix their trials. To fix: pass "
            "--study-name with a new name, or use another --output/--storage")


def _check_settings(study: Any, name: str, settings: StudySettings) -> None:
    stored = study.user_attrs.get(PREFIX + "settings")
    if stored != settings.to_dict():
        now = settings.to_dict()
        diff = {k: ((stored or {}).get(k, "unset"), now.get(k, "unset"))
                for k in sorted({*(stored or {}), *now}) if (stored or {}).get(k) != now.get(k)}
        raise ConfigError(
            f"study {name!r} was run with other settings ({', '.join(f'{k}: {a} here {b}' for k, (a, b) in diff.items())}); "  # noqa: E501
            "mixing them would compare trials on different simulations. To fix: rerun with "
            "the study's settings (e.g. its --seed), or pass a new --study-name")


def check_existing(url: str, name: str, problem: Problem, settings: StudySettings) -> None:
    """Refuse now what :func:`open_study` would refuse later (a study ``name`` of another
    problem or with other settings); writes nothing."""
    import optuna

    if is_journal(url) and not os.path.exists(url):
        return  # nothing to check, and no file made before the work
    storage = open_storage(url)
    if _exists(storage, name):
        study = optuna.load_study(study_name=name, storage=storage)
        _check_identity(study, problem, url)
        _check_settings(study, name, settings)


def recorded_problems(url: str) -> dict[str, str]:
    """The problems whose studies ``url`` holds: fingerprint → problem name."""
    out: dict[str, str] = {}
    if is_journal(url) and not os.path.exists(url):
        return out
    for s in open_storage(url).get_all_studies():
        seen = s.user_attrs.get(PREFIX + "fingerprint")
        if seen is not None:
            out[seen] = str(s.user_attrs.get(PREFIX + "problem", "?"))
    return out


def info_of(study: Any) -> StudyInfo:
    """The servingcast attributes of a study."""
    attrs = study.user_attrs
    return StudyInfo(settings=StudySettings.from_dict(attrs[PREFIX + "settings"]),
                     space=SearchSpace.model_validate(attrs[PREFIX + "space"]),
                     predictions=attrs[PREFIX + "predictions"],
                     plan_keys=attrs[PREFIX + "plan_keys"], target=int(attrs[PREFIX + "trials"]))


def name_metrics(study: Any, problem: Problem, settings: StudySettings) -> None:
    """Name the study's values for the dashboard (:func:`metric_names`), unless they already
    carry these names (an existing study may have none, from before they were set)."""
    names = metric_names(problem, settings)
    if len(study.directions) == len(names) and study.metric_names != names:
        with quiet_optuna():  # set_metric_names is experimental
            study.set_metric_names(names)


def open_study(storage: Any, url: str, name: str, problem: Problem, settings: StudySettings,
               space: SearchSpace, predictions: dict[str, dict[str, Any]],
               plan_keys: dict[str, str], target: int) -> tuple[Any, bool]:
    """Load the study ``name`` (checking it is this problem's, with these settings) or create
    it; ``(study, created)``. Nothing is written to a study that fails the checks."""
    import optuna

    sampler = make_sampler(settings.seed)
    if _exists(storage, name):
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        _check_identity(study, problem, url)
        _check_settings(study, name, settings)
        study.set_user_attr(PREFIX + "trials", target)
        name_metrics(study, problem, settings)
        return study, False
    with quiet_optuna():  # no "A new study created" log line
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                    directions=directions(problem, settings))
    name_metrics(study, problem, settings)
    for key, value in (("fingerprint", fingerprint(problem)), ("problem", problem.name),
                       ("settings", settings.to_dict()),
                       ("space", space.model_dump(mode="json")), ("predictions", predictions),
                       ("plan_keys", plan_keys), ("trials", target)):
        study.set_user_attr(PREFIX + key, value)
    return study, True


def join_study(storage: Any, url: str, name: str, problem: Problem) -> tuple[Any, StudyInfo]:
    """A worker's view of an existing study (refused when it is another problem's)."""
    import optuna

    if not _exists(storage, name):
        raise ConfigError(f"no study {name!r} in {masked(url)} to join. To fix: start the main "
                          f"run first (servingcast-solve PROBLEM --storage URL --study-name "
                          f"{name}), or pass the --study-name it printed")
    study = optuna.load_study(study_name=name, storage=storage)
    _check_identity(study, problem, url)
    return study, info_of(study)


def finished(study: Any) -> int:
    """Trials run to their end: complete (simulated or infeasible) and pruned duplicates."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def simulated(study: Any) -> int:
    """Trials that count towards the target: complete and simulated — not those outside the
    GPU budget or engine limits (recorded as infeasible, unsimulated), nor duplicates."""
    import optuna

    return sum(1 for t in study.get_trials(deepcopy=False,
                                           states=(optuna.trial.TrialState.COMPLETE,))
               if is_simulated(t))


_UNITS = {"max_goodput": "{:,.4g} req/s", "min_cost": "${:,.2f}/h",
          "max_goodput_per_dollar": "{:,.4g} req/s per $/h"}


def best_text(study: Any, objective: str) -> str:
    """``best 33.7 req/s (trial 7)``: the best feasible simulated trial by the problem's
    objective (``no feasible trial yet`` before one)."""
    import optuna

    best: tuple[float, int] | None = None
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        value = metrics_of(t).get("objective_value")
        if not is_simulated(t) or value is None or any(
                v > 0 for v in (t.constraints or {}).values()):
            continue
        better = best is None or (value < best[0] if objective == "min_cost" else value > best[0])
        if better:
            best = (float(value), t.number)
    if best is None:
        return "no feasible trial yet"
    return f"best {_UNITS.get(objective, '{:,.4g}').format(best[0])} (trial {best[1]})"


def trial_cap(target: int) -> int:
    """The most trials a study runs for ``target`` simulated ones: a safety stop when the
    sampler keeps proposing deployments outside the budget or repeating itself."""
    return 4 * target + 10


# -- running -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerArgs:
    """What one worker process needs (JSON-ready: it is sent to the process)."""

    problem: dict[str, Any]
    url: str
    study_name: str
    timeout_s: float | None
    sampler_seed: int | None
    target: int


class _Stop:
    """After each trial: report progress; stop once the study holds ``target`` simulated
    trials (or :func:`trial_cap` trials in all)."""

    def __init__(self, target: int, progress: Progress | None, start: int, total: int,
                 objective: str) -> None:
        self.target = target
        self.progress = progress
        self.start = start
        self.total = total
        self.objective = objective

    def __call__(self, study: Any, trial: Any) -> None:
        done = simulated(study)
        if self.progress is not None:
            self.progress(min(done - self.start, self.total), self.total,
                          best_text(study, self.objective))
        if done >= self.target or finished(study) >= trial_cap(self.target):
            study.stop()


def run_worker(args: WorkerArgs, progress: Progress | None = None, total: int = 0) -> int:
    """Run trials of an existing study until it holds ``args.target`` simulated trials (see
    :func:`simulated`) or the timeout passes; returns the simulated trials added while it ran.
    ``progress(done, total)`` is called after each trial."""
    with quiet_optuna():
        return _run_worker(args, progress, total)


def _run_worker(args: WorkerArgs, progress: Progress | None, total: int) -> int:
    problem = Problem.model_validate(args.problem)
    storage = open_storage(args.url)
    study, info = join_study(storage, args.url, args.study_name, problem)
    study.sampler = make_sampler(args.sampler_seed)
    objective = Objective(problem, info.space, info.settings, info.predictions, info.plan_keys)
    start = simulated(study)
    if start >= args.target or finished(study) >= trial_cap(args.target):
        return 0
    with JournalUse(args.url):
        study.optimize(objective, n_trials=None, timeout=args.timeout_s,
                       callbacks=[_Stop(args.target, progress, start, total, problem.objective)])
    return simulated(study) - start


def _spawn(args: WorkerArgs) -> subprocess.Popen[bytes]:
    """A fresh interpreter running :mod:`servingcast.refine._worker` on ``args`` (like
    multiprocessing's spawn, without re-importing the caller's ``__main__``, so it also works
    from scripts without a main guard and from notebooks)."""
    proc = subprocess.Popen([sys.executable, "-m", "servingcast.refine._worker"],
                            stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(asdict(args)).encode())
    proc.stdin.close()
    return proc


def run_local(args: WorkerArgs, jobs: int, total: int,
              progress: Progress | None = None) -> None:
    """Run trials until the study holds ``args.target`` simulated trials or the timeout passes:
    in this process (``jobs == 1``: exactly the target), else in ``jobs`` worker processes that
    share the storage, each with its own sampler seed (they may overshoot by up to
    ``jobs - 1`` trials that were running when the target was reached). The parent polls the
    storage to report progress out of ``total``; a worker that fails raises
    :class:`SimulationError` after the others finish (every trial they finished is kept)."""
    if total <= 0:
        return
    if jobs == 1:
        run_worker(args, progress, total)
        return
    import optuna

    procs = [_spawn(replace(args, sampler_seed=None if args.sampler_seed is None
                            else args.sampler_seed + i)) for i in range(jobs)]
    study = optuna.load_study(study_name=args.study_name, storage=open_storage(args.url))
    objective = str(args.problem.get("objective", "max_goodput"))
    start = simulated(study)
    last = -1
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(0.5)
            if progress is not None:
                done = min(total, simulated(study) - start)
                best = best_text(study, objective) if done != last else ""
                last = done
                progress(done, total, best)
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
        raise
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise SimulationError(
            "worker process(es) failed: " + ", ".join(f"#{i} (exit code {c})" for i, c in failed)
            + "; every trial they finished is kept in the study. To fix: see the error above, "
            "then rerun the same command to continue")
    if progress is not None:
        progress(min(total, simulated(study) - start), total, best_text(study, objective))


def default_pid_seed(seed: int) -> int:
    """A sampler seed for a worker joining from elsewhere (distinct per process)."""
    return (seed * 1_000_003 + os.getpid()) % (2**31)
