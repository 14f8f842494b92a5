"""Why nothing is feasible, with numbers, and what would fix it.

Two kinds of failure: a workload with no configuration that meets its SLOs (every candidate was
dropped: it does not fit, or an SLO is missed even at zero load), and demands the pools cannot
serve together (``min_cost``). Each message names what binds and the figures behind it.
"""

from __future__ import annotations

from servingcast.costmodel.memory import weights_bytes_per_stage
from servingcast.costmodel.parallel import Parallelism
from servingcast.costmodel.step import CostModel
from servingcast.errors import ConfigError
from servingcast.planner.candidates import CandidateSet, Drop, precision_of
from servingcast.planner.problem import Problem, Workload
from servingcast.specs.catalog import get_model

_STRUCTURAL = ("pool_size", "node_shape", "precision", "parallelism")


def _desc(d: Drop) -> str:
    c = d.config
    text = f"tp={c.tp}, pp={c.pp}"
    if c.ep > 1:
        text += f", ep={c.ep}"
    return f"{text} on {d.hardware}"


def _total_weights_bytes(problem: Problem, w: Workload) -> float | None:
    model, prec = get_model(w.model), precision_of(w)
    for pool in problem.pools:
        try:
            cm = CostModel(model, pool.spec, prec, Parallelism())
        except ConfigError:
            continue
        return float(sum(weights_bytes_per_stage(cm)))
    return None


def _smallest_fit(problem: Problem, w: Workload, pool_name: str, tp: int,
                  precision: str | None = None) -> tuple[int, int] | None:
    """The smallest ``(tp, pp)`` with ``pp`` up to 16 whose memory plan fits ``w`` on the pool's
    hardware (the search's smallest engine limits), or None."""
    from servingcast.costmodel.memory import memory_plan
    from servingcast.specs.precision import get_precision

    pool = problem.pool(pool_name)
    prec = get_precision(precision) if precision else precision_of(w)
    search = problem.search
    for pp in range(1, 17):
        try:
            cm = CostModel(get_model(w.model), pool.spec, prec, Parallelism(tp=tp, pp=pp))
        except ConfigError:
            continue
        plan = memory_plan(cm, search.gpu_memory_utilization, min(search.max_num_batched_tokens),
                           min(search.max_num_seqs), search.block_size)
        if plan.fits:
            return tp, pp
    return None


def _memory_message(problem: Problem, w: Workload, drops: list[Drop]) -> str:
    memory = [d for d in drops if d.reason == "memory"]
    weights = _total_weights_bytes(problem, w)
    gmu = problem.search.gpu_memory_utilization
    fixes = []
    head = f"{w.model} in {w.precision}"
    if memory:
        largest = max(memory, key=lambda d: (d.config.tp * d.config.pp,
                                             problem.pool(d.config.pool).spec.hbm_bytes))
        gpus = largest.config.tp * largest.config.pp
        pool = problem.pool(largest.config.pool)
        hbm = pool.spec.hbm_bytes
        text = (f"{head} needs {weights / 1e9:,.0f} GB of weights; " if weights else f"{head}: ")
        text += (f"the largest instance allowed ({_desc(largest)}, {gpus} GPUs) has "
                 f"{gpus * hbm / 1e9:,.0f} GB of GPU memory ({gpus * hbm * gmu / 1e9:,.0f} GB "
                 f"usable at gpu_memory_utilization {gmu:g})")
        fit = _smallest_fit(problem, w, pool.name, largest.config.tp)
        if fit is not None:
            need = fit[0] * fit[1]
            if need > pool.count:
                fixes.append(f"add GPUs (tp={fit[0]}, pp={fit[1]} fits, {need} GPUs; pool "
                             f"{pool.name} has {pool.count})")
            else:
                fixes.append(f"allow pp >= {fit[1]} in search (tp={fit[0]}, pp={fit[1]} fits: "
                             f"{need} GPUs)")
        if precision_of(w).weight_bytes >= 2:
            small = _smallest_fit(problem, w, pool.name, largest.config.tp, "fp8")
            if small is not None and pool.spec.peak_flops("fp8") is not None:
                fixes.append(f"use fp8 (fits with tp={small[0]}, pp={small[1]})")
            else:
                fixes.append("use a 4-bit precision (w4a16)")
    else:
        shape = _shape_message(problem, w, drops)
        if shape is not None:
            return f"{head}: {shape}"
        text = f"{head}: no allowed tp/pp/ep fits the pools ({_reasons(drops)})"
        fixes.append("allow smaller tp/pp in search, or add GPUs")
    fixes.append("use GPUs with more memory (h200, b200, mi300x)")
    return f"{text}. To fix: {', '.join(fixes[:-1])}, or {fixes[-1]}" if len(fixes) > 1 else (
        f"{text}. To fix: {fixes[0]}")


def _parallel_error(problem: Problem, w: Workload, hardware: str, tp: int, pp: int,
                    ep: int) -> str | None:
    """Why the model cannot be split ``tp``/``pp``/``ep`` ways (heads, layers, experts), or None."""
    pool = next(p for p in problem.pools if p.spec.name == hardware)
    try:
        CostModel(get_model(w.model), pool.spec, precision_of(w), Parallelism(tp=tp, pp=pp, ep=ep))
    except ConfigError as exc:
        return str(exc).split(". To fix")[0]
    return None


