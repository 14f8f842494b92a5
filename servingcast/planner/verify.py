"""Re-check a plan independently of how it was found: budgets, rates, SLOs at the planned load.

Nothing here reads the candidates' profiles or the MILP. Every group is rebuilt from its
published settings (hardware, tp/pp/ep, engine limits) and its planned per-instance load, and
checked with the cost model through a different path than :mod:`servingcast.planner.capacity`:

* budgets: GPUs per pool, whole nodes (instances larger than a node take whole nodes, the others
  are packed first-fit decreasing), the cost recomputed from prices;
* rates: every workload's served rate split into its aggregated and disaggregated parts, each no
  more than its instances carry, demands respected;
* aggregated and decode instances: the steady state at the planned rate ``λ`` — the cadence
  ``τ`` with ``τ = step(b)`` for ``b = λ n τ`` (Little's law), found by a search over trial
  cadences rather than the planner's sweep over batches; TPOT at the batch quantile ``b_q`` from
  explicit :class:`Batch` objects (a decode-only iteration plus the marginal time of each chunk
  of each prompt at its real position), within its limit (the planner adds the spread from the
  prefill beside a request's decodes on top; this check does not); ``b_q`` within
  ``max_num_seqs`` and the KV cache; TTFT by the same queueing model as the planner;
* prefill groups: each chunk of each prompt costed as its own :class:`Batch`, then TTFT at the
  group's load by the pooled queueing model (``count`` servers: a pipelined instance serves one
  prompt at a time, through every stage);
* KV transfers within each instance's links and the fabric.

A relative ``tolerance`` (default 1%) absorbs the planner's interpolation between batch sizes.
"""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np

from servingcast.costmodel.batch import Batch, BatchStats
from servingcast.costmodel.comm import kv_transfer_s
from servingcast.costmodel.memory import kv_bytes_per_token, max_batch_size, memory_plan
from servingcast.costmodel.parallel import Parallelism
from servingcast.costmodel.spec import micro_batches, pipelined_step_s
from servingcast.costmodel.steady import (
    FloatArray,
    add_stats,
    chunked_prefill_sums,
    decode_batch_stats,
    iteration_cadence_s,
)
from servingcast.costmodel.step import CostModel
from servingcast.planner.candidates import precision_of, round_robin_router, speculative_instance
from servingcast.planner.capacity import (
    Shape,
    batched_prefill,
    batched_prefill_costs,
    batches_within_budget,
    capped_token_queue_ttft_s,
    shape_of,
)
from servingcast.planner.plan import InstanceGroup, Plan
from servingcast.planner.problem import Pool, Problem, Workload
from servingcast.planner.queueing import (
    gated_batch_ttft_quantile_s,
    group_spread_factor,
    lifetime_spread,
    occupancy_quantile,
    ttft_quantile_s,
)
from servingcast.specs.catalog import get_model


def nodes_needed(pool: Pool, sizes: list[tuple[int, int]]) -> int:
    """Nodes of ``pool`` for ``(gpus per instance, count)`` pairs: instances of a node or more take
    whole nodes, smaller ones are packed first-fit decreasing (the MILP's constraint 2)."""
    node = pool.node_size
    whole = 0
    small: list[int] = []
    for gpi, count in sizes:
        if gpi >= node:
            whole += math.ceil(gpi / node) * count
        else:
            small += [gpi] * count
    bins: list[int] = []
    for size in sorted(small, reverse=True):
        for i, free in enumerate(bins):
            if free >= size:
                bins[i] -= size
                break
        else:
            bins.append(node - size)
    return whole + len(bins)


def _cm(w: Workload, pool: Pool, g: InstanceGroup) -> CostModel:
    return CostModel(get_model(w.model), pool.spec, precision_of(w),
                     Parallelism(tp=g.tp, pp=g.pp, ep=g.ep, attn_dp=g.attn_dp))


