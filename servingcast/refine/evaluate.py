"""Scoring a deployment with the simulator: the highest arrival rate each workload sustains
within its SLOs, found by a short search over a rate grid that reuses simulations.

Notation::

    a(r)     simulated SLO attainment of one part (aggregated, or prefill+decode) at r req/s
    α        the workload's attainment target;  r is *sustained* when a(r) ≥ α
    r_k      = (1 + δ)^k, the rate grid (δ = ``rate_step``, 3% by default)
    μ̂        the part's capacity by the MILP's per-instance capacities: Σ n μ (aggregated),
             min(Σ_prefill n μ, Σ_decode n μ) (disaggregated) — only a starting point
    d        the workload's demand (a cap: no part needs to sustain more)

Search, per part (DistServe's goodput: the highest rate whose attainment meets the target)::

    1. start at k₀ = round(log μ̂ / log(1+δ)); at the cap d first when μ̂ ≥ d (a(d) ≥ α: done)
    2. bracket: step k by 8, 16, 32, ... grid points up while sustained, down while not
    3. bisect on the grid until the bracket is one grid step wide
    4. R = the highest sustained rate tested (a tested rate, never an extrapolation); 0 if none

The workload's sustained rate is Σ R over its parts (they share no instance), capped at d.
Every simulation uses the same requests at every rate and in every trial (common random
numbers: the workload seed is fixed, so the Poisson arrival times only scale with 1/r), so
comparisons between trials are not blurred by sampling noise, a deployment's value does not
depend on the trials before it, and simulations are cached by (part, rate).

Window bias: N requests at rate r arrive within W = N / r seconds. Above capacity μ the queue
grows at r − μ, so a request's TTFT passes its limit L only after t* ≈ L μ / (r − μ); the
attainment of a finite run stays ≥ α up to r ≈ μ (1 + L / (α W)). Each workload's N is
therefore sized for W ≥ ``sim_window_s`` (60 s) at its predicted rate, which keeps this
optimism at ≈ 1% for a 0.5 s TTFT limit (:class:`~servingcast.refine.options.StudySettings`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from servingcast.planner.problem import Problem
from servingcast.refine.deployment import Deployment, Part, WorkloadSetting, part_scenario
from servingcast.refine.space import SearchSpace

if TYPE_CHECKING:
    from servingcast.sim.scenario import Scenario

_FROZEN = ConfigDict(extra="forbid", frozen=True)

#: First bracketing step, in grid points (1.03^8 ≈ 1.27).
FIRST_STEP = 8
#: At most this many new simulations per part and trial.
MAX_SIMULATIONS = 16
#: Give up (sustained rate 0) below this fraction of the starting estimate.
MIN_FRACTION = 1 / 64


class Latency(BaseModel):
    """Percentiles in ms (None when no request has the metric)."""

    model_config = _FROZEN

    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None


class SimPoint(BaseModel):
    """One simulation of one part at one rate."""

    model_config = _FROZEN

    rate_per_s: float
    attainment: float
    goodput_per_s: float
    completed: int
    num_requests: int
    ttft_ms: Latency
    tpot_ms: Latency
    ttft_at_target_ms: float | None
    tpot_at_target_ms: float | None
    output_tokens_per_s: float
    share: dict[str, float]
    """Each slot's fraction of the part's requests (decode slots: of the decodes)."""
    utilization: dict[str, float]
    wall_s: float


class PartResult(BaseModel):
    """The rate search of one part."""

    model_config = _FROZEN

    part: Part
    rate_per_s: float
    estimate_per_s: float
    point: SimPoint | None
    tested: tuple[tuple[float, float], ...]
    simulations: int


class WorkloadResult(BaseModel):
    """One workload: its parts and the figures at their sustained rates."""

    model_config = _FROZEN

    name: str
    demand_per_s: float | None
    rate_per_s: float
    served_per_s: float
    parts: tuple[PartResult, ...]
    gpus: int
    attainment: float | None
    ttft_ms: Latency
    tpot_ms: Latency
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float


class Evaluation(BaseModel):
    """A deployment scored by simulation (``goodput_per_s`` is ``Σ weight × served``)."""

    model_config = _FROZEN

    workloads: tuple[WorkloadResult, ...]
    goodput_per_s: float
    served_per_s: float
    total_gpus: int
    cost_per_hour: float | None
    output_tokens_per_s: float
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    simulations: int
    wall_s: float

    def workload(self, name: str) -> WorkloadResult:
        """The result of workload ``name``."""
        return next(w for w in self.workloads if w.name == name)


def _latency(seconds: np.ndarray) -> Latency:
    values = seconds[~np.isnan(seconds)] * 1e3
    if values.size == 0:
        return Latency(mean=None, p50=None, p90=None, p99=None)
    p50, p90, p99 = (float(x) for x in np.percentile(values, (50, 90, 99)))
    return Latency(mean=float(values.mean()), p50=p50, p90=p90, p99=p99)


def _at_target(seconds: np.ndarray, fill: float, target: float) -> float | None:
    values = np.where(np.isnan(seconds), fill, seconds)
    if values.size == 0:
        return None
    q = float(np.quantile(values, target, method="inverted_cdf"))
    return q * 1e3 if math.isfinite(q) else None


def cost_per_hour(problem: Problem, deployment: Deployment) -> float | None:
    """Σ GPUs × price per GPU-hour; None when a used pool has no price."""
    total = 0.0
    for w in deployment.workloads:
        for g in w.groups:
            price = problem.pool(g.pool).price
            if price is None:
                return None
            total += price * g.gpus
    return total


class Evaluator:
    """Simulates deployments of one problem; caches simulations by (part, rate)."""

    def __init__(self, problem: Problem, space: SearchSpace, seed: int,
                 rate_step: float) -> None:
        self.problem = problem
        self.space = space
        self.seed = seed
        self.base = 1.0 + rate_step
        self._cache: dict[tuple[str, float], SimPoint] = {}
        self._scenarios: dict[str, Scenario] = {}

    # -- one simulation ------------------------------------------------------------------------

    def simulate(self, ws: WorkloadSetting, part: Part, rate: float) -> tuple[SimPoint, bool]:
        """The part simulated at ``rate`` (rounded to 1e-6 req/s, as in the scenario file);
        ``(point, fresh)`` where ``fresh`` is False for a cached result."""
        from servingcast.sim import scenario_from_dict, simulate
        from servingcast.workload import PoissonArrivals

        rate = round(rate, 6)
        space = self.space.workload(ws.name)
        groups = ws.part_groups(part)
        key = WorkloadSetting(name=ws.name, router=ws.router, groups=groups).model_dump_json()
        cached = self._cache.get((key, rate))
        if cached is not None:
            return cached, False
        scenario = self._scenarios.get(key)
        if scenario is None:
            scenario = scenario_from_dict(part_scenario(
                self.problem, ws, part, 1.0, space.num_requests, self.seed))
            self._scenarios[key] = scenario
        workload = scenario.workload.model_copy(
            update={"arrival": PoissonArrivals(kind="poisson", rate=rate)})
        t0 = time.perf_counter()
        result = simulate(scenario.model_copy(update={"workload": workload}))
        wall = time.perf_counter() - t0
        s, req = result.summary, result.requests
        target = self.problem.workload(ws.name).slo.attainment
        ttft, tpot = req.ttft_s, req.tpot_s
        ttft = np.where(req.completed, ttft, np.inf)
        tpot = np.where(req.completed, tpot, np.inf)
        slot_of = {g.name: groups[i].slot for i, g in enumerate(scenario.instance_groups)}
        group_of = [slot_of[name.rsplit("/", 1)[0]] for name in req.instance_names]
        share: dict[str, float] = {g.slot: 0.0 for g in groups}
        n = max(len(req.input_len), 1)
        for column, roles in ((req.prefill_instance, ("aggregated", "prefill")),
                              (req.decode_instance, ("decode",))):
            idx, counts = np.unique(column[column >= 0], return_counts=True)
            for i, c in zip(idx.tolist(), counts.tolist(), strict=True):
                slot = group_of[i]
                if next(g.role for g in groups if g.slot == slot) in roles:
                    share[slot] += c / n
        point = SimPoint(
            rate_per_s=rate, attainment=s.slo_attainment, goodput_per_s=s.goodput_per_s,
            completed=s.completed, num_requests=s.num_requests,
            ttft_ms=_latency(np.where(np.isinf(ttft), np.nan, ttft)),
            tpot_ms=_latency(np.where(np.isinf(tpot), np.nan, tpot)),
            ttft_at_target_ms=_at_target(ttft, np.inf, target),
            tpot_at_target_ms=_at_target(tpot, 0.0, target),
            output_tokens_per_s=s.output_tokens_per_s, share=share,
            utilization={slot_of[g.name]: g.utilization for g in s.groups}, wall_s=wall)
        self._cache[(key, rate)] = point
        return point, True

    # -- the rate search -----------------------------------------------------------------------

    def estimate(self, ws: WorkloadSetting, part: Part) -> float:
        """μ̂: the part's capacity by the MILP's per-instance capacities (module docstring)."""
        space = self.space.workload(ws.name)
        total = {"aggregated": 0.0, "prefill": 0.0, "decode": 0.0}
        for g in ws.part_groups(part):
            total[g.role] += g.count * space.slot(g.slot).capacity_per_instance_per_s
        if part == "aggregated":
            return total["aggregated"]
        return min(total["prefill"], total["decode"])

    def search(self, ws: WorkloadSetting, part: Part, cap: float | None) -> PartResult:
        """The highest sustained rate of a part (module docstring, steps 1–4)."""
        estimate = self.estimate(ws, part)
        target = self.problem.workload(ws.name).slo.attainment
        tested: list[tuple[float, float]] = []
        points: dict[float, SimPoint] = {}
        fresh_count = 0

        def sustained(rate: float) -> bool:
            nonlocal fresh_count
            point, fresh = self.simulate(ws, part, rate)
            fresh_count += fresh
            points[point.rate_per_s] = point
            tested.append((point.rate_per_s, point.attainment))
            return point.attainment >= target

        def done(rate: float) -> PartResult:
            point = points.get(round(rate, 6)) if rate > 0 else None
            return PartResult(part=part, rate_per_s=round(rate, 6) if point else 0.0,
                              estimate_per_s=estimate, point=point, tested=tuple(tested),
                              simulations=fresh_count)

        has_route = {g.role for g in ws.part_groups(part)}
        if estimate <= 0 or (part == "disaggregated" and has_route != {"prefill", "decode"}):
            return done(0.0)
        log_base = math.log(self.base)

        def grid(k: int) -> float:
            return float(self.base ** k)

        limit = math.inf if cap is None else cap
        k_cap = None if cap is None else math.ceil(math.log(cap) / log_base - 1e-9)
        lo: int | None = None
        hi: int | None = None
        k = round(math.log(estimate) / log_base)
        if k_cap is not None and k >= k_cap:
            if sustained(limit):
                return done(limit)
            hi = k_cap
        else:
            lo, hi = (k, None) if sustained(grid(k)) else (None, k)
        step = FIRST_STEP
        while (lo is None or hi is None) and len(tested) < MAX_SIMULATIONS:
            if lo is None:
                assert hi is not None
                k = hi - step
                if grid(k) < estimate * MIN_FRACTION:
                    break
                lo, hi = (k, hi) if sustained(grid(k)) else (None, k)
            else:
                k = lo + step
                if k_cap is not None and k >= k_cap:
                    if sustained(limit):
                        return done(limit)
                    hi = k_cap
                    break
                lo, hi = (k, None) if sustained(grid(k)) else (lo, k)
            step *= 2
        while lo is not None and hi is not None and hi - lo > 1 and len(tested) < (
                2 * MAX_SIMULATIONS):
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if sustained(grid(mid)) else (lo, mid)
        return done(grid(lo) if lo is not None else 0.0)

    # -- a whole deployment --------------------------------------------------------------------

    def evaluate(self, deployment: Deployment, *, check: Callable[[], None] | None = None,
                 ) -> Evaluation:
        """Every workload's sustained rate and the figures at it. ``check`` is called between
        parts (a trial may stop there)."""
        t0 = time.perf_counter()
        results = []
        sims = 0
        for w in self.problem.workloads:
            ws = deployment.workload(w.name)
            parts = []
            for part in ws.parts:
                if check is not None:
                    check()
                parts.append(self.search(ws, part, w.demand_per_s))
            sims += sum(p.simulations for p in parts)
            results.append(self._workload_result(ws, tuple(parts)))
        goodput = sum(w.weight * r.served_per_s
                      for w, r in zip(self.problem.workloads, results, strict=True))
        gpus = deployment.total_gpus
        out = sum(r.served_per_s * self.space.workload(r.name).output_len_mean for r in results)
        users = [(r.tokens_per_s_per_user, r.served_per_s) for r in results
                 if r.tokens_per_s_per_user > 0]
        weight = sum(s for _, s in users)
        return Evaluation(
            workloads=tuple(results), goodput_per_s=goodput,
            served_per_s=sum(r.served_per_s for r in results), total_gpus=gpus,
            cost_per_hour=cost_per_hour(self.problem, deployment), output_tokens_per_s=out,
            tokens_per_s_per_gpu=out / gpus if gpus else 0.0,
            tokens_per_s_per_user=sum(u * s for u, s in users) / weight if weight else 0.0,
            simulations=sims, wall_s=time.perf_counter() - t0)

    def _workload_result(self, ws: WorkloadSetting, parts: tuple[PartResult, ...],
                         ) -> WorkloadResult:
        w = self.problem.workload(ws.name)
        rate = sum(p.rate_per_s for p in parts)
        served = rate if w.demand_per_s is None else min(rate, w.demand_per_s)
        live = [(p.point, p.rate_per_s) for p in parts if p.point is not None]
        total = sum(r for _, r in live)
        gpus = sum(g.gpus for g in ws.groups)

        def worst(field: str, stat: str) -> float | None:
            values = [getattr(getattr(pt, field), stat) for pt, _ in live]
            values = [v for v in values if v is not None]
            return max(values) if values else None

        def latency(field: str) -> Latency:
            means = [(getattr(pt, field).mean, r) for pt, r in live
                     if getattr(pt, field).mean is not None]
            mean = sum(m * r for m, r in means) / sum(r for _, r in means) if means else None
            return Latency(mean=mean, p50=worst(field, "p50"), p90=worst(field, "p90"),
                           p99=worst(field, "p99"))

        tpot = latency("tpot_ms")
        return WorkloadResult(
            name=ws.name, demand_per_s=w.demand_per_s, rate_per_s=rate, served_per_s=served,
            parts=parts, gpus=gpus,
            attainment=sum(pt.attainment * r for pt, r in live) / total if total else None,
            ttft_ms=latency("ttft_ms"), tpot_ms=tpot,
            tokens_per_s_per_gpu=(served * self.space.workload(ws.name).output_len_mean / gpus
                                  if gpus else 0.0),
            tokens_per_s_per_user=1e3 / tpot.mean if tpot.mean else 0.0)

