"""The result of a simulation: a summary, per-request arrays, optional time series.

Definitions (``vllm bench serve`` and DistServe's, see DESIGN.md):

* TTFT = first token - arrival (disaggregated: the prefill's token; the KV transfer is not in
  it). TPOT = (finish - first token) / (output tokens - 1), undefined for one-token outputs
  (left out of the TPOT statistics; such a request meets the TPOT limit). E2E = finish - arrival.
  Queueing delay = first admission to an engine - arrival.
* The measured window runs from the first arrival to the last event; throughputs divide by it.
* A request *meets the SLOs* when it completed with TTFT <= ``slo.ttft`` and TPOT <= ``slo.tpot``
  (limits that are set). Goodput = such requests per second; SLO attainment = their fraction of
  *all* requests (rejected ones count as not meeting).
* Per instance group: utilization = busy time / (instances x window); KV usage = blocks held by
  running requests / capacity, time-weighted mean (sampled at iteration boundaries) and peak;
  TTFT of the completed requests it prefilled, TPOT of those it decoded (its engine's results
  when groups of several engines share a workload).
* ``mean_in_system`` is the time-average of the number of requests in the system, integrated by
  the simulator as requests come and go — Little's law says it equals throughput x mean E2E.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from servingcast.sim.core import REJECT_REASONS, Simulation
from servingcast.sim.scenario import Scenario

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Mean and percentiles in ms; None when no request has the metric (or, in results saved
    before a percentile was recorded, for that percentile). The simulator's summary and the
    refinement's simulated points share it."""

    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, seconds: FloatArray) -> LatencyStats:
        """Statistics of ``seconds`` (NaN entries ignored), in ms."""
        values = seconds[~np.isnan(seconds)] * 1e3
        if values.size == 0:
            return cls(None, None, None, None, None)
        p = np.percentile(values, PERCENTILES)
        return cls(float(values.mean()), *(float(x) for x in p))


@dataclass(frozen=True)
class GroupStats:
    """One instance group over the window."""

    name: str
    role: str
    hardware: str
    engine: str
    count: int
    kv_capacity_tokens: int
    utilization: float
    kv_usage_mean: float
    kv_usage_peak: float
    preemptions: int
    prefix_cache_hit_rate: float | None
    ttft_ms: LatencyStats
    tpot_ms: LatencyStats


@dataclass(frozen=True)
class Summary:
    """What ``summary.json`` holds (module docstring)."""

    num_requests: int
    completed: int
    rejected: int
    duration_s: float
    request_throughput_per_s: float
    input_tokens_per_s: float
    output_tokens_per_s: float
    goodput_per_s: float
    slo_attainment: float
    slo_attainment_target: float
    slo_met: bool
    slo: dict[str, float | None]
    ttft_ms: LatencyStats
    tpot_ms: LatencyStats
    e2e_ms: LatencyStats
    queueing_ms: LatencyStats
    mean_in_system: float
    preemptions: int
    rejected_by_reason: dict[str, int]
    groups: list[GroupStats] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class RequestArrays:
    """One element per request, in workload order. Times in s; NaN where undefined."""

    arrival_s: FloatArray
    first_token_s: FloatArray
    finish_s: FloatArray
    admitted_s: FloatArray
    input_len: IntArray
    output_len: IntArray
    preemptions: IntArray
    prefill_instance: IntArray
    decode_instance: IntArray
    reject_reason: IntArray
    instance_names: tuple[str, ...]

    @property
    def completed(self) -> npt.NDArray[np.bool_]:
        """Whether each request completed."""
        return ~np.isnan(self.finish_s)

    @property
    def ttft_s(self) -> FloatArray:
        """First token - arrival."""
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> FloatArray:
        """(finish - first token) / (output - 1); NaN for one-token outputs."""
        with np.errstate(divide="ignore", invalid="ignore"):
            tpot = (self.finish_s - self.first_token_s) / (self.output_len - 1)
        return np.where(self.output_len > 1, tpot, np.nan)

    @property
    def e2e_s(self) -> FloatArray:
        """Finish - arrival."""
        return self.finish_s - self.arrival_s

    @property
    def queueing_s(self) -> FloatArray:
        """First admission - arrival."""
        return self.admitted_s - self.arrival_s

    def to_csv(self) -> str:
        """``requests.csv``: one row per request."""
        out = io.StringIO()
        out.write("id,arrival_s,first_token_s,finish_s,ttft_ms,tpot_ms,e2e_ms,queueing_ms,"
                  "preemptions,instance,decode_instance,input_tokens,output_tokens,status\n")
        names = self.instance_names

        def num(x: float, scale: float = 1.0) -> str:
            return "" if math.isnan(x) else f"{x * scale:.6f}"

        columns = zip(self.arrival_s.tolist(), self.first_token_s.tolist(),
                      self.finish_s.tolist(), self.ttft_s.tolist(), self.tpot_s.tolist(),
                      self.e2e_s.tolist(), self.queueing_s.tolist(), self.preemptions.tolist(),
                      self.prefill_instance.tolist(), self.decode_instance.tolist(),
                      self.input_len.tolist(), self.output_len.tolist(),
                      self.reject_reason.tolist(), strict=True)
        for i, (arr, first, fin, ttft, tpot, e2e, queue, pre, p_inst, d_inst, n_in, n_out,
                reason) in enumerate(columns):
            status = "completed" if not math.isnan(fin) else (
                f"rejected:{REJECT_REASONS[reason]}" if reason else "unfinished")
            out.write(f"{i},{num(arr)},{num(first)},{num(fin)},{num(ttft, 1e3)},"
                      f"{num(tpot, 1e3)},{num(e2e, 1e3)},{num(queue, 1e3)},{pre},"
                      f"{names[p_inst] if p_inst >= 0 else ''},"
                      f"{names[d_inst] if d_inst >= 0 else ''},{n_in},{n_out},{status}\n")
        return out.getvalue()