def _densities(cm: CostModel, shape: Shape, rate: float, tau: FloatArray,
               budget: int | None) -> tuple[FloatArray, FloatArray, FloatArray]:
    """For trial cadences ``τ``: the cadence the cost model gives back, the cadence of an
    iteration with a full chunk, and the mean batch ``b = λ n τ`` (invalid points: inf)."""
    pp = cm.parallel.pp
    window = cm.model.sliding_window
    b = rate * shape.decode_steps * tau
    micro = micro_batches(pp, b)
    beta = b / micro
    decode = decode_batch_stats(beta, shape.decode_context, window)
    if budget is None:
        step = np.asarray(iteration_cadence_s(cm, decode, micro), dtype=np.float64)
        return step, step, b
    chunk = np.maximum(budget - beta, 1.0)
    c = beta / shape.decode_steps * shape.input_mean
    bad = (c >= chunk) | (budget - beta <= 0)
    # An invalid point's cadence is inf whatever its chunk: summing its prompts in chunks of
    # one token (with a sliding window, one loop step per token) would only cost time.
    pairs, kv, _ = chunked_prefill_sums(shape.input_points[None, :],
                                        np.where(bad, float(budget), chunk)[:, None], window)
    per_pair = pairs.mean(axis=1) / shape.input_mean
    per_kv = kv.mean(axis=1) / shape.input_mean

    def with_prefill(tokens: FloatArray) -> BatchStats:
        return add_stats(decode, BatchStats(
            prefill_tokens=tokens, prefill_pairs=tokens * per_pair,
            prefill_kv_tokens=tokens * per_kv, logit_seqs=tokens / shape.input_mean))

    n = tau.size
    # Prefill lands in pieces of about a prompt: the mean iteration mixes decode-only ones and
    # ones with a piece (as the planner: for MoE experts, read once per iteration, this is not
    # the iteration of mean sums).
    piece = np.minimum(chunk, np.maximum(shape.input_mean, c))
    zero = np.zeros_like(c)
    three = iteration_cadence_s(
        cm, _stack(_stack(with_prefill(piece), with_prefill(chunk)), with_prefill(zero)),
        np.concatenate([micro, micro, micro]))
    steps = np.asarray(three, dtype=np.float64)
    tau_piece, tau_full, tau_dec = steps[:n], steps[n:2 * n], steps[2 * n:]
    mean = tau_dec + c / piece * (tau_piece - tau_dec)
    return np.where(bad, np.inf, mean), tau_full, b


def _stack(a: BatchStats, b: BatchStats) -> BatchStats:
    return BatchStats(**{f.name: np.concatenate([np.broadcast_to(getattr(a, f.name),
                                                                 np.shape(a.decode_seqs)),
                                                 np.broadcast_to(getattr(b, f.name),
                                                                 np.shape(b.decode_seqs))])
                         for f in fields(BatchStats)})


def steady_state(cm: CostModel, shape: Shape, rate: float,
                 budget: int | None = None) -> tuple[float, float, float] | None:
    """``(τ, b, τ_full)`` at ``rate`` req/s: the smallest cadence ``τ`` that the cost model
    returns for a mean batch ``b = λ n τ``, found on a geometric grid of trial cadences and then
    a fine linear one around the first crossing; None when there is none (overload)."""
    coarse = np.geomspace(1e-5, 100.0, 700)
    step, _, _ = _densities(cm, shape, rate, coarse, budget)
    above = np.flatnonzero(step <= coarse)
    if above.size == 0:
        return None
    i = int(above[0])
    if i == 0:
        lo, hi = 0.0, coarse[0]
    else:
        lo, hi = coarse[i - 1], coarse[i]
    fine = np.linspace(lo, hi, 400)[1:]
    step, full, b = _densities(cm, shape, rate, fine, budget)
    j = int(np.flatnonzero(step <= fine)[0])
    return float(fine[j]), float(b[j]), float(full[j])


def _cadences(cm: CostModel, batches: list[Batch], micro: float) -> np.ndarray:
    """The cadence of each explicit batch (one cost-model call for the list)."""
    stats = [b.stats(cm.model.sliding_window) for b in batches]
    stacked = BatchStats(**{f.name: np.asarray([getattr(x, f.name) for x in stats],
                                               dtype=np.float64)
                            for f in fields(BatchStats)})
    latency, interval = cm.iteration_s(stacked)
    return np.asarray(pipelined_step_s(latency, interval, micro, cm.parallel.pp),
                      dtype=np.float64)


def _prompt_chunks(length: float, chunk: int) -> list[tuple[int, int]]:
    """``(tokens, prior)`` of each chunk of a prompt of ``length`` tokens."""
    n = int(length)
    return [(min(chunk, n - start), start) for start in range(0, n, chunk)]


