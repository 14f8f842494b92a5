"""Serving-level validation: MLPerf Inference Server summaries reproduced through the simulator.

Each *run* of a serving-measurements CSV (the rows sharing one ``source_url``: one
``mlperf_log_summary.txt``) becomes one simulated deployment, with the calibrated cost model and
nothing fitted to any row:

1. **Deployment.** ``replicas = num_gpus / tp`` data-parallel instances of the model on the
   row's GPU. ``tp`` is the stated one; else the layout the notes give for an earlier round
   ("v4.1 used TP2 x 4"); else the layout a submitter would pick, the one with the highest
   simulated max QPS under the SLO (step 4): starting from the smallest ``tp`` (1, 2, 4, 8) whose
   weights take at most :data:`WEIGHTS_SHARE_OF_HBM` of each GPU's memory, ``tp`` is doubled
   while that raises the max QPS. Precision is the one the ``precision`` column names first (the
   vendor's usual choice; the summaries do not state it). Engine limits are the same for every
   run (:data:`MAX_NUM_SEQS`, :data:`MAX_NUM_BATCHED_TOKENS`, chunked prefill, 90% of memory).
2. **Workload.** Poisson arrivals at the row's ``target_qps`` for :data:`DURATION_S` (MLPerf's
   minimum Server run), lengths drawn from the dataset's shipped distribution
   (``configs/workloads``, same mean and maximum as the benchmark's dataset), seeded.
3. **Statistics** over the steady window ``[t0 + w·T, t0 + (1 - c)·T]`` of the arrival period
   ``T`` (``w`` = :data:`WARMUP_FRACTION`, ``c`` = :data:`COOLDOWN_FRACTION`): TTFT and TPOT
   (mean and p99) of the requests arriving in it, requests and output tokens per second of the
   completions in it. MLPerf's runs are long enough for start-up and drain not to matter; a
   600-s simulation is not, hence the window.
4. **Max QPS under the SLO** (MLPerf's Server result: the highest target QPS whose p99 TTFT and
   p99 TPOT meet the limits in the notes): one replica with ``1/replicas`` of the Poisson
   traffic (a random split of a Poisson stream is Poisson; the router's balancing is not
   modelled) for :data:`PROBE_DURATION_S`, its steady-window p99s checked; the rate doubled or
   halved until the answer flips, then bisected to
   :data:`QPS_TOLERANCE` (relative). Probes share their random draws (the same seed), so the
   search sees a monotone load.

5. **Latency at the same relative load.** An MLPerf Server run's target QPS is the highest its
   submitter found to pass the p99 limits, so its TTFT and TPOT are those of a system at the edge
   of its own capacity: queueing there is steep (M/G/1 waiting grows as ``1 / (1 - rho)``), and a
   few percent of capacity error at the stated rate turns a 1-s TTFT into a minute or into 50 ms.
   That error is already scored by ``max_qps``; the latency rows ask how long requests wait and
   decode at the *same point relative to capacity*. So they are compared with a second
   simulation at ``target_qps * (simulated max QPS / measured max QPS)`` (the measured max QPS
   being the completed samples/s, or the target QPS), the simulated system's own operating point
   as far below or above its max QPS as the real one was. Without a max-QPS answer (the search
   not run, or only a bound) they use the stated load.

Classes compared: ``throughput`` (completed samples/s and tokens/s at the stated load: equal to
the offered load whenever the simulated system keeps up, so they mainly test that and the
output-length assumption), ``ttft`` and ``tpot`` (mean and p99 at the same relative load, step 5),
and ``max_qps`` (one per run, against its completed samples/s, or its target QPS where the CSV
has no samples/s row). Rows that cannot be mapped are listed with the reason. (The serving CSV holds
Server and Interactive runs only; with no Offline rows there is no all-at-once throughput class.)

Request counts are capped (:data:`MAX_REQUESTS`, :data:`PROBE_MAX_REQUESTS`), which shortens
only the 8xB200 Mixtral run's periods (to about 290 s and 340 s): a few minutes in all.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from servingcast._length_profiles import LengthProfile, length_mean_max, load_length_profile
from servingcast.errors import ConfigError, ServingcastError
from servingcast.sim.metrics import RequestArrays

#: MLPerf Inference's minimum Server run length; the simulated arrival period at the stated load.
DURATION_S = 600.0
#: Fewest requests a stated-load simulation draws (the 405B runs offer under 1 QPS).
MIN_REQUESTS = 1000
#: Most requests a stated-load simulation draws (keeps the 8xB200 Mixtral run to seconds).
MAX_REQUESTS = 250_000
#: Arrival period of each max-QPS probe (one replica), with its request bounds.
PROBE_DURATION_S = 600.0
PROBE_MIN_REQUESTS = 500
PROBE_MAX_REQUESTS = 60_000
#: Leading and trailing fractions of the arrival period left out of the statistics.
WARMUP_FRACTION = 0.2
COOLDOWN_FRACTION = 0.1
#: Relative width at which the max-QPS bisection stops.
QPS_TOLERANCE = 0.02
#: Doublings or halvings tried from the target QPS before the search gives up.
MAX_BRACKET_STEPS = 7
#: A probe fails when more than this fraction of its requests is rejected.
MAX_REJECTED_FRACTION = 0.01
#: Engine limits assumed for every run: TensorRT-LLM's engine batch limit (as in
#: :data:`servingcast.validation.RUNTIME_MAX_BATCH`), its default token budget per iteration.
MAX_NUM_SEQS = 2048
MAX_NUM_BATCHED_TOKENS = 8192
GPU_MEMORY_UTILIZATION = 0.9
#: Largest share of one GPU's memory the weights may take in an assumed layout.
WEIGHTS_SHARE_OF_HBM = 0.5

#: The dataset length distribution (``configs/workloads/<name>.yaml``) of each model's benchmark.
WORKLOADS = {"llama-2-70b": "openorca-llama2", "mixtral-8x7b": "mlperf-mixtral-8x7b",
             "llama-3.1-405b": "mlperf-llama3.1-405b"}
#: CSV ``metric`` -> (class, statistic).
METRICS = {
    "completed samples per second": ("throughput", "request_rate_per_s"),
    "completed tokens per second": ("throughput", "output_tokens_per_s"),
    "mean first-token latency (TTFT)": ("ttft", "ttft_mean_ms"),
    "p99 first-token latency (TTFT)": ("ttft", "ttft_p99_ms"),
    "mean time per output token (TPOT)": ("tpot", "tpot_mean_ms"),
    "p99 time per output token (TPOT)": ("tpot", "tpot_p99_ms"),
}
CLASSES = ("throughput", "ttft", "tpot", "max_qps")


def default_serving_csv() -> Path:
    """The serving measurements: ``tests/data`` in the source tree, else ``../shared``."""
    root = Path(__file__).resolve().parents[1]
    name = "serving_measurements.csv"
    for path in (root / "tests" / "data" / name, root.parent / "shared" / "validation" / name):
        if path.is_file():
            return path
    raise ConfigError(
        "no serving measurements CSV found next to the source tree. To fix: pass its path, e.g. "
        "'servingcast validate --serving shared/validation/serving_measurements.csv'")


# -- rows -> runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingRun:
    """One MLPerf summary: the deployment and load to simulate, and what was assumed."""

    run_id: str
    label: str
    model: str
    hardware: str
    precision: str
    num_gpus: int
    tp: int
    replicas: int
    target_qps: float
    ttft_limit_ms: float
    tpot_limit_ms: float
    workload: str
    precision_note: str
    layout_note: str
    #: Layouts to try, smallest first, when the source leaves ``tp`` open (else empty).
    tp_choices: tuple[int, ...]
    rows: tuple[dict[str, str], ...] = field(repr=False)

    @property
    def assumptions(self) -> tuple[str, ...]:
        """What the source leaves open and what was assumed, one phrase each."""
        return (self.precision_note, self.layout_note, f"lengths {self.workload}")

    def with_tp(self, tp: int, note: str) -> ServingRun:
        """The same run laid out as ``num_gpus / tp`` replicas of ``tp`` GPUs."""
        return replace(self, tp=tp, replicas=self.num_gpus // tp, layout_note=note)


@dataclass(frozen=True)
class Unusable:
    """A row that was not compared, and why."""

    row_id: str
    reason: str


def _limit_ms(notes: str, metric: str) -> float | None:
    found = re.search(rf"{metric} p99 <= ([\d.]+) (ms|s)\b", notes)
    if found is None:
        return None
    return float(found.group(1)) * (1.0 if found.group(2) == "ms" else 1e3)


def _weights_fit(model: str, hardware: str, precision: str, tp: int) -> bool:
    from servingcast.costmodel.memory import weights_bytes_per_stage
    from servingcast.costmodel.parallel import Parallelism
    from servingcast.costmodel.step import CostModel
    from servingcast.specs.catalog import get_hardware, get_model
    from servingcast.specs.precision import get_precision

    hw = get_hardware(hardware)
    cm = CostModel(get_model(model), hw, get_precision(precision), Parallelism(tp=tp))
    return max(weights_bytes_per_stage(cm)) <= WEIGHTS_SHARE_OF_HBM * hw.hbm_gib * 2.0**30


def _layout(row: dict[str, str], model: str, hardware: str, precision: str,
            num_gpus: int) -> tuple[tuple[int, ...], str]:
    """``(tp choices, how they were chosen)`` (module docstring, step 1)."""
    if row["tp"].strip():
        tp = int(row["tp"])
        return (tp,), f"tp{tp} x {num_gpus // tp} stated"
    hint = re.search(r"v4\.1 used TP\s*(\d+)\s*x\s*(\d+)", row["notes"])
    if hint is not None and int(hint.group(1)) * int(hint.group(2)) == num_gpus:
        tp = int(hint.group(1))
        return (tp,), f"tp{tp} x {num_gpus // tp} assumed (the v4.1 layout, per the notes)"
    choices = tuple(tp for tp in (1, 2, 4, 8) if tp <= num_gpus and num_gpus % tp == 0)
    for index, tp in enumerate(choices):
        if _weights_fit(model, hardware, precision, tp):
            return choices[index:], (f"tp{tp} x {num_gpus // tp} assumed (smallest tp with "
                                     f"weights <= {WEIGHTS_SHARE_OF_HBM:.0%} of HBM)")
    raise ConfigError(f"{model} in {precision} does not fit {num_gpus} x {hardware} with weights "
                      f"<= {WEIGHTS_SHARE_OF_HBM:.0%} of HBM")


def _run(run_id: str, rows: list[dict[str, str]]) -> ServingRun:
    """Map one summary's rows to a run; raises ServingcastError with the reason it cannot."""
    from servingcast.specs.catalog import get_hardware, get_model
    from servingcast.specs.precision import get_precision

    first = rows[0]
    model = get_model(first["model"]).name
    hardware = get_hardware(first["gpu_type"]).name
    if model not in WORKLOADS:
        raise ConfigError(f"no dataset length distribution for {model}")
    stated_precision = first["precision"].strip()
    precision = re.split(r"[\s/]", stated_precision, maxsplit=1)[0].lower()
    get_precision(precision)
    num_gpus = int(first["num_gpus"])
    choices, how = _layout(first, model, hardware, precision, num_gpus)
    if num_gpus % choices[0]:
        raise ConfigError(f"tp{choices[0]} does not divide {num_gpus} GPUs")
    load = re.search(r"target_qps ([\d.]+)", first["concurrency_or_load"])
    if load is None or "poisson" not in first["concurrency_or_load"].lower():
        raise ConfigError(f"load {first['concurrency_or_load']!r} is not a Poisson target QPS")
    ttft, tpot = _limit_ms(first["notes"], "TTFT"), _limit_ms(first["notes"], "TPOT")
    if ttft is None or tpot is None:
        raise ConfigError("the notes state no 'TTFT p99 <= ...' and 'TPOT p99 <= ...' limits")
    scenario = "Interactive" if "interactive" in first["notes"].lower() else "Server"
    label = f"{first['model']} {num_gpus}x{first['gpu_type']} {scenario}"
    return ServingRun(run_id, label, model, hardware, precision, num_gpus, choices[0],
                      num_gpus // choices[0], float(load.group(1)), ttft, tpot, WORKLOADS[model],
                      f"{precision} (CSV: '{stated_precision}')", how,
                      choices if len(choices) > 1 else (), tuple(rows))


