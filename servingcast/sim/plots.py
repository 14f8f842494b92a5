"""PNG plots of a simulation (matplotlib, imported here only): returned as bytes, not written.

Figures come from matplotlib's object API (``Figure`` on an Agg canvas), never from pyplot, so
plotting neither selects a backend for the process nor keeps figures alive in pyplot's registry.

* ``latency_cdf.png`` — empirical CDFs of TTFT, TPOT and E2E, with the SLO limits.
* ``throughput_queue.png`` — completed requests per second and requests waiting over time.
* ``kv_usage.png`` — KV-cache usage of each instance group over time (mean of its instances).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from servingcast.groups import group_of_instances
from servingcast.sim.metrics import FloatArray, SimResult


def _figure(**kwargs: Any) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _latency_cdf(result: SimResult) -> bytes:
    req, slo = result.requests, result.scenario.slo
    fig = _figure(figsize=(13, 3.6))
    axes = fig.subplots(1, 3)
    panels = [("TTFT (ms)", req.ttft_s, slo.ttft), ("TPOT (ms)", req.tpot_s, slo.tpot),
              ("E2E latency (ms)", req.e2e_s, None)]
    for ax, (label, seconds, limit) in zip(axes, panels, strict=True):
        values = np.sort(seconds[~np.isnan(seconds)]) * 1e3
        if values.size:
            ax.plot(values, np.arange(1, values.size + 1) / values.size, lw=1.6)
        if limit is not None:
            ax.axvline(limit * 1e3, color="tab:red", ls="--", lw=1, label="SLO")
            ax.legend(loc="lower right")
        ax.set_xlabel(label)
        ax.set_ylim(0, 1.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of requests")
    fig.suptitle(f"Latency CDFs: {result.scenario.model}")
    return _png(fig)


def _throughput_queue(result: SimResult) -> bytes:
    req = result.requests
    finish = np.sort(req.finish_s[~np.isnan(req.finish_s)])
    fig = _figure(figsize=(10, 5.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    if finish.size:
        width = max((finish[-1] - np.nanmin(req.arrival_s)) / 100.0, 1e-3)
        edges = np.arange(np.nanmin(req.arrival_s), finish[-1] + width, width)
        counts, _ = np.histogram(finish, edges)
        top.step(edges[:-1], counts / width, where="post")
    top.set_ylabel("completed (req/s)")
    top.grid(alpha=0.3)
    series = result.timeseries
    if series is not None and series.t_s.size:
        bottom.step(series.t_s, series.waiting, where="post", label="waiting")
        bottom.step(series.t_s, series.in_system, where="post", label="in system", alpha=0.7)
        bottom.legend(loc="upper right")
    bottom.set_ylabel("requests")
    bottom.set_xlabel("time (s)")
    bottom.grid(alpha=0.3)
    return _png(fig)


def group_kv_usage(result: SimResult) -> dict[str, tuple[FloatArray, FloatArray]]:
    """Each instance group's KV-cache usage over time, ``(t_s, fraction)``: the mean of its
    instances' step curves on the union of their sample times. Instances are matched to their
    group by index (:func:`servingcast.groups.group_of_instances`, the simulator's numbering),
    not by name; groups without samples are left out. Empty without a time series."""
    series = result.timeseries
    if series is None:
        return {}
    groups = result.scenario.instance_groups
    group_of = group_of_instances([g.count for g in groups])
    usage_of = list(series.kv_usage.values())
    out = {}
    for index, group in enumerate(groups):
        points = [usage_of[i] for i, gi in enumerate(group_of)
                  if gi == index and usage_of[i][0].size]
        if not points:
            continue
        grid = np.unique(np.concatenate([t for t, _ in points]))
        out[group.name] = (grid, np.mean([np.interp(grid, t, u) for t, u in points], axis=0))
    return out


def _kv_usage(result: SimResult) -> bytes:
    fig = _figure(figsize=(10, 3.6))
    ax = fig.subplots()
    if result.timeseries is not None:
        for name, (grid, usage) in group_kv_usage(result).items():
            ax.step(grid, usage * 100.0, where="post", label=name)
        ax.legend(loc="upper right")
    ax.set_ylabel("KV cache in use (%)")
    ax.set_xlabel("time (s)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_pngs(result: SimResult) -> dict[str, bytes]:
    """File name -> PNG bytes (needs ``simulate(..., timeseries=True)`` for the time series)."""
    return {"latency_cdf.png": _latency_cdf(result),
            "throughput_queue.png": _throughput_queue(result),
            "kv_usage.png": _kv_usage(result)}
