"""``servingcast-simulate``: outputs, exit codes, and nothing written on error."""

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from servingcast._cli_sim import simulate_command

SCENARIO = """\
model: llama-3.1-8b
instance_groups:
  - {name: main, count: 2, hardware: h100-sxm}
router: {kind: power_of_two}
workload:
  num_requests: 60
  arrival: {kind: poisson, rate: 10}
  input_len: {kind: lognormal, mean: 500, std: 300}
  output_len: {kind: empirical, values: [1, 40, 80]}
slo: {ttft: 200 ms, tpot: 30 ms, attainment: 0.9}
seed: 3
"""


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO)
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(simulate_command, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_writes_summary_and_requests(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    code, stdout, stderr = invoke(str(scenario), "--output", str(out))
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["requests.csv", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("num_requests", "completed", "rejected", "duration_s", "request_throughput_per_s",
                "input_tokens_per_s", "output_tokens_per_s", "goodput_per_s", "slo_attainment"):
        assert isinstance(summary[key], (int, float))
    for metric in ("ttft_ms", "tpot_ms", "e2e_ms"):
        assert set(summary[metric]) == {"mean", "p50", "p90", "p95", "p99"}
    group = summary["groups"][0]
    assert {"utilization", "kv_usage_mean", "kv_usage_peak"} <= set(group)
    rows = list(csv.DictReader((out / "requests.csv").open()))
    assert len(rows) == 60
    assert {"arrival_s", "first_token_s", "finish_s", "ttft_ms", "tpot_ms", "e2e_ms",
            "queueing_ms", "preemptions", "instance"} <= set(rows[0])
    assert all((r["tpot_ms"] == "") == (r["output_tokens"] == "1") for r in rows)  # no TPOT
    assert any(r["output_tokens"] == "1" for r in rows)
    for text in ("TTFT", "p99", "goodput", "Instance group", "main"):
        assert text in stdout


def test_same_seed_byte_identical(scenario: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert invoke(str(scenario), "-o", str(tmp_path / name), "--quiet")[0] == 0
    a = (tmp_path / "a" / "summary.json").read_bytes()
    assert a == (tmp_path / "b" / "summary.json").read_bytes()
    assert (tmp_path / "a" / "requests.csv").read_bytes() == (
        tmp_path / "b" / "requests.csv").read_bytes()
    invoke(str(scenario), "-o", str(tmp_path / "c"), "--quiet", "--seed", "4")
    assert (tmp_path / "c" / "summary.json").read_bytes() != a


def test_json_and_quiet(scenario: Path) -> None:
    code, stdout, _ = invoke(str(scenario), "--json")
    assert code == 0 and json.loads(stdout)["num_requests"] == 60
    code, stdout, stderr = invoke(str(scenario), "--quiet")
    assert code == 0 and stdout == "" and stderr == ""


def test_plots_and_trace(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    code, _, stderr = invoke(str(scenario), "-o", str(out), "--plots", "--trace", "-q")
    assert code == 0, stderr
    for png in ("latency_cdf.png", "throughput_queue.png", "kv_usage.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trace = json.loads((out / "trace.json").read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert spans and {e["tid"] for e in spans} == {0, 1}
    assert all(e["dur"] > 0 for e in spans)


def test_existing_folder_needs_force(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "summary.json").write_text("old")
    code, _, stderr = invoke(str(scenario), "-o", str(out))
    assert code == 2
    assert "already holds summary.json; nothing was written. To fix:" in stderr
    assert "--force" in stderr
    assert (out / "summary.json").read_text() == "old"
    code, _, _ = invoke(str(scenario), "-o", str(out), "--force", "-q")
    assert code == 0
    assert (out / "notes.txt").read_text() == "keep me"
    assert json.loads((out / "summary.json").read_text())["num_requests"] == 60
    empty = tmp_path / "empty"
    empty.mkdir()
    assert invoke(str(scenario), "-o", str(empty), "-q")[0] == 0


@pytest.mark.parametrize(("change", "message"), [
    (("ttft: 200 ms", "ttft: 200"), "slo.ttft: 200 has no unit"),
    (("rate: 10", "rate: -10"), "workload.arrival.poisson.rate: Input should be greater than 0"),
    (("hardware: h100-sxm", "hardware: l4, tp: 3"), "instance_groups.0: tp=3 does not divide"),
    (("seed: 3", "seed: 3\nextra: 1"), "s.yaml:12: extra: unknown field"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, change: tuple[str, str],
                                              message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace(*change))
    out = tmp_path / "never"
    code, stdout, stderr = invoke(str(path), "-o", str(out), "--plots")
    assert code == 2
    assert message in stderr and stderr.startswith("error: ")
    assert stdout == ""
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_files_need_an_output_folder(scenario: Path) -> None:
    code, _, stderr = invoke(str(scenario), "--plots", "--trace")
    assert code == 2 and "--plots and --trace write files. To fix: add --output DIR" in stderr


def test_output_that_is_a_file(scenario: Path, tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    code, _, stderr = invoke(str(scenario), "-o", str(target))
    assert code == 2 and "is a file, not a folder" in stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace("llama-3.1-8b", "nope"))
    result = CliRunner().invoke(simulate_command, [str(path), "--debug"])
    assert result.exit_code != 0 and result.exception is not None
