"""The report, the plan.json section, the PNGs and the refined scenario (which reproduces the
simulated figures when simulated on its own)."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import yaml

from servingcast.refine import apply_refinement, format_refinement, refine, refined_section
from servingcast.refine.report import refined_scenarios
from servingcast.refine.result import RefinedResult

from .conftest import fast_options, planning_of, sqlite, tiny_problem

PNG = b"\x89PNG\r\n\x1a\n"


@functools.cache
def _result() -> RefinedResult:
    problem = tiny_problem()
    folder = Path(tempfile.mkdtemp(prefix="servingcast-report-"))
    return refine(problem, planning_of(problem), fast_options(
        trials=6, storage=sqlite(folder / "study.db")))


def test_text_report() -> None:
    r = _result()
    text = format_refinement(r)
    for needle in ("Refined plan vs MILP plan", "MILP predicted", "(planned load)",
                   "(max within SLO)", "refined simulated", "TTFT p90 (ms)", "TPOT p99 (ms)",
                   "Gain: ", f"watch it: optuna-dashboard {r.storage}",
                   "pip install 'servingcast[dashboard]'", "Simulations: chat 500 requests"):
        assert needle in text, needle
    assert ("What changed: nothing" in text) == (not r.changes)


def test_plan_json_section_and_files() -> None:
    from servingcast.planner.export import render_outputs

    r = _result()
    files = apply_refinement(render_outputs(planning_of(r.problem)), r)
    plan = json.loads(files["plan.json"])
    section = plan["refined"]
    assert section == json.loads(json.dumps(refined_section(r)))
    assert section["plan"]["refined"] is True
    assert section["refined_value"] >= section["milp_value"]
    assert section["study"]["name"] == "tiny" and section["study"]["dashboard"]
    assert {"predicted", "simulated", "simulated_at_planned_load"} <= set(section["milp"])
    assert files["refine_history.png"].startswith(PNG)
    assert files["scenario.yaml"] == refined_scenarios(r)["scenario.yaml"].encode()
    assert "refine_pareto.png" not in files


def test_refined_scenario_reproduces_the_simulation(tmp_path: Path) -> None:
    from servingcast.sim import load_scenario, simulate

    r = _result()
    path = tmp_path / "scenario.yaml"
    path.write_text(refined_scenarios(r)["scenario.yaml"])
    data = yaml.safe_load(path.read_text())
    part = r.evaluation.workloads[0].parts[0]
    assert part.point is not None
    assert data["workload"]["arrival"]["rate"] == part.rate_per_s
    assert data["workload"]["num_requests"] == r.sim_requests["chat"]
    assert data["router"]["kind"] == r.deployment.workloads[0].router
    summary = simulate(load_scenario(path)).summary
    # the same run: the refinement judges attainment after the warm-up, the simulator over all
    assert (summary.goodput_per_s, summary.completed) == (part.point.goodput_per_s,
                                                          part.point.completed)
    assert summary.slo_attainment >= 0.9 and part.point.attainment >= 0.9
