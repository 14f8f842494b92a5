"""Local worker processes share one study; a run killed with SIGKILL loses no finished trial
and rerunning the same command continues the study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from servingcast.refine import refine
from servingcast.refine.objective import is_simulated
from servingcast.refine.study import open_storage

from .conftest import fast_options, planning_of, sqlite, tiny_data, tiny_problem

RUN = """
import json, sys
from servingcast.planner import solve
from servingcast.planner.problem import problem_from_dict
from servingcast.refine import RefineOptions, StudySettings, refine
problem = problem_from_dict(json.loads(open(sys.argv[1]).read()))
planning = solve(problem, top_k=3, pareto_factors=None, compare_modes=False)
settings = StudySettings(sim_requests=300, max_sim_requests=300)
result = refine(problem, planning, RefineOptions(trials=int(sys.argv[3]), storage=sys.argv[2],
                                                 settings=settings))
print(result.stats.simulated, result.value)
"""


def _simulated(url: str) -> int:
    study = optuna.load_study(study_name="tiny", storage=open_storage(url))
    return sum(is_simulated(t) for t in study.trials
               if t.state == optuna.trial.TrialState.COMPLETE)


def _complete(url: str) -> dict[int, tuple[object, dict]]:
    study = optuna.load_study(study_name="tiny", storage=open_storage(url))
    return {t.number: (t.values, t.params) for t in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}


def test_jobs_share_one_study_across_processes(tmp_path: Path) -> None:
    problem = tiny_problem()
    url = sqlite(tmp_path / "study.db")
    result = refine(problem, planning_of(problem), fast_options(trials=8, jobs=2, storage=url))
    assert 8 <= result.stats.simulated <= 9 and result.stats.failed == 0  # may overshoot by 1
    study = optuna.load_study(study_name="tiny", storage=open_storage(url))
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2 and str(os.getpid()) not in {w.split(":")[-1] for w in workers}
    assert result.value >= result.milp_value
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == len(done)


@pytest.mark.parametrize("file", ["study.db", "study.log"])
def test_sigkill_then_rerun_keeps_every_finished_trial(tmp_path: Path, file: str) -> None:
    """SQLite (heartbeats) and the journal file (a trial left running is failed and queued
    again by the rerun)."""
    problem_file = tmp_path / "tiny.json"
    problem_file.write_text(json.dumps(tiny_data()))
    url = sqlite(tmp_path / file) if file.endswith(".db") else str(tmp_path / file)
    command = [sys.executable, "-c", RUN, str(problem_file), url, "10"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    seen: dict[int, tuple[object, dict]] = {}
    errors: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if (tmp_path / file).exists():
            try:
                seen = _complete(url)
            except Exception as exc:  # the study may not exist yet
                errors.append(repr(exc))
                continue
            if len(seen) >= 3:
                break
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err.decode()[-6000:],
                                                errors[-3:])
    killed = _complete(url)
    assert len(killed) >= 3 and _simulated(url) < 10
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    after = _complete(url)
    for number, record in killed.items():
        assert after[number] == record
    assert _simulated(url) == 10
    assert rerun.stdout.split()[0] == "10"
