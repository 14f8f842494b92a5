"""The search space: every MILP plan lies in it, parameters decode back to the plan, and the
GPU budget is checked, never enforced by clipping."""

from __future__ import annotations

import optuna
import pytest

from servingcast.refine.deployment import (
    Deployment,
    budget_violation,
    deployment_of,
    engine_violation,
)
from servingcast.refine.options import StudySettings
from servingcast.refine.space import build_space, params_of, suggest

from .conftest import PROBLEMS, planning_of, tiny_problem


def _space(problem, planning, spread=0.3):
    return build_space(problem, [planning.plan, *planning.alternatives], spread, StudySettings())


@pytest.mark.parametrize("stem", ["quickstart", "qwen3-32b-h200x32"])
def test_every_milp_plan_is_reproduced_by_its_parameters(stem: str) -> None:
    from servingcast.planner import load_problem

    problem = load_problem(PROBLEMS / f"{stem}.yaml")
    planning = planning_of(problem)
    space = _space(problem, planning)
    for plan in [planning.plan, *planning.alternatives]:
        dep = deployment_of(problem, plan)
        params = params_of(space, dep)  # raises when the plan is not in the space
        study = optuna.create_study()
        study.enqueue_trial(params)
        trial = study.ask()
        assert suggest(trial, space) == dep
        assert budget_violation(problem, dep) == (0.0, [])
        assert engine_violation(dep)[0] == 0


def test_count_ranges_surround_the_milp_counts() -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    space = _space(problem, planning)
    for plan in [planning.plan, *planning.alternatives]:
        for g in deployment_of(problem, plan).workloads[0].groups:
            slot = space.workloads[0].slot(g.slot)
            assert slot.count_low <= g.count <= slot.count_high
            assert slot.count_high * slot.gpus_per_instance <= 2  # never more than the pool


def test_over_budget_is_measured_not_clipped() -> None:
    problem = tiny_problem()
    dep = deployment_of(problem, planning_of(problem).plan)
    group = dep.workloads[0].groups[0]
    bigger = Deployment(workloads=(dep.workloads[0].model_copy(update={"groups": (
        group.model_copy(update={"count": group.count + 2}),)}),))
    excess, messages = budget_violation(problem, bigger)
    assert excess > 0
    assert messages == [f"h100: {bigger.total_gpus} GPUs > 2", f"h100: {bigger.total_gpus // 2}"
                        " nodes > 1"] or messages[0] == f"h100: {bigger.total_gpus} GPUs > 2"
    assert bigger.workloads[0].groups[0].count == group.count + 2


def test_engine_rule_is_reported() -> None:
    problem = tiny_problem()
    dep = deployment_of(problem, planning_of(problem).plan)
    g = dep.workloads[0].groups[0]
    bad = Deployment(workloads=(dep.workloads[0].model_copy(update={"groups": (
        g.model_copy(update={"max_num_seqs": 512, "max_num_batched_tokens": 256}),)}),))
    count, messages = engine_violation(bad)
    assert count == 1
    assert "max_num_batched_tokens 256 < max_num_seqs 512" in messages[0]


def test_simulation_size_covers_a_window_of_traffic() -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    settings = StudySettings(sim_requests=100, sim_window_s=30.0, max_sim_requests=100_000)
    space = build_space(problem, [planning.plan], 0.3, settings)
    rate = planning.plan.workloads[0].served_rate_per_s
    assert space.workloads[0].num_requests >= 30.0 * rate
