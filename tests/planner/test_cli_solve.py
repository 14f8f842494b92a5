"""``servingcast-solve``: the report, JSON, output files, and clean failures (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from servingcast._cli_solve import solve_command

from .conftest import PROBLEMS

QUICKSTART = str(PROBLEMS / "quickstart.yaml")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(solve_command, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_report_puts_the_chosen_plan_first() -> None:
    code, out, _ = invoke(QUICKSTART, "--no-refine")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("servingcast-solve: quickstart — objective max_goodput")
    assert "Solver: HiGHS optimal" in out
    assert out.index("Chosen plan") < out.index("Alternatives") < out.index(
        "What disaggregation buys") < out.index("Pareto sweep")
    for header in ("req/s each", "TTFT p90 (ms)", "TPOT p90 (ms)", "$/h", "tok/s/GPU"):
        assert header in out
    assert "Refinement: not run" in out and "MILP plan is the final plan" in out


def test_json_has_the_plan_fields() -> None:
    code, out, _ = invoke(QUICKSTART, "--json", "--top", "2", "--no-pareto", "--no-refine")
    assert code == 0
    data = json.loads(out)
    plan = data["plan"]
    assert plan["status"] == "optimal" and plan["objective"] == "max_goodput"
    assert plan["workloads"][0]["served_rate_per_s"] > 0
    assert plan["solver"]["time_s"] >= 0 and plan["solver"]["gap"] is not None
    assert len(data["alternatives"]) == 1 and data["pareto"] == []
    assert data["aggregated_only"]["mode"] == "aggregated"


def test_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "plan"
    code, stdout, _ = invoke(QUICKSTART, "--output", str(out), "--time-limit", "10",
                             "--mip-gap", "0.01", "--no-refine")
    assert code == 0, stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == ["alternatives.json", "deploy", "pareto.csv", "pareto.png", "plan.json",
                     "scenario.yaml"]
    assert "Wrote plan.json, alternatives.json, pareto.csv, pareto.png, scenario.yaml" in stdout
    before = (out / "plan.json").read_bytes()
    code, _, err = invoke(QUICKSTART, "--output", str(out), "--no-refine")
    assert code == 2 and "already holds" in err and "--force" in err
    assert (out / "plan.json").read_bytes() == before
    code, _, _ = invoke(QUICKSTART, "--output", str(out), "--force", "--no-pareto", "--no-refine")
    assert code == 0


@pytest.mark.parametrize(("text", "message"), [
    ("pools: [{hardware: h100-sxn, count: 8}]\nworkloads: []\n",
     "pools.0.hardware: unknown hardware 'h100-sxn'"),
    ("pools: [{hardware: h100-sxm, count: 8}]\nworkloads:\n  - {name: a, model: llama-3.1-8b, "
     "input_len: 100, output_len: 10, slo: {ttft: 500, tpot: 50 ms}}\n",
     "workloads.0.slo.ttft: 500 has no unit"),
    ("pools: [{hardware: h100-sxm, count: 8}]\nworkloads:\n  - {name: a, model: llama-3.1-405b, "
     "input_len: 100, output_len: 10, slo: {ttft: 5 s, tpot: 1 s}}\nsearch: {pp: [1]}\n",
     "needs 812 GB of weights"),
])
def test_bad_problems_exit_2_and_write_nothing(tmp_path: Path, text: str, message: str) -> None:
    problem = tmp_path / "bad.yaml"
    problem.write_text(text)
    out = tmp_path / "out"
    code, stdout, err = invoke(str(problem), "--output", str(out), "--trials", "2")
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and message in err and "To fix" in err
    assert not out.exists()


def test_missing_file_and_debug(tmp_path: Path) -> None:
    code, _, err = invoke(str(tmp_path / "nope.yaml"))
    assert code == 2 and "no such file" in err
    result = CliRunner().invoke(solve_command, [str(tmp_path / "nope.yaml"), "--debug"])
    assert result.exception is not None and type(result.exception).__name__ == "ConfigError"


def test_module_entry_point_runs_quickstart() -> None:
    proc = subprocess.run([sys.executable, "-c", "from servingcast._cli_solve import main; main()",
                           QUICKSTART, "--no-refine", "--no-pareto", "--top", "1"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Chosen plan" in proc.stdout


@pytest.mark.slow
def test_refinement_writes_its_section_and_a_rerun_resumes(tmp_path: Path) -> None:
    """The default path: MILP, then simulated trials; rerunning the same command in the same
    folder resumes the study (no --force needed) and keeps every finished trial."""
    import optuna

    from servingcast.refine.study import open_storage

    out = tmp_path / "refined"
    args = (QUICKSTART, "--output", str(out), "--trials", "2", "--sim-requests", "300",
            "--no-pareto", "--top", "1")
    code, stdout, err = invoke(*args)
    assert code == 0, err
    assert "Refined plan vs MILP plan" in stdout
    assert f"optuna-dashboard {out / 'study.log'}" in stdout
    plan = json.loads((out / "plan.json").read_text())
    assert plan["refined"] and "simulated" in json.dumps(plan["refined"])
    assert (out / "refine_history.png").read_bytes().startswith(b"\x89PNG")
    storage = open_storage(str(out / "study.log"))
    first = len(optuna.load_study(study_name="quickstart", storage=storage).trials)
    code, _, err = invoke(*args[:4], "3", *args[5:])
    assert code == 0, err
    trials = optuna.load_study(study_name="quickstart", storage=storage).trials
    assert len(trials) > first
    assert [t.number for t in trials[:first]] == list(range(first))


FAST_REFINE = ("--trials", "1", "--sim-requests", "300", "--max-sim-requests", "300",
               "--no-pareto", "--top", "1")


def test_milp_files_and_report_come_first_and_survive_a_failed_refinement(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from servingcast import _cli_solve
    from servingcast.errors import SimulationError

    def boom(*_args: object, **_kw: object) -> None:
        raise SimulationError("worker process(es) failed: #0 (exit code 1)")

    monkeypatch.setattr(_cli_solve, "refine_plan", boom)
    out = tmp_path / "out"
    code, stdout, err = invoke(QUICKSTART, "--output", str(out), *FAST_REFINE)
    assert code == 2 and "worker process(es) failed" in err
    assert "the MILP plan's files are in" in err
    assert "Chosen plan" in stdout and "Wrote plan.json" in stdout
    assert {"plan.json", "alternatives.json", "scenario.yaml"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "plan.json").read_text())["problem"] == "quickstart"


def test_report_order_progress_and_another_problem_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = invoke(QUICKSTART, "--output", str(out), *FAST_REFINE)
    assert code == 0, err
    assert stdout.index("Chosen plan") < stdout.index("Wrote plan.json") < stdout.index(
        "Refined plan vs MILP plan") < stdout.index("Updated plan.json")
    assert "Refining by simulation: trial 1/1: " in err  # progress lines, not a terminal
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = tmp_path / "other.yaml"
    other.write_text(Path(QUICKSTART).read_text().replace("name: quickstart", "name: other"))
    code, stdout, err = invoke(str(other), "--output", str(out), *FAST_REFINE)
    assert code == 2 and stdout == ""
    assert err.startswith(f"error: {out} holds the results or study of another problem: "
                          "'quickstart' (plan.json)")
    assert "this run is problem 'other'" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    code, _, err = invoke(str(other), "--output", str(out), "--force", "--no-refine",
                          "--no-pareto", "--top", "1")
    assert code == 0, err
    assert json.loads((out / "plan.json").read_text())["problem"] == "other"


def test_a_second_run_on_a_locked_folder_is_refused_at_once(tmp_path: Path) -> None:
    from servingcast._output import folder_lock

    out = tmp_path / "out"
    with folder_lock(out):  # another run holds the folder
        code, stdout, err = invoke(QUICKSTART, "--output", str(out), "--no-refine")
    assert code == 2 and stdout == ""
    assert err.startswith(f"error: another servingcast-solve run is writing to {out} right "
                          "now; nothing was done.")
    assert not out.exists() or not any(out.iterdir())
    assert invoke(QUICKSTART, "--output", str(out), "--no-refine", "--no-pareto")[0] == 0
