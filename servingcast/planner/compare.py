"""Hardware what-if: plan the same workloads on each GPU type in turn, side by side.

For each GPU type h (the problem's ``compare:`` section, or ``servingcast compare --hardware``)
the problem's pools are replaced by one pool of type h, and that problem is solved by the
planner (:func:`servingcast.planner.planning.solve`: the best plan only, no alternatives,
single-mode optima, Pareto sweep or refinement). Notation::

    G_h     GPUs of type h available: --gpus, else compare.gpus, else the problem's GPUs
            (rounded up to whole nodes of h); for min_cost, at least the upper bound U_h below
    π_h     USD per GPU-hour: --price, else compare.price_per_gpu_hour, else the price of a
            pool of type h in the problem, else the catalog's (error when none has one)
    n_h     GPUs the plan uses;  x_{h,w} req/s served of workload w;  o_w mean output tokens

Each row reports::

    1. GPUs                   n_h
    2. $/h                    C_h = π_h n_h           (the plan's cost_per_hour)
    3. output tokens/s        T_h = Σ_w x_{h,w} o_w
    4. tokens/s per GPU       T_h / n_h               (every GPU the plan uses, as DESIGN.md)
    5. $ per M output tokens  C_h / (3600 T_h) · 10⁶

The rows are ranked by 5 (then by 4, descending); the first feasible row is the best. A type
on which no plan meets the SLOs or the demands gets a row with the planner's explanation.

U_h (min_cost only, when no budget is given) is the GPUs of a plan that meets every demand on
its own: per workload the fewer GPUs of ⌈d_w / μ_c⌉ instances of one aggregated candidate c,
or of ⌈d_w / μ_P⌉ prefill plus ⌈d_w / μ_D⌉ decode instances (instances smaller than a node
rounded up to whole nodes), summed over the workloads. The min-cost plan needs no more.

Library code: nothing here prints; the CLI (``servingcast compare``) prints and writes files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from servingcast.errors import ConfigError, InfeasibleError, SolverError
from servingcast.planner.plan import Plan
from servingcast.planner.problem import Pool, Problem, check_problem, hardware_key
from servingcast.specs.catalog import get_hardware

_FROZEN = ConfigDict(extra="forbid", frozen=True)

#: Receives one line per GPU type (the CLI prints them to stderr), e.g. ``"b200 (3/4)"``.
Progress = Callable[[str], None]

OUTPUT_FILES = ("compare.csv", "compare.json", "compare.png")


class CompareRow(BaseModel):
    """One GPU type's plan, or why there is none (``feasible`` False, ``reason``)."""

    model_config = _FROZEN

    hardware: str
    price_per_gpu_hour: float
    price_source: str
    gpus_available: int
    feasible: bool
    status: str
    mode: str | None = None
    gpus: int = 0
    cost_per_hour: float | None = None
    served_rate_per_s: dict[str, float] = {}
    output_tokens_per_s: float | None = None
    tokens_per_s_per_gpu: float | None = None
    usd_per_million_output_tokens: float | None = None
    reason: str | None = None
    solve_s: float = 0.0
    plan: Plan | None = None


