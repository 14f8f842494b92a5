"""Outputs: the scenario the simulator reads, the files, and refusing to overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from servingcast._output import write_outputs
from servingcast.errors import ConfigError
from servingcast.planner import load_problem, solve, to_scenario
from servingcast.planner.export import (
    OUTPUT_FILES,
    render_outputs,
    scenario_files,
)

from .conftest import PROBLEMS, cached_solve, make_problem

sim = pytest.importorskip("servingcast.sim.scenario")


def test_scenario_is_a_valid_simulator_scenario() -> None:
    problem = load_problem(PROBLEMS / "quickstart.yaml")
    result = cached_solve("quickstart")
    data = to_scenario(problem, result.plan)
    scenario = sim.scenario_from_dict(data)
    assert scenario.workload.arrival.rate == pytest.approx(result.plan.served_rate_per_s,
                                                           rel=1e-6)
    group = result.plan.groups[0]
    assert scenario.instance_groups[0].count == group.count
    assert scenario.instance_groups[0].max_num_seqs == group.max_num_seqs
    assert scenario.slo.ttft == pytest.approx(0.5)


MIXED = {
    "pools": [{"name": "h200", "hardware": "h200-sxm", "count": 32}],
    "workloads": [{"name": "rag", "model": "qwen3-8b", "input_len": 8000, "output_len": 1000,
                   "slo": {"ttft": "4 s", "tpot": "80 ms", "attainment": 0.95}}],
    "search": {"tp": [2, 4, 8], "max_num_seqs": [128, 256, 512],
               "max_num_batched_tokens": [2048, 8192]},
}


def test_mixed_plan_exports_one_scenario_per_mode() -> None:
    problem = make_problem(**MIXED)
    plan = solve(problem, top_k=1, pareto_factors=None, compare_modes=False).plan
    assert plan.mode == "mixed"
    files = scenario_files(problem, plan)
    assert set(files) == {"scenario.yaml", "scenario-rag-aggregated.yaml",
                          "scenario-rag-disaggregated.yaml"}
    total = 0.0
    for name, text in files.items():
        scenario = sim.scenario_from_dict(yaml.safe_load(text))
        if name != "scenario.yaml":
            total += scenario.workload.arrival.rate
    assert total == pytest.approx(plan.served_rate_per_s, rel=1e-5)
    with pytest.raises(ConfigError, match="both aggregated and disaggregated"):
        to_scenario(problem, plan)


def test_multi_workload_scenarios() -> None:
    problem = load_problem(PROBLEMS / "multi-model-1024.yaml")
    plan = solve(problem, top_k=1, pareto_factors=None, compare_modes=False).plan
    files = scenario_files(problem, plan)
    assert "scenario.yaml" in files
    for text in files.values():
        sim.scenario_from_dict(yaml.safe_load(text))
    with pytest.raises(ConfigError, match="pass workload=<name>"):
        to_scenario(problem, plan)


def test_outputs_render_and_write(tmp_path: Path) -> None:
    result = cached_solve("quickstart")
    files = render_outputs(result)
    assert set(OUTPUT_FILES) <= set(files)
    plan = json.loads(files["plan.json"])
    for key in ("status", "objective", "workloads", "gpus_used", "cost_per_hour", "solver"):
        assert key in plan
    assert {"status", "time_s", "gap"} <= set(plan["solver"])
    wp = plan["workloads"][0]
    for key in ("served_rate_per_s", "output_tokens_per_s", "pd_ratio", "groups"):
        assert key in wp
    assert {"hardware", "count", "role", "tp", "pp", "ep", "max_num_seqs"} <= set(wp["groups"][0])
    assert plan["refined"] is False
    assert files["pareto.png"].startswith(b"\x89PNG")
    assert files["pareto.csv"].decode().splitlines()[0].startswith("tpot_factor,tpot_limit_ms")
    alternatives = json.loads(files["alternatives.json"])
    assert {"alternatives", "aggregated_only", "disaggregated_only"} <= set(alternatives)

    out = tmp_path / "out"
    written = write_outputs(files, out)
    assert sorted(p.name for p in written) == sorted(files)
    before = (out / "plan.json").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds .*plan\.json.*nothing was "
                                          r"written\. To fix: .*--force"):
        write_outputs({"plan.json": b"{}", "new.txt": b"x"}, out)
    assert (out / "plan.json").read_bytes() == before and not (out / "new.txt").exists()
    write_outputs({"plan.json": b"{}"}, out, force=True)
    assert (out / "plan.json").read_bytes() == b"{}"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_output_folder_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        write_outputs({"plan.json": b"{}"}, target)


def test_quickstart_plan_meets_its_slos_in_the_simulator() -> None:
    """The plan, exported and simulated at its planned rate, meets its attainment target."""
    api = pytest.importorskip("servingcast.sim.api")
    problem = load_problem(PROBLEMS / "quickstart.yaml")
    result = cached_solve("quickstart")
    scenario = sim.scenario_from_dict(to_scenario(problem, result.plan))
    summary = api.simulate(scenario, num_requests=4000).summary
    assert summary.completed == 4000 and summary.rejected == 0
    assert summary.slo_attainment >= problem.workloads[0].slo.attainment
    assert summary.ttft_ms.p90 <= 500 and summary.tpot_ms.p90 <= 50


def test_a_device_from_the_users_file_travels_with_the_scenarios(tmp_path: Path) -> None:
    # E.g. `servingcast calibrate --output my-h100.yaml`: the output folder gets a copy and its
    # scenarios name it by a relative path, so a fresh process simulates them (no absolute
    # path, no name only this process knows).
    from servingcast.specs.catalog import get_hardware

    device = get_hardware("h100-sxm").model_copy(update={"name": "my-h100-copy"})
    (tmp_path / "my-h100.yaml").write_text(yaml.safe_dump(device.model_dump(mode="json")))
    data = yaml.safe_load((PROBLEMS / "quickstart.yaml").read_text())
    data["pools"][0]["hardware"] = "my-h100.yaml"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    problem = load_problem(tmp_path / "p.yaml")
    files = render_outputs(solve(problem, top_k=1, pareto_factors=None, compare_modes=False))
    copy = yaml.safe_load(files["hardware-my-h100-copy.yaml"])
    assert copy == json.loads(json.dumps(device.model_dump(mode="json")))
    out = tmp_path / "out"
    write_outputs(files, out)
    scenario = yaml.safe_load((out / "scenario.yaml").read_text())
    assert {g["hardware"] for g in scenario["instance_groups"]} == {"hardware-my-h100-copy.yaml"}
    loaded = sim.scenario_from_dict(scenario, base_dir=out)
    assert loaded.instance_groups[0].hardware == str(out / "hardware-my-h100-copy.yaml")
    assert not any(str(tmp_path) in v.decode(errors="ignore") for v in files.values())


def test_the_problems_engine_runs_every_exported_group() -> None:
    data = yaml.safe_load((PROBLEMS / "quickstart.yaml").read_text())
    data["engine"] = "sglang"
    from servingcast.planner.problem import problem_from_dict

    problem = problem_from_dict(data)
    plan = solve(problem, top_k=1, pareto_factors=None, compare_modes=False).plan
    scenario = sim.scenario_from_dict(to_scenario(problem, plan))
    # Planned with a prefill chunk beside the decodes: SGLang's --enable-mixed-chunk.
    assert scenario.engine is not None and scenario.engine.kind == "sglang"
    assert scenario.engine.enable_mixed_chunk is True
