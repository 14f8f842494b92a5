"""N+1 headroom (servingcast.planner.headroom): the MILP constraints and the one-node-down check."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from servingcast._cli_solve import solve_command
from servingcast.errors import ConfigError, InfeasibleError
from servingcast.planner import solve
from servingcast.planner.headroom import (
    check_one_node_down,
    format_node_down,
    per_node,
    placement,
    plan_without,
    worst_node,
)
from servingcast.planner.plan import Plan
from servingcast.planner.problem import Problem, load_problem
from servingcast.planner.verify import verify_plan

from .conftest import PROBLEMS, make_problem


def headroom_problem(headroom: str, count: int = 16, demand: str = "20 req/s") -> Problem:
    return make_problem(objective="min_cost", headroom=headroom,
                        pools=[{"name": "h100", "hardware": "h100-sxm", "count": count,
                                "price_per_gpu_hour": 2.99}],
                        workloads=[{"name": "chat", "model": "llama-3.1-8b", "input_len": 1024,
                                    "output_len": 256, "demand": demand,
                                    "slo": {"ttft": "500 ms", "tpot": "50 ms"}}])


@functools.cache
def planned(headroom: str) -> tuple[Problem, Plan]:
    problem = headroom_problem(headroom)
    return problem, solve(problem, top_k=1, pareto_factors=None, compare_modes=False).plan


def _left_after_each_node(problem: Problem, plan: Plan) -> list[float]:
    """Recomputed without the MILP: the capacity left (req/s) after losing one node of each
    group, under the plan's placement."""
    places = placement(problem, plan)
    groups = plan.groups
    out = []
    for i, g in enumerate(groups):
        lost = min(g.count, places[g.name].per_node)
        left = {"aggregated": 0.0, "prefill": 0.0, "decode": 0.0}
        for j, h in enumerate(groups):
            left[h.role] += h.capacity_per_instance_per_s * (h.count - (lost if j == i else 0))
        # what is served: the aggregated part, and the disaggregated part's slower phase
        out.append(left["aggregated"] + min(left["prefill"], left["decode"]))
    return out


def test_per_node() -> None:
    assert [per_node(g, 8) for g in (1, 2, 4, 8, 16)] == [8, 4, 2, 1, 1]
    assert per_node(2, 2) == 1


def test_n_plus_one_needs_more_instances_and_survives_every_node() -> None:
    problem, plain = planned("none")
    _, safe = planned("n_plus_one")
    demand = 20.0
    # (the plain optimum can be aggregated or disaggregated: HiGHS versions break the tie
    # differently; either way it does not survive a node loss and the safe plan costs more)
    assert safe.cost_per_hour is not None and plain.cost_per_hour is not None
    assert safe.cost_per_hour >= plain.cost_per_hour
    assert safe.total_gpus >= plain.total_gpus
    assert safe.served_rate_per_s == pytest.approx(demand)
    assert verify_plan(problem, safe) == []
    # the plain plan does not survive losing one of its nodes
    assert min(_left_after_each_node(problem, plain)) < demand
    assert min(_left_after_each_node(problem, safe)) >= demand * (1 - 1e-6)
    # each configuration on nodes of its own, spread so that the node budget holds
    places = placement(problem, safe)
    assert sum(p.nodes for p in places.values()) <= problem.pool("h100").nodes
    for g in safe.groups:
        p = places[g.name]
        assert not p.packed and p.count == g.count
        assert 1 <= p.per_node <= per_node(g.gpus_per_instance, 8)
        assert p.nodes * p.per_node >= g.count


def test_worst_node_and_plan_without() -> None:
    problem, safe = planned("n_plus_one")
    wp = safe.workloads[0]
    places = placement(problem, safe)
    hit = worst_node(wp, "aggregated", places)
    assert hit is not None
    group, lost, left = hit
    assert lost == min(group.count, places[group.name].per_node)
    smaller = plan_without(safe, "chat", "aggregated", left)
    assert sum(g.count for g in smaller.groups) == sum(g.count for g in safe.groups) - lost
    left_capacity = sum(g.capacity_per_instance_per_s * g.count for g in left)
    assert left_capacity == pytest.approx(min(_left_after_each_node(problem, safe)))


def test_one_node_down_simulation_meets_the_target() -> None:
    pytest.importorskip("servingcast.sim")
    problem, safe = planned("n_plus_one")
    checks = check_one_node_down(problem, safe, num_requests=1500)
    assert len(checks) == 1
    check = checks[0]
    assert check.planned_per_s == pytest.approx(20.0)
    assert check.capacity_left_per_s >= 20.0
    assert check.attainment >= check.target and check.meets_target
    text = format_node_down(checks, placement(problem, safe))
    assert "every part meets its SLO target" in text and "at most" in text
    # reproducible for a seed
    again = check_one_node_down(problem, safe, num_requests=1500)
    assert again[0].attainment == check.attainment


def test_one_node_down_check_fails_the_plain_plan() -> None:
    problem, plain = planned("none")
    checks = check_one_node_down(problem, plain, num_requests=1500)
    assert not all(c.meets_target for c in checks)
    assert min(c.capacity_left_per_s for c in checks) < 20.0
    assert "misses its SLO target" in format_node_down(checks, placement(problem, plain))


def test_one_node_pool_cannot_survive_losing_it() -> None:
    problem = headroom_problem("n_plus_one", count=8)
    with pytest.raises(InfeasibleError) as info:
        solve(problem, top_k=1, pareto_factors=None, compare_modes=False)
    text = str(info.value)
    assert "headroom n_plus_one: no plan meets every demand with any one node lost" in text
    assert "h100: 1 node(s) of 8 GPUs" in text and "To fix: add nodes" in text


def test_headroom_needs_min_cost() -> None:
    with pytest.raises(ConfigError, match="headroom n_plus_one keeps every demand met"):
        make_problem(headroom="n_plus_one")


def test_headroom_in_every_period() -> None:
    from servingcast.planner.periods import plan_daily

    problem = make_problem(
        objective="min_cost", headroom="n_plus_one",
        pools=[{"name": "h100", "hardware": "h100-sxm", "count": 16}],
        workloads=[{"name": "chat", "model": "llama-3.1-8b", "input_len": 1024,
                    "output_len": 256, "slo": {"ttft": "500 ms", "tpot": "50 ms"},
                    "demand_profile": {"period": "1 h", "rates": [2, 20]}}])
    daily = plan_daily(problem)
    for period in daily.periods:
        # even the quiet period keeps serving with either node lost: more than one instance
        assert sum(g.count for g in period.groups) >= 2


def test_shipped_problem_cli(tmp_path: Path) -> None:
    pytest.importorskip("servingcast.sim")
    path = PROBLEMS / "n-plus-one-llama-3.1-8b.yaml"
    assert load_problem(path).headroom == "n_plus_one"
    out = tmp_path / "out"
    result = CliRunner().invoke(solve_command, [str(path), "--no-refine", "--no-pareto",
                                                "--top", "1", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "N+1 check (simulated, one node down): every part meets" in result.stdout
    saved = json.loads((out / "plan.json").read_text())
    assert saved["n_plus_one"]["meets_target"] is True
    assert saved["n_plus_one"]["parts"][0]["attainment"] >= 0.9
