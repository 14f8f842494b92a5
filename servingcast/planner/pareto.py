"""Pareto frontiers of tokens/s per GPU against tokens/s per user, per mode, by sweeping the
TPOT limit and the TTFT limit.

**A point** is a real plan: at one pair of SLO limits, the layout of one mode (aggregated,
disaggregated or mixed) with the most output tokens/s per GPU for one workload, found exactly by
enumeration over the candidates rated at those limits (:mod:`servingcast.planner.layouts`, which
defines the layouts, mixed ones included; no MILP). :meth:`ParetoPoint.build_plan` assembles it
into a :class:`Plan` with the planner's own code; the point's figures are that plan's (computed
without assembling it, which costs 5-60 ms: the engine caps): tokens/s per GPU divides the
workload's output tokens/s by every GPU the layout uses; tokens/s per user is ``1000 / TPOT``
with the mean TPOT at the planned load (averaged over the requests). The sweep does not re-verify
each plan (``verify_plan``, another 10-20 ms a point); the tests do, on small problems.

**The sweeps.** ``tpot``: every workload's TPOT limit times each factor of
:data:`DEFAULT_FACTORS` (25 factors, ×0.25 to ×4), the TTFT limits unchanged. ``ttft``: every
TTFT limit times each factor of :data:`DEFAULT_TTFT_FACTORS`, the TPOT limits unchanged.
Tighter limits give fewer tokens/s per GPU and (TPOT) more tokens/s per user.

**Several workloads.** All limits are scaled together, and each workload's points are its own:
the workload alone on the problem's pools, with its demand (the layout that serves it with the
fewest GPUs) or maximized (the most tokens/s per GPU). Layouts of different workloads do not
compete for GPUs here; the MILP's chosen plan, which shares the pools, is marked beside them.

**The frontier** of a (workload, sweep, mode): the points no other point of the same group
beats on both axes — at least as many tokens/s per user and per GPU, one of them more. Of equal
points, the chosen plan's or else the tightest limit's is marked.

**The chosen plan**: each workload's part of the MILP plan is a point (``chosen``) at the
problem's own limits, in the TPOT sweep, labelled with that part's mode; when a sweep point at
those limits is the same deployment, that point is marked instead.

Cost: rating the candidates at a TPOT limit reuses every cost-model profile (milliseconds); at a
TTFT limit the prefill groups' pooled queues are solved again (about 10 ms per prefill
configuration), so the TTFT sweep has fewer points and runs after the TPOT sweep, within the
planner's time budget.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr

from servingcast.planner.candidates import (
    TTFT_MARGIN,
    Candidate,
    CandidateBuilder,
    CandidateSet,
    prune_dominated,
)
from servingcast.planner.capacity import PrefillProfile, shape_of
from servingcast.planner.layouts import MODES, Layout, best_layouts, layout_figures, layout_plan
from servingcast.planner.plan import Plan, WorkloadPlan
from servingcast.planner.problem import Problem

#: TPOT-limit factors of the default sweep: 2^(k/6) for k = -12 … 12 (×0.25 to ×4; 1.0 is the
#: problem's own SLO).
DEFAULT_FACTORS = (0.25, 0.281, 0.315, 0.354, 0.397, 0.445, 0.5, 0.561, 0.63, 0.707, 0.794,
                   0.891, 1.0, 1.12, 1.26, 1.41, 1.59, 1.78, 2.0, 2.24, 2.52, 2.83, 3.17, 3.56,
                   4.0)
#: TTFT-limit factors of the default sweep: 2^(k/2) for k = -2 … 2 (each new TTFT limit costs
#: about 10 ms per prefill configuration: 0.1 s on the quickstart, 2 s on fleet-4096).
DEFAULT_TTFT_FACTORS = (0.5, 0.707, 1.0, 1.41, 2.0)

Swept = Literal["tpot", "ttft"]
SWEPT: tuple[Swept, ...] = ("tpot", "ttft")

#: Receives a line per TTFT limit and per PROGRESS_EVERY TPOT limits, e.g.
#: ``"Pareto 6/30 (TPOT limits x0.707)"``.
Progress = Callable[[str], None]
PROGRESS_EVERY = 5


class ParetoPoint(BaseModel):
    """One plan of the sweep (module docstring). ``tpot_ms``: the plan's predicted TPOT at the
    attainment quantile at its planned load (the worst group's); ``layout``: its instance
    groups in short; :meth:`build_plan` assembles the plan itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tpot_factor: float
    tpot_limit_ms: float
    tokens_per_s_per_user: float
    tokens_per_s_per_gpu: float
    output_tokens_per_s: float
    served_rate_per_s: float
    gpus: int
    mode: str
    on_frontier: bool = False
    ttft_factor: float = 1.0
    ttft_limit_ms: float | None = None
    swept: Swept = "tpot"
    workload: str = ""
    tpot_ms: float | None = None
    layout: str = ""
    chosen: bool = False
    _source: tuple[Problem, Layout] | None = PrivateAttr(default=None)

    @property
    def factor(self) -> float:
        """The swept limit's factor."""
        return self.tpot_factor if self.swept == "tpot" else self.ttft_factor

    @property
    def limit_ms(self) -> float:
        """The swept limit, in ms."""
        if self.swept == "ttft" and self.ttft_limit_ms is not None:
            return self.ttft_limit_ms
        return self.tpot_limit_ms

    @property
    def signature(self) -> tuple[tuple[str, int], ...] | None:
        """The deployment as sorted (configuration, instances) pairs, like
        :meth:`Plan.signature` (None for points made outside the sweep)."""
        if self._source is None:
            return None
        return tuple(sorted((c.key, n) for c, n in self._source[1].counts))

    def build_plan(self) -> Plan | None:
        """The point's plan, assembled by the planner's own code for the workload alone at the
        point's limits (its figures are the point's); None for points made outside the sweep
        (the chosen plan's point: that plan is ``PlanningResult.plan``)."""
        if self._source is None:
            return None
        problem, layout = self._source
        return layout_plan(problem, layout, f"pareto {self.mode} {self.swept.upper()} "
                           f"x{self.factor:g}")


def _instances(count: int, role: str, pool: str, tp: int, pp: int, ep: int) -> str:
    return (f"{count}x {role} {pool} tp{tp}" + (f"pp{pp}" if pp > 1 else "")
            + (f"ep{ep}" if ep > 1 else ""))


def layout_text(wp: WorkloadPlan) -> str:
    """``"19x prefill h200 tp1 + 3x decode h200 tp4"``."""
    return " + ".join(_instances(g.count, g.role, g.pool, g.tp, g.pp, g.ep) for g in wp.groups)


def workload_mode(wp: WorkloadPlan) -> str:
    """``aggregated``, ``disaggregated`` or ``mixed``: the roles of one workload's groups."""
    roles = {g.role for g in wp.groups}
    if roles == {"aggregated"}:
        return "aggregated"
    return "mixed" if "aggregated" in roles else "disaggregated"


def _layout_point(problem: Problem, layout: Layout, swept: Swept, tpot_factor: float,
                  ttft_factor: float) -> ParetoPoint:
    """The point of ``layout`` (``problem``: its one workload at the point's limits)."""
    (w,) = problem.workloads
    figures = layout_figures(layout)
    output_mean = shape_of(w).output_mean
    text = " + ".join(_instances(n, c.config.role, c.config.pool, c.config.tp, c.config.pp,
                                 c.config.ep) for c, n in layout.counts)
    point = ParetoPoint(
        workload=w.name, swept=swept, tpot_factor=tpot_factor, ttft_factor=ttft_factor,
        tpot_limit_ms=w.slo.tpot_s * 1e3, ttft_limit_ms=w.slo.ttft_s * 1e3, mode=layout.mode,
        tokens_per_s_per_gpu=figures.tokens_per_s_per_gpu(output_mean),
        tokens_per_s_per_user=figures.tokens_per_s_per_user, tpot_ms=figures.tpot_ms,
        output_tokens_per_s=figures.served_per_s * output_mean,
        served_rate_per_s=figures.served_per_s, gpus=figures.gpus, layout=text)
    point._source = (problem, layout)
    return point


def scaled_problem(problem: Problem, tpot_factor: float, ttft_factor: float) -> Problem:
    """``problem`` with every workload's TPOT and TTFT limits times these factors."""
    workloads = tuple(w.model_copy(update={"slo": w.slo.model_copy(update={
        "tpot_s": w.slo.tpot_s * tpot_factor, "ttft_s": w.slo.ttft_s * ttft_factor})})
        for w in problem.workloads)
    return problem.model_copy(update={"workloads": workloads})


def rated_candidates(builder: CandidateBuilder, tpot_factor: float,
                     ttft_factor: float) -> CandidateSet:
    """The builder's configurations rated at its problem's limits times these factors.

    The profiles do not depend on the limits, so a builder of the scaled problem shares them
    (``CandidateBuilder.candidates`` scales only the TPOT limit). A new TTFT limit solves each
    prefill configuration's pooled queue again, the slow part, so: of prefill configurations
    with the same service times, links and GPUs (token budgets above the longest prompt) only
    the first by key is rated — :func:`prune_dominated` would keep only it anyway; and each
    one's pooled rates are computed for its largest group first, so that its single-instance
    rating reads them from the profile's cache instead of solving the queue twice."""
    if ttft_factor == 1.0:
        return builder.candidates(tpot_scale=tpot_factor)
    scaled = scaled_problem(builder.problem, tpot_factor, ttft_factor)
    at = CandidateBuilder(scaled)
    at._entries = []
    seen: set[tuple[object, ...]] = set()
    for e in sorted(builder.entries, key=lambda e: e.config.key):
        if isinstance(e.profile, PrefillProfile):
            twin = (e.config.workload, e.config.pool, e.gpus, e.profile.nic_rate,
                    e.profile.fits, e.profile.service.tobytes())
            if twin in seen:
                continue
            seen.add(twin)
            ttft_s = scaled.workload(e.config.workload).slo.ttft_s * (1.0 - TTFT_MARGIN)
            e.profile.group_rates(ttft_s, scaled.pool(e.config.pool).count // e.gpus)
        at._entries.append(e)
    return at.candidates()


def points_at(problem: Problem, builder: CandidateBuilder, swept: Swept,
              tpot_factor: float, ttft_factor: float) -> list[ParetoPoint]:
    """Every workload's best layout of each mode at the scaled limits, as points."""
    scaled = scaled_problem(problem, tpot_factor, ttft_factor)
    pruned = prune_dominated(rated_candidates(builder, tpot_factor, ttft_factor))
    by_workload: dict[str, list[Candidate]] = {w.name: [] for w in problem.workloads}
    for c in pruned.candidates:
        by_workload[c.config.workload].append(c)
    out = []
    for w in scaled.workloads:
        single = scaled.model_copy(update={"workloads": (w,)})
        for layout in best_layouts(single, w, by_workload[w.name]).values():
            out.append(_layout_point(single, layout, swept, tpot_factor, ttft_factor))
    return out


def chosen_points(plan: Plan) -> list[ParetoPoint]:
    """Each served workload's part of the chosen plan as a point (at the problem's limits)."""
    return [ParetoPoint(
        workload=wp.name, swept="tpot", tpot_factor=1.0, ttft_factor=1.0,
        tpot_limit_ms=wp.tpot_limit_ms, ttft_limit_ms=wp.ttft_limit_ms, mode=workload_mode(wp),
        tokens_per_s_per_gpu=wp.tokens_per_s_per_gpu,
        tokens_per_s_per_user=wp.tokens_per_s_per_user, tpot_ms=wp.tpot_ms,
        output_tokens_per_s=wp.output_tokens_per_s, served_rate_per_s=wp.served_rate_per_s,
        gpus=wp.gpus, layout=layout_text(wp), chosen=True) for wp in plan.workloads
        if wp.gpus > 0]


def _merge_chosen(points: list[ParetoPoint], chosen: Plan) -> list[ParetoPoint]:
    """Mark the sweep point that is the chosen plan's deployment, or add the chosen point."""
    out = list(points)
    for point in chosen_points(chosen):
        wp = next(w for w in chosen.workloads if w.name == point.workload)
        signature = tuple(sorted((g.name, g.count) for g in wp.groups))
        for i, p in enumerate(out):
            if (p.swept == "tpot" and p.tpot_factor == 1.0 and p.ttft_factor == 1.0
                    and p.workload == point.workload and p.signature == signature
                    and abs(p.served_rate_per_s - point.served_rate_per_s)
                    <= 1e-9 * max(point.served_rate_per_s, 1.0)):
                out[i] = p.model_copy(update={"chosen": True})
                break
        else:
            out.append(point)
    return out


def sweep(problem: Problem, builder: CandidateBuilder, chosen: Plan,
          tpot_factors: Sequence[float], ttft_factors: Sequence[float] = (),
          deadline: float = float("inf"), progress: Progress | None = None,
          ) -> tuple[tuple[ParetoPoint, ...], tuple[str, ...]]:
    """The sweep's points with their frontiers marked (sorted as :func:`mark_frontier`), and
    the limits skipped because ``deadline`` (a ``time.perf_counter()`` value) passed, e.g.
    ``"TTFT x2.83"``. The limits are rated in the order given (the TPOT factors first), so a
    sweep cut short keeps the first ones; the chosen plan's points are always there."""
    say = progress or (lambda _: None)
    jobs: list[tuple[Swept, float]] = [("tpot", f) for f in tpot_factors]
    jobs += [("ttft", f) for f in ttft_factors]
    done: dict[tuple[float, float], list[ParetoPoint]] = {}
    points: list[ParetoPoint] = []
    skipped: list[str] = []
    for i, (swept, f) in enumerate(jobs, 1):
        limits = (f, 1.0) if swept == "tpot" else (1.0, f)
        if limits in done:
            points += [p.model_copy(update={"swept": swept}) for p in done[limits]]
            continue
        if time.perf_counter() > deadline:
            skipped.append(f"{swept.upper()} x{f:g}")
            continue
        if swept == "ttft" or i % PROGRESS_EVERY == 1:  # a TPOT limit takes milliseconds
            say(f"Pareto {i}/{len(jobs)} ({swept.upper()} limits x{f:g})")
        done[limits] = points_at(problem, builder, swept, *limits)
        points += done[limits]
    return mark_frontier(_merge_chosen(points, chosen)), tuple(skipped)


def mark_frontier(points: Sequence[ParetoPoint]) -> tuple[ParetoPoint, ...]:
    """Flag the non-dominated points of each (workload, sweep, mode) (module docstring); sorted
    by workload (first seen first), sweep (TPOT first), mode, the swept limit, chosen first."""
    groups: dict[tuple[str, str, str], list[ParetoPoint]] = {}
    for p in points:
        groups.setdefault((p.workload, p.swept, p.mode), []).append(p)
    out = []
    for members in groups.values():
        for p in members:
            key = (p.tokens_per_s_per_user, p.tokens_per_s_per_gpu)
            dominated = any(
                (q.tokens_per_s_per_user, q.tokens_per_s_per_gpu) != key
                and q.tokens_per_s_per_user >= p.tokens_per_s_per_user
                and q.tokens_per_s_per_gpu >= p.tokens_per_s_per_gpu for q in members)
            twins = [q for q in members
                     if (q.tokens_per_s_per_user, q.tokens_per_s_per_gpu) == key]
            first = min(twins, key=lambda q: (not q.chosen, q.factor))
            out.append(p.model_copy(update={"on_frontier": not dominated and p is first}))
    order = {name: i for i, name in enumerate(dict.fromkeys(p.workload for p in points))}
    return tuple(sorted(out, key=lambda p: (
        order[p.workload], SWEPT.index(p.swept),
        MODES.index(p.mode) if p.mode in MODES else len(MODES), p.limit_ms, not p.chosen)))


CSV_COLUMNS = ("tpot_factor", "tpot_limit_ms", "ttft_factor", "ttft_limit_ms", "swept",
               "workload", "mode", "tokens_per_s_per_gpu", "tokens_per_s_per_user", "tpot_ms",
               "gpus", "served_rate_per_s", "output_tokens_per_s", "on_frontier", "chosen",
               "layout")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e-3 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def pareto_csv(points: Sequence[ParetoPoint]) -> str:
    """The points as CSV in their order (:func:`mark_frontier`'s), units in the column names."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in points:
        writer.writerow([_cell(getattr(p, name)) for name in CSV_COLUMNS])
    return buf.getvalue()


def pareto_json(points: Sequence[ParetoPoint]) -> list[dict[str, object]]:
    """The points as JSON-ready dicts (the CSV's columns), in the same order."""
    return [p.model_dump(mode="json") for p in points]


_COLORS = {"aggregated": "tab:blue", "disaggregated": "tab:orange", "mixed": "tab:green"}
#: Workloads drawn in ``pareto.png`` (one row each); the CSV has them all.
PNG_WORKLOADS = 6


def pareto_png(points: Sequence[ParetoPoint], title: str,
               chosen: ParetoPoint | None = None) -> bytes:
    """Per workload (a row, at most :data:`PNG_WORKLOADS`): tokens/s per GPU against tokens/s
    per user over the TPOT sweep, one frontier curve per mode (the other points faint), and
    when there is a TTFT sweep, tokens/s per GPU against the TTFT limit; the chosen plan (a
    point flagged ``chosen``, or ``chosen``) as a red star. Matplotlib's object API on an Agg
    canvas: no pyplot, no process-wide state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(p.workload for p in points))
    shown = names[:PNG_WORKLOADS]
    has_ttft = any(p.swept == "ttft" for p in points)
    cols = 2 if has_ttft else 1
    fig = Figure(figsize=(6.4 * cols, 4.2 * max(len(shown), 1) + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(len(shown), 1), cols, squeeze=False)
    stars = [p for p in points if p.chosen] + ([chosen] if chosen is not None else [])
    for row, name in zip(axes, shown or [""], strict=False):
        mine = [p for p in points if p.workload == name]
        _frontier_panel(row[0], [p for p in mine if p.swept == "tpot"],
                        [p for p in stars if p.workload == name])
        row[0].set_title(f"{name + ': ' if name else ''}TPOT limit swept", fontsize=9)
        if has_ttft:
            _ttft_panel(row[1], [p for p in mine if p.swept == "ttft"],
                        [p for p in stars if p.workload == name])
            row[1].set_title(f"{name + ': ' if name else ''}TTFT limit swept", fontsize=9)
    more = f" (first {len(shown)} of {len(names)} workloads; all in pareto.csv)" if len(
        names) > len(shown) else ""
    fig.suptitle(title + more, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _frontier_panel(ax: object, points: list[ParetoPoint], stars: list[ParetoPoint]) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    for mode in MODES:
        mine = [p for p in points if p.mode == mode]
        if not mine:
            continue
        color = _COLORS[mode]
        ax.scatter([p.tokens_per_s_per_user for p in mine],
                   [p.tokens_per_s_per_gpu for p in mine], color=color, alpha=0.3, s=14)
        front = sorted((p for p in mine if p.on_frontier), key=lambda p: p.tokens_per_s_per_user)
        ax.plot([p.tokens_per_s_per_user for p in front], [p.tokens_per_s_per_gpu for p in front],
                "-o", color=color, markersize=4, label=f"{mode} frontier", zorder=3)
    _stars(ax, [(p.tokens_per_s_per_user, p.tokens_per_s_per_gpu) for p in stars])
    ax.set_xlabel("tokens/s per user (1000 / mean TPOT in ms)")
    ax.set_ylabel("output tokens/s per GPU")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _ttft_panel(ax: object, points: list[ParetoPoint], stars: list[ParetoPoint]) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    for mode in MODES:
        mine = sorted((p for p in points if p.mode == mode), key=lambda p: p.limit_ms)
        if mine:
            ax.plot([p.limit_ms for p in mine], [p.tokens_per_s_per_gpu for p in mine], "-o",
                    color=_COLORS[mode], markersize=4, label=mode)
    _stars(ax, [(p.ttft_limit_ms, p.tokens_per_s_per_gpu) for p in stars
                if p.ttft_limit_ms is not None])
    limits = sorted({p.limit_ms for p in points})
    ax.set_xscale("log")
    if limits:
        ax.set_xticks(limits, [f"{v:,.0f}" for v in limits], fontsize=7)
        ax.minorticks_off()
    ax.set_xlabel("TTFT limit (ms)")
    ax.set_ylabel("output tokens/s per GPU")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _stars(ax: object, xy: list[tuple[float, float]]) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    if xy:
        ax.scatter([x for x, _ in xy[:1]], [y for _, y in xy[:1]], marker="*", s=200,
                   color="tab:red", label="chosen plan", zorder=4)