class Comparison(BaseModel):
    """Every type's row, ranked (best first, types without a plan last)."""

    model_config = _FROZEN

    problem: str
    objective: str
    workloads: tuple[str, ...]
    rows: tuple[CompareRow, ...]
    total_s: float

    @property
    def best(self) -> CompareRow | None:
        """The feasible row with the least $ per million output tokens."""
        return next((r for r in self.rows if r.feasible), None)

    def row(self, hardware: str) -> CompareRow:
        """The row of ``hardware`` (a catalog name or alias)."""
        key = hardware_key(hardware)
        return next(r for r in self.rows if r.hardware == key)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with ``best`` named."""
        data = self.model_dump(mode="json")
        data["best"] = self.best.hardware if self.best else None
        return data


def usd_per_million_tokens(cost_per_hour: float, tokens_per_s: float) -> float | None:
    """5. ``C / (3600 T) · 10⁶``; None when nothing is served."""
    if tokens_per_s <= 0:
        return None
    return cost_per_hour / (tokens_per_s * 3600.0) * 1e6


def _node_size(problem: Problem, hardware: str) -> int:
    for pool in problem.pools:
        if hardware_key(pool.hardware) == hardware and pool.gpus_per_node:
            return pool.gpus_per_node
    return get_hardware(hardware).gpus_per_node


def _whole_nodes(gpus: int, node: int) -> int:
    return gpus if gpus <= node else math.ceil(gpus / node) * node


def resolve_prices(problem: Problem, hardware: Sequence[str],
                   prices: Mapping[str, float] | None = None) -> dict[str, tuple[float, str]]:
    """π_h and where it came from, for every type; :class:`ConfigError` naming every type
    without one. ``prices`` (e.g. from ``--price``) come first."""
    given = {hardware_key(k): v for k, v in (prices or {}).items()}
    section = problem.compare.price_per_gpu_hour if problem.compare else {}
    out: dict[str, tuple[float, str]] = {}
    missing = []
    for h in hardware:
        pool_price = next((p.price_per_gpu_hour for p in problem.pools
                           if hardware_key(p.hardware) == h and p.price_per_gpu_hour), None)
        if h in given:
            out[h] = (given[h], "--price")
        elif h in section:
            out[h] = (section[h], "compare section")
        elif pool_price is not None:
            out[h] = (pool_price, "problem pool")
        elif (catalog := get_hardware(h).price_per_hour_usd) is not None:
            out[h] = (catalog, "catalog")
        else:
            missing.append(h)
    if missing:
        names = ", ".join(missing)
        raise ConfigError(
            f"no price for {names}: the catalog has none and neither the problem's pools nor "
            f"its compare section give one. To fix: pass --price {missing[0]}=USD_PER_GPU_HOUR "
            f"(e.g. {missing[0]}=2.5), or set compare.price_per_gpu_hour.{missing[0]}")
    return out


def derived_problem(problem: Problem, hardware: str, price_per_gpu_hour: float,
                    gpus: int, budget_source: str = "the budget") -> Problem:
    """``problem`` with its pools replaced by ``gpus`` GPUs of ``hardware`` at the price, and
    no compare section; :class:`ConfigError` when that problem breaks a rule (e.g. a budget
    that is not whole nodes), naming ``budget_source``."""
    spec = get_hardware(hardware)
    node = _node_size(problem, hardware)
    if gpus > node and gpus % node:
        raise ConfigError(
            f"{gpus} GPUs ({budget_source}) are not a whole number of {spec.name}'s {node}-GPU "
            f"nodes. To fix: use a multiple of {node} (e.g. {gpus // node * node} or "
            f"{(gpus // node + 1) * node})")
    own = next((p for p in problem.pools if hardware_key(p.hardware) == hardware), None)
    pool = Pool(name=spec.name, hardware=hardware, count=gpus,
                gpus_per_node=own.gpus_per_node if own else None,
                price_per_gpu_hour=price_per_gpu_hour)
    derived = problem.model_copy(update={"pools": (pool,), "compare": None})
    try:
        return check_problem(derived)
    except ConfigError as exc:
        why = str(exc).replace("<problem>: ", "")
        raise ConfigError(f"planning on {gpus} {spec.name} GPUs ({budget_source}): "
                          f"{why}") from None


def demand_bound_gpus(problem: Problem) -> int:
    """U_h of the module docstring for a one-pool ``problem`` whose workloads all have demands;
    0 when some workload has no candidate meeting its SLOs (the solve then says why)."""
    from servingcast.planner.candidates import CandidateBuilder

    pool = problem.pools[0]
    node = pool.node_size
    cands = CandidateBuilder(problem).candidates().candidates

    def gpus(n: float, g: int) -> int:
        return math.ceil(n * g / node) * node if g < node else int(n) * g

    total = 0
    for w in problem.workloads:
        if w.demand_per_s is None:
            continue
        d = w.demand_per_s
        mine = [c for c in cands if c.config.workload == w.name and c.rate > 0]
        best = [gpus(math.ceil(d / c.rate), c.gpus) for c in mine
                if c.config.role == "aggregated"]
        pre = [gpus(math.ceil(d / c.rate), c.gpus) for c in mine if c.config.role == "prefill"]
        dec = [gpus(math.ceil(d / c.rate), c.gpus) for c in mine if c.config.role == "decode"]
        if pre and dec:
            best.append(min(pre) + min(dec))
        if not best:
            return 0
        total += min(best)
    return _whole_nodes(total, node)


#: Where G_h came from when it was chosen here, not given.
_DEFAULT_BUDGET = "the problem's GPUs"


def _budget(problem: Problem, hardware: str, gpus: int | None) -> tuple[int, str]:
    """G_h and where it came from (``--gpus``, ``compare.gpus`` or :data:`_DEFAULT_BUDGET`)."""
    if gpus is not None:
        return gpus, "--gpus"
    if problem.compare is not None and problem.compare.gpus is not None:
        return problem.compare.gpus, "compare.gpus"
    node = _node_size(problem, hardware)
    return _whole_nodes(sum(p.count for p in problem.pools), node), _DEFAULT_BUDGET


def _row(problem: Problem, hardware: str, price: tuple[float, str], gpus: int | None,
         time_limit_s: float, mip_gap: float) -> CompareRow:
    from servingcast.planner.planning import solve

    t0 = time.perf_counter()
    budget, source = _budget(problem, hardware, gpus)
    derived = derived_problem(problem, hardware, price[0], budget, source)
    if problem.objective == "min_cost" and source == _DEFAULT_BUDGET:
        bound = demand_bound_gpus(derived)
        if bound > budget:
            budget = bound
            derived = derived_problem(problem, hardware, price[0], budget, "enough for the "
                                      "demands")
    base = {"hardware": hardware, "price_per_gpu_hour": price[0], "price_source": price[1],
            "gpus_available": budget}
    status: Literal["infeasible", "no_solution"]
    try:
        plan = solve(derived, top_k=1, time_limit_s=time_limit_s, mip_gap=mip_gap,
                     pareto_factors=None, compare_modes=False).plan
    except InfeasibleError as exc:
        status, reason = "infeasible", str(exc)
    except SolverError as exc:
        status, reason = "no_solution", str(exc)
    else:
        cost = (plan.cost_per_hour if plan.cost_per_hour is not None  # 2. C_h = π_h n_h
                else price[0] * plan.total_gpus)
        return CompareRow(
            **base, feasible=True, status=plan.status.value, mode=plan.mode,
            gpus=plan.total_gpus, cost_per_hour=cost,
            served_rate_per_s={wp.name: wp.served_rate_per_s for wp in plan.workloads},
            output_tokens_per_s=plan.output_tokens_per_s,
            tokens_per_s_per_gpu=plan.tokens_per_s_per_gpu,
            usd_per_million_output_tokens=usd_per_million_tokens(cost, plan.output_tokens_per_s),
            solve_s=time.perf_counter() - t0, plan=plan)
    return CompareRow(**base, feasible=False, status=status, reason=reason,
                      solve_s=time.perf_counter() - t0)


def _rank_key(row: CompareRow, order: Sequence[str]) -> tuple[bool, float, float, int]:
    usd = row.usd_per_million_output_tokens
    return (not row.feasible or usd is None, usd if usd is not None else math.inf,
            -(row.tokens_per_s_per_gpu or 0.0), order.index(row.hardware))


def compared_types(problem: Problem, hardware: Sequence[str] | None = None) -> tuple[str, ...]:
    """The types to compare: ``hardware`` (canonical names), else the compare section's."""
    if hardware:
        keys = tuple(dict.fromkeys(hardware_key(h) for h in hardware))
        return keys
    if problem.compare is None:
        raise ConfigError(
            f"problem {problem.name!r} has no compare section and no GPU types were given. "
            "To fix: pass --hardware h100-sxm,h200-sxm, or add to the problem "
            "'compare: {hardware: [h100-sxm, h200-sxm]}'")
    return problem.compare.hardware


