"""Demand profiles and the multi-period MILP (servingcast.planner.periods)."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from servingcast._cli_solve import solve_command
from servingcast.errors import ConfigError
from servingcast.planner.candidates import Candidate, CandidateBuilder, prune_dominated
from servingcast.planner.periods import (
    HOURS_PER_DAY,
    DailyPlan,
    period_count,
    period_optima,
    period_problem,
    plan_daily,
)
from servingcast.planner.problem import Problem, load_problem, problem_from_dict

from .conftest import PROBLEMS, make_problem

#: A day of chat traffic, req/s per hour.
CHAT = [8, 8, 4, 4, 4, 8, 16, 32, 48, 64, 72, 80, 80, 72, 64, 64, 56, 48, 40, 32, 24, 16, 12, 8]
#: A night job, peaking when chat is quiet.
NIGHT = [24, 24, 24, 24, 20, 16, 8, 4, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 4, 8, 16, 20, 24, 24]


def _workload(name: str, rates: Sequence[Any], period: str = "1 h") -> dict[str, Any]:
    return {"name": name, "model": "llama-3.1-8b", "input_len": 1024, "output_len": 256,
            "slo": {"ttft": "500 ms", "tpot": "50 ms"},
            "demand_profile": {"period": period, "rates": rates}}


def daily_problem(fleet: str, *profiles: Sequence[Any], **overrides: Any) -> Problem:
    workloads = [_workload(f"w{i}", rates) for i, rates in enumerate(profiles)]
    return make_problem(objective="min_cost", fleet=fleet,
                        pools=[{"name": "h100", "hardware": "h100-sxm", "count": 16}],
                        workloads=workloads, **overrides)


@functools.cache
def _candidates(problem: Problem) -> Sequence[Candidate]:
    return prune_dominated(CandidateBuilder(problem).candidates()).candidates


# -- the problem format ------------------------------------------------------------------------


def test_profile_sets_the_demand_to_its_peak_and_round_trips() -> None:
    problem = daily_problem("fixed", [2, 0, "5 req/s", "60 req/min"])
    w = problem.workloads[0]
    assert w.demand_profile is not None
    assert w.demand_profile.rates_per_s == (2.0, 0.0, 5.0, 1.0)
    assert w.demand_per_s == 5.0 and w.demand_profile.period_h == 1.0
    assert period_count(problem) == (4, 1.0)
    assert period_problem(problem, 1).workloads[0].demand_per_s == 0.0
    again = problem_from_dict(problem.model_dump(mode="json", by_alias=True))
    assert again == problem


def test_problems_without_the_new_fields_dump_as_before(small: Problem) -> None:
    data = small.model_dump(mode="json", by_alias=True)
    assert "fleet" not in data and "headroom" not in data
    assert "demand_profile" not in data["workloads"][0]


def test_trace_is_binned_into_periods(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    arrivals = [0.5, 1.0, 2.0, 59.0, 61.0, 150.0]
    trace.write_text("arrival_time,input_len,output_len\n"
                     + "".join(f"{t},1024,256\n" for t in arrivals))
    data = {**_workload("w", []), "demand_profile": {"period": "1 min", "trace": "trace.csv"}}
    problem = problem_from_dict(
        {"pools": [{"hardware": "h100-sxm", "count": 8}], "objective": "min_cost",
         "workloads": [data]}, base_dir=tmp_path)
    profile = problem.workloads[0].demand_profile
    assert profile is not None
    # 4 arrivals in [0, 60 s), 1 in [60, 120 s), 1 in [120, 180 s): per second
    assert profile.rates_per_s == pytest.approx((4 / 60, 1 / 60, 1 / 60))
    assert problem.workloads[0].demand_per_s == pytest.approx(4 / 60)
    assert problem_from_dict(problem.model_dump(mode="json", by_alias=True)) == problem
    with pytest.raises(ConfigError, match=r"missing\.csv: cannot read"):
        problem_from_dict({"pools": [{"hardware": "h100-sxm", "count": 8}],
                           "objective": "min_cost", "workloads": [{**data, "demand_profile": {
                               "trace": "missing.csv"}}]}, base_dir=tmp_path)


@pytest.mark.parametrize(("change", "message"), [
    ({"objective": "max_goodput"}, "set objective: min_cost"),
    ({"workloads": [_workload("a", [1, 2]), _workload("b", [1, 2, 3])]},
     "give every profile the same period and number of rates"),
    ({"workloads": [{**_workload("a", [1, 2]), "demand": "7 req/s"}]},
     "is not the peak of demand_profile"),
    ({"workloads": [_workload("a", [1, "maximize"])]}, "'maximize' is not a rate"),
    ({"workloads": [_workload("a", [0, 0])]}, "every rate of the profile is 0"),
    ({"workloads": [_workload("a", [1, -2])]}, "a demand must be a rate > 0"),
    ({"workloads": [_workload("a", [1], period="48 h")]}, "longer than a day"),
    ({"workloads": [{**_workload("a", [1]), "demand_profile": {"period": "1 h"}}]},
     "needs rates or a trace"),
])
def test_bad_profiles_are_refused(change: dict[str, Any], message: str) -> None:
    data: dict[str, Any] = {"pools": [{"hardware": "h100-sxm", "count": 8}],
                            "objective": "min_cost", "workloads": [_workload("a", [1, 2])]}
    data.update(change)
    with pytest.raises(ConfigError) as info:
        problem_from_dict(data, "p.yaml")
    assert message in str(info.value) and "p.yaml" in str(info.value)


def test_fleet_without_a_profile_is_refused() -> None:
    with pytest.raises(ConfigError, match="no workload has a demand_profile"):
        make_problem(fleet="buy_once", objective="min_cost",
                     workloads=[{**_workload("a", [1]), "demand_profile": None,
                                 "demand": "3 req/s"}])


def test_cli_bad_profile_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("pools: [{hardware: h100-sxm, count: 8}]\nobjective: min_cost\n"
                    "workloads:\n  - name: a\n    model: llama-3.1-8b\n    input_len: 100\n"
                    "    output_len: 100\n    slo: {ttft: 1 s, tpot: 50 ms}\n"
                    "    demand_profile: {period: 1 h, rates: [1, lots]}\n")
    result = CliRunner().invoke(solve_command, [str(path), "--no-refine"])
    assert result.exit_code == 2
    assert "p.yaml" in result.stderr and "demand_profile" in result.stderr
    assert "Traceback" not in result.stderr


# -- the multi-period MILP ---------------------------------------------------------------------


def _bounds(problem: Problem, daily: DailyPlan) -> tuple[float, float]:
    """(the sum of the per-period optima, the peak plan), $/day."""
    cands = _candidates(problem)
    _, tau = period_count(problem)
    lower = sum(period_optima(problem, cands)) * tau * HOURS_PER_DAY / daily.horizon_h
    return lower, daily.peak_cost_per_day


@pytest.mark.parametrize("fleet", ["fixed", "buy_once"])
def test_cost_lies_between_the_period_optima_and_the_peak_plan(fleet: str) -> None:
    problem = daily_problem(fleet, CHAT, NIGHT)
    daily = plan_daily(problem, _candidates(problem))
    lower, peak = _bounds(problem, daily)
    assert lower * (1 - 1e-3) <= daily.cost_per_day <= peak * (1 + 1e-3)
    assert len(daily.periods) == 24 and daily.horizon_h == 24.0
    # the used cost is the periods' $/h times their hours; each period serves its demand
    assert daily.used_cost_per_day == pytest.approx(
        sum(p.cost_per_hour * p.hours for p in daily.periods))
    for t, p in enumerate(daily.periods):
        assert p.demand_per_s == {"w0": CHAT[t], "w1": NIGHT[t]}
        assert p.total_gpus == sum(g.gpus for g in p.groups) <= 16
    if fleet == "fixed":
        # the periods share nothing: exactly the sum of their own optima
        assert daily.cost_per_day == pytest.approx(lower, rel=2e-3)
        assert daily.fleet_gpus == {"h100": 16}
        assert daily.fleet_cost_per_day == pytest.approx(16 * 2.99 * 24)
    else:
        bought = daily.fleet_gpus["h100"]
        assert daily.cost_per_day == pytest.approx(bought * 2.99 * 24)
        assert max(p.gpus_used["h100"] for p in daily.periods) <= bought
        # the two peaks do not coincide: buying once for the day beats provisioning both
        assert daily.cost_per_day < peak * 0.9
        assert daily.used_cost_per_day <= daily.cost_per_day * (1 + 1e-9)
    assert daily.saving_per_day == pytest.approx(peak - daily.cost_per_day)


@pytest.mark.parametrize("fleet", ["fixed", "buy_once"])
def test_flat_profile_costs_the_same_three_ways(fleet: str) -> None:
    problem = daily_problem(fleet, [10.0] * 6)
    daily = plan_daily(problem, _candidates(problem))
    lower, peak = _bounds(problem, daily)
    assert daily.cost_per_day == pytest.approx(peak, rel=1e-6)
    assert lower == pytest.approx(peak, rel=1e-6)
    assert daily.saving_per_day == pytest.approx(0.0, abs=1e-6)
    # 6 periods of 1 h repeat to a day
    assert daily.horizon_h == 6.0 and any("repeat" in n for n in daily.notes)


def test_profile_with_idle_periods_and_a_constant_workload() -> None:
    constant = {"name": "steady", "model": "llama-3.1-8b", "input_len": 1024,
                "output_len": 256, "slo": {"ttft": "500 ms", "tpot": "50 ms"},
                "demand": "3 req/s"}
    problem = make_problem(objective="min_cost", fleet="fixed",
                           pools=[{"name": "h100", "hardware": "h100-sxm", "count": 16}],
                           workloads=[_workload("burst", [0, 20, 0, 5]), constant])
    daily = plan_daily(problem, _candidates(problem))
    assert [p.demand_per_s["steady"] for p in daily.periods] == [3.0] * 4
    idle = daily.periods[0]
    assert not [g for g in idle.groups if g.workload == "burst"]
    busy = daily.periods[1]
    assert sum(g.count for g in busy.groups if g.workload == "burst") >= 1


# -- shipped problem and CLI -------------------------------------------------------------------


def test_shipped_daily_problem_cli_json(tmp_path: Path) -> None:
    path = PROBLEMS / "daily-llama-3.1-8b.yaml"
    problem = load_problem(path)
    assert problem.fleet == "buy_once" and period_count(problem) == (24, 1.0)
    out = tmp_path / "out"
    result = CliRunner().invoke(solve_command, [str(path), "--no-refine", "--no-pareto",
                                                "--top", "1", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "Daily plan (24 periods of 1 h, fleet buy_once" in result.stdout
    assert "Peak-provisioned plan" in result.stdout and "saving" in result.stdout
    saved = json.loads((out / "plan.json").read_text())
    daily = saved["daily"]
    assert len(daily["periods"]) == 24
    assert daily["cost_per_day"] < daily["peak_cost_per_day"]
    # the peak-provisioned plan is the single-period plan the report leads with
    assert daily["peak_cost_per_hour"] == pytest.approx(saved["cost_per_hour"],
                                                        rel=2e-3)
    result = CliRunner().invoke(solve_command, [str(path), "--no-refine", "--no-pareto",
                                                "--top", "1", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["daily"]["fleet"] == "buy_once"
