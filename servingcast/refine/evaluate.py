"""Scoring a deployment with the simulator: the highest arrival rate each workload sustains
within its SLOs, found by a short, bounded search over a rate grid that reuses simulations.

Notation::

    a(r)     simulated SLO attainment of one part (aggregated, or prefill+decode) at r req/s,
             judged on its steady-state window (below)
    α        the workload's attainment target;  r is *sustained* when a(r) ≥ α and the run
             was long enough to judge
    r_k      = (1 + δ)^k, the rate grid (δ = ``rate_step``, 3% by default)
    μ̂        the part's capacity by the MILP's per-instance capacities: Σ n μ (aggregated),
             min(Σ_prefill n μ, Σ_decode n μ) (disaggregated) — only a starting point
    d        the workload's demand (a cap: no part needs to sustain more)
    C        the part's concurrent capacity: Σ_groups n × held, held = max_num_seqs
             (aggregated, decode) or min(max_num_seqs, ⌈max_num_batched_tokens / input⌉ + 1)
             (prefill: the prompts its token budget batches at once)
    r_max    = min(d, F μ̂), the search's hard upper bound (F = ``MAX_FACTOR`` = 8)

Search, per part (DistServe's goodput: the highest rate whose attainment meets the target)::

    1. start at k₀ = min(round(log μ̂ / log(1+δ)), k_max), k_max = ⌈log r_max / log(1+δ)⌉
       (the grid point k_max is r_max itself; a(d) ≥ α at the first test: done)
    2. bracket: step k by 8, 16, 32, ... grid points up while sustained (never past k_max),
       down while not (never below μ̂ / 64)
    3. bisect on the grid until the bracket is one grid step wide
    4. R = the highest sustained rate tested (a tested rate, never an extrapolation); 0 if none
    at most ``MAX_SIMULATIONS`` tests while bracketing and twice that in all: the search is
    bounded in rate and in steps, so it cannot overflow however large μ̂ or the cluster is.

A part reported at r_max < d is flagged ("at the search's upper bound"). A part that sustains
nothing carries the reason (:attr:`PartResult.reason`): every request rejected, and why (the
simulator's reject codes, :data:`servingcast.sim.core.REJECT_REASONS`); the attainment, TTFT and
TPOT at the target quantile at the lowest rate tried; or a run too short to judge.

Simulation size and steady state. A finite run starts with an empty cluster: while fewer
requests have arrived than it can hold at once (C), every request is admitted at once and
the attainment says nothing about the rate. Each part is therefore simulated with::

    N = min(N_cap, N₀ · 2^⌈log₂(N* / N₀)⌉),  N* = max(N₀, ⌈k C⌉, ⌈W μ̂⌉, m × instances)

(N₀ the workload's floor ``sim_requests`` / ``sim_window_s`` at the MILP's predicted rate,
k = ``capacity_multiple`` (4), W = ``sim_window_s``, m = ``requests_per_instance``,
N_cap = ``max_sim_requests``). The first min(C, N / 4) requests by arrival are the warm-up:
they are simulated but left out of a(r) and of the latency figures. A run is *too short to
judge* when the cap made N < k C, or when its measured window (the arrival span of the judged
requests) is under ``e2e_multiple`` (3) mean E2E latencies; such a run's pass does not count
(its failure does: a short run only errs towards passing), and the report says so instead of
claiming a rate.

Every simulation of one part uses the same requests at every rate (common random numbers: the
workload seed is fixed, so the Poisson arrival times only scale with 1/r), and deployments
whose N is equal see the same requests, so comparisons between trials are not blurred by
sampling noise, a deployment's value does not depend on the trials before it, and simulations
are cached by (part, rate).

Window bias: N requests at rate r arrive within W = N / r seconds. Above capacity μ the queue
grows at r − μ, so a request's TTFT passes its limit L only after t* ≈ L μ / (r − μ); the
attainment of a finite run stays ≥ α up to r ≈ μ (1 + L / (α W)). N is therefore sized for
W ≥ ``sim_window_s`` (60 s) at the estimated rate, which keeps this optimism at ≈ 1% for a
0.5 s TTFT limit (:class:`~servingcast.refine.options.StudySettings`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from servingcast.groups import group_of_instances
from servingcast.planner.problem import Problem
from servingcast.refine.deployment import Deployment, Part, WorkloadSetting, part_scenario
from servingcast.refine.options import StudySettings
from servingcast.refine.space import SearchSpace
from servingcast.sim.metrics import LatencyStats

if TYPE_CHECKING:
    from servingcast.sim.metrics import SimResult
    from servingcast.sim.scenario import Scenario

_FROZEN = ConfigDict(extra="forbid", frozen=True)

#: First bracketing step, in grid points (1.03^8 ≈ 1.27).
FIRST_STEP = 8
#: At most this many simulations per part and trial while bracketing (twice that in all).
MAX_SIMULATIONS = 16
#: Give up (sustained rate 0) below this fraction of the starting estimate.
MIN_FRACTION = 1 / 64
#: The search never tests above this multiple of the starting estimate μ̂.
MAX_FACTOR = 8.0
#: The warm-up is at most this fraction of a run's requests.
WARMUP_FRACTION = 0.25


class SimPoint(BaseModel):
    """One simulation of one part at one rate."""

    model_config = _FROZEN

    rate_per_s: float
    attainment: float
    goodput_per_s: float
    completed: int
    num_requests: int
    ttft_ms: LatencyStats
    tpot_ms: LatencyStats
    ttft_at_target_ms: float | None
    tpot_at_target_ms: float | None
    output_tokens_per_s: float
    share: dict[str, float]
    """Each slot's fraction of the part's requests (decode slots: of the decodes)."""
    utilization: dict[str, float]
    wall_s: float
    rejected: int = 0
    rejected_by_reason: dict[str, int] = {}
    """Requests the simulator rejected, by :data:`servingcast.sim.core.REJECT_REASONS` code."""
    concurrency: int = 0
    """C: the requests the part holds at once (module docstring)."""
    warmup: int = 0
    """Requests left out of the attainment and latencies as the warm-up."""
    e2e_mean_ms: float | None = None
    too_short: str | None = None
    """Why the run is too short to judge a pass (None: long enough)."""


class PartResult(BaseModel):
    """The rate search of one part."""

    model_config = _FROZEN

    part: Part
    rate_per_s: float
    estimate_per_s: float
    point: SimPoint | None
    tested: tuple[tuple[float, float], ...]
    simulations: int
    num_requests: int = 0
    """Requests per simulation of this part."""
    upper_bound_per_s: float | None = None
    """r_max, the highest rate the search may test."""
    reason: str | None = None
    """Why the part sustains nothing, or why its rate is only a bound (None: a plain result)."""


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
    ttft_ms: LatencyStats
    tpot_ms: LatencyStats
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


def concurrent_capacity(ws: WorkloadSetting, part: Part, input_len_mean: float) -> int:
    """C: the requests the part's instances hold at once (module docstring)."""
    total = 0
    for g in ws.part_groups(part):
        held = g.max_num_seqs
        if g.role == "prefill" and input_len_mean > 0:
            held = min(held, math.ceil(g.max_num_batched_tokens / input_len_mean) + 1)
        total += g.count * max(held, 1)
    return total


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


