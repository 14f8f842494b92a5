"""Where a study lives: an Optuna journal file for local runs (shared by worker processes,
resumed by a rerun, its dead trials reclaimed), an older folder's SQLite study.db resumed where
it is, and result files that record no absolute path."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from click.testing import CliRunner

from servingcast._cli_solve import solve_command
from servingcast.errors import ConfigError
from servingcast.refine import RefineOptions, refine
from servingcast.refine.cli_options import RefineCli, refine_plan
from servingcast.refine.objective import is_simulated
from servingcast.refine.run import dashboard_command, join, storage_in_folder
from servingcast.refine.study import JournalUse, open_storage

from .conftest import PROBLEMS, fast_options, planning_of, sqlite, tiny_problem

QUICKSTART = str(PROBLEMS / "quickstart.yaml")
#: servingcast-solve with the fewest and smallest simulations.
FAST_CLI = ("--sim-requests", "300", "--max-sim-requests", "300", "--no-pareto", "--top", "1")


def _trials(storage: str, name: str = "tiny") -> list[Any]:
    return optuna.load_study(study_name=name, storage=open_storage(storage)).trials


def _snapshot(storage: str) -> list[tuple[int, str, object, dict[str, Any]]]:
    """The finished trials (an enqueued plan still waiting is run by the next run)."""
    return [(t.number, t.state.name, t.values, t.params) for t in _trials(storage)
            if t.state.is_finished()]


def test_local_jobs_share_a_journal_and_a_rerun_continues_it(tmp_path: Path) -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    log = str(tmp_path / "study.log")
    first = refine(problem, planning, fast_options(trials=4, jobs=2, storage=log))
    assert 4 <= first.stats.simulated <= 5 and first.stats.failed == 0  # may overshoot by 1
    assert first.storage == log and first.dashboard_command == f"optuna-dashboard {log}"
    trials = _trials(log)
    workers = {t.user_attrs["worker"].split(":")[-1] for t in trials}
    assert len(workers) == 2 and str(os.getpid()) not in workers  # two worker processes
    assert not os.path.exists(log + ".lock")  # Optuna's write lock is released
    before = _snapshot(log)
    again = refine(problem, planning, fast_options(trials=first.stats.simulated + 2, jobs=2,
                                                   storage=log))
    assert again.stats.new_trials >= 2 and again.stats.simulated >= first.stats.simulated + 2
    after = _snapshot(log)
    assert after[:len(before)] == before  # every finished trial kept, numbers continue
    assert [t.number for t in _trials(log)] == list(range(len(_trials(log))))


def test_trials_left_running_by_a_dead_process_are_failed_and_retried(tmp_path: Path) -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    log = str(tmp_path / "study.log")
    refine(problem, planning, fast_options(trials=2, storage=log))
    study = optuna.load_study(study_name="tiny", storage=open_storage(log))
    orphan = study.ask()  # as a worker killed mid-trial leaves it: RUNNING, no heartbeat
    popped = study.trials[orphan.number]  # the last MILP plan, enqueued and not yet run
    params, source = popped.system_attrs["fixed_params"], popped.user_attrs["source"]
    assert source == "milp: alternative 2"
    with JournalUse(log):  # another process runs trials of it: its trial may be alive
        busy = refine(problem, planning, fast_options(trials=3, storage=log))
    assert _trials(log)[orphan.number].state == optuna.trial.TrialState.RUNNING
    assert not any("left running" in n for n in busy.notes)
    done = refine(problem, planning, fast_options(trials=5, storage=log))
    trials = _trials(log)
    assert trials[orphan.number].state == optuna.trial.TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retried) == 1 and retried[0].params == params
    assert retried[0].state == optuna.trial.TrialState.COMPLETE and is_simulated(retried[0])
    assert retried[0].user_attrs["source"] == source
    assert "1 trial(s) left running by a run that stopped were marked failed and queued " \
           "again" in done.notes
    assert done.stats.failed == 1 and done.stats.simulated == 5


def test_output_folder_uses_a_journal_for_any_jobs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for jobs in (1, 4):
        assert RefineCli(jobs=jobs).options(out).storage == str(out / "study.log")
    passed = f"sqlite:///{tmp_path / 'mine.db'}"
    assert RefineCli(storage=passed).options(out).storage == passed


def test_an_older_folders_study_db_is_resumed_not_started_over(tmp_path: Path) -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    out = tmp_path / "out"
    out.mkdir()
    db = sqlite(out / "study.db")  # as servingcast wrote it before the journal file
    cli = RefineCli(trials=3, sim_requests=400, max_sim_requests=400)
    refine(problem, planning, RefineOptions(trials=2, storage=db,
                                            settings=cli.options(None).settings))
    before = _snapshot(db)
    assert cli.options(out).storage == db
    result = refine_plan(problem, planning, cli, out)
    assert result is not None and result.stats.simulated == 3 and result.stats.new_trials == 1
    resumed = _snapshot(db)
    assert resumed[:len(before)] == before and len(resumed) > len(before)
    assert not (out / "study.log").exists()
    assert result.storage_in_folder == "sqlite:///study.db"
    assert any("resumed from study.db (SQLite), written by an earlier servingcast" in n
               for n in result.notes)
    (out / "study.log").write_text("")
    with pytest.raises(ConfigError) as info:
        cli.options(out)
    assert str(info.value).startswith(
        f"{out} holds two studies, study.log (Optuna journal) and study.db (SQLite, from an "
        "earlier servingcast), and a rerun could resume either; nothing was done. To fix: "
        f"name one with --storage {out / 'study.log'} or --storage sqlite:///")
    assert _snapshot(db) == resumed


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_result_files_record_no_absolute_path(tmp_path: Path) -> None:
    """servingcast-solve --jobs 2 into an absolute --output; a rerun (one job) resumes the
    journal."""
    out = tmp_path / "out"
    args = [QUICKSTART, "--output", str(out), "--trials", "2", "--jobs", "2", *FAST_CLI]
    result = CliRunner().invoke(solve_command, args)
    assert result.exit_code == 0, result.output
    log = str(out / "study.log")
    simulated = sum(is_simulated(t) for t in _trials(log, "quickstart")
                    if t.state == optuna.trial.TrialState.COMPLETE)
    assert simulated >= 2
    assert f"watch it: optuna-dashboard {out / 'study.log'}" in result.stdout
    plan = json.loads((out / "plan.json").read_text())
    assert plan["refined"]["study"]["storage"] == "study.log"
    assert plan["refined"]["study"]["dashboard"] == "optuna-dashboard study.log"
    seen = 0
    here = [str(p).encode() for p in (tmp_path, PROBLEMS, Path.cwd())]
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        assert not any(h in data for h in here), path  # study.log, deploy/ and PNGs included
        if path.parent == out and path.suffix in (".json", ".yaml"):  # deploy/: container paths
            loaded = ([json.loads(data)] if path.suffix == ".json"
                      else list(yaml.safe_load_all(data)))
            for text in _strings(loaded):
                assert not Path(text).is_absolute() and "sqlite:////" not in text, (path, text)
            seen += 1
    assert seen >= 3  # plan.json, alternatives.json, scenario.yaml
    first = len(_trials(log, "quickstart"))
    again = CliRunner().invoke(solve_command,
                               [*args[:3], "--trials", str(simulated + 1), *FAST_CLI])
    assert again.exit_code == 0, again.output
    trials = _trials(log, "quickstart")
    assert len(trials) > first and [t.number for t in trials] == list(range(len(trials)))
    assert not (out / "study.db").exists()


def test_storage_in_folder_and_dashboard_command(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "out"
    assert storage_in_folder(str(out / "study.log"), out) == "study.log"
    assert storage_in_folder("runs/out/study.log", Path("runs/out")) == "study.log"
    assert storage_in_folder(f"sqlite:///{out / 'study.db'}", out) == "sqlite:///study.db"
    assert storage_in_folder("shared/study.log", out) == "../../shared/study.log"
    assert storage_in_folder("sqlite:////data/s.db", out) == "sqlite:////data/s.db"  # as given
    assert storage_in_folder("postgresql://u:pw@h/db", out) == "postgresql://u:***@h/db"
    assert dashboard_command("my runs/study.log") == "optuna-dashboard 'my runs/study.log'"


def test_journal_paths_that_cannot_be_used_are_clear_errors(tmp_path: Path) -> None:
    problem = tiny_problem()
    db = tmp_path / "old.db"
    refine(problem, planning_of(problem), fast_options(trials=1, storage=sqlite(db)))
    sqlite_file = tmp_path / "renamed"
    sqlite_file.write_bytes(db.read_bytes())
    cases = {
        str(sqlite_file): f"--storage {sqlite_file} is an SQLite database, not an Optuna "
                          f"journal file. To fix: pass it as a URL, --storage "
                          f"sqlite:///{sqlite_file}",
        str(tmp_path): f"cannot open the Optuna journal file {tmp_path} (Is a directory). "
                       "To fix: choose a writable file path",
        str(tmp_path / "none" / "study.log"): "cannot open the Optuna journal file",
    }
    for storage, message in cases.items():
        with pytest.raises(ConfigError) as info:
            refine(problem, planning_of(problem), fast_options(trials=1, storage=storage))
        assert str(info.value).startswith(message), str(info.value)
    garbage = tmp_path / "notes.log"
    garbage.write_text("not json\nnor this\n")
    with pytest.raises(ConfigError, match=r"notes.log is not an Optuna journal file"):
        refine(problem, planning_of(problem), fast_options(trials=1, storage=str(garbage)))
    assert garbage.read_text() == "not json\nnor this\n"
    missing = tmp_path / "missing.log"
    with pytest.raises(ConfigError, match=r"no study 'tiny' in .*missing.log to join: the file "
                                          r"does not exist"):
        join(problem, RefineOptions(trials=None, storage=str(missing)))
    assert not missing.exists()