def plan_runs(rows: Iterable[dict[str, str]]) -> tuple[list[ServingRun], list[Unusable]]:
    """Group rows by summary (``source_url``) into runs; every other row is :class:`Unusable`."""
    groups: dict[str, list[dict[str, str]]] = {}
    unusable: list[Unusable] = []
    for row in rows:
        if row["metric"] not in METRICS:
            unusable.append(Unusable(row["id"], f"metric {row['metric']!r} is not modelled"))
        else:
            groups.setdefault(row["source_url"], []).append(row)
    runs = []
    for index, members in enumerate(groups.values(), 1):
        try:
            runs.append(_run(f"R{index}", members))
        except ServingcastError as exc:
            reason = str(exc).split(". To fix")[0]
            unusable.extend(Unusable(r["id"], reason) for r in members)
    return runs, unusable


# -- simulation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SteadyStats:
    """What one simulation gives over its steady window (module docstring, step 3)."""

    num_requests: int
    request_rate_per_s: float
    output_tokens_per_s: float
    ttft_mean_ms: float
    ttft_p99_ms: float
    tpot_mean_ms: float
    tpot_p99_ms: float
    rejected_fraction: float


def steady_stats(req: RequestArrays) -> SteadyStats:
    """Statistics of the requests arriving, and completions landing, in the steady window."""
    t0, t1 = float(np.min(req.arrival_s)), float(np.max(req.arrival_s))
    span = max(t1 - t0, 1e-9)
    lo, hi = t0 + WARMUP_FRACTION * span, t0 + (1.0 - COOLDOWN_FRACTION) * span
    arrived = (req.arrival_s >= lo) & (req.arrival_s <= hi)
    done = req.completed & (req.finish_s >= lo) & (req.finish_s <= hi)
    window = hi - lo
    ttft, tpot = req.ttft_s[arrived] * 1e3, req.tpot_s[arrived] * 1e3

    def stat(x: np.ndarray[Any, Any], q: float | None) -> float:
        x = x[~np.isnan(x)]
        if x.size == 0:
            return math.nan
        return float(x.mean() if q is None else np.percentile(x, q))

    return SteadyStats(
        num_requests=int(arrived.sum()),
        request_rate_per_s=float(done.sum()) / window,
        output_tokens_per_s=float(req.output_len[done].sum()) / window,
        ttft_mean_ms=stat(ttft, None), ttft_p99_ms=stat(ttft, 99),
        tpot_mean_ms=stat(tpot, None), tpot_p99_ms=stat(tpot, 99),
        rejected_fraction=float((~req.completed[arrived]).mean()) if arrived.any() else 0.0,
    )


