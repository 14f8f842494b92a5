"""``servingcast compare``: the shipped problem end to end, its files, and clean user errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from servingcast.cli import main
from servingcast.planner import solve
from servingcast.planner.problem import load_problem

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = str(ROOT / "problems" / "compare-llama-3.1-70b.yaml")
QUICKSTART = str(ROOT / "problems" / "quickstart.yaml")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("compare") / "out"
    code, stdout, stderr = invoke("compare", SHIPPED, "--output", str(out))
    assert code == 0, stderr
    return out, stdout


def test_shipped_problem_table_and_files(shipped_run: tuple[Path, str]) -> None:
    out, stdout = shipped_run
    for text in ("GPUs", "$/h", "output tok/s", "tok/s/GPU", "$/M output tok",
                 "16 GPUs of each type", "mi300x 2.50 (compare section)", "Wrote compare.csv"):
        assert text in stdout
    rows = list(csv.DictReader(io.StringIO((out / "compare.csv").read_text())))
    assert {r["hardware"] for r in rows} == {"h100-sxm", "h200-sxm", "b200", "mi300x"}
    usd = [float(r["usd_per_million_output_tokens"]) for r in rows]
    assert usd == sorted(usd)
    assert [r["best"] for r in rows] == ["true", "false", "false", "false"]
    best_line = next(line for line in stdout.splitlines() if line.lstrip().startswith("*"))
    assert rows[0]["hardware"] in best_line
    for r in rows:  # the formula, from the file's own columns
        assert float(r["usd_per_million_output_tokens"]) == pytest.approx(
            float(r["cost_per_hour"]) / (float(r["output_tokens_per_s"]) * 3600) * 1e6,
            rel=1e-4)
    data = json.loads((out / "compare.json").read_text())
    assert data["best"] == rows[0]["hardware"]
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_row_equals_a_plan_of_that_type_alone(shipped_run: tuple[Path, str]) -> None:
    out, _ = shipped_run
    row = next(r for r in json.loads((out / "compare.json").read_text())["rows"]
               if r["hardware"] == "mi300x")
    problem = load_problem(SHIPPED)
    alone = problem.model_copy(update={"compare": None, "pools": (problem.pools[0].model_copy(
        update={"name": "mi300x", "hardware": "mi300x", "price_per_gpu_hour": 2.5}),)})
    plan = solve(alone, top_k=1, pareto_factors=None, compare_modes=False).plan
    assert row["gpus"] == plan.total_gpus
    assert row["cost_per_hour"] == pytest.approx(plan.cost_per_hour, rel=1e-6)
    assert row["output_tokens_per_s"] == pytest.approx(plan.output_tokens_per_s, rel=1e-6)


def test_existing_files_are_kept_without_force(shipped_run: tuple[Path, str]) -> None:
    out, _ = shipped_run
    before = (out / "compare.csv").read_bytes()
    code, _, stderr = invoke("compare", SHIPPED, "--output", str(out), "-g", "b200")
    assert code == 2 and "pass --force to overwrite" in stderr and "Traceback" not in stderr
    assert (out / "compare.csv").read_bytes() == before
    code, stdout, _ = invoke("compare", QUICKSTART, "--output", str(out), "--force",
                             "-g", "h100,b200", "--json")
    assert code == 0
    assert {r["hardware"] for r in json.loads(stdout)["rows"]} == {"h100-sxm", "b200"}
    assert (out / "compare.csv").read_bytes() != before


@pytest.mark.parametrize(("args", "message"), [
    (["-g", "h100-sxm,h300"], "unknown GPU type 'h300'; the catalog has a100-pcie-80gb"),
    ([], "has no compare section and no GPU types were given"),
    (["-g", "mi300x"], "no price for mi300x"),
    (["-g", "b200", "--price", "b200=cheap"], "--price 'b200=cheap': expected TYPE="),
    (["-g", "b200", "--gpus", "12"], "12 GPUs (--gpus) are not a whole number"),
])
def test_user_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    code, stdout, stderr = invoke("compare", QUICKSTART, *args)
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: ") and message in stderr and "Traceback" not in stderr
    if "h300" in message:
        for known in ("h100-sxm", "h200-sxm", "b200", "mi300x"):
            assert known in stderr
