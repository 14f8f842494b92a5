"""The Pareto sweep: every point is a real plan the cost model confirms, of its own mode and at
its own limits; frontiers are non-dominated; the enumeration finds the best layouts (checked by
brute force); the chosen plan is marked and matches; CSV, JSON, PNG and the report agree."""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import math
from collections.abc import Sequence

import pytest

from servingcast.planner import PlanningResult, solve
from servingcast.planner.candidates import Candidate, CandidateBuilder, prune_dominated
from servingcast.planner.capacity import shape_of
from servingcast.planner.export import render_outputs, result_dict
from servingcast.planner.layouts import Layout, best_layouts
from servingcast.planner.pareto import (
    CSV_COLUMNS,
    ParetoPoint,
    pareto_csv,
    pareto_json,
    pareto_png,
    rated_candidates,
    scaled_problem,
    sweep,
    workload_mode,
)
from servingcast.planner.problem import Problem
from servingcast.planner.report import format_result
from servingcast.planner.verify import verify_plan

from .conftest import make_problem

TPOT = (0.5, 0.63, 0.794, 1.0, 1.26, 1.59, 2.0)
TTFT = (0.5, 1.0, 2.0)
CHAT = {"model": "llama-3.1-8b", "precision": "bf16", "input_len": 1024, "output_len": 256,
        "slo": {"ttft": "500 ms", "tpot": "50 ms", "attainment": 0.9}}


@functools.cache
def _result(kind: str) -> PlanningResult:
    """``max``: one workload to maximize; ``two``: a second workload with a demand."""
    workloads = [{"name": "chat", **CHAT}]
    if kind == "two":
        workloads.append({"name": "api", **CHAT, "demand": "9 req/s",
                          "slo": {"ttft": "800 ms", "tpot": "35 ms", "attainment": 0.9}})
    problem = make_problem(workloads=workloads, search={
        "tp": [1, 2], "pp": [1], "max_num_seqs": [512], "max_num_batched_tokens": [2048]})
    return solve(problem, top_k=1, compare_modes=False, pareto_factors=TPOT,
                 pareto_ttft_factors=TTFT)


@pytest.fixture(params=["max", "two"])
def result(request: pytest.FixtureRequest) -> PlanningResult:
    return _result(request.param)


def _own_problem(problem: Problem, p: ParetoPoint) -> Problem:
    """The point's workload alone, at the point's limits."""
    alone = problem.model_copy(update={"workloads": (problem.workload(p.workload),)})
    return scaled_problem(alone, p.tpot_factor, p.ttft_factor)


def test_every_point_is_a_plan_the_cost_model_confirms(result: PlanningResult) -> None:
    swept = [p for p in result.pareto if p.signature is not None]
    assert len(swept) >= 2 * len(TPOT)
    for p in swept:
        plan = p.build_plan()
        assert plan is not None
        problem = _own_problem(result.problem, p)
        assert verify_plan(problem, plan) == [], p
        (wp,) = plan.workloads
        # Recomputed from the groups: every GPU the plan uses, the workload's mean output.
        gpus = sum(g.gpus for g in wp.groups)
        per_gpu = wp.served_rate_per_s * shape_of(problem.workloads[0]).output_mean / gpus
        assert p.gpus == gpus == plan.total_gpus
        assert p.tokens_per_s_per_gpu == pytest.approx(per_gpu, rel=1e-9)
        assert p.tokens_per_s_per_user == pytest.approx(wp.tokens_per_s_per_user, rel=1e-9)
        assert p.tpot_ms == pytest.approx(wp.tpot_ms, rel=1e-9)
        assert p.served_rate_per_s == pytest.approx(wp.served_rate_per_s, rel=1e-12)
        # At its own limits: the TPOT percentile at the planned load within the swept limit.
        assert wp.tpot_limit_ms == pytest.approx(p.tpot_limit_ms)
        assert wp.ttft_limit_ms == pytest.approx(p.ttft_limit_ms)
        assert wp.tpot_ms is not None and wp.tpot_ms <= p.tpot_limit_ms
        assert wp.ttft_ms is not None and wp.ttft_ms <= p.ttft_limit_ms * 1.0001


def test_points_are_the_mode_they_say(result: PlanningResult) -> None:
    roles = {"aggregated": {"aggregated"}, "disaggregated": {"prefill", "decode"},
             "mixed": {"aggregated", "prefill", "decode"}}
    seen = set()
    for p in result.pareto:
        if p.signature is None:
            continue
        plan = p.build_plan()
        assert plan is not None
        assert plan.mode == p.mode
        assert {g.role for g in plan.groups} == roles[p.mode]
        assert workload_mode(plan.workloads[0]) == p.mode
        seen.add(p.mode)
    assert seen == {"aggregated", "disaggregated", "mixed"}


def _groups(points: Sequence[ParetoPoint]) -> dict[tuple[str, str, str], list[ParetoPoint]]:
    out: dict[tuple[str, str, str], list[ParetoPoint]] = {}
    for p in points:
        out.setdefault((p.workload, p.swept, p.mode), []).append(p)
    return out


