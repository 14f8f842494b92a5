"""The issue's check on a shipped problem: the refined plan's simulated goodput is at least
the MILP plan's (the MILP plan is trial 0). qwen3-32b-h200x32 runs in scripts/bench_refine.py."""

from __future__ import annotations

from pathlib import Path

from servingcast.planner import load_problem
from servingcast.refine import RefineOptions, StudySettings, refine

from .conftest import PROBLEMS, planning_of


def test_quickstart_refined_is_no_worse_than_milp(tmp_path: Path) -> None:
    problem = load_problem(PROBLEMS / "quickstart.yaml")
    planning = planning_of(problem)
    # short runs (a cluster of 8 x ~236 sequences, E2E ~12 s), just long enough to judge
    settings = StudySettings(sim_requests=3000, sim_window_s=8.0, max_sim_requests=3000,
                             capacity_multiple=1.0, e2e_multiple=1.0)
    result = refine(problem, planning, RefineOptions(
        trials=4, settings=settings, storage=f"sqlite:///{tmp_path / 'study.db'}"))
    assert result.milp_trial == 0
    assert result.evaluation.goodput_per_s >= result.milp_evaluation.goodput_per_s > 0
    assert result.evaluation.workloads[0].attainment >= 0.9