def compare_hardware(problem: Problem, hardware: Sequence[str] | None = None,
                     prices: Mapping[str, float] | None = None, gpus: int | None = None, *,
                     time_limit_s: float = 60.0, mip_gap: float = 1e-3,
                     progress: Progress | None = None) -> Comparison:
    """Plan ``problem``'s workloads on each GPU type (see the module docstring).

    ``hardware`` and ``prices`` (type → USD per GPU-hour) and ``gpus`` come before the
    problem's compare section. Prices and budgets are checked for every type before any solve
    (:class:`ConfigError`); a type without a plan gets a row with the reason.
    """
    say = progress or (lambda _: None)
    t0 = time.perf_counter()
    types = compared_types(problem, hardware)
    unknown = sorted(set(hardware_key(k) for k in (prices or {})) - set(types))
    if unknown:
        raise ConfigError(f"--price for {', '.join(unknown)}, which is not compared "
                          f"({', '.join(types)}). To fix: add it to --hardware, or drop its price")
    resolved = resolve_prices(problem, types, prices)
    for h in types:  # every budget checked before the first solve
        derived_problem(problem, h, resolved[h][0], *_budget(problem, h, gpus))
    rows = []
    for i, h in enumerate(types, 1):
        say(f"{h} ({i}/{len(types)})")
        rows.append(_row(problem, h, resolved[h], gpus, time_limit_s, mip_gap))
    ranked = sorted(rows, key=lambda r: _rank_key(r, types))
    return Comparison(problem=problem.name, objective=problem.objective,
                      workloads=tuple(w.name for w in problem.workloads), rows=tuple(ranked),
                      total_s=time.perf_counter() - t0)


# -- rendering (strings and bytes; the CLI prints and writes them) -----------------------------