@dataclass(frozen=True)
class TimeSeries:
    """Sampled as requests come and go, and at each instance's iteration boundaries."""

    t_s: FloatArray
    in_system: IntArray
    waiting: IntArray
    kv_usage: dict[str, tuple[FloatArray, FloatArray]]


@dataclass(frozen=True)
class SimResult:
    """A simulation's output: :attr:`summary`, :attr:`requests`, and what was recorded."""

    scenario: Scenario
    summary: Summary
    requests: RequestArrays
    timeseries: TimeSeries | None = None
    #: ``(instance, start_s, end_s, kind, iterations, decodes, prefill tokens)`` per batch.
    batches: list[tuple[int, float, float, str, int, int, int]] | None = None


def meets_slo(req: RequestArrays, scenario: Scenario) -> npt.NDArray[np.bool_]:
    """Per request: completed, and within every SLO limit that is set (a one-token output has
    no TPOT)."""
    ok: npt.NDArray[np.bool_] = req.completed.copy()
    slo = scenario.slo
    if slo.ttft is not None:
        ok &= req.ttft_s <= slo.ttft
    if slo.tpot is not None:
        tpot = req.tpot_s
        ok &= np.isnan(tpot) | (tpot <= slo.tpot)
    return ok


def _groups(sim: Simulation, window: float, req: RequestArrays,
            ttft_ms: LatencyStats, tpot_ms: LatencyStats) -> list[GroupStats]:
    """Per group; ``ttft_ms``/``tpot_ms``: the whole run's (a lone group's own)."""
    out = []
    ttft, tpot = req.ttft_s, req.tpot_s
    if len(sim.plans) > 1:
        group_of = np.asarray([inst.group for inst in sim.instances] + [-1], dtype=np.int64)
        done = req.completed
        front = group_of[req.prefill_instance]  # index -1 (rejected) reads the -1 sentinel
        back = group_of[req.decode_instance]
    for plan in sim.plans:
        members = [i for i in sim.instances if i.group == plan.index]
        blocks = plan.num_blocks * len(members)
        prompt = sum(i.prompt_tokens for i in members)
        out.append(GroupStats(
            name=plan.spec.name, role=plan.spec.role, hardware=plan.cost_model.hardware.name,
            engine=plan.spec.engine.label,
            count=len(members), kv_capacity_tokens=plan.capacity_tokens,
            utilization=sum(i.busy_s for i in members) / (len(members) * window),
            kv_usage_mean=sum(i.kv_area for i in members) / (blocks * window),
            kv_usage_peak=max(i.kv_peak for i in members) / plan.num_blocks,
            preemptions=sum(i.preemptions for i in members),
            prefix_cache_hit_rate=(sum(i.cached_tokens for i in members) / prompt
                                   if plan.spec.enable_prefix_caching and prompt else None),
            ttft_ms=(ttft_ms if len(sim.plans) == 1
                     else LatencyStats.of(ttft[done & (front == plan.index)])),
            tpot_ms=(tpot_ms if len(sim.plans) == 1
                     else LatencyStats.of(tpot[done & (back == plan.index)])),
        ))
    return out


