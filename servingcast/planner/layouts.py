"""The best layout of each mode for one workload, from its candidates at some SLO limits.

The Pareto sweep (:mod:`servingcast.planner.pareto`) needs, at tens of SLO limits, the plan of
each mode with the most output tokens/s per GPU. A MILP per point would be exact but slow; for
one workload the answer follows from the candidates by enumeration, exactly:

A *layout* serves one workload ``w`` with one configuration per role: ``n_a`` aggregated
instances of candidate ``a``; or ``n_p`` prefill instances of ``p`` and ``n_d`` decode instances
of ``d``; or all three (mixed). Notation of :mod:`servingcast.planner.milp`: ``μ_c`` capacity
(req/s), ``g_c`` GPUs per instance, ``f_p(n)`` the pooled capacity of ``n`` prefill instances
(:meth:`Candidate.group_rate`, exact at every ``n``), ``G_q`` the GPUs of pool ``q``, ``d`` the
demand (none when maximized), ``Z = F / B`` the fabric's limit on the disaggregated rate.
Aggregated and decode groups are counted at ``n μ_c``, a lower bound of their group capacity
(their batches swing less in a group, queueing item 10, which the MILP counts)::

    aggregated      x = min(d, n_a μ_a)
    disaggregated   z = min(d, f_p(n_p), n_d μ_d, Z),   x = z
    mixed           z = min(f_p(n_p), n_d μ_d, Z),      x = min(d, z + n_a μ_a)
    budget          Σ_{c in q} g_c n_c ≤ G_q  for every pool q
    tokens/s per GPU = x E[O] / Σ_c g_c n_c

Which layout is best:

1. a workload with a demand: the one serving it with the fewest GPUs — so the most tokens/s
   per GPU at that rate (a mode whose layouts cannot serve the whole demand within the pools
   has none);
2. a workload to maximize: the most tokens/s per GPU, then the most req/s. Aggregated: the
   candidate with the most req/s per GPU, as many instances as its pool holds.

Search: aggregated, every candidate; disaggregated, every (prefill, decode) pair and every
``n_p`` (vectorised), with ``n_d`` the floor or ceiling of ``f_p(n_p) / μ_d`` (with a demand:
the ceiling of ``min(d, f_p(n_p)) / μ_d``) within the budget — for a fixed ``n_p`` the best
``n_d`` is one of these, so the search is exact. Mixed combines the configurations the two
pure modes chose (``a``, ``p``, ``d``) and searches their counts: with a demand, every
``(n_p, n_d)`` and the ``n_a ≥ 1`` the rest of the demand needs (the parts share the demand in
proportion to their capacities) — exact; to maximize, ``n_d`` balanced as above and the
aggregated configuration filling what its pool has left after the disaggregated part (a
mixed layout is never more efficient than the better pure one; this is the layout the MILP
builds when a pure one leaves GPUs idle). Ties within 1e-9 relative go to the earlier
candidate key, so the result is reproducible.

:func:`layout_plan` turns a layout into a :class:`Plan` with the planner's own assembly
(:func:`~servingcast.planner.assemble.plan_from_allocation`), and
:func:`~servingcast.planner.verify.verify_plan` re-checks it like any MILP plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from servingcast.planner.candidates import Candidate
from servingcast.planner.plan import Plan, SolverReport, SolveStatus
from servingcast.planner.problem import Problem, Workload

LayoutMode = Literal["aggregated", "disaggregated", "mixed"]
MODES: tuple[LayoutMode, ...] = ("aggregated", "disaggregated", "mixed")

_TIE = 1e-9
_REPORT = SolverReport(status=SolveStatus.OPTIMAL, termination="enumeration", time_s=0.0,
                       gap=None, objective=None, objective_bound=None, solves=0)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Layout:
    """Instances per candidate and the req/s each mode carries (``mode`` as in ``Plan``)."""

    mode: LayoutMode
    counts: tuple[tuple[Candidate, int], ...]
    aggregated_per_s: float
    disaggregated_per_s: float

    @property
    def served_per_s(self) -> float:
        """Req/s the layout serves."""
        return self.aggregated_per_s + self.disaggregated_per_s

    @property
    def gpus(self) -> int:
        """GPUs the layout uses."""
        return sum(c.gpus * n for c, n in self.counts)


def _best(served: FloatArray, gpus: FloatArray, demand: float | None) -> int | None:
    """The index of the best option (module docstring, rules 1 and 2); None if none serves."""
    ok = (served > 0) & (gpus > 0)
    if not ok.any():
        return None
    if demand is None:
        score = np.where(ok, served / np.where(ok, gpus, 1.0), -np.inf)
        tie = ok & (score >= score.max() * (1.0 - _TIE))
        top = served[tie].max()
        return int(np.flatnonzero(tie & (served >= top * (1.0 - _TIE)))[0])
    tie = ok & (served >= served[ok].max() * (1.0 - _TIE))
    fewest = gpus[tie].min()
    return int(np.flatnonzero(tie & (gpus == fewest))[0])


def _ceil(values: FloatArray) -> FloatArray:
    """``ceil`` that ignores rounding noise (``3.0000000001 → 3``)."""
    return np.ceil(values * (1.0 - 1e-12) - 1e-12)


def _prefill_rates(p: Candidate, top: int) -> FloatArray:
    """``f_p(n)`` for ``n = 1 … top`` (:meth:`Candidate.group_rate`, vectorised)."""
    n = np.arange(1, top + 1, dtype=np.float64)
    if not p.pooled:
        return n * p.rate
    pooled = np.asarray(p.pooled, dtype=np.float64)
    exact = pooled.size
    inside = pooled[np.minimum(n, exact).astype(np.int64) - 1]
    return np.where(n <= exact, inside, n * pooled[-1] / exact)


def aggregated_layout(cands: Sequence[Candidate], pools: dict[str, int],
                      demand: float | None) -> Layout | None:
    """The best aggregated layout (module docstring)."""
    agg = [c for c in cands if c.config.role == "aggregated" and pools[c.config.pool] >= c.gpus]
    if not agg:
        return None
    rate = np.array([c.rate for c in agg])
    gpi = np.array([float(c.gpus) for c in agg])
    most = np.array([float(pools[c.config.pool] // c.gpus) for c in agg])
    count = most if demand is None else np.minimum(most, np.maximum(_ceil(demand / rate), 1.0))
    served = count * rate if demand is None else np.minimum(demand, count * rate)
    i = _best(served, count * gpi, demand)
    if i is None:
        return None
    return Layout("aggregated", ((agg[i], int(count[i])),), float(served[i]), 0.0)


@dataclass(frozen=True)
class _Pairs:
    """Every (prefill, decode) pair and prefill count, with the decode count options."""

    prefill: list[Candidate]
    decode: list[Candidate]
    n_p: FloatArray     # (P, 1, N, 1)
    n_d: FloatArray     # (P, D, N, K)
    z: FloatArray       # (P, D, N, K): disaggregated req/s
    valid: npt.NDArray[np.bool_]


def _pairs(cands: Sequence[Candidate], pools: dict[str, int], demand: float | None,
           fabric_bytes_s: float | None, reserve: dict[str, int] | None = None,
           only: tuple[Candidate, Candidate] | None = None) -> _Pairs | None:
    """The disaggregated options (module docstring). ``reserve``: GPUs per pool kept free (at
    least that many must remain); ``only``: one (prefill, decode) pair."""
    if only is not None:
        pre, dec = [only[0]], [only[1]]
    else:
        pre = [c for c in cands if c.config.role == "prefill"]
        dec = [c for c in cands if c.config.role == "decode"]
    keep = reserve or {}
    room = {q: g - keep.get(q, 0) for q, g in pools.items()}
    pre = [c for c in pre if room[c.config.pool] >= c.gpus]
    dec = [c for c in dec if room[c.config.pool] >= c.gpus]
    if not pre or not dec:
        return None
    top = max(room[c.config.pool] // c.gpus for c in pre)
    f = np.full((len(pre), top), np.nan)
    for i, c in enumerate(pre):
        m = room[c.config.pool] // c.gpus
        f[i, :m] = _prefill_rates(c, m)
        if fabric_bytes_s is not None and c.kv_bytes_per_request > 0:
            f[i, :m] = np.minimum(f[i, :m], fabric_bytes_s / c.kv_bytes_per_request)
    n = np.arange(1, top + 1, dtype=np.float64)[None, None, :, None]
    g_p = np.array([float(c.gpus) for c in pre])[:, None, None, None]
    g_d = np.array([float(c.gpus) for c in dec])[None, :, None, None]
    mu_d = np.array([c.rate for c in dec])[None, :, None, None]
    room_p = np.array([float(room[c.config.pool]) for c in pre])[:, None, None, None]
    room_d = np.array([float(room[c.config.pool]) for c in dec])[None, :, None, None]
    same = (np.array([c.config.pool for c in pre])[:, None]
            == np.array([c.config.pool for c in dec])[None, :])[:, :, None, None]
    most_d = np.floor(np.where(same, room_p - n * g_p, room_d) / g_d)
    target = f[:, None, :, None]
    if demand is not None:
        target = np.minimum(target, demand)
    options = _ceil(target / mu_d)
    if demand is None:
        options = np.concatenate([options, np.floor(target / mu_d * (1 + 1e-12))], axis=-1)
    n_d = np.clip(options, 1.0, np.maximum(most_d, 1.0))
    valid = np.isfinite(target) & (most_d >= 1.0) & (n * g_p <= room_p)
    z = np.where(valid, np.minimum(target, n_d * mu_d), 0.0)
    return _Pairs(pre, dec, np.broadcast_to(n, (len(pre), 1, top, 1)), n_d, z, valid)


def disaggregated_layout(cands: Sequence[Candidate], pools: dict[str, int],
                         demand: float | None, fabric_bytes_s: float | None) -> Layout | None:
    """The best disaggregated layout (module docstring)."""
    pairs = _pairs(cands, pools, demand, fabric_bytes_s)
    if pairs is None:
        return None
    g_p = np.array([float(c.gpus) for c in pairs.prefill])[:, None, None, None]
    g_d = np.array([float(c.gpus) for c in pairs.decode])[None, :, None, None]
    gpus = pairs.n_p * g_p + pairs.n_d * g_d
    served = np.where(pairs.valid, pairs.z, 0.0)
    i = _best(served.ravel(), np.broadcast_to(gpus, served.shape).ravel(), demand)
    if i is None:
        return None
    ip, idd, jn, k = np.unravel_index(i, served.shape)
    n_d = int(pairs.n_d[ip, idd, jn, k])
    return Layout("disaggregated", ((pairs.prefill[ip], int(jn) + 1), (pairs.decode[idd], n_d)),
                  0.0, float(served[ip, idd, jn, k]))


def mixed_layout(agg: Layout, dis: Layout, pools: dict[str, int], demand: float | None,
                 fabric_bytes_s: float | None) -> Layout | None:
    """Both modes with the configurations ``agg`` and ``dis`` chose (module docstring)."""
    (a, _), = agg.counts
    (p, _), (d, _) = dis.counts
    if demand is not None:
        tried, split = _mixed_split(a, p, d, pools, demand, fabric_bytes_s)
        if tried:
            return split
    pairs = _pairs((), pools, demand, fabric_bytes_s, reserve={a.config.pool: a.gpus},
                   only=(p, d))
    if pairs is None:
        return None
    n_p = np.broadcast_to(pairs.n_p, pairs.z.shape)
    used_a = (np.where(p.config.pool == a.config.pool, n_p * p.gpus, 0.0)
              + np.where(d.config.pool == a.config.pool, pairs.n_d * d.gpus, 0.0))
    most_a = np.floor((pools[a.config.pool] - used_a) / a.gpus)
    z = pairs.z
    if demand is None:
        n_a = most_a
        served = z + n_a * a.rate
    else:
        rest = demand - z
        n_a = np.minimum(most_a, _ceil(np.maximum(rest, 0.0) / a.rate))
        served = z + np.minimum(rest, n_a * a.rate)
        n_a = np.where(rest > demand * _TIE, n_a, 0.0)
    ok = pairs.valid & (z > 0) & (n_a >= 1.0)
    gpus = n_p * p.gpus + pairs.n_d * d.gpus + n_a * a.gpus
    i = _best(np.where(ok, served, 0.0).ravel(), np.where(ok, gpus, 0.0).ravel(), demand)
    if i is None:
        return None
    at = np.unravel_index(i, z.shape)
    return Layout("mixed", ((a, int(n_a[at])), (p, int(n_p[at])), (d, int(pairs.n_d[at]))),
                  float(served[at] - z[at]), float(z[at]))


#: The exact split of a demand tries every (n_p, n_d) up to this many pairs (beyond, the
#: balanced P:D of :func:`_pairs`).
SPLIT_PAIRS = 2_000_000


def _mixed_split(a: Candidate, p: Candidate, d: Candidate, pools: dict[str, int],
                 demand: float, fabric_bytes_s: float | None) -> tuple[bool, Layout | None]:
    """The split of ``demand`` between ``n_a`` instances of ``a`` and a disaggregated part
    (``n_p`` of ``p``, ``n_d`` of ``d``) that serves the most with the fewest GPUs, every part
    non-empty: every ``n_p`` up to the fewest that serve the demand alone, every ``n_d`` up to
    ``⌈d / μ_d⌉``, and ``n_a`` what the rest needs (at least one). The two parts share the
    demand in proportion to their capacities. ``(tried, layout)``: not tried past
    :data:`SPLIT_PAIRS` pairs."""
    qa, qp, qd = a.config.pool, p.config.pool, d.config.pool
    room_p = pools[qp] - (a.gpus if qa == qp else 0)
    most_p = room_p // p.gpus
    if most_p < 1:
        return True, None
    f = _prefill_rates(p, most_p)
    if fabric_bytes_s is not None and p.kv_bytes_per_request > 0:
        f = np.minimum(f, fabric_bytes_s / p.kv_bytes_per_request)
    reach = np.flatnonzero(f >= demand)
    f = f[: int(reach[0]) + 1 if reach.size else most_p]
    top_d = max(1, int(_ceil(np.array([demand / d.rate]))[0]))
    if f.size * top_d > SPLIT_PAIRS:
        return False, None
    n_p = np.arange(1, f.size + 1, dtype=np.float64)[:, None]
    n_d = np.arange(1, top_d + 1, dtype=np.float64)[None, :]
    cap_z = np.minimum(f[:, None], n_d * d.rate)

    def used(pool: str) -> FloatArray:
        out = np.zeros((f.size, top_d))
        if qp == pool:
            out = out + n_p * p.gpus
        if qd == pool:
            out = out + n_d * d.gpus
        return out

    ok = np.ones((f.size, top_d), dtype=bool)
    for q in {qp, qd}:
        ok &= used(q) <= pools[q] - (a.gpus if q == qa else 0)
    need_a = np.maximum(1.0, _ceil(np.maximum(demand - cap_z, 0.0) / a.rate))
    n_a = np.minimum(need_a, np.floor((pools[qa] - used(qa)) / a.gpus))
    ok &= n_a >= 1.0
    capacity = cap_z + n_a * a.rate
    served = np.where(ok, np.minimum(demand, capacity), 0.0)
    gpus = np.where(ok, n_p * p.gpus + n_d * d.gpus + n_a * a.gpus, 0.0)
    i = _best(served.ravel(), gpus.ravel(), demand)
    if i is None:
        return True, None
    at = np.unravel_index(i, served.shape)
    z = float(served[at] * cap_z[at] / capacity[at])
    return True, Layout("mixed", ((a, int(n_a[at])), (p, int(at[0]) + 1), (d, int(at[1]) + 1)),
                        float(served[at]) - z, z)


def best_layouts(problem: Problem, workload: Workload,
                 cands: Sequence[Candidate]) -> dict[LayoutMode, Layout]:
    """The best layout of each mode that ``cands`` (one workload's candidates, sorted by key)
    allow, alone on the problem's pools; with a demand, only layouts that serve all of it."""
    pools = {p.name: p.count for p in problem.pools}
    demand = workload.demand_per_s
    fabric = problem.network.fabric_bandwidth_bytes_s
    agg = aggregated_layout(cands, pools, demand)
    dis = disaggregated_layout(cands, pools, demand, fabric)
    mixed = (mixed_layout(agg, dis, pools, demand, fabric)
             if agg is not None and dis is not None else None)
    return {layout.mode: layout for layout in (agg, dis, mixed) if layout is not None
            and (demand is None or layout.served_per_s >= demand * (1.0 - _TIE))}


@dataclass(frozen=True)
class LayoutFigures:
    """What a layout's plan reports, without assembling the plan (no engine caps, no prefill
    TTFT): req/s, GPUs, the mean TPOT over the requests and the worst group's TPOT at the
    attainment quantile, both at the planned load (ms)."""

    served_per_s: float
    gpus: int
    tpot_mean_ms: float | None
    tpot_ms: float | None

    def tokens_per_s_per_gpu(self, output_mean: float) -> float:
        """Output tokens/s per GPU."""
        return self.served_per_s * output_mean / self.gpus if self.gpus else 0.0

    @property
    def tokens_per_s_per_user(self) -> float:
        """``1000 / mean TPOT (ms)``."""
        return 1e3 / self.tpot_mean_ms if self.tpot_mean_ms else 0.0


def layout_figures(layout: Layout) -> LayoutFigures:
    """The figures :func:`layout_plan` would report, by the same rule as
    :mod:`servingcast.planner.assemble` (each role's groups at one utilisation, the mean TPOT
    weighted by the rate each group decodes); ``tests/planner/test_pareto.py`` checks that they
    match the assembled plan's."""
    capacity = {"aggregated": 0.0, "prefill": 0.0, "decode": 0.0}
    for c, n in layout.counts:
        capacity[c.config.role] += c.group_rate(n)
    rate_of = {"aggregated": layout.aggregated_per_s, "decode": layout.disaggregated_per_s}
    means: list[tuple[float, float]] = []
    tpots: list[float] = []
    for c, n in layout.counts:
        role = c.config.role
        if role == "prefill":
            continue
        u = min(1.0, rate_of[role] / capacity[role]) if capacity[role] > 1e-9 else 0.0
        load = u * c.group_rate(n) / n
        op = c.profile.at_rate(load, n)
        if op.tpot_mean_s is not None:
            means.append((op.tpot_mean_s * 1e3, load * n))
        if op.tpot_s is not None:
            tpots.append(op.tpot_s * 1e3)
    weight = sum(r for _, r in means)
    mean = (sum(t * r for t, r in means) / weight if weight > 1e-9
            else max((t for t, _ in means), default=None))
    return LayoutFigures(layout.served_per_s, layout.gpus, mean, max(tpots, default=None))


def layout_plan(problem: Problem, layout: Layout, label: str) -> Plan:
    """The layout as a plan of ``problem`` (which holds the layout's one workload)."""
    from servingcast.planner.assemble import plan_from_allocation
    from servingcast.planner.milp import Allocation

    (workload,) = problem.workloads
    name = workload.name
    cands = {c.key: c for c, _ in layout.counts}
    alloc = Allocation({c.key: n for c, n in layout.counts}, {name: layout.served_per_s},
                       {name: layout.aggregated_per_s}, {name: layout.disaggregated_per_s})
    return plan_from_allocation(problem, cands, alloc, _REPORT, label)
