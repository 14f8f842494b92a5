"""The rate search on clusters larger than a fixed simulation: enough requests to reach steady
state (or "too short to judge"), a bounded search that never overflows, and a reason when a
plan sustains nothing."""

from __future__ import annotations

import math
from typing import Any

import pytest

from servingcast.planner.problem import problem_from_dict
from servingcast.refine import apply_refinement
from servingcast.refine.deployment import Deployment, deployment_of
from servingcast.refine.evaluate import (
    MAX_FACTOR,
    MAX_SIMULATIONS,
    Evaluator,
    SimPoint,
    concurrent_capacity,
)
from servingcast.refine.options import StudySettings
from servingcast.refine.space import build_space
from servingcast.sim.metrics import LatencyStats

from .conftest import FAST, planning_of, tiny_data, tiny_problem


def _wide_data() -> dict[str, Any]:
    """Llama-3.1-8B, 256/256 tokens, on 8 H100 with up to 1024 sequences per instance: the
    cluster holds thousands of requests at once — more than a fixed 2000-request run."""
    return tiny_data(
        name="wide", pools=[{"name": "h100", "hardware": "h100-sxm", "count": 8}],
        workloads=[{"name": "chat", "model": "llama-3.1-8b", "precision": "bf16",
                    "input_len": 256, "output_len": 256,
                    "slo": {"ttft": "1 s", "tpot": "50 ms", "attainment": 0.9}}],
        search={"tp": [1], "pp": [1], "max_num_seqs": [1024], "modes": ["aggregated"],
                "max_num_batched_tokens": [8192]})


def _evaluator(problem: Any, planning: Any, settings: StudySettings) -> Evaluator:
    space = build_space(problem, [planning.plan], 0.3, settings, structural=False)
    return Evaluator(problem, space, settings)


def test_large_cluster_is_not_fooled_by_a_short_run() -> None:
    """Regression: a fixed request count below the cluster's concurrent capacity let every
    rate pass (73 334 req/s reported against 3 034 planned on 64 H100)."""
    problem = problem_from_dict(_wide_data())
    planning = planning_of(problem)
    ws = deployment_of(problem, planning.plan).workloads[0]
    capacity = concurrent_capacity(ws, "aggregated", 256)
    planned = planning.plan.served_rate_per_s
    assert capacity > 2000  # the old default simulation could not fill the cluster
    settings = StudySettings(sim_requests=2000, max_sim_requests=2000)  # the old fixed size
    short = _evaluator(problem, planning, settings).search(ws, "aggregated", None)
    assert short.rate_per_s == 0.0 and short.reason is not None
    assert short.reason.startswith("too short to judge: 2,000 requests per simulation, under 4 x")
    settings = StudySettings(sim_requests=2000, max_sim_requests=4 * capacity,
                             capacity_multiple=2.0, e2e_multiple=2.0)
    ev = _evaluator(problem, planning, settings)
    full = ev.search(ws, "aggregated", None)
    assert full.num_requests >= 2 * capacity
    assert 0 < full.rate_per_s <= 1.5 * planned, (full.rate_per_s, planned)
    assert full.point is not None and full.point.too_short is None


def _fake_point(rate: float, attainment: float) -> SimPoint:
    none = LatencyStats()
    return SimPoint(rate_per_s=round(rate, 6), attainment=attainment, goodput_per_s=rate,
                    completed=100, num_requests=100, ttft_ms=none, tpot_ms=none,
                    ttft_at_target_ms=10.0, tpot_at_target_ms=5.0, output_tokens_per_s=0.0,
                    share={}, utilization={}, wall_s=0.0)


@pytest.mark.parametrize("estimate", [1e6, 1e200, 1e-200])
@pytest.mark.parametrize("passes", [True, False])
def test_rate_search_is_bounded_and_never_overflows(monkeypatch: pytest.MonkeyPatch,
                                                    estimate: float, passes: bool) -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    ev = _evaluator(problem, planning, FAST)
    ws = deployment_of(problem, planning.plan).workloads[0]
    monkeypatch.setattr(ev, "estimate", lambda *_: estimate)
    calls: list[float] = []

    def simulate(_ws: Any, _part: Any, rate: float) -> tuple[SimPoint, bool]:
        assert math.isfinite(rate) and rate <= MAX_FACTOR * estimate * (1 + 1e-9)
        calls.append(rate)
        return _fake_point(rate, 1.0 if passes else 0.0), True

    monkeypatch.setattr(ev, "simulate", simulate)
    result = ev.search(ws, "aggregated", None)
    assert len(calls) <= 2 * MAX_SIMULATIONS
    if passes:  # every rate passes: stopped at the hard upper bound, and said so
        assert result.rate_per_s == round(MAX_FACTOR * estimate, 6)
        assert result.reason is not None and "upper bound" in result.reason
    else:
        assert result.rate_per_s == 0.0 and result.reason is not None
        assert "even at" in result.reason and "the lowest rate tried" in result.reason


def test_a_plan_that_rejects_every_request_says_why() -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    ev = _evaluator(problem, planning, FAST)
    dep = deployment_of(problem, planning.plan)
    w = dep.workloads[0]
    # 2048-token prompts, no chunked prefill, a 1024-token budget: no instance can take one
    broken = Deployment(workloads=(w.model_copy(update={"groups": tuple(
        g.model_copy(update={"enable_chunked_prefill": False, "max_num_batched_tokens": 1024,
                             "max_num_seqs": 64}) for g in w.groups)}),))
    result = ev.evaluate(broken)
    part = result.workloads[0].parts[0]
    assert result.goodput_per_s == 0.0
    assert part.reason is not None
    assert part.reason.startswith("every request is rejected at ")
    assert "batched tokens" in part.reason and "To fix" in part.reason


def test_files_are_written_when_nothing_is_sustained() -> None:
    """No refined scenario (it serves nothing): the MILP plan's scenario files stay."""
    from .test_report import _result

    r = _result()
    empty = r.model_copy(update={"plan": r.plan.model_copy(update={"workloads": tuple(
        wp.model_copy(update={"aggregated_rate_per_s": 0.0, "disaggregated_rate_per_s": 0.0})
        for wp in r.plan.workloads)})})
    files = {"plan.json": b"{}", "scenario.yaml": b"# best plan\n"}
    out = apply_refinement(files, empty)
    assert out["scenario.yaml"] == b"# best plan\n"
    assert "refined" in out["plan.json"].decode()