def simulate_load(run: ServingRun, rate_per_s: float, replicas: int, num_requests: int,
                  seed: int = 0) -> SteadyStats:
    """Simulate ``replicas`` instances of ``run`` under Poisson arrivals at ``rate_per_s``."""
    from servingcast.sim.api import simulate
    from servingcast.sim.scenario import scenario_from_dict

    profile = load_length_profile(run.workload)
    data = {
        "model": run.model, "precision": run.precision,
        "instance_groups": [{
            "name": "replica", "count": replicas, "hardware": run.hardware, "tp": run.tp,
            "max_num_seqs": MAX_NUM_SEQS, "max_num_batched_tokens": MAX_NUM_BATCHED_TOKENS,
            "enable_chunked_prefill": True, "gpu_memory_utilization": GPU_MEMORY_UTILIZATION}],
        "workload": {"num_requests": num_requests,
                     "arrival": {"kind": "poisson", "rate": rate_per_s},
                     "input_len": profile.input_len.model_dump(),
                     "output_len": profile.output_len.model_dump()},
        "seed": seed,
    }
    scenario = scenario_from_dict(data, source=f"{run.run_id} ({run.label})")
    return steady_stats(simulate(scenario).requests)


def _requests(rate_per_s: float, duration_s: float, low: int, high: int) -> int:
    return int(min(max(math.ceil(rate_per_s * duration_s), low), high))