def _shape_message(problem: Problem, w: Workload, drops: list[Drop]) -> str | None:
    """What is wrong with each allowed shape when none fits for structural reasons (the node
    size, the pool size, the model's heads, the precision), and the tp values that would work."""
    if not drops or any(d.reason not in _STRUCTURAL for d in drops):
        return None
    shown: dict[tuple[int, int, int, str], str] = {}
    for d in drops:
        c = d.config
        key = (c.tp, c.pp, c.ep, d.hardware)
        if key in shown or len(shown) == 4:
            continue
        why = [d.detail or d.reason]
        if d.reason in ("node_shape", "pool_size"):  # the split itself was not tried yet
            split = _parallel_error(problem, w, d.hardware, c.tp, c.pp, c.ep)
            if split is not None:
                why.append(split)
        shown[key] = f"{_desc(d)}: {'; and '.join(why)}"
    good = [t for t in range(1, max(p.node_size for p in problem.pools) + 1)
            if any(pool.node_size % t == 0
                   and _parallel_error(problem, w, pool.spec.name, t, 1, 1) is None
                   for pool in problem.pools)]
    fix = (f"set search.tp to values that divide both the node and the model's attention heads, "
           f"e.g. {good}" if good else "add GPUs or use another GPU kind")
    nodes = sorted({p.node_size for p in problem.pools})
    return (f"no allowed tp/pp/ep can run on the pools ({', '.join(map(str, nodes))}-GPU nodes): "
            f"{'; '.join(shown.values())}. An instance must fill a node evenly or span whole "
            f"nodes, and tp must divide the attention heads. To fix: {fix}")


def _reasons(drops: list[Drop]) -> str:
    counts: dict[str, int] = {}
    for d in drops:
        counts[d.reason] = counts.get(d.reason, 0) + 1
    return ", ".join(f"{n} {r}" for r, n in counts.items())


def _slo_message(w: Workload, role: str, drops: list[Drop]) -> str | None:
    ttft = [d for d in drops if d.reason == "ttft"]
    tpot = [d for d in drops if d.reason == "tpot"]
    parts = []
    if ttft:
        best = min(ttft, key=lambda d: d.value)
        what = ("the fastest prefill of one prompt" if role == "prefill" else
                "the fastest TTFT of an aggregated instance at any load")
        parts.append(
            f"the TTFT limit ({w.slo.ttft_s * 1e3:,.0f} ms at p{w.slo.attainment * 100:g}) is "
            f"below {what} ({best.value * 1e3:,.0f} ms with {_desc(best)}). To fix: raise "
            f"slo.ttft above {best.value * 1e3:,.0f} ms, allow a larger tp, or use faster GPUs")
    if tpot:
        best = min(tpot, key=lambda d: d.value)
        parts.append(
            f"the TPOT limit ({w.slo.tpot_s * 1e3:,.1f} ms) is below the fastest decode step at "
            f"any allowed configuration ({best.value * 1e3:,.1f} ms per token with "
            f"{_desc(best)}, one sequence). To fix: raise slo.tpot above "
            f"{best.value * 1e3:,.1f} ms, allow a larger tp, use fp8, or use faster GPUs")
    return "; ".join(parts) if parts else None


def explain_workload(problem: Problem, cset: CandidateSet, w: Workload) -> str | None:
    """Why ``w`` has no way to be served, or None when it has one."""
    have = {c.config.role for c in cset.candidates if c.config.workload == w.name}
    modes = problem.search.modes
    if "aggregated" in have or {"prefill", "decode"} <= have:
        return None
    drops = [d for d in cset.dropped if d.config.workload == w.name]
    failing = []
    if "aggregated" in modes:
        failing.append("aggregated")
    if "disaggregated" in modes:
        failing += [r for r in ("prefill", "decode") if r not in have]
    messages = []
    for role in failing:
        role_drops = [d for d in drops if d.config.role == role]
        slo = _slo_message(w, role, role_drops)
        if slo is not None:
            messages.append(f"{role} instances: {slo}")
        elif any(d.reason == "kv_cache" for d in role_drops):
            messages.append(
                f"{role} instances: the KV cache of one sequence does not fit next to the "
                "weights. To fix: allow a larger tp or pp, set kv_cache_dtype: fp8, or shorten "
                "the sequences")
        else:
            messages.append(_memory_message(problem, w, role_drops))
            break
    unique = list(dict.fromkeys(messages))
    return f"no deployment can serve workload {w.name!r}: " + "; ".join(unique)


def explain_demands(problem: Problem, max_served: dict[str, float],
                    alone: dict[str, float]) -> str:
    """Why the demands cannot all be met: the most each workload gets, together and alone."""
    parts = []
    for w in problem.workloads:
        demand = w.demand_per_s or 0.0
        if alone.get(w.name, 0.0) < demand * (1 - 1e-6):
            parts.append(f"{w.name} needs {demand:.3g} req/s but the pools serve at most "
                         f"{alone.get(w.name, 0.0):.3g} req/s of it within its SLOs, even with "
                         "every GPU")
    if not parts:
        together = ", ".join(f"{w.name} {max_served.get(w.name, 0.0):.3g} of "
                             f"{w.demand_per_s or 0.0:.3g}" for w in problem.workloads)
        parts.append(f"each demand fits alone, but not all together (the most served together "
                     f"is {together} req/s)")
    gpus = ", ".join(f"{p.count} {p.hardware}" for p in problem.pools)
    return ("the demands cannot be met with " + gpus + ": " + "; ".join(parts)
            + ". To fix: add GPUs, lower the demands, or relax the SLOs")
