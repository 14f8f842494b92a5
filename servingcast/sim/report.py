"""A simulation's result as text: the summary table, ``summary.json`` and the Chrome trace.

Functions return strings; only the CLI prints or writes files. ``summary.json`` is
``Summary.to_dict()`` with sorted-free, fixed key order and ``repr`` floats, so the same scenario
and seed give byte-identical files.
"""

from __future__ import annotations

import json
from typing import Any

from servingcast._text import table
from servingcast.sim.metrics import LatencyStats, SimResult


def summary_json(result: SimResult) -> str:
    """``summary.json``."""
    return json.dumps(result.summary.to_dict(), indent=2, allow_nan=False) + "\n"


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def summary_table(result: SimResult) -> str:
    """A readable summary: throughput, SLO attainment, latency percentiles, instance groups."""
    s, sc = result.summary, result.scenario
    gpus = sum(g.count * g.tp * g.pp for g in sc.instance_groups)
    instances = sum(g.count for g in sc.instance_groups)
    lines = [
        f"{sc.model} ({sc.precision}): {len(sc.instance_groups)} instance group(s), "
        f"{instances} instance(s), {gpus} GPU(s), seed {sc.seed}",
        f"{s.num_requests:,} requests: {s.completed:,} completed, {s.rejected:,} rejected, "
        f"over {s.duration_s:,.1f} s",
    ]
    if s.rejected_by_reason:
        lines.append("  rejected: " + ", ".join(f"{n} ({reason.replace('_', ' ')})"
                                               for reason, n in s.rejected_by_reason.items()))
    limits = [f"TTFT <= {_ms(s.slo['ttft_ms'], 0)} ms" if s.slo["ttft_ms"] is not None else "",
              f"TPOT <= {_ms(s.slo['tpot_ms'], 0)} ms" if s.slo["tpot_ms"] is not None else ""]
    slo = ", ".join(x for x in limits if x) or "no latency limits"
    verdict = "met" if s.slo_met else "NOT met"
    lines += [
        "",
        "Throughput",
        *table(["", "per second"], [
            ["requests", f"{s.request_throughput_per_s:,.2f}"],
            ["input tokens", f"{s.input_tokens_per_s:,.1f}"],
            ["output tokens", f"{s.output_tokens_per_s:,.1f}"],
            ["goodput (requests within SLOs)", f"{s.goodput_per_s:,.2f}"],
        ]),
        "",
        f"SLO ({slo}): attainment {s.slo_attainment:.1%}, target {s.slo_attainment_target:.1%}"
        f" -> {verdict}",
        "",
    ]
    stats: list[tuple[str, LatencyStats]] = [("TTFT", s.ttft_ms), ("TPOT", s.tpot_ms),
                                             ("E2E", s.e2e_ms), ("queueing", s.queueing_ms)]
    lines += table(["Latency (ms)", "mean", "p50", "p90", "p95", "p99"],
                    [[name, *(_ms(getattr(st, k)) for k in ("mean", "p50", "p90", "p95", "p99"))]
                     for name, st in stats])
    lines.append("")
    rows = []
    for g in s.groups:
        hits = "-" if g.prefix_cache_hit_rate is None else f"{g.prefix_cache_hit_rate:.1%}"
        rows.append([g.name, g.role, g.hardware, g.engine, str(g.count), f"{g.utilization:.1%}",
                     f"{g.kv_usage_mean:.1%}", f"{g.kv_usage_peak:.1%}", str(g.preemptions),
                     hits])
    lines += table(["Instance group", "role", "hardware", "engine", "count", "busy", "KV mean",
                     "KV peak", "preemptions", "prefix hits"], rows,
                    [False] * 4 + [True] * 6)
    lines.append(f"  mean requests in system {s.mean_in_system:,.2f}; preemptions "
                 f"{s.preemptions:,}")
    if len(s.groups) > 1:  # each group's own requests, e.g. engines compared on one workload
        lines.append("")
        lines += table(["Latency by group (ms)", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99"],
                        [[g.name, _ms(g.ttft_ms.p50), _ms(g.ttft_ms.p99), _ms(g.tpot_ms.p50),
                          _ms(g.tpot_ms.p99)] for g in s.groups])
    return "\n".join(lines)


def chrome_trace(result: SimResult) -> str:
    """The batches of every instance as a Chrome trace (chrome://tracing, Perfetto).

    One process per instance group, one thread per instance, one complete event (``ph: X``)
    per batch — a prefill, mixed or decode iteration, or a run of identical decode iterations.
    """
    if result.batches is None:
        raise ValueError("simulate(..., trace=True) records the batches a trace needs")
    names = result.requests.instance_names
    sc = result.scenario
    group_of: list[int] = []
    for index, g in enumerate(sc.instance_groups):
        group_of += [index] * g.count
    events: list[dict[str, Any]] = []
    for index, g in enumerate(sc.instance_groups):
        events.append({"name": "process_name", "ph": "M", "pid": index, "tid": 0,
                       "args": {"name": f"{g.name} ({g.role}, {g.hardware})"}})
    for inst, name in enumerate(names):
        events.append({"name": "thread_name", "ph": "M", "pid": group_of[inst], "tid": inst,
                       "args": {"name": name}})
    for inst, start, end, kind, steps, decodes, tokens in result.batches:
        label = kind if steps == 1 else f"{kind} x{steps}"
        events.append({"name": label, "cat": kind, "ph": "X", "pid": group_of[inst],
                       "tid": inst, "ts": round(start * 1e6, 3),
                       "dur": round((end - start) * 1e6, 3),
                       "args": {"iterations": steps, "decodes": decodes,
                                "prefill_tokens": tokens}})
    return json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}) + "\n"