def collect(sim: Simulation) -> SimResult:
    """Turn a finished simulation into a :class:`SimResult`."""
    names = tuple(inst.name for inst in sim.instances)
    req = RequestArrays(
        arrival_s=np.asarray(sim.arrival, dtype=np.float64),
        first_token_s=np.asarray(sim.first_token, dtype=np.float64),
        finish_s=np.asarray(sim.finish, dtype=np.float64),
        admitted_s=np.asarray(sim.admitted, dtype=np.float64),
        input_len=np.asarray(sim.requests.input_len, dtype=np.int64),
        output_len=np.asarray(sim.requests.output_len, dtype=np.int64),
        preemptions=np.asarray(sim.preemptions, dtype=np.int64),
        prefill_instance=np.asarray(sim.prefill_instance, dtype=np.int64),
        decode_instance=np.asarray(sim.decode_instance, dtype=np.int64),
        reject_reason=np.asarray(sim.reject_reason, dtype=np.int64),
        instance_names=names,
    )
    n = len(sim.requests)
    start = float(np.nanmin(req.arrival_s)) if n else 0.0
    end = sim.now
    for inst in sim.instances:
        inst.mark(end)
    window = max(end - start, 1e-12)
    done = req.completed
    met = meets_slo(req, sim.scenario)
    slo = sim.scenario.slo
    attainment = float(met.sum() / n) if n else 0.0
    reasons = {REJECT_REASONS[code]: int(np.sum(req.reject_reason == code))
               for code in range(1, len(REJECT_REASONS))}
    ttft_ms, tpot_ms = LatencyStats.of(req.ttft_s), LatencyStats.of(req.tpot_s)
    summary = Summary(
        num_requests=n,
        completed=int(done.sum()),
        rejected=sim.rejected,
        duration_s=window,
        request_throughput_per_s=float(done.sum()) / window,
        input_tokens_per_s=float(req.input_len[done].sum()) / window,
        output_tokens_per_s=float(req.output_len[done].sum()) / window,
        goodput_per_s=float(met.sum()) / window,
        slo_attainment=attainment,
        slo_attainment_target=slo.attainment,
        slo_met=attainment >= slo.attainment,
        slo={"ttft_ms": None if slo.ttft is None else slo.ttft * 1e3,
             "tpot_ms": None if slo.tpot is None else slo.tpot * 1e3},
        ttft_ms=ttft_ms,
        tpot_ms=tpot_ms,
        e2e_ms=LatencyStats.of(req.e2e_s),
        queueing_ms=LatencyStats.of(req.queueing_s),
        mean_in_system=sim.in_system_area / window,
        preemptions=int(req.preemptions.sum()),
        rejected_by_reason={k: v for k, v in reasons.items() if v},
        groups=_groups(sim, window, req, ttft_ms, tpot_ms),
    )
    series = None
    if sim.options.timeseries:
        kv = {}
        for inst in sim.instances:
            points = np.asarray(sim.kv_series[inst.index], dtype=np.float64).reshape(-1, 2)
            kv[inst.name] = (points[:, 0], points[:, 1] / inst.pool.total)
        series = TimeSeries(np.asarray(sim.series_t, dtype=np.float64),
                            np.asarray(sim.series_in_system, dtype=np.int64),
                            np.asarray(sim.series_waiting, dtype=np.int64), kv)
    return SimResult(sim.scenario, summary, req, series,
                     sim.batches if sim.options.trace else None)