def meets_slo(run: ServingRun, stats: SteadyStats) -> bool:
    """MLPerf's Server check: p99 TTFT and p99 TPOT within the limits (and little rejected)."""
    return (stats.ttft_p99_ms <= run.ttft_limit_ms and stats.tpot_p99_ms <= run.tpot_limit_ms
            and stats.rejected_fraction <= MAX_REJECTED_FRACTION)


@dataclass(frozen=True)
class MaxQps:
    """The search's answer: ``qps`` (whole run), and whether it is only a bound."""

    qps: float
    bound: str | None
    probes: int


def qps_text(qps: float) -> str:
    """``1,404`` or ``0.315``: three significant figures, no exponent."""
    return f"{qps:,.0f}" if qps >= 100 else f"{qps:.3g}"


@dataclass(frozen=True)
class Settings:
    """How long and how finely to simulate (the defaults make the published figures)."""

    duration_s: float = DURATION_S
    probe_duration_s: float = PROBE_DURATION_S
    max_requests: int = MAX_REQUESTS
    probe_max_requests: int = PROBE_MAX_REQUESTS
    qps_tolerance: float = QPS_TOLERANCE
    max_qps: bool = True
    seed: int = 0
    #: Compare the latency rows at the same load relative to capacity (module docstring, step 5).
    relative_load: bool = True


