"""``servingcast calibrate``: the shipped examples end to end, exit codes, no overwriting, and
the written file in estimate, simulate and solve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from servingcast._cli_calibrate import ENGINES as _ENGINES
from servingcast.calibrate.report import ENGINES
from servingcast.cli import main
from servingcast.specs import get_hardware

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "calibration"
ALL = [*sorted(str(p) for p in EXAMPLES.glob("*.json*")), str(EXAMPLES / "runs.csv")]
#: The factors the examples were generated with (configs/calibration/README.md).
EXAMPLE_FACTORS = {"compute": 0.55, "memory": 0.72, "network": 0.3, "iteration_ms": 1.6,
                   "layer_us": 25.0}


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["calibrate", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The README's command on the shipped examples."""
    out = tmp_path_factory.mktemp("cal") / "my-h100.yaml"
    code, stdout, stderr = _run(*ALL, "--hardware", "h100-sxm", "--model", "llama-3.1-8b",
                                "--tp", "1", "--engine", "vllm", "--output", str(out))
    assert code == 0, stderr
    return out, stdout


def test_examples_end_to_end(calibrated: tuple[Path, str]) -> None:
    out, stdout = calibrated
    assert stdout.startswith("Calibrated h100-sxm on 8 runs")
    assert f"Wrote {out}" in stdout
    before, after = (float(x.split("%")[0]) for x in
                     stdout.split("figures: ")[1].split(" (RMS")[0].split(" before -> "))
    assert after < before / 5
    spec = get_hardware(str(out))
    assert spec.name == "my-h100"
    # The examples were made with known factors; they come back (approximately: the examples
    # were simulated by the simulator of the day they were made).
    fitted = {**spec.efficiency.model_dump(), **spec.overheads.model_dump()}
    for name, true in EXAMPLE_FACTORS.items():
        assert fitted[name] == pytest.approx(true, rel=0.1), name
    header = out.read_text().splitlines()[:3]
    assert "Engine: vllm." in header[1]


def test_written_file_in_estimate_simulate_and_solve(calibrated: tuple[Path, str],
                                                    tmp_path: Path) -> None:
    out, _ = calibrated
    runner = CliRunner()
    result = runner.invoke(main, ["estimate", "-m", "llama-3.1-8b", "-g", str(out), "-i", "1024",
                                  "-o", "64", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["hardware"] == "my-h100"
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump({
        "model": "llama-3.1-8b",
        "instance_groups": [{"name": "g", "hardware": str(out)}],
        "workload": {"num_requests": 20, "arrival": {"kind": "poisson", "rate": 2},
                     "input_len": 256, "output_len": 32},
    }))
    result = runner.invoke(main, ["simulate", str(scenario), "--json", "-q"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["completed"] == 20
    problem = tmp_path / "problem.yaml"
    problem.write_text(yaml.safe_dump({
        "name": "calibrated",
        "pools": [{"name": "mine", "hardware": str(out), "count": 2}],
        "workloads": [{"name": "chat", "model": "llama-3.1-8b", "precision": "bf16",
                       "input_len": 512, "output_len": 64, "demand": "maximize",
                       "slo": {"ttft": "1 s", "tpot": "50 ms", "attainment": 0.9}}],
        "search": {"modes": ["aggregated"], "tp": [1], "pp": [1]},
        "objective": "max_goodput",
    }))
    result = runner.invoke(main, ["solve", str(problem), "--no-refine", "--no-pareto",
                                  "--json"])
    assert result.exit_code == 0, result.stderr


def test_refuses_to_overwrite(calibrated: tuple[Path, str]) -> None:
    out, _ = calibrated
    before = out.read_text()
    code, _, stderr = _run(ALL[0], "-g", "h100-sxm", "-o", str(out))
    assert code == 2
    assert stderr.startswith(f"error: {out.parent} already holds my-h100.yaml; nothing was "
                             "written. To fix:")
    assert "--force" in stderr and "Traceback" not in stderr
    assert out.read_text() == before


def test_force_overwrites_and_json(tmp_path: Path) -> None:
    out = tmp_path / "mine.yaml"
    out.write_text("old")
    vllm = str(EXAMPLES / "vllm-llama-3.1-8b-c1.json")
    code, stdout, stderr = _run(vllm, "-g", "h100-sxm", "-o", str(out), "--force", "--json")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["output"] == str(out) and data["engine"] is None
    params = {p["name"]: p for p in data["parameters"]}
    assert params["network"]["status"] == "kept"
    assert data["median_abs_error_after"] < data["median_abs_error_before"]
    assert get_hardware(str(out)).name == "mine"
    assert "Engine: not given." in out.read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "out.json"], "--output out.json: a hardware file ends in .yaml"),
    (["-o", "{tmp}/x.yaml"], "the tensor-parallel size is not recorded. To fix: pass --tp N"),
    (["-o", "{tmp}/x.yaml", "--tp", "1", "-g", "nope"], "unknown hardware 'nope'"),
])
def test_mistakes_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    sglang = str(EXAMPLES / "sglang-llama-3.1-8b.jsonl")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "-g" not in args:
        args += ["-g", "h100-sxm"]
    code, _, stderr = _run(sglang, "--model", "llama-3.1-8b", *args)
    assert code == 2
    assert message in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "x.yaml").exists()


def test_engine_choices() -> None:
    assert _ENGINES == ENGINES
    code, _, stderr = _run(ALL[0], "-g", "h100-sxm", "-o", "x.yaml", "--engine", "tgi")
    assert code == 2 and "'tgi' is not one of" in stderr
