"""The measured runs as simulations: resolving each run, simulating it on a candidate device.

A :class:`Run` is one :class:`~servingcast.calibrate.readers.Measurement` made simulable: its
model and tp resolved (:class:`Defaults` fill in what the file leaves out), a scenario of one
engine on the base device with the run's load and lengths, the instance group resolved once
(memory, KV capacity: they do not depend on the factors fitted) and the requests drawn once.
:class:`Evaluator` then simulates every run on a candidate device by swapping in a cost model
built for it, and :func:`simulation_noise` measures how much each prediction depends on the
random draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from servingcast.calibrate.readers import FORMAT_NAMES, Measurement
from servingcast.costmodel.step import CostModel
from servingcast.errors import ConfigError, InfeasibleError
from servingcast.sim.cluster import GroupPlan, build_groups
from servingcast.sim.core import Options, Simulation
from servingcast.sim.metrics import LatencyStats, Summary, collect
from servingcast.sim.scenario import Scenario, scenario_from_dict
from servingcast.specs.catalog import get_hardware, get_model
from servingcast.specs.hardware import Efficiency, HardwareSpec, Overheads
from servingcast.workload import Requests, generate_requests

FloatArray = npt.NDArray[np.float64]

#: The device parameters a calibration varies, in the order they are considered.
PARAMETERS = ("compute", "memory", "network", "iteration_ms", "layer_us")
#: Requests simulated per run at most (a run of more is simulated with this many).
DEFAULT_MAX_REQUESTS = 200
#: Other seeds each run is simulated with to measure its noise (:func:`simulation_noise`).
NOISE_SEEDS = 6
#: Residual given to a prediction the simulator cannot make (every request rejected).
MISSING_RESIDUAL = 10.0

Metric = Literal["ttft", "tpot", "throughput"]


@dataclass(frozen=True)
class Observation:
    """One measured figure of a run: ``metric`` ``statistic`` = ``measured`` ``unit``."""

    metric: Metric
    statistic: str
    unit: str
    measured: float

    @property
    def label(self) -> str:
        """E.g. ``TTFT mean (ms)``."""
        name = {"ttft": "TTFT", "tpot": "TPOT", "throughput": "throughput"}[self.metric]
        return f"{name} {self.statistic} ({self.unit})"


# -- runs ---------------------------------------------------------------------------------------


def resolve_model(name: str, where: str) -> str:
    """A model reference the simulator accepts for ``name`` (a catalog name or alias, a
    Hugging Face id such as ``meta-llama/Llama-3.1-8B-Instruct``, a config.json or its folder)."""
    tail = name.rstrip("/").rsplit("/", 1)[-1]
    for candidate in dict.fromkeys((name, name.replace("/", "-"), tail)):
        try:
            spec = get_model(candidate)
        except ConfigError:
            continue
        return candidate if Path(candidate).exists() else spec.name
    raise ConfigError(f"{where}: model {name!r} is not in the catalog (nor is {tail!r}). To "
                      "fix: pass --model with its catalog name (see 'servingcast catalog "
                      "models'), or a Hugging Face config.json or its folder")


def _observations(m: Measurement, output_len: int) -> list[Observation]:
    out = []
    for metric, stat in (("ttft", m.ttft_ms), ("tpot", m.tpot_ms)):
        if metric == "tpot" and output_len < 2:
            continue
        for name in ("mean", "median", "p99"):
            value = getattr(stat, name)
            if value is not None and value > 0:
                out.append(Observation(metric, name, "ms", value))  # type: ignore[arg-type]
                break
    if m.output_throughput_tok_s:
        out.append(Observation("throughput", "output", "tok/s", m.output_throughput_tok_s))
    elif m.request_throughput_per_s:
        out.append(Observation("throughput", "requests", "req/s", m.request_throughput_per_s))
    return out


def _num_requests(m: Measurement, max_requests: int) -> tuple[int, int | None]:
    """Requests to simulate and, for a closed loop, its users."""
    if m.request_rate_per_s is not None:
        return min(m.num_prompts or max_requests, max_requests), None
    users = m.concurrency or m.num_prompts or 1
    n = m.num_prompts or max(4 * users, 64)
    n = min(n, max(max_requests, 2 * users))
    return n, min(users, n)


@dataclass(frozen=True)
class Run:
    """A measurement ready to simulate: its scenario, resolved group, requests and figures."""

    measurement: Measurement
    label: str
    scenario: Scenario
    plans: list[GroupPlan]
    requests: Requests
    observations: tuple[Observation, ...]


@dataclass(frozen=True)
class Defaults:
    """What to assume for runs whose files do not record it (the command line's options).

    ``model`` also stands in for a recorded model the catalog does not know (a fine-tune's
    local path, say); ``precision`` defaults to bf16.
    """

    model: str | None = None
    tp: int | None = None
    precision: str | None = None


def resolve(m: Measurement, defaults: Defaults) -> Measurement:
    """``m`` with its model resolved and the defaults filled in; errors name the run."""
    fmt = FORMAT_NAMES[m.format]
    model = None
    if m.model is not None:
        try:
            model = resolve_model(m.model, m.source)
        except ConfigError:
            if defaults.model is None:
                raise
    if model is None:
        if defaults.model is None:
            raise ConfigError(f"{m.source} ({fmt}): the model is not recorded in the file. To "
                              "fix: pass --model, e.g. --model llama-3.1-8b")
        model = resolve_model(defaults.model, "--model")
    tp = m.tp if m.tp is not None else defaults.tp
    if tp is None:
        extra = (", or record it with vllm bench serve --metadata tp=N"
                 if m.format == "vllm" else "")
        column = " or add a tp column" if m.format == "csv" else ""
        raise ConfigError(f"{m.source} ({fmt}): the tensor-parallel size is not recorded. "
                          f"To fix: pass --tp N (e.g. --tp 1){column}{extra}")
    return replace(m, model=model, tp=tp, precision=m.precision or defaults.precision or "bf16")


def build_run(m: Measurement, hardware: str, base: HardwareSpec, seed: int,
              max_requests: int) -> Run:
    """``m`` (resolved) as one engine on ``hardware``: its mean lengths, fixed; a closed loop
    of its concurrency, else Poisson arrivals at its rate (gamma with ``cv = 1/√burstiness``,
    vLLM's draw; a concurrency limit next to a rate is not modelled); vLLM's batch limits,
    ``max_num_seqs`` raised to the concurrency when that is higher."""
    fmt = FORMAT_NAMES[m.format]
    assert m.model is not None and m.tp is not None
    if m.hardware is not None:
        try:
            recorded = get_hardware(m.hardware).name
        except ConfigError:
            recorded = None
        if recorded is not None and recorded != base.name:
            raise ConfigError(
                f"{m.source}: the run is of {recorded}, but --hardware is {base.name}. To fix: "
                "calibrate one device at a time (leave its runs out, or pass --hardware "
                f"{recorded})")
    input_len, output_len = max(1, round(m.input_len)), max(1, round(m.output_len))
    observations = _observations(m, output_len)
    if not observations:
        raise ConfigError(f"{m.source} ({fmt}): no TTFT, TPOT or throughput figure > 0. To "
                          "fix: keep the metrics in the file")
    n, users = _num_requests(m, max_requests)
    if users is not None:
        arrival: dict[str, object] = {"kind": "concurrency", "concurrency": users}
    elif m.burstiness != 1.0:
        arrival = {"kind": "gamma", "rate": m.request_rate_per_s,
                   "cv": 1.0 / math.sqrt(m.burstiness)}
    else:
        arrival = {"kind": "poisson", "rate": m.request_rate_per_s}
    max_num_seqs = max(256, users or 0)
    data = {
        "model": m.model, "precision": m.precision,
        "instance_groups": [{"name": "engine", "hardware": hardware, "tp": m.tp, "pp": m.pp,
                             "max_num_seqs": max_num_seqs,
                             "max_num_batched_tokens": max(8192, max_num_seqs)}],
        "workload": {"num_requests": n, "arrival": arrival, "input_len": input_len,
                     "output_len": output_len},
        "seed": seed,
    }
    try:
        scenario = scenario_from_dict(data, source=m.source)
        plans = build_groups(scenario)
    except (ConfigError, InfeasibleError) as exc:
        raise ConfigError(f"{m.source}: cannot simulate this run: {exc}") from None
    requests = generate_requests(scenario.workload, np.random.default_rng(seed))
    return Run(m, m.describe, scenario, plans, requests, tuple(observations))


# -- evaluation ---------------------------------------------------------------------------------


def _value(summary: Summary, obs: Observation) -> float | None:
    if obs.metric == "throughput":
        value = (summary.output_tokens_per_s if obs.unit == "tok/s"
                 else summary.request_throughput_per_s)
        return value if summary.completed else None
    stats: LatencyStats = summary.ttft_ms if obs.metric == "ttft" else summary.tpot_ms
    return {"mean": stats.mean, "median": stats.p50, "p99": stats.p99}[obs.statistic]


def device(base: HardwareSpec, theta: dict[str, float]) -> HardwareSpec:
    """``base`` with the efficiencies and overheads of ``theta``."""
    return base.model_copy(update={
        "efficiency": Efficiency(compute=theta["compute"], memory=theta["memory"],
                                 network=theta["network"]),
        "overheads": Overheads(iteration_ms=theta["iteration_ms"], layer_us=theta["layer_us"]),
    })


def base_parameters(base: HardwareSpec) -> dict[str, float]:
    """The base device's values of :data:`PARAMETERS`."""
    return {**base.efficiency.model_dump(exclude={"compute_fp4"}), **base.overheads.model_dump()}


class Evaluator:
    """Simulates every run on a candidate device; memoised, counts simulations."""

    def __init__(self, runs: list[Run], base: HardwareSpec) -> None:
        self.runs = runs
        self.base = base
        self.simulations = 0
        self._memo: dict[tuple[float, ...], list[list[float | None]]] = {}
        self.sqrt_weights: FloatArray | None = None

    def predictions(self, theta: dict[str, float]) -> list[list[float | None]]:
        key = tuple(round(theta[p], 12) for p in PARAMETERS)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        hw = device(self.base, theta)
        out = [self.simulate(run, hw, run.requests) for run in self.runs]
        self._memo[key] = out
        return out

    def simulate(self, run: Run, hw: HardwareSpec, requests: Requests) -> list[float | None]:
        """The predictions of ``run``'s figures on ``hw`` for ``requests``."""
        plans = [replace(p, cost_model=CostModel(p.cost_model.model, hw, p.cost_model.precision,
                                                 p.cost_model.parallel))
                 for p in run.plans]
        sim = Simulation(run.scenario, plans, requests, Options())
        sim.run()
        self.simulations += 1
        summary = collect(sim).summary
        return [_value(summary, obs) for obs in run.observations]

    def residuals(self, theta: dict[str, float]) -> FloatArray:
        """``ln ŷ − ln y`` of every observation, run by run."""
        r = []
        for run, preds in zip(self.runs, self.predictions(theta), strict=True):
            for obs, pred in zip(run.observations, preds, strict=True):
                r.append(math.log(pred / obs.measured) if pred and pred > 0
                         else MISSING_RESIDUAL)
        return np.asarray(r, dtype=np.float64)

    def weighted(self, theta: dict[str, float]) -> FloatArray:
        """Residuals times the square roots of their weights (see :func:`simulation_noise`)."""
        r = self.residuals(theta)
        return r if self.sqrt_weights is None else r * self.sqrt_weights


# -- simulation noise ---------------------------------------------------------------------------


def simulation_noise(ev: Evaluator, theta: dict[str, float], seed: int) -> FloatArray:
    """How far each prediction moves with the luck of the draw (relative, 1 σ).

    The measured client's random arrival times are not known, only their rate: an open-loop run
    is simulated with one draw, and its TTFT depends on where the arrivals fall between the
    iteration boundaries (and moves by jumps, not smoothly, as the step times change). Each run
    is simulated with :data:`NOISE_SEEDS` other seeds on the device ``theta``; the standard
    deviation of the log predictions is the noise (0 for closed loops of fixed lengths, which
    draw nothing). The fit weighs figure ``i`` by ``1 / (σ_i² + MEASUREMENT_ERROR²)`` (weighted
    least squares), so a figure the simulator can only match by luck pulls less.
    """
    hw = device(ev.base, theta)
    sigma: list[float] = []
    for run, base in zip(ev.runs, ev.predictions(theta), strict=True):
        draws = [base]
        for k in range(1, NOISE_SEEDS + 1):
            requests = generate_requests(run.scenario.workload,
                                         np.random.default_rng(seed + 7919 * k))
            if (np.array_equal(requests.input_len, run.requests.input_len)
                    and np.array_equal(requests.output_len, run.requests.output_len)
                    and np.array_equal(requests.arrival_s, run.requests.arrival_s,
                                       equal_nan=True)):
                break  # nothing drawn: every seed gives the same run
            draws.append(ev.simulate(run, hw, requests))
        for j in range(len(run.observations)):
            values = [d[j] for d in draws]
            logs = [math.log(v) for v in values if v is not None and v > 0]
            sigma.append(float(np.std(logs, ddof=1)) if len(logs) > 2 else 0.0)
    return np.asarray(sigma, dtype=np.float64)