def mean_iteration_s(cm: CostModel, shape: Shape, b: float, r_batch: float,
                     budget: int | None) -> float:
    """Time-averaged cadence with ``b`` decoding sequences when requests start at the rate that
    keeps a batch of ``r_batch``, from explicit :class:`Batch` objects: a decode-only iteration
    plus, per request started, the extra time of each of its prompt's chunks (chunks of
    ``budget - β`` tokens at their real positions) — the marginal cost of prefill."""
    pp = cm.parallel.pp
    micro = min(float(pp), max(b, 1.0))
    seqs = max(1, round(b / micro))
    ctx = [round(shape.decode_context)] * seqs
    batches = [Batch.of(decode=ctx)]
    owner = [-1]
    if budget is not None:
        chunk = max(1, int(budget - seqs))
        for i, length in enumerate(shape.input_points):
            for piece in _prompt_chunks(length, chunk):
                batches.append(Batch.of(prefill=[piece], decode=ctx))
                owner.append(i)
    steps = _cadences(cm, batches, micro)
    t0 = float(steps[0])
    if budget is None:
        return t0
    extra = np.bincount(np.asarray(owner[1:]), weights=steps[1:] - t0,
                        minlength=shape.input_points.size)
    mb = min(float(pp), max(r_batch, 1.0))
    return t0 + r_batch / mb / shape.decode_steps * float(np.mean(extra))


def _own_prefill_s(cm: CostModel, shape: Shape, b: float, chunk: int,
                   share: float) -> np.ndarray:
    """Per quantile point, the seconds from the start of a prompt's prefill to its first token
    on an aggregated instance with ``b`` decodes: each chunk an explicit :class:`Batch` beside
    the decodes; the last one also carries, with probability ``share``, other prompts' tokens
    filling the budget (their expected count as one more piece)."""
    micro = min(float(cm.parallel.pp), max(b, 1.0))
    ctx = [round(shape.decode_context)] * max(1, round(b / micro))
    batches, owner = [], []
    for i, length in enumerate(shape.input_points):
        pieces = _prompt_chunks(length, chunk)
        for j, piece in enumerate(pieces):
            other = round(share * (chunk - piece[0]))
            extra = [(other, round(shape.input_mean / 2))] if (
                j == len(pieces) - 1 and other > 0) else []
            batches.append(Batch.of(prefill=[piece, *extra], decode=ctx))
            owner.append(i)
    return np.bincount(np.asarray(owner), weights=_cadences(cm, batches, micro),
                       minlength=shape.input_points.size)


def prefill_service_s(cm: CostModel, shape: Shape, chunk_tokens: int) -> np.ndarray:
    """Per quantile point, the seconds of prefilling the prompt alone, chunk by chunk."""
    batches, owner = [], []
    for i, length in enumerate(shape.input_points):
        for piece in _prompt_chunks(length, chunk_tokens):
            batches.append(Batch.of(prefill=[piece]))
            owner.append(i)
    steps = _cadences(cm, batches, 1.0)  # one prompt at a time through every stage
    return np.bincount(np.asarray(owner), weights=steps, minlength=shape.input_points.size)


