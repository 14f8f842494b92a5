"""Storage and study handling: resuming tops a study up, a study of another problem or with
other settings is refused and left untouched, bad options and unreachable storages are clear
errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest

from servingcast.errors import ConfigError
from servingcast.refine import RefineOptions, refine
from servingcast.refine.study import open_storage, quiet_optuna

from .conftest import FAST, fast_options, planning_of, sqlite, tiny_problem


def _snapshot(url: str, name: str) -> list[tuple[int, str, object, dict]]:
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    return [(t.number, t.state.name, t.values, t.params) for t in study.trials]


def test_rerun_tops_the_study_up(tmp_path: Path) -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    url = sqlite(tmp_path / "study.db")
    first = refine(problem, planning, fast_options(trials=4, storage=url))
    before = _snapshot(url, "tiny")
    study = optuna.load_study(study_name="tiny", storage=open_storage(url))
    with quiet_optuna():  # set_metric_names is experimental
        study.set_metric_names(["Objective 0"])  # as a study from before the names were set
    again = refine(problem, planning, fast_options(trials=4, storage=url))
    assert again.stats.new_trials == 0 and _snapshot(url, "tiny") == before
    assert study.metric_names == ["goodput (req/s)"]  # named on resuming
    assert again.value == first.value
    more = refine(problem, planning, fast_options(trials=7, storage=url))
    after = _snapshot(url, "tiny")
    assert after[:len(before)] == before
    assert more.stats.simulated == 7 and more.stats.new_trials == 3
    assert more.value >= first.value


def test_foreign_study_is_refused_and_untouched(tmp_path: Path) -> None:
    url = sqlite(tmp_path / "study.db")
    small = tiny_problem()
    refine(small, planning_of(small), fast_options(trials=2, storage=url, study_name="shared"))
    before = _snapshot(url, "shared")
    other = tiny_problem(name="other", pools=[{"name": "h100", "hardware": "h100-sxm",
                                               "count": 4}])
    with pytest.raises(ConfigError) as info:
        refine(other, planning_of(other), fast_options(trials=3, storage=url,
                                                       study_name="shared"))
    message = str(info.value)
    assert "study 'shared'" in message and "belongs to a different problem ('tiny'" in message
    assert "refusing to mix their trials. To fix: pass --study-name with a new name" in message
    assert _snapshot(url, "shared") == before


def test_other_settings_are_refused(tmp_path: Path) -> None:
    problem = tiny_problem()
    url = sqlite(tmp_path / "study.db")
    refine(problem, planning_of(problem), fast_options(trials=2, storage=url))
    before = _snapshot(url, "tiny")
    seeded = dataclasses.replace(FAST, seed=7)
    with pytest.raises(ConfigError, match=r"was run with other settings \(seed: 0 here 7\)"):
        refine(problem, planning_of(problem), fast_options(trials=3, storage=url,
                                                           settings=seeded))
    assert _snapshot(url, "tiny") == before


def test_a_study_not_made_by_servingcast_is_refused(tmp_path: Path) -> None:
    url = sqlite(tmp_path / "study.db")
    optuna.create_study(study_name="tiny", storage=url)
    problem = tiny_problem()
    with pytest.raises(ConfigError, match="was not made by servingcast"):
        refine(problem, planning_of(problem), fast_options(storage=url))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"trials": 0}, "--trials must be >= 1, got 0. To fix: ask for at least one trial"),
    ({"trials": -3}, "--trials must be >= 1, got -3"),
    ({"timeout_s": 0.0}, "--timeout must be a number of seconds > 0, got 0.0. To fix: e.g. "
                         "--timeout 600"),
    ({"timeout_s": -1.0}, "--timeout must be a number of seconds > 0, got -1.0"),
    ({"jobs": 0}, "--jobs must be >= 1, got 0"),
    ({"storage": "study.db"}, "--storage 'study.db' is neither a database URL nor an Optuna "
                              "journal file (a plain path names a journal file; SQLite needs a "
                              "URL). To fix: e.g. --storage out/study.log, sqlite:///study.db "),
    ({"storage": " "}, "--storage ' ' is neither a database URL nor an Optuna journal file"),
])
def test_bad_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RefineOptions(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_in_memory_storage_is_refused() -> None:
    problem = tiny_problem()
    with pytest.raises(ConfigError, match="is an in-memory database: worker processes cannot "
                                          "share it"):
        refine(problem, planning_of(problem), fast_options(storage="sqlite:///:memory:"))


@pytest.mark.parametrize("url", [
    "sqlite:////nonexistent-folder/servingcast/study.db",
    "postgresql://nobody:secret@127.0.0.1:1/none",
])
def test_unreachable_storage(url: str) -> None:
    problem = tiny_problem()
    with pytest.raises(ConfigError) as info:
        refine(problem, planning_of(problem), fast_options(storage=url))
    message = str(info.value)
    assert message.startswith("cannot open the Optuna storage")
    assert "To fix:" in message and "secret" not in message
