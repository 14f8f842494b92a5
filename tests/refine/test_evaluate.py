"""The rate search: the sustained rate meets its target in simulation, the next grid rate up
does not, and common random numbers make a deployment's value a function of the deployment."""

from __future__ import annotations

import math

from servingcast.refine.deployment import deployment_of
from servingcast.refine.evaluate import Evaluator
from servingcast.refine.space import build_space

from .conftest import FAST, planning_of, tiny_problem


def _evaluator(problem, planning):
    space = build_space(problem, [planning.plan, *planning.alternatives], 0.3, FAST)
    return Evaluator(problem, space, FAST)


def test_sustained_rate_is_the_edge_of_the_slo() -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    ev = _evaluator(problem, planning)
    ws = deployment_of(problem, planning.plan).workloads[0]
    result = ev.search(ws, ws.parts[0], None)
    assert result.rate_per_s > 0 and result.point is not None
    assert result.point.attainment >= 0.9
    assert result.point.too_short is None
    # one grid step up is not sustained (the search bisected to a one-step bracket)
    up, _ = ev.simulate(ws, ws.parts[0], result.rate_per_s * (1 + FAST.rate_step))
    assert up.attainment < 0.9 or up.too_short is not None
    # the tested rates are real simulations, in the order run
    assert (result.rate_per_s, result.point.attainment) in result.tested


def test_same_deployment_same_value_whatever_came_before() -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    dep = deployment_of(problem, planning.plan)
    first = _evaluator(problem, planning)
    for alt in planning.alternatives:
        first.evaluate(deployment_of(problem, alt))
    a = first.evaluate(dep)
    b = _evaluator(problem, planning).evaluate(dep)
    assert a.goodput_per_s == b.goodput_per_s
    assert a.workloads[0].ttft_ms == b.workloads[0].ttft_ms


def test_cached_simulations_are_not_rerun() -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    ev = _evaluator(problem, planning)
    dep = deployment_of(problem, planning.plan)
    fresh = ev.evaluate(dep)
    again = ev.evaluate(dep)
    assert fresh.simulations > 0 and again.simulations == 0
    assert again.goodput_per_s == fresh.goodput_per_s


def test_demand_caps_the_search() -> None:
    problem = tiny_problem(workloads=[{**tiny_problem().model_dump(
        mode="json", by_alias=True)["workloads"][0], "demand": 5.0}])
    planning = planning_of(problem)
    ev = _evaluator(problem, planning)
    result = ev.evaluate(deployment_of(problem, planning.plan))
    w = result.workloads[0]
    assert w.served_per_s == 5.0
    part = w.parts[0]
    assert part.tested[0][0] == 5.0 and part.simulations == 1  # met at the demand: one run
    assert math.isclose(result.goodput_per_s, 5.0)