def _check_group(problem: Problem, w: Workload, g: InstanceGroup, tol: float) -> list[str]:
    pool = problem.pool(g.pool)
    cm = _cm(w, pool, g)
    search = problem.search
    # With prefix caching, the prompts' uncached parts (their cached context is not re-costed
    # here) and the warm cache's resident KV are the planner's (planner.prefix_caching).
    shape = shape_of(w, problem.engine, g.prefix_caching, search.block_size,
                     g.role == "prefill")
    cm, extra_w, extra_kv = speculative_instance(search, cm, g.spec_tokens, g.draft_model)
    mem = memory_plan(cm, search.gpu_memory_utilization, g.rank_max_num_batched_tokens,
                      g.rank_max_num_seqs, search.block_size, extra_w, extra_kv)
    lam = g.rate_per_instance_per_s
    where = f"{w.name}: {g.count}x {g.role} tp={g.tp} pp={g.pp} on {g.hardware}"
    errors = []
    ttft_limit, tpot_limit = w.slo.ttft_s * (1 + tol), w.slo.tpot_s * (1 + tol)
    if lam > g.capacity_per_instance_per_s * (1 + 1e-6):
        errors.append(f"{where}: planned {lam:.4g} req/s exceeds capacity "
                      f"{g.capacity_per_instance_per_s:.4g}")
    if lam <= 0:
        return errors  # an idle instance (a time-limited solve may keep one) meets any SLO
    if g.role == "prefill":
        if max_batch_size(mem, int(shape.input_points.max())) < 1:
            errors.append(f"{where}: a prompt does not fit the KV cache")
        service = prefill_service_s(cm, shape, g.max_num_batched_tokens)
        # The group's pooled queue: count servers sharing its traffic; or, when prompts
        # batch, each instance's gated batches at its share, whichever is shorter (as the
        # planner: capacity.PrefillProfile).
        ttft = ttft_quantile_s(shape.quantile, g.count, lam * g.count,
                               float(service.mean()), float((service**2).mean()), service)
        batched = batched_prefill(shape, g.max_num_batched_tokens, g.max_num_seqs, g.pp)
        if batched is not None:
            length, many = batched
            one, full = (cm.step(Batch.of(prefill=[(length, 0)] * m)).latency_s
                         for m in (1, many))
            a, kappa = batched_prefill_costs(one, full, length, many)
            if kappa > 0.0 and batches_within_budget(
                    np.array([lam]), a, kappa, shape, g.max_num_batched_tokens)[0]:
                gated = gated_batch_ttft_quantile_s(
                    shape.quantile, lam, a, kappa * shape.input_mean,
                    kappa**2 * shape.input_sq_mean, service)
                capped = capped_token_queue_ttft_s(shape.quantile, np.array(lam), a, kappa,
                                                   shape, g.max_num_batched_tokens, service)
                ttft = min(ttft, max(float(gated), float(capped)))
        if ttft > ttft_limit:
            errors.append(f"{where}: TTFT p{shape.quantile * 100:g} {ttft * 1e3:.1f} ms > "
                          f"{w.slo.ttft_s * 1e3:.1f} ms at {lam:.4g} req/s")
    else:
        budget = g.max_num_batched_tokens if g.role == "aggregated" else None
        state = steady_state(cm, shape, lam, budget)
        if state is None:
            return [*errors, f"{where}: no steady state at {lam:.4g} req/s (overloaded)"]
        _, b, tau_full = state
        # The rate's elasticity d ln λ / d ln b from two nearby steady states.
        near = steady_state(cm, shape, lam * 0.99, budget)
        elasticity = (math.log(lam / (lam * 0.99)) / math.log(b / near[1])
                      if near is not None and near[1] < b else 0.0)
        tau_dec = mean_iteration_s(cm, shape, b, 0.0, None)
        noise, kappa = 0.0, 0.0
        if budget is not None:  # prefill work beside the decodes (capacity.AggregatedProfile)
            micro = min(float(g.pp), max(b, 1.0))
            kappa = (tau_full - tau_dec) / (budget - b / micro)
            noise = 0.5 * (b * kappa / (shape.decode_steps * tau_dec)) ** 2 * (
                shape.input_sq_mean)
        bq = float(occupancy_quantile(b, shape.quantile, elasticity, noise))
        # One of count instances behind one router swings less (queueing item 10).
        spread = group_spread_factor(g.count, g.role == "aggregated" and round_robin_router(w))
        bq = b + float(spread) * (bq - b)
        if not math.isfinite(bq):
            return [*errors, f"{where}: at {lam:.4g} req/s the batch has no stable size"]
        seen = b + (bq - b) * float(lifetime_spread(elasticity))  # the batch over a life
        tau_q = mean_iteration_s(cm, shape, seen, seen, budget)
        if tau_q > tpot_limit:
            errors.append(f"{where}: TPOT p{shape.quantile * 100:g} {tau_q * 1e3:.2f} ms > "
                          f"{w.slo.tpot_s * 1e3:.2f} ms")
        held = bq + (g.pp if g.role == "aggregated" else 0)
        if held > max_batch_size(mem, shape.seq_len) * (1 + tol):
            errors.append(f"{where}: {held:.0f} sequences exceed the KV cache "
                          f"({max_batch_size(mem, shape.seq_len)})")
        if held > g.max_num_seqs * (1 + tol) + 1:
            errors.append(f"{where}: batch {held:.0f} > max_num_seqs {g.max_num_seqs}")
        if budget is not None:
            micro = min(float(g.pp), max(b, 1.0))
            chunk = budget - b / micro
            share = (b / micro / shape.decode_steps * shape.input_mean) / chunk
            own = _own_prefill_s(cm, shape, b, int(chunk), share)
            # The token queue (M/G/1) or the gated batches, whichever is longer (as the
            # planner: capacity.AggregatedProfile, queueing items 8 and 9).
            per_token = tau_full / chunk
            ttft = ttft_quantile_s(shape.quantile, 1.0, lam / micro,
                                   shape.input_mean * per_token,
                                   shape.input_sq_mean * per_token**2, own)
            gated = gated_batch_ttft_quantile_s(
                shape.quantile, lam / micro, tau_dec, shape.input_mean * kappa,
                shape.input_sq_mean * kappa**2, _own_prefill_s(cm, shape, b, int(chunk), 0.0))
            ttft = max(ttft, float(gated))
            if ttft > ttft_limit:
                errors.append(f"{where}: TTFT p{shape.quantile * 100:g} "
                              f"{ttft * 1e3:.1f} ms > {w.slo.ttft_s * 1e3:.1f} ms")
    if g.role in ("prefill", "decode"):
        bw = problem.network.per_gpu_bytes_s(pool.spec)
        request = kv_bytes_per_token(cm) * shape.input_mean
        if lam * kv_transfer_s(request, bw * g.gpus_per_instance) > 1 + tol:
            errors.append(f"{where}: KV transfers need more than the instance's links")
    return errors