class Evaluator:
    """Simulates deployments of one problem; caches simulations by (part, rate)."""

    def __init__(self, problem: Problem, space: SearchSpace, settings: StudySettings) -> None:
        self.problem = problem
        self.space = space
        self.settings = settings
        self.seed = settings.seed
        self.base = 1.0 + settings.rate_step
        self._cache: dict[tuple[str, float], SimPoint] = {}
        self._scenarios: dict[str, Scenario] = {}

    # -- one simulation ------------------------------------------------------------------------

    def num_requests(self, ws: WorkloadSetting, part: Part) -> int:
        """N, the requests per simulation of the part (module docstring)."""
        s, space = self.settings, self.space.workload(ws.name)
        floor = max(space.num_requests, 1)
        capacity = concurrent_capacity(ws, part, space.input_len_mean)
        instances = sum(g.count for g in ws.part_groups(part))
        estimate = self.estimate(ws, part)
        window = s.sim_window_s * estimate if math.isfinite(estimate) else 0.0
        wanted = max(floor, math.ceil(s.capacity_multiple * capacity),
                     s.requests_per_instance * instances,
                     math.ceil(min(window, float(s.max_sim_requests))))
        if wanted > floor:
            wanted = floor * 2 ** math.ceil(math.log2(wanted / floor) - 1e-12)
        return int(min(s.max_sim_requests, wanted))

    def simulate(self, ws: WorkloadSetting, part: Part, rate: float) -> tuple[SimPoint, bool]:
        """The part simulated at ``rate`` (rounded to 1e-6 req/s, as in the scenario file);
        ``(point, fresh)`` where ``fresh`` is False for a cached result."""
        from servingcast.sim import scenario_from_dict, simulate
        from servingcast.workload import PoissonArrivals

        rate = round(rate, 6)
        groups = ws.part_groups(part)
        key = WorkloadSetting(name=ws.name, router=ws.router, groups=groups).model_dump_json()
        cached = self._cache.get((key, rate))
        if cached is not None:
            return cached, False
        scenario = self._scenarios.get(key)
        if scenario is None:
            scenario = scenario_from_dict(part_scenario(
                self.problem, ws, part, 1.0, self.num_requests(ws, part), self.seed))
            self._scenarios[key] = scenario
        workload = scenario.workload.model_copy(
            update={"arrival": PoissonArrivals(kind="poisson", rate=rate)})
        t0 = time.perf_counter()
        result = simulate(scenario.model_copy(update={"workload": workload}))
        wall = time.perf_counter() - t0
        point = self._point(ws, part, scenario, result, rate, wall)
        self._cache[(key, rate)] = point
        return point, True

    def _point(self, ws: WorkloadSetting, part: Part, scenario: Scenario, result: SimResult,
               rate: float, wall: float) -> SimPoint:
        """The figures of one simulation, judged on its steady-state window."""
        s, req = result.summary, result.requests
        groups = ws.part_groups(part)
        slo = self.problem.workload(ws.name).slo
        target = slo.attainment
        n = len(req.input_len)
        capacity = concurrent_capacity(ws, part, self.space.workload(ws.name).input_len_mean)
        warm = min(capacity, int(n * WARMUP_FRACTION))
        keep = np.argsort(req.arrival_s, kind="stable")[warm:]
        done = req.completed
        ttft = np.where(done, req.ttft_s, np.inf)
        tpot = np.where(done, req.tpot_s, np.inf)
        with np.errstate(invalid="ignore"):
            met = done & (ttft <= slo.ttft_s) & ((tpot <= slo.tpot_s) | np.isnan(tpot))
        attainment = float(met[keep].mean()) if keep.size else 0.0
        ttft_k, tpot_k = ttft[keep], tpot[keep]
        e2e = req.e2e_s[keep]
        e2e = e2e[~np.isnan(e2e)]
        e2e_mean = float(e2e.mean()) if e2e.size else None
        arrivals = req.arrival_s[keep]
        span = float(arrivals.max() - arrivals.min()) if arrivals.size > 1 else 0.0
        st = self.settings
        too_short = None
        if n < st.capacity_multiple * capacity:
            too_short = (f"{n:,} requests per simulation, under {st.capacity_multiple:g} x the "
                         f"{capacity:,} requests the cluster holds at once (max_sim_requests "
                         f"{st.max_sim_requests:,})")
        elif e2e_mean is not None and span < st.e2e_multiple * e2e_mean:
            too_short = (f"the measured window ({span:.1f} s) is under {st.e2e_multiple:g} mean "
                         f"E2E latencies ({e2e_mean:.1f} s)")
        # The scenario keeps the order of ``groups`` (groups_scenario), and the simulator
        # numbers instances group after group: an index lookup, no name is parsed.
        slot_of = {sg.name: g.slot for sg, g in zip(scenario.instance_groups, groups,
                                                     strict=True)}
        group_of = group_of_instances([g.count for g in scenario.instance_groups])
        share: dict[str, float] = {g.slot: 0.0 for g in groups}
        total = max(n, 1)
        for column, roles in ((req.prefill_instance, ("aggregated", "prefill")),
                              (req.decode_instance, ("decode",))):
            idx, counts = np.unique(column[column >= 0], return_counts=True)
            for i, c in zip(idx.tolist(), counts.tolist(), strict=True):
                group = groups[group_of[i]]
                if group.role in roles:
                    share[group.slot] += c / total
        return SimPoint(
            rate_per_s=rate, attainment=attainment, goodput_per_s=s.goodput_per_s,
            completed=s.completed, num_requests=s.num_requests,
            ttft_ms=LatencyStats.of(np.where(np.isinf(ttft_k), np.nan, ttft_k)),
            tpot_ms=LatencyStats.of(np.where(np.isinf(tpot_k), np.nan, tpot_k)),
            ttft_at_target_ms=_at_target(ttft_k, np.inf, target),
            tpot_at_target_ms=_at_target(tpot_k, 0.0, target),
            output_tokens_per_s=s.output_tokens_per_s, share=share,
            utilization={slot_of[g.name]: g.utilization for g in s.groups}, wall_s=wall,
            rejected=int(s.rejected), rejected_by_reason=dict(s.rejected_by_reason),
            concurrency=capacity, warmup=warm,
            e2e_mean_ms=None if e2e_mean is None else e2e_mean * 1e3, too_short=too_short)

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

    def _nothing(self, ws: WorkloadSetting, points: dict[float, SimPoint]) -> str:
        """Why a part sustains nothing, from its lowest tested rate."""
        if not points:
            return "no simulation was run"
        low = points[min(points)]
        slo = self.problem.workload(ws.name).slo
        q = f"p{slo.attainment * 100:g}"
        rejected = ""
        if low.rejected:
            reasons = ", ".join(f"{c:,} {r.replace('_', ' ')}"
                                for r, c in sorted(low.rejected_by_reason.items()))
            if low.rejected >= low.num_requests:
                return (f"every request is rejected at {low.rate_per_s:,.4g} req/s ({reasons}): "
                        "no instance can hold a request. To fix: allow a larger tp/pp or a "
                        "larger max_num_batched_tokens, or shorten the requests")
            rejected = f"; {low.rejected:,} of {low.num_requests:,} requests rejected ({reasons})"
        if low.attainment >= slo.attainment and low.too_short:
            return (f"too short to judge: {low.too_short}. To fix: raise --max-sim-requests")
        return (f"SLO attainment {low.attainment:.3f} < {slo.attainment:g} even at "
                f"{low.rate_per_s:,.4g} req/s, the lowest rate tried: TTFT {q} "
                f"{_fmt_ms(low.ttft_at_target_ms)} (limit {slo.ttft_s * 1e3:,.0f} ms), TPOT {q} "
                f"{_fmt_ms(low.tpot_at_target_ms)} (limit {slo.tpot_s * 1e3:,.0f} ms)"
                + rejected)

    def search(self, ws: WorkloadSetting, part: Part, cap: float | None) -> PartResult:
        """The highest sustained rate of a part (module docstring, steps 1–4)."""
        estimate = self.estimate(ws, part)
        target = self.problem.workload(ws.name).slo.attainment
        tested: list[tuple[float, float]] = []
        points: dict[float, SimPoint] = {}
        fresh_count = 0
        n_requests = 0
        unjudged: list[SimPoint] = []

        def sustained(rate: float) -> bool:
            nonlocal fresh_count, n_requests
            point, fresh = self.simulate(ws, part, rate)
            fresh_count += fresh
            n_requests = point.num_requests
            points[point.rate_per_s] = point
            tested.append((point.rate_per_s, point.attainment))
            if point.attainment >= target and point.too_short is not None:
                unjudged.append(point)
                return False
            return point.attainment >= target

        def done(rate: float, bound: float | None, reason: str | None = None) -> PartResult:
            point = points.get(round(rate, 6)) if rate > 0 else None
            if point is None and reason is None:
                reason = self._nothing(ws, points)
            elif point is not None and unjudged and reason is None:
                top = max(unjudged, key=lambda p: p.rate_per_s)
                reason = (f"passes at {top.rate_per_s:,.4g} req/s were too short to judge "
                          f"({top.too_short}); the rate is a lower bound")
            return PartResult(part=part, rate_per_s=round(rate, 6) if point else 0.0,
                              estimate_per_s=estimate, point=point, tested=tuple(tested),
                              simulations=fresh_count, num_requests=n_requests,
                              upper_bound_per_s=bound, reason=reason)

        has_route = {g.role for g in ws.part_groups(part)}
        if part == "disaggregated" and has_route != {"prefill", "decode"}:
            return done(0.0, None, "a disaggregated part needs prefill and decode instances")
        if not (estimate > 0 and math.isfinite(estimate)):
            return done(0.0, None, f"its capacity estimate is {estimate:g} req/s")
        log_base = math.log(self.base)
        limit = MAX_FACTOR * estimate
        if cap is not None:
            limit = min(limit, cap)
        k_top = math.ceil(math.log(limit) / log_base - 1e-9)
        k_bottom = math.floor(math.log(estimate * MIN_FRACTION) / log_base)

        def grid(k: int) -> float:
            return limit if k >= k_top else math.exp(k * log_base)

        def at_top(k: int) -> PartResult:
            note = None
            if cap is None or limit < cap:
                note = (f"sustained at the search's upper bound ({MAX_FACTOR:g} x the capacity "
                        f"estimate {estimate:,.4g} req/s); it may sustain more")
            return done(limit, limit, note)

        lo: int | None = None
        hi: int | None = None
        k = min(round(math.log(estimate) / log_base), k_top)
        if sustained(grid(k)):
            if k >= k_top:
                return at_top(k)
            lo = k
        else:
            hi = k
        step = FIRST_STEP
        while (lo is None or hi is None) and len(tested) < MAX_SIMULATIONS:
            if lo is None:
                assert hi is not None
                k = max(hi - step, k_bottom)
                if k >= hi:
                    break
                if sustained(grid(k)):
                    lo = k
                else:
                    hi = k
                    if k <= k_bottom:
                        break
            else:
                k = min(lo + step, k_top)
                if sustained(grid(k)):
                    if k >= k_top:
                        return at_top(k)
                    lo = k
                else:
                    hi = k
            step *= 2
        while lo is not None and hi is not None and hi - lo > 1 and len(tested) < (
                2 * MAX_SIMULATIONS):
            mid = (lo + hi) // 2
            if sustained(grid(mid)):
                lo = mid
            else:
                hi = mid
        return done(grid(lo) if lo is not None else 0.0, limit)

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

        def latency(field: str) -> LatencyStats:
            means = [(getattr(pt, field).mean, r) for pt, r in live
                     if getattr(pt, field).mean is not None]
            mean = sum(m * r for m, r in means) / sum(r for _, r in means) if means else None
            return LatencyStats(mean=mean, p50=worst(field, "p50"), p90=worst(field, "p90"),
                                p95=worst(field, "p95"), p99=worst(field, "p99"))

        tpot = latency("tpot_ms")
        return WorkloadResult(
            name=ws.name, demand_per_s=w.demand_per_s, rate_per_s=rate, served_per_s=served,
            parts=parts, gpus=gpus,
            attainment=sum(pt.attainment * r for pt, r in live) / total if total else None,
            ttft_ms=latency("ttft_ms"), tpot_ms=tpot,
            tokens_per_s_per_gpu=(served * self.space.workload(ws.name).output_len_mean / gpus
                                  if gpus else 0.0),
            tokens_per_s_per_user=1e3 / tpot.mean if tpot.mean else 0.0)