def test_frontiers_are_the_non_dominated_points(result: PlanningResult) -> None:
    def beats(q: ParetoPoint, p: ParetoPoint) -> bool:
        return (q.tokens_per_s_per_user >= p.tokens_per_s_per_user
                and q.tokens_per_s_per_gpu >= p.tokens_per_s_per_gpu
                and (q.tokens_per_s_per_user, q.tokens_per_s_per_gpu)
                != (p.tokens_per_s_per_user, p.tokens_per_s_per_gpu))

    groups = _groups(result.pareto)
    assert {(w, s) for w, s, _ in groups} >= {(w.name, "tpot") for w in result.problem.workloads}
    for members in groups.values():
        front = [p for p in members if p.on_frontier]
        assert front
        for p in front:
            assert not any(beats(q, p) for q in members)
        for p in members:
            if not p.on_frontier:  # dominated, or the twin of a frontier point
                assert any(beats(q, p) or (q.on_frontier and (
                    q.tokens_per_s_per_user, q.tokens_per_s_per_gpu) == (
                    p.tokens_per_s_per_user, p.tokens_per_s_per_gpu)) for q in members)


def test_points_are_sorted_and_monotonic_in_the_swept_limit() -> None:
    result = _result("max")
    points = result.pareto
    order = ("tpot", "ttft")
    modes = ("aggregated", "disaggregated", "mixed")
    keys = [(p.workload, order.index(p.swept), modes.index(p.mode), p.limit_ms) for p in points]
    assert keys == sorted(keys)
    rises = []
    for (_, swept, mode), members in _groups(points).items():
        sweep_points = [p for p in members if p.signature is not None]
        factors = TPOT if swept == "tpot" else TTFT
        assert [p.factor for p in sweep_points] == sorted(p.factor for p in sweep_points)
        assert {p.factor for p in sweep_points} <= set(factors)
        if mode == "mixed":
            continue
        # A looser limit keeps every layout feasible and its capacities at least as high: the
        # best pure layout's tokens/s per GPU never falls.
        per_gpu = [p.tokens_per_s_per_gpu for p in sweep_points]
        assert all(b >= a * (1 - 1e-9) for a, b in itertools.pairwise(per_gpu)), (swept, mode)
        if swept == "tpot":  # (the TTFT limit can leave a TPOT-bound mode unchanged, and a
            rises.append(per_gpu[-1] > per_gpu[0])  # prefill-bound one ignores the TPOT's)
    assert any(rises)


def test_the_chosen_plan_is_marked_and_matches_it(result: PlanningResult) -> None:
    chosen = [p for p in result.pareto if p.chosen]
    served = [wp for wp in result.plan.workloads if wp.gpus > 0]
    assert [p.workload for p in chosen] == [wp.name for wp in served]
    for p, wp in zip(chosen, served, strict=True):
        assert p.swept == "tpot" and p.tpot_factor == p.ttft_factor == 1.0
        assert p.mode == workload_mode(wp)
        assert p.tokens_per_s_per_gpu == pytest.approx(wp.tokens_per_s_per_gpu, rel=1e-9)
        assert p.tokens_per_s_per_user == pytest.approx(wp.tokens_per_s_per_user, rel=1e-9)
        assert p.gpus == wp.gpus
        assert p.tpot_limit_ms == pytest.approx(wp.tpot_limit_ms)
        # The deployment: a sweep point equal to it carries the mark, or the plan's own point.
        signature = tuple(sorted((g.name, g.count) for g in wp.groups))
        assert p.signature in (None, signature)


def test_the_enumeration_finds_the_best_layouts_by_brute_force() -> None:
    """Every count of every candidate (and pair) within the pool, scored by the layouts' rules:
    the enumeration's best is as good (exactly) for both kinds of workload."""
    for demand in (None, 25.0):
        workload = {"name": "chat", **CHAT}
        if demand is not None:
            workload["demand"] = demand
        problem = make_problem(workloads=[workload])
        builder = CandidateBuilder(problem)
        for factor in (0.5, 1.0):
            cands = prune_dominated(rated_candidates(builder, factor, 1.0)).candidates
            w = problem.workloads[0]
            found = best_layouts(problem, w, cands)
            best = _brute_force(cands, 8, demand, found["mixed"])
            modes = ("aggregated", "disaggregated") + (("mixed",) if demand else ())
            for mode in modes:
                layout = found[mode]
                assert _score((layout.served_per_s, layout.gpus), demand) == pytest.approx(
                    best[mode], rel=1e-9), (mode, demand, factor)
            mixed = found["mixed"]
            assert mixed.aggregated_per_s > 0 and mixed.disaggregated_per_s > 0
            a, p, d = (c for c, _ in mixed.counts)
            assert (a, p, d) == (found["aggregated"].counts[0][0],
                                 *(c for c, _ in found["disaggregated"].counts))


def _score(option: tuple[float, int], demand: float | None) -> tuple[float, float]:
    served, gpus = option
    if demand is None:
        return (round(served / gpus, 9), round(served, 9))
    return (round(served, 9), -gpus)