def verify_plan(problem: Problem, plan: Plan, tolerance: float = 0.01) -> list[str]:
    """Every broken rule of ``plan`` as a sentence (empty: the plan checks out)."""
    errors: list[str] = []
    for pool in problem.pools:
        groups = [g for g in plan.groups if g.pool == pool.name]
        used = sum(g.gpus_per_instance * g.count for g in groups)
        if used > pool.count:
            errors.append(f"pool {pool.name}: {used} GPUs used, {pool.count} available")
        if plan.gpus_used.get(pool.name, 0) != used:
            errors.append(f"pool {pool.name}: plan says {plan.gpus_used.get(pool.name)} GPUs, "
                          f"groups use {used}")
        for g in groups:
            node = pool.node_size
            if not (node % g.gpus_per_instance == 0 or g.gpus_per_instance % node == 0):
                errors.append(f"{g.name}: {g.gpus_per_instance} GPUs straddle nodes")
        nodes = nodes_needed(pool, [(g.gpus_per_instance, g.count) for g in groups])
        if nodes > pool.nodes:
            errors.append(f"pool {pool.name}: needs {nodes} nodes, has {pool.nodes}")
    if plan.cost_per_hour is not None:
        cost = sum(g.gpus * (problem.pool(g.pool).price or 0.0) for g in plan.groups)
        if not math.isclose(cost, plan.cost_per_hour, rel_tol=1e-9, abs_tol=1e-9):
            errors.append(f"cost: plan says {plan.cost_per_hour:.4f} $/h, prices give {cost:.4f}")
    fabric = 0.0
    for wp in plan.workloads:
        w = problem.workload(wp.name)
        carried = {"aggregated": 0.0, "prefill": 0.0, "decode": 0.0}
        for g in wp.groups:
            carried[g.role] += g.rate_per_instance_per_s * g.count
        rel = 1e-6 * max(1.0, wp.served_rate_per_s)
        if abs(wp.served_rate_per_s - wp.aggregated_rate_per_s
               - wp.disaggregated_rate_per_s) > rel:
            errors.append(f"{w.name}: served rate is not aggregated + disaggregated")
        if wp.aggregated_rate_per_s > carried["aggregated"] + rel:
            errors.append(f"{w.name}: aggregated rate exceeds its instances' load")
        for role in ("prefill", "decode"):
            if wp.disaggregated_rate_per_s > carried[role] + rel:
                errors.append(f"{w.name}: disaggregated rate exceeds its {role} instances")
        if w.demand_per_s is not None:
            if wp.served_rate_per_s > w.demand_per_s * (1 + 1e-6):
                errors.append(f"{w.name}: serves more than its demand")
            if problem.objective == "min_cost" and wp.served_rate_per_s < w.demand_per_s * (
                    1 - 1e-6):
                errors.append(f"{w.name}: serves {wp.served_rate_per_s:.4g} of "
                              f"{w.demand_per_s:.4g} req/s demanded")
        for g in wp.groups:
            errors += _check_group(problem, w, g, tolerance)
        fabric += wp.kv_transfer_gb_s * 1e9
    limit = problem.network.fabric_bandwidth_bytes_s
    if limit is not None and fabric > limit * (1 + tolerance):
        errors.append(f"KV traffic {fabric / 1e9:.1f} GB/s exceeds the fabric's "
                      f"{limit / 1e9:.1f} GB/s")
    return errors
