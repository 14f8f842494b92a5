"""Text and JSON renderings of a serving validation (:mod:`servingcast.validation_serving`)."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict
from typing import Any

from servingcast.validation_serving import (
    CLASSES,
    COOLDOWN_FRACTION,
    DURATION_S,
    GPU_MEMORY_UTILIZATION,
    MAX_NUM_BATCHED_TOKENS,
    MAX_NUM_SEQS,
    PROBE_DURATION_S,
    QPS_TOLERANCE,
    WARMUP_FRACTION,
    ServingReport,
    qps_text,
    summarize_serving,
)

#: The project's accuracy targets per class (median absolute error).
TARGETS = {"throughput": 0.10, "max_qps": 0.10, "ttft": 0.20, "tpot": 0.20}
CLASS_NAMES = {"throughput": "throughput at the stated load", "ttft": "TTFT (mean, p99)",
               "tpot": "TPOT (mean, p99)", "max_qps": "max QPS under the SLO"}


def method_lines() -> list[str]:
    """How the numbers were made, and the settings assumed for every run."""
    return [
        f"Each run: Poisson arrivals at its target QPS for {DURATION_S:.0f} s (MLPerf's minimum "
        f"Server run), statistics over arrivals and completions between {WARMUP_FRACTION:.0%} "
        f"and {1 - COOLDOWN_FRACTION:.0%} of the period. Max QPS: one replica's share of the "
        f"traffic, {PROBE_DURATION_S:.0f}-s probes, bisected to {QPS_TOLERANCE:.0%}; MLPerf's "
        "check (p99 TTFT and p99 TPOT within the limits). TTFT and TPOT rows: a second run at "
        "the same load relative to capacity, target QPS x simulated / measured max QPS (the "
        "capacity error is the max-QPS class's).",
        f"Assumed for every run (not in the summaries): max_num_seqs {MAX_NUM_SEQS}, chunked "
        f"prefill with a {MAX_NUM_BATCHED_TOKENS}-token budget, {GPU_MEMORY_UTILIZATION:.0%} of "
        "GPU memory for weights and KV, a least-outstanding-requests router, calibrated "
        "efficiency defaults (B200 FP4 and MI325X compute fitted on these runs, see "
        "configs/hardware).",
    ]


def _ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def format_serving_report(report: ServingReport) -> str:
    """Runs with their assumptions, every compared row, per-class medians, unusable rows."""
    lines = ["Serving validation: MLPerf Inference Server summaries through the simulator",
             *method_lines(), "", "Runs (what the summaries leave open, and what was assumed):"]
    for r in report.results:
        run, s = r.run, r.stated
        lines.append(f"  {run.run_id:<4} {run.label}: target {run.target_qps:g} QPS; SLO p99 "
                     f"TTFT <= {run.ttft_limit_ms:g} ms, TPOT <= {run.tpot_limit_ms:g} ms")
        lines.append(f"       assumed: {'; '.join(run.assumptions)}")
        qps = "" if r.max_qps is None else (
            f"; max QPS {r.max_qps.bound + ' ' if r.max_qps.bound else ''}"
            f"{qps_text(r.max_qps.qps)} ({r.max_qps.probes} probes)")
        lines.append(f"       simulated at the target: {s.request_rate_per_s:.3g} req/s, "
                     f"TTFT mean/p99 {_ms(s.ttft_mean_ms)}/{_ms(s.ttft_p99_ms)} ms, TPOT "
                     f"mean/p99 {_ms(s.tpot_mean_ms)}/{_ms(s.tpot_p99_ms)} ms{qps}")
        if r.relative is not None and r.relative_rate_per_s is not None:
            rel = r.relative
            lines.append(f"       at the same relative load, {qps_text(r.relative_rate_per_s)} "
                         f"QPS: TTFT mean/p99 {_ms(rel.ttft_mean_ms)}/{_ms(rel.ttft_p99_ms)} ms, "
                         f"TPOT mean/p99 {_ms(rel.tpot_mean_ms)}/{_ms(rel.tpot_p99_ms)} ms")
    lines += ["", "Rows (error = predicted / measured - 1):",
              f"  {'id':<7} {'run':<4} {'class':<10} {'metric':<34} {'measured':>11} "
              f"{'predicted':>11} {'error':>9}  unit"]
    for c in report.comparisons:
        note = f"  ({c.note})" if c.note else ""
        lines.append(f"  {c.row_id:<7} {c.run_id:<4} {c.metric_class:<10} {c.metric[:34]:<34} "
                     f"{c.measured:>11,.2f} {c.predicted:>11,.2f} {c.error:>+9.1%}  "
                     f"{c.unit}{note}")
    lines += ["", f"  {'class':<30} {'rows':>5} {'median |error|':>15} {'median bias':>12} "
              f"{'target':>7}"]
    for summary in summarize_serving(report.comparisons):
        lines.append(f"  {CLASS_NAMES[summary.metric_class]:<30} {summary.rows:>5} "
                     f"{summary.median_abs_error:>15.1%} {summary.median_bias:>+12.1%} "
                     f"{TARGETS[summary.metric_class]:>7.0%}")
    lines += ["", "Median signed error by device (the cost model's per-device bias):"]
    for device, medians in bias_by_device(report).items():
        lines.append(f"  {device:<10} " + ", ".join(
            f"{cls} {value:+.1%} ({n})" for cls, (value, n) in medians.items()))
    lines.append(f"Unusable rows: {len(report.unusable) or 'none'}")
    lines += [f"  {u.row_id}: {u.reason}" for u in report.unusable]
    return "\n".join(lines)


def bias_by_device(report: ServingReport) -> dict[str, dict[str, tuple[float, int]]]:
    """``{hardware: {class: (median signed error, rows)}}``."""
    hardware = {r.run.run_id: r.run.hardware for r in report.results}
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for device in sorted(set(hardware.values())):
        for cls in CLASSES:
            errors = [c.error for c in report.comparisons
                      if hardware[c.run_id] == device and c.metric_class == cls]
            if errors:
                out.setdefault(device, {})[cls] = (statistics.median(errors), len(errors))
    return out


def _clean(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def serving_report_dict(report: ServingReport) -> dict[str, Any]:
    """The report as plain JSON-ready data."""
    runs = []
    for r in report.results:
        run = r.run
        runs.append({
            "run_id": run.run_id, "label": run.label, "model": run.model,
            "hardware": run.hardware, "precision": run.precision, "num_gpus": run.num_gpus,
            "tp": run.tp, "replicas": run.replicas, "target_qps": run.target_qps,
            "ttft_limit_ms": run.ttft_limit_ms, "tpot_limit_ms": run.tpot_limit_ms,
            "workload": run.workload, "assumptions": list(run.assumptions),
            "row_ids": [row["id"] for row in run.rows],
            "stated_load": asdict(r.stated),
            "max_qps": None if r.max_qps is None else asdict(r.max_qps),
            "relative_load_qps": r.relative_rate_per_s,
            "relative_load": None if r.relative is None else asdict(r.relative),
        })
    data: dict[str, Any] = _clean({
        "method": method_lines(),
        "runs": runs,
        "comparisons": [{**asdict(c), "error": c.error} for c in report.comparisons],
        "summary": [{**asdict(s), "target": TARGETS[s.metric_class]}
                    for s in summarize_serving(report.comparisons)],
        "bias_by_device": {d: {c: {"median_bias": v, "rows": n} for c, (v, n) in m.items()}
                           for d, m in bias_by_device(report).items()},
        "unusable": [asdict(u) for u in report.unusable],
    })
    return data


__all__ = ["TARGETS", "bias_by_device", "format_serving_report", "method_lines",
           "serving_report_dict"]