def _brute_force(cands: Sequence[Candidate], pool_gpus: int, demand: float | None,
                 mixed_layout: Layout) -> dict[str, tuple[float, float]]:
    """The best score of each mode over every count; mixed (with a demand only): over every
    count of ``mixed_layout``'s configurations, one instance of each at least."""
    cap = math.inf if demand is None else demand
    agg = [(min(cap, n * c.rate), n * c.gpus) for c in cands if c.config.role == "aggregated"
           for n in range(1, pool_gpus // c.gpus + 1)]
    dis = []
    for p, d in itertools.product([c for c in cands if c.config.role == "prefill"],
                                  [c for c in cands if c.config.role == "decode"]):
        for n_p in range(1, pool_gpus // p.gpus + 1):
            for n_d in range(1, (pool_gpus - n_p * p.gpus) // d.gpus + 1):
                z = min(cap, p.group_rate(n_p), n_d * d.rate)
                dis.append((z, n_p * p.gpus + n_d * d.gpus))
    out = {"aggregated": max(_score(o, demand) for o in agg),
           "disaggregated": max(_score(o, demand) for o in dis)}
    if demand is not None:
        a, p, d = (c for c, _ in mixed_layout.counts)
        mixed = []
        for n_a, n_p, n_d in itertools.product(range(1, 9), repeat=3):
            if n_a * a.gpus + n_p * p.gpus + n_d * d.gpus <= pool_gpus:
                capacity = n_a * a.rate + min(p.group_rate(n_p), n_d * d.rate)
                mixed.append((min(demand, capacity), n_a * a.gpus + n_p * p.gpus + n_d * d.gpus))
        out["mixed"] = max(_score(o, demand) for o in mixed)
    return out


def test_a_workload_with_a_demand_is_served_its_demand() -> None:
    result = _result("two")
    api = [p for p in result.pareto if p.workload == "api" and p.signature is not None]
    assert api
    for p in api:
        assert p.served_rate_per_s == pytest.approx(9.0, rel=1e-9)
        plan = p.build_plan()
        assert plan is not None and [w.name for w in plan.workloads] == ["api"]


def test_csv_json_and_plan_json_hold_the_same_points(result: PlanningResult) -> None:
    points = result.pareto
    rows = list(csv.DictReader(io.StringIO(pareto_csv(points))))
    data = pareto_json(points)
    assert len(rows) == len(data) == len(points)
    assert list(rows[0]) == list(CSV_COLUMNS)
    for row, item in zip(rows, data, strict=True):
        for name in CSV_COLUMNS:
            value = item[name]
            if isinstance(value, bool):
                assert row[name] == ("true" if value else "false")
            elif isinstance(value, float):
                assert float(row[name]) == pytest.approx(value, rel=1e-4, abs=1e-4)
            elif value is None:
                assert row[name] == ""
            else:
                assert row[name] == str(value)
    files = render_outputs(result)
    assert json.loads(files["plan.json"])["pareto"] == data == result_dict(result)["pareto"]
    assert files["pareto.csv"].decode() == pareto_csv(points)
    assert files["pareto.png"].startswith(b"\x89PNG")


def test_the_report_table_is_sorted_by_the_limit_and_marks_the_chosen_plan() -> None:
    result = _result("two")
    text = format_result(result)
    head = "Pareto sweep of the TPOT limit"
    assert head in text
    lines = text[text.index(head):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("api:"))
    table = lines[start + 2:]
    table = table[:next(i for i, line in enumerate(table) if not line.startswith("    "))]
    limits = [float(line.replace(">", " ").split()[0].replace(",", "")) for line in table]
    assert limits == sorted(limits)
    assert 35.0 in limits and any(line.lstrip().startswith(">") for line in table)
    assert "aggregated" in lines[start + 1] and "disaggregated" in lines[start + 1]


def test_a_sweep_past_its_deadline_keeps_only_the_chosen_plan() -> None:
    result = _result("max")
    builder = CandidateBuilder(result.problem)
    points, skipped = sweep(result.problem, builder, result.plan, (1.0, 0.5), (2.0,),
                            deadline=0.0)
    assert [p.chosen for p in points] == [True]
    assert skipped == ("TPOT x1", "TPOT x0.5", "TTFT x2")
    lines: list[str] = []
    sweep(result.problem, builder, result.plan, (1.0, 0.5), (1.0, 2.0), progress=lines.append)
    assert lines == ["Pareto 1/4 (TPOT limits x1)", "Pareto 4/4 (TTFT limits x2)"]


def test_the_png_draws_every_workload_and_both_sweeps() -> None:
    result = _result("two")
    png = pareto_png(result.pareto, "two workloads")
    assert png.startswith(b"\x89PNG")
    width = int.from_bytes(png[16:20], "big")
    height = int.from_bytes(png[20:24], "big")
    assert width > 1000 and height > 800  # two columns (TPOT, TTFT), two rows (workloads)