def max_qps_under_slo(run: ServingRun, settings: Settings = Settings()) -> MaxQps:
    """The highest Poisson rate meeting the run's SLO (module docstring, step 4)."""
    probes = 0

    def ok(rate: float) -> bool:
        nonlocal probes
        probes += 1
        n = _requests(rate, settings.probe_duration_s, PROBE_MIN_REQUESTS,
                      settings.probe_max_requests)
        return meets_slo(run, simulate_load(run, rate, 1, n, settings.seed))

    rate = run.target_qps / run.replicas
    passing = ok(rate)
    factor = 2.0 if passing else 0.5
    for _ in range(MAX_BRACKET_STEPS):
        previous, rate = rate, rate * factor
        if ok(rate) != passing:
            break
    else:
        return MaxQps(rate * run.replicas, "at least" if passing else "below", probes)
    lo, hi = (previous, rate) if passing else (rate, previous)
    while hi / lo > 1.0 + settings.qps_tolerance:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return MaxQps(lo * run.replicas, None, probes)


def choose_layout(run: ServingRun,
                  settings: Settings = Settings()) -> tuple[ServingRun, MaxQps]:
    """The run at the layout with the highest max QPS (module docstring, step 1), and that QPS.

    A run whose layout is stated or hinted keeps it. Otherwise ``tp`` starts at the smallest
    choice and doubles while the max QPS rises.
    """
    if not run.tp_choices:
        return run, max_qps_under_slo(run, settings)
    best: tuple[ServingRun, MaxQps] | None = None
    tried = []
    for tp in run.tp_choices:
        candidate = run.with_tp(tp, run.layout_note)
        search = max_qps_under_slo(candidate, settings)
        tried.append(f"tp{tp} {qps_text(search.qps)}")
        if best is not None and search.qps <= best[1].qps:
            break
        best = (candidate, search)
    assert best is not None
    chosen = best[0]
    note = (f"tp{chosen.tp} x {chosen.replicas} assumed (highest simulated max QPS: "
            f"{', '.join(tried)})")
    return chosen.with_tp(chosen.tp, note), best[1]


# -- comparisons ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingComparison:
    """One measured number, the simulator's prediction and the run it belongs to."""

    row_id: str
    run_id: str
    metric_class: str
    metric: str
    measured: float
    predicted: float
    unit: str
    note: str = ""

    @property
    def error(self) -> float:
        """Signed relative error ``(predicted - measured) / measured``."""
        return (self.predicted - self.measured) / self.measured


@dataclass(frozen=True)
class RunResult:
    """A run's stated-load statistics, max-QPS search, and the statistics at the same relative
    load (module docstring, step 5) with its rate, when they were simulated."""

    run: ServingRun
    stated: SteadyStats
    max_qps: MaxQps | None
    relative: SteadyStats | None = None
    relative_rate_per_s: float | None = None

    @property
    def latency(self) -> SteadyStats:
        """The statistics the latency rows are compared with."""
        return self.stated if self.relative is None else self.relative


def measured_max_qps(run: ServingRun) -> tuple[float, str | None]:
    """The run's measured max QPS: its completed samples/s row, else its target QPS (with a
    note saying so)."""
    for row in run.rows:
        if METRICS[row["metric"]][1] == "request_rate_per_s":
            return float(row["value"]), None
    return run.target_qps, "measured = target QPS (no samples/s row)"


