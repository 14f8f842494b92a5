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
        # Equal but for the capacities that weight each group's traffic.
        assert suggest(trial, space).same_groups(dep)
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


def test_structural_moves_reach_other_layouts() -> None:
    """Beyond the MILP's plans: each role's tp/pp and count, and the router, are searched, so
    e.g. 20 tp1 prefill + 3 tp4 decode instances on 32 H200 is reachable."""
    from servingcast.planner import load_problem
    from servingcast.refine.deployment import ROUTERS

    problem = load_problem(PROBLEMS / "qwen3-32b-h200x32.yaml")
    planning = planning_of(problem)
    space = _space(problem, planning)
    ws = space.workloads[0]
    layouts = {lay.name: lay for lay in ws.layouts}
    assert {"any-aggregated", "any-disaggregated"} <= set(layouts)
    dis = layouts["any-disaggregated"]
    assert dis.roles == ("prefill", "decode")
    prefill, decode = dis.choices
    assert "prefill-h200-tp1" in prefill and "prefill-h200-tp1-pp2" in prefill
    assert "decode-h200-tp4" in decode and "decode-h200-tp1" in decode
    assert ws.slot("prefill-h200-tp1").wide_count_high == 32
    study = optuna.create_study()
    study.enqueue_trial({"rag/layout": "any-disaggregated", "rag/router": "power_of_two",
                         "rag/any-disaggregated/prefill/shape": "prefill-h200-tp1",
                         "rag/any-disaggregated/prefill-h200-tp1/count": 20,
                         "rag/any-disaggregated/decode/shape": "decode-h200-tp4",
                         "rag/any-disaggregated/decode-h200-tp4/count": 3})
    dep = suggest(study.ask(), space)
    w = dep.workloads[0]
    assert w.router == "power_of_two" and "power_of_two" in ROUTERS
    assert [(g.role, g.tp, g.pp, g.count) for g in w.groups] == [("prefill", 1, 1, 20),
                                                                 ("decode", 4, 1, 3)]
    assert budget_violation(problem, dep) == (0.0, [])
    # a structural count can exceed the pool: measured, never clipped
    study.enqueue_trial({"rag/layout": "any-aggregated",
                         "rag/any-aggregated/aggregated/shape": "aggregated-h200-tp2",
                         "rag/any-aggregated/aggregated-h200-tp2/count": 16,
                         "rag/router": "round_robin"})
    study.enqueue_trial({"rag/layout": "any-disaggregated", "rag/router": "round_robin",
                         "rag/any-disaggregated/prefill/shape": "prefill-h200-tp1",
                         "rag/any-disaggregated/prefill-h200-tp1/count": 30,
                         "rag/any-disaggregated/decode/shape": "decode-h200-tp4",
                         "rag/any-disaggregated/decode-h200-tp4/count": 8})
    suggest(study.ask(), space)
    over = suggest(study.ask(), space)
    assert over.total_gpus == 62 and budget_violation(problem, over)[0] > 0