def _n(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def compare_table(c: Comparison) -> str:
    """The side-by-side table, best first (``*``), then prices and the reasons of rows without
    a plan."""
    from servingcast._text import table as _table

    multi = len(c.workloads) > 1
    headers = ["", "hardware", "mode", "GPUs", "$/GPU-h", "$/h", "req/s",
               *([f"{w} req/s" for w in c.workloads] if multi else []),
               "output tok/s", "tok/s/GPU", "$/M output tok"]
    best = c.best
    rows = []
    for r in c.rows:
        served = sum(r.served_rate_per_s.values()) if r.feasible else None
        per = [_n(r.served_rate_per_s.get(w), 2) if r.feasible else "-"
               for w in c.workloads] if multi else []
        rows.append(["*" if r is best else "", r.hardware, r.mode or r.status,
                     str(r.gpus) if r.feasible else "-", f"{r.price_per_gpu_hour:,.2f}",
                     _n(r.cost_per_hour, 2), _n(served, 2), *per,
                     _n(r.output_tokens_per_s, 0), _n(r.tokens_per_s_per_gpu, 0),
                     _n(r.usd_per_million_output_tokens, 3)])
    right = [False, False, False] + [True] * (len(headers) - 3)
    budgets = sorted({r.gpus_available for r in c.rows})
    budget = (f"{budgets[0]} GPUs of each type" if len(budgets) == 1
              else "budgets " + ", ".join(f"{r.hardware} {r.gpus_available}" for r in c.rows))
    out = [f"servingcast compare: {c.problem} — objective {c.objective}, {budget} "
           f"(* least $ per million output tokens)", ""]
    out += _table(headers, rows, right)
    out += ["", "Prices ($/GPU-h): " + ", ".join(
        f"{r.hardware} {r.price_per_gpu_hour:,.2f} ({r.price_source})" for r in c.rows)]
    for r in c.rows:
        if r.feasible and r.status == "feasible":
            out.append(f"Note: {r.hardware}: HiGHS stopped at the time limit; not proven "
                       "optimal. To improve it: raise --time-limit")
        if not r.feasible:
            out.append(f"{r.hardware}: no plan ({r.status}) — {r.reason}")
    out.append(f"Solved {len(c.rows)} GPU types in {c.total_s:.1f} s (best plan of each, "
               "MILP only, no refinement).")
    return "\n".join(out)


def compare_json(c: Comparison) -> str:
    """The comparison as JSON (each row with its plan)."""
    return json.dumps(c.to_dict(), indent=2)


def compare_csv(c: Comparison) -> str:
    """One line per type, in rank order, units in the header."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["rank", "hardware", "best", "feasible", "status", "mode",
                  "price_per_gpu_hour", "price_source", "gpus_available", "gpus",
                  "cost_per_hour", "served_rate_per_s",
                  *[f"{w}_served_rate_per_s" for w in c.workloads], "output_tokens_per_s",
                  "tokens_per_s_per_gpu", "usd_per_million_output_tokens", "reason"])

    def num(value: float | None) -> str:
        return "" if value is None else f"{value:.6g}"

    for i, r in enumerate(c.rows, 1):
        served = sum(r.served_rate_per_s.values()) if r.feasible else None
        out.writerow([i, r.hardware, "true" if r is c.best else "false",
                      "true" if r.feasible else "false", r.status, r.mode or "",
                      num(r.price_per_gpu_hour), r.price_source, r.gpus_available, r.gpus,
                      num(r.cost_per_hour), num(served),
                      *[num(r.served_rate_per_s.get(w)) for w in c.workloads],
                      num(r.output_tokens_per_s), num(r.tokens_per_s_per_gpu),
                      num(r.usd_per_million_output_tokens), r.reason or ""])
    return buf.getvalue()


def compare_png(c: Comparison) -> bytes:
    """Two bar charts, one bar per type in rank order: output tokens/s per GPU and $ per
    million output tokens (the best type's bars in red; a type without a plan has none)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # The object API on an Agg canvas: no pyplot, no process-wide backend switch.
    fig = Figure(figsize=(9.0, 4.0), dpi=110)
    FigureCanvasAgg(fig)
    names = [r.hardware for r in c.rows]
    colors = ["tab:red" if r is c.best else "tab:blue" for r in c.rows]
    panels = (("output tokens/s per GPU", [r.tokens_per_s_per_gpu for r in c.rows], "{:,.0f}"),
              ("$ per million output tokens", [r.usd_per_million_output_tokens for r in c.rows],
               "${:,.3f}"))
    for i, (label, values, fmt) in enumerate(panels, 1):
        ax = fig.add_subplot(1, 2, i)
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(names, heights, color=colors)
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(fmt.format(v) if v is not None else "no plan",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"{c.problem}: {c.objective} on each GPU type", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def render_outputs(c: Comparison) -> dict[str, bytes]:
    """The files of ``--output DIR`` (:data:`OUTPUT_FILES`), rendered, not written."""
    return {"compare.csv": compare_csv(c).encode(), "compare.json": compare_json(c).encode(),
            "compare.png": compare_png(c)}
