"""Distributed refinement on a real PostgreSQL server: two worker processes (``join``, what
``servingcast-solve PROBLEM --storage URL --worker`` runs) and the main run share one study."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna

from servingcast.refine import refine
from servingcast.refine.objective import is_simulated
from servingcast.refine.study import open_storage

from .conftest import fast_options, planning_of, sqlite, tiny_data, tiny_problem

JOIN = """
import json, sys
from servingcast.planner.problem import problem_from_dict
from servingcast.refine import RefineOptions, join
problem = problem_from_dict(json.loads(open(sys.argv[1]).read()))
report = join(problem, RefineOptions(storage=sys.argv[2], trials=int(sys.argv[3])))
print(report.new_trials)
"""

TRIALS = 12


def test_two_workers_and_the_main_run_share_a_study(postgres_url: str, tmp_path: Path) -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    problem_file = tmp_path / "tiny.json"
    problem_file.write_text(json.dumps(tiny_data()))
    refine(problem, planning, fast_options(trials=1, storage=postgres_url))  # creates it
    storage = open_storage(postgres_url)
    workers = [subprocess.Popen([sys.executable, "-c", JOIN, str(problem_file), postgres_url,
                                 str(TRIALS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # let both workers start before the main run joins in
        study = optuna.load_study(study_name="tiny", storage=storage)
        if len({t.user_attrs.get("worker") for t in study.trials} - {None}) >= 3:
            break
        time.sleep(0.2)
    refine(problem, planning, fast_options(trials=TRIALS, storage=postgres_url))
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    result = refine(problem, planning, fast_options(trials=TRIALS, storage=postgres_url))
    assert result.stats.new_trials == 0

    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    simulated = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
                 and is_simulated(t)]
    assert TRIALS <= len(simulated) <= TRIALS + 2  # the last running trials may overshoot
    by_process: dict[str, int] = {}
    for t in trials:
        by_process[t.user_attrs["worker"]] = by_process.get(t.user_attrs["worker"], 0) + 1
    assert len(by_process) == 3  # this process (the first run, then the main run) and 2 workers
    assert by_process[f"{socket.gethostname()}:{os.getpid()}"] >= 2
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == len(complete)
    assert all(t.user_attrs["duplicate_of"] < t.number for t in trials
               if "duplicate_of" in t.user_attrs)

    single = refine(problem, planning, fast_options(trials=TRIALS,
                                                    storage=sqlite(tmp_path / "single.db")))
    assert result.value >= single.value
    assert result.value >= result.milp_value
