"""Serving validation: MLPerf Inference Server summaries reproduced through the simulator.

Row mapping on the real CSV, the shipped dataset length distributions, a small end-to-end run,
the CLI flag, and a guard on the accuracy medians per class.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from servingcast._length_profiles import length_mean_max, load_length_profile, profile_names
from servingcast._validation_serving_format import format_serving_report, serving_report_dict
from servingcast.cli import main
from servingcast.sim.metrics import RequestArrays
from servingcast.validation import read_rows
from servingcast.validation_serving import (
    MaxQps,
    RunResult,
    ServingRun,
    Settings,
    SteadyStats,
    compare_run,
    measured_max_qps,
    plan_runs,
    relative_load_qps,
    steady_stats,
    summarize_serving,
    validate_serving,
)

CSV = Path(__file__).parent / "data" / "serving_measurements.csv"


def _runs_by_label() -> dict[str, ServingRun]:
    runs, _ = plan_runs(read_rows(CSV))
    return {run.label: run for run in runs}


def test_every_row_is_mapped_to_a_run_or_listed_unusable() -> None:
    rows = read_rows(CSV)
    runs, unusable = plan_runs(rows)
    mapped = [row["id"] for run in runs for row in run.rows]
    assert sorted(mapped + [u.row_id for u in unusable]) == sorted(r["id"] for r in rows)
    assert len(rows) == 46 and len(runs) == 10 and unusable == []


def test_runs_carry_the_stated_load_limits_and_assumed_layouts() -> None:
    runs = _runs_by_label()
    h100 = runs["Llama-2-70B 8xH100-SXM Server"]
    assert (h100.hardware, h100.precision, h100.tp, h100.replicas, h100.target_qps,
            h100.ttft_limit_ms, h100.tpot_limit_ms) == ("h100-sxm", "fp8", 2, 4, 107.0, 2000, 200)
    assert "v4.1 layout" in h100.layout_note and h100.tp_choices == ()
    b200 = runs["Llama-2-70B 1xB200 Server"]
    assert (b200.precision, b200.tp, b200.replicas, b200.layout_note) == ("fp4", 1, 1,
                                                                          "tp1 x 1 stated")
    interactive = runs["Llama-2-70B 8xH200-SXM Interactive"]
    assert (interactive.ttft_limit_ms, interactive.tpot_limit_ms) == (450, 40)
    assert interactive.tp_choices == (1, 2, 4, 8)
    big = runs["Llama-3.1-405B 8xH200-SXM Server"]
    assert (big.tp, big.tp_choices, big.ttft_limit_ms, big.tpot_limit_ms) == (8, (), 6000, 175)
    assert big.workload == "mlperf-llama3.1-405b"
    mixtral = runs["Mixtral-8x7B 8xB200 Server"]
    assert mixtral.precision == "fp4" and "fp4/fp8" in mixtral.assumptions[0]
    assert mixtral.target_qps == 872 and mixtral.workload == "mlperf-mixtral-8x7b"


def test_unmappable_rows_are_listed_with_the_reason() -> None:
    rows = [dict(r) for r in read_rows(CSV) if r["id"] in ("S2-013", "S2-014", "S2-001")]
    for row in rows:
        if row["id"] != "S2-001":
            row["gpu_type"] = "TPU-v9"
        else:
            row["metric"] = "energy per token"
    runs, unusable = plan_runs(rows)
    reasons = {u.row_id: u.reason for u in unusable}
    assert runs == [] and set(reasons) == {"S2-001", "S2-013", "S2-014"}
    assert reasons["S2-001"] == "metric 'energy per token' is not modelled"
    assert "unknown hardware 'TPU-v9'" in reasons["S2-013"]


def test_three_dataset_profiles_ship() -> None:
    assert profile_names() == ["mlperf-llama3.1-405b", "mlperf-mixtral-8x7b", "openorca-llama2"]
    openorca = load_length_profile("openorca-llama2")
    assert (openorca.stated["input_len"].mean, openorca.stated["input_len"].max) == (222.3, 1021)
    assert (openorca.stated["output_len"].mean, openorca.stated["output_len"].max) == (294, 1024)


@pytest.mark.parametrize("name", ["openorca-llama2", "mlperf-mixtral-8x7b",
                                  "mlperf-llama3.1-405b"])
def test_length_profile_has_the_stated_mean_and_maximum(name: str) -> None:
    profile = load_length_profile(name)
    rng = np.random.default_rng(0)
    for key in ("input_len", "output_len"):
        dist, stated = getattr(profile, key), profile.stated[key]
        mean, largest = length_mean_max(dist)
        assert largest == stated.max
        assert mean == pytest.approx(stated.mean, rel=1e-3)
        drawn = dist.sample(rng, 200_000)
        assert drawn.max() <= stated.max and drawn.mean() == pytest.approx(stated.mean, rel=0.01)


def test_steady_statistics_use_the_window() -> None:
    """Arrivals every second for 100 s, each taking 10 s (TTFT 1 s, 10 tokens): in the window
    [20 s, 90 s] the TTFT is 1000 ms, the TPOT 1000 ms and completions land at 1 per second."""
    arrival = np.arange(101, dtype=np.float64)
    n = arrival.size
    req = RequestArrays(
        arrival_s=arrival, first_token_s=arrival + 1.0, finish_s=arrival + 10.0,
        admitted_s=arrival, input_len=np.full(n, 5), output_len=np.full(n, 10),
        preemptions=np.zeros(n, dtype=np.int64), prefill_instance=np.zeros(n, dtype=np.int64),
        decode_instance=np.zeros(n, dtype=np.int64), reject_reason=np.zeros(n, dtype=np.int64),
        instance_names=("a",))
    stats = steady_stats(req)
    assert stats.num_requests == 71
    assert stats.ttft_mean_ms == pytest.approx(1000) and stats.tpot_p99_ms == pytest.approx(1000)
    assert stats.request_rate_per_s == pytest.approx(71 / 70)
    assert stats.output_tokens_per_s == pytest.approx(710 / 70)
    assert stats.rejected_fraction == 0.0


def _stats(ttft_ms: float, tpot_ms: float) -> SteadyStats:
    return SteadyStats(num_requests=100, request_rate_per_s=10.0, output_tokens_per_s=2940.0,
                       ttft_mean_ms=ttft_ms, ttft_p99_ms=2 * ttft_ms, tpot_mean_ms=tpot_ms,
                       tpot_p99_ms=2 * tpot_ms, rejected_fraction=0.0)


def test_latency_rows_use_the_same_relative_load() -> None:
    h100 = _runs_by_label()["Llama-2-70B 8xH100-SXM Server"]  # target 107, samples/s 106.21
    assert measured_max_qps(h100) == (106.21, None)
    search = MaxQps(qps=90.0, bound=None, probes=8)
    rate = relative_load_qps(h100, search)
    assert rate == pytest.approx(107.0 * 90.0 / 106.21)
    assert relative_load_qps(h100, MaxQps(qps=90.0, bound="at least", probes=8)) is None
    result = RunResult(h100, _stats(60_000.0, 180.0), search, _stats(500.0, 140.0), rate)
    by_metric = {(c.metric_class, c.metric): c for c in compare_run(result)}
    assert by_metric[("ttft", "mean first-token latency (TTFT)")].predicted == 500.0
    assert by_metric[("tpot", "p99 time per output token (TPOT)")].predicted == 280.0
    assert "same relative load" in by_metric[("ttft", "mean first-token latency (TTFT)")].note
    # Throughput stays at the stated load; max QPS is the search against samples/s.
    assert by_metric[("throughput", "completed samples per second")].predicted == 10.0
    assert by_metric[("max_qps", "max QPS under the SLO")].measured == 106.21
    # Without a relative-load simulation the latency rows fall back to the stated load.
    plain = {c.metric: c for c in compare_run(RunResult(h100, _stats(60_000.0, 180.0), None))}
    assert plain["mean first-token latency (TTFT)"].predicted == 60_000.0


QUICK = Settings(duration_s=300, probe_duration_s=120, qps_tolerance=0.05)


def test_small_run_end_to_end_is_reproducible() -> None:
    def select(run: ServingRun) -> bool:
        return run.label == "Llama-2-70B 1xB200 Server"

    report = validate_serving(read_rows(CSV), QUICK, select=select)
    assert [r.run.label for r in report.results] == ["Llama-2-70B 1xB200 Server"]
    classes = [c.metric_class for c in report.comparisons]
    assert sorted(classes) == sorted(["throughput"] * 2 + ["ttft"] * 2 + ["tpot"] * 2
                                     + ["max_qps"])
    assert all(math.isfinite(c.predicted) and c.predicted > 0 for c in report.comparisons)
    result = report.results[0]
    stated = result.stated
    assert 0 < stated.request_rate_per_s <= 44.5 * 1.05  # never more than the offered load
    search = result.max_qps
    assert search is not None and search.bound is None and 20 < search.qps < 80
    # The latency rows come from a second run at the same load relative to capacity.
    assert result.relative is not None and result.relative_rate_per_s is not None
    assert result.relative_rate_per_s == pytest.approx(44.5 * search.qps / 44.30)
    assert 0 < result.relative.request_rate_per_s <= result.relative_rate_per_s * 1.05
    ttft = next(c for c in report.comparisons if c.metric.startswith("mean first-token"))
    assert ttft.predicted == result.relative.ttft_mean_ms
    again = validate_serving(read_rows(CSV), QUICK, select=select)
    assert again.comparisons == report.comparisons
    text = format_serving_report(report)
    assert "S2-013" in text and "tp1 x 1 stated" in text and "Unusable rows: none" in text
    data = json.loads(json.dumps(serving_report_dict(report), allow_nan=False))
    assert [s["metric_class"] for s in data["summary"]] == ["throughput", "ttft", "tpot",
                                                             "max_qps"]


def test_cli_validate_serving_json(tmp_path: Path) -> None:
    lines = CSV.read_text().splitlines()
    subset = [lines[0]] + [line for line in lines[1:] if line.startswith(("S2-039", "S2-040",
                                                                           "S2-041", "S2-042"))]
    path = tmp_path / "serving.csv"
    path.write_text("\n".join(subset) + "\n")
    result = CliRunner().invoke(main, ["validate", "--serving", "--json", str(path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["label"] for r in data["runs"]] == ["Llama-3.1-405B 8xH200-SXM Server"]
    assert len(data["comparisons"]) == 5 and data["unusable"] == []


#: Median absolute error per class at the quick settings below, today: throughput 10.4%, TTFT
#: 42%, TPOT 12%, max QPS 7.9% (TTFT and TPOT at the same load relative to capacity; before the
#: issue-9 recalibration, at the stated load: 3.6%, 76%, 42%, 15%). The quick runs are short
#: (the 8xB200 Mixtral run's period is cut to 34 s), which is why throughput reads worse than the
#: published 600-s figures (4.6%). The limits sit a little above, so a cost-model change that
#: worsens them fails.
REGRESSION = Settings(duration_s=300, probe_duration_s=300, qps_tolerance=0.05,
                      max_requests=30_000, probe_max_requests=15_000)
LIMITS = {"throughput": 0.12, "ttft": 0.46, "tpot": 0.14, "max_qps": 0.10}


@pytest.mark.slow
def test_serving_accuracy_does_not_regress() -> None:
    report = validate_serving(read_rows(CSV), REGRESSION)
    assert report.unusable == []
    summaries = {s.metric_class: s for s in summarize_serving(report.comparisons)}
    assert {c: s.rows for c, s in summaries.items()} == {"throughput": 18, "ttft": 14,
                                                         "tpot": 14, "max_qps": 10}
    for cls, limit in LIMITS.items():
        assert summaries[cls].median_abs_error <= limit, (
            f"{cls}: median abs. error {summaries[cls].median_abs_error:.1%} > {limit:.0%}")