def relative_load_qps(run: ServingRun, search: MaxQps) -> float | None:
    """``target_qps * simulated max QPS / measured max QPS``, or ``None`` when the search gave
    only a bound (module docstring, step 5)."""
    if search.bound is not None:
        return None
    measured, _ = measured_max_qps(run)
    return run.target_qps * search.qps / measured


@dataclass(frozen=True)
class ServingReport:
    """Everything ``validate --serving`` prints."""

    results: list[RunResult]
    comparisons: list[ServingComparison]
    unusable: list[Unusable]


def compare_run(result: RunResult) -> list[ServingComparison]:
    """The run's rows against its simulation, plus its max-QPS comparison."""
    run, out = result.run, []
    samples_row = None
    relative_note = ("" if result.relative_rate_per_s is None else
                     f"at {qps_text(result.relative_rate_per_s)} QPS, the same relative load")
    for row in run.rows:
        cls, stat = METRICS[row["metric"]]
        value = float(row["value"])
        stats, note = ((result.stated, "") if cls == "throughput"
                       else (result.latency, relative_note))
        out.append(ServingComparison(row["id"], run.run_id, cls, row["metric"], value,
                                     float(getattr(stats, stat)), row["unit"], note))
        if stat == "request_rate_per_s":
            samples_row = row
    if result.max_qps is not None:
        measured, target_note = measured_max_qps(run)
        note = target_note or ""
        row_id = run.rows[0]["id"] if samples_row is None else samples_row["id"]
        if result.max_qps.bound is not None:
            note = f"{note}; search stopped: {result.max_qps.bound}".lstrip("; ")
        out.append(ServingComparison(row_id, run.run_id, "max_qps", "max QPS under the SLO",
                                     measured, result.max_qps.qps, "requests/s (system)", note))
    return out


def validate_serving(
    rows: Iterable[dict[str, str]],
    settings: Settings = Settings(),
    *,
    select: Callable[[ServingRun], bool] | None = None,
    progress: Callable[[ServingRun], None] | None = None,
) -> ServingReport:
    """Simulate every usable run (those ``select`` keeps) and compare it with its rows."""
    runs, unusable = plan_runs(rows)
    results, comparisons = [], []
    for run in runs:
        if select is not None and not select(run):
            continue
        if progress is not None:
            progress(run)
        n = _requests(run.target_qps, settings.duration_s, MIN_REQUESTS, settings.max_requests)
        try:
            search = None
            if settings.max_qps:
                run, search = choose_layout(run, settings)
            stated = simulate_load(run, run.target_qps, run.replicas, n, settings.seed)
            relative, rate = None, None
            if settings.relative_load and search is not None:
                rate = relative_load_qps(run, search)
                if rate is not None:
                    n_rel = _requests(rate, settings.duration_s, MIN_REQUESTS,
                                      settings.max_requests)
                    relative = simulate_load(run, rate, run.replicas, n_rel, settings.seed)
        except ServingcastError as exc:
            reason = str(exc).split(". To fix")[0]
            unusable.extend(Unusable(r["id"], reason) for r in run.rows)
            continue
        result = RunResult(run, stated, search, relative, rate)
        results.append(result)
        comparisons.extend(compare_run(result))
    return ServingReport(results, comparisons, unusable)


@dataclass(frozen=True)
class ClassSummary:
    """Accuracy over one class of rows."""

    metric_class: str
    rows: int
    median_abs_error: float
    median_bias: float


def summarize_serving(comparisons: list[ServingComparison]) -> list[ClassSummary]:
    """Median absolute error and median signed bias per class."""
    out = []
    for cls in CLASSES:
        errors = [c.error for c in comparisons if c.metric_class == cls and
                  math.isfinite(c.error)]
        if errors:
            out.append(ClassSummary(cls, len(errors), statistics.median(abs(e) for e in errors),
                                    statistics.median(errors)))
    return out


__all__ = ["ClassSummary", "LengthProfile", "MaxQps", "RunResult", "ServingComparison",
           "ServingReport", "ServingRun", "Settings", "SteadyStats", "Unusable", "choose_layout",
           "default_serving_csv", "length_mean_max", "load_length_profile", "max_qps_under_slo",
           "measured_max_qps", "plan_runs", "qps_text", "relative_load_qps", "simulate_load",
           "steady_stats", "summarize_serving", "validate_serving"]
