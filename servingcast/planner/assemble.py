"""Turning a solved allocation into a :class:`Plan`: loads, predicted latencies, throughput.

Each group receives a share of its role's traffic in proportion to its capacity (the exported
scenario gives every group that share as its routing ``weight``), so every group of a role runs
at the same utilisation ``u``: the aggregated groups of workload ``w`` at
``u_A = a_w / Σ_{c∈A_w} f_c(n_c)``, its prefill groups at ``u_P = z_w / Σ_P f_c(n_c)`` and its
decode groups at ``u_D = z_w / Σ_D f_c(n_c)`` (``f_c(n)`` the capacity of a group of ``n``,
:meth:`Candidate.group_rate`). A group then receives ``u`` times its capacity, spread evenly
over its instances, and its TTFT percentile and TPOT at that load come from its cost-model
profile for a group of that size (:meth:`Profile.at_rate`: prefill, the group's pooled queue;
decode and aggregated, the narrower batch of a group, queueing item 10).

Per workload: output tokens/s ``= x_w E[O]``; tokens/s per GPU divides by the workload's GPUs;
tokens/s per user is ``1 / TPOT`` with the mean TPOT averaged over the requests (weighted by the
rate each group decodes); the reported TTFT and TPOT are the worst group's at the attainment
quantile (what the SLO sees).
"""

from __future__ import annotations

from collections import defaultdict

from servingcast.planner.candidates import Candidate
from servingcast.planner.milp import Allocation
from servingcast.planner.plan import InstanceGroup, Plan, SolverReport, WorkloadPlan, pd_ratio
from servingcast.planner.problem import Problem

_EPS = 1e-9


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1e3


def _group(c: Candidate, count: int, utilization: float, engine: str) -> InstanceGroup:
    cfg = c.config
    each = c.group_rate(count) / count
    load = utilization * each
    op = c.profile.at_rate(load, count)
    return InstanceGroup.from_config(
        cfg, name=cfg.key, hardware=c.hardware, count=count, gpus_per_instance=c.gpus,
        gpus=c.gpus * count, max_num_seqs=c.engine_max_num_seqs_for(count),
        enable_chunked_prefill=cfg.role != "decode", engine=engine,
        capacity_per_instance_per_s=each, rate_per_instance_per_s=load,
        utilization=utilization, batch=op.batch, ttft_ms=_ms(op.ttft_s), tpot_ms=_ms(op.tpot_s),
        tpot_mean_ms=_ms(op.tpot_mean_s), limited_by=c.capacity.limited_by,
        cost_per_hour=None if c.price_per_hour is None else c.price_per_hour * count)


def plan_from_allocation(problem: Problem, cands: dict[str, Candidate], alloc: Allocation,
                         report: SolverReport, label: str) -> Plan:
    """Assemble the plan (module docstring)."""
    by_workload: dict[str, list[tuple[Candidate, int]]] = defaultdict(list)
    for key, count in alloc.counts.items():
        by_workload[cands[key].config.workload].append((cands[key], count))
    workloads = []
    notes = []
    gpus_used = {p.name: 0 for p in problem.pools}
    costs: list[float | None] = []
    for w in problem.workloads:
        members = sorted(by_workload.get(w.name, []),
                         key=lambda m: (("aggregated", "prefill", "decode").index(
                             m[0].config.role), m[0].config.key))
        capacity = {"aggregated": 0.0, "prefill": 0.0, "decode": 0.0}
        for c, n in members:
            capacity[c.config.role] += c.group_rate(n)
        agg, dis = alloc.aggregated[w.name], alloc.disaggregated[w.name]
        rate_of = {"aggregated": agg, "prefill": dis, "decode": dis}
        groups = []
        for c, n in members:
            total = capacity[c.config.role]
            u = min(1.0, rate_of[c.config.role] / total) if total > _EPS else 0.0
            groups.append(_group(c, n, u, problem.engine.kind))
            gpus_used[c.config.pool] += c.gpus * n
            costs.append(c.price_per_hour * n if c.price_per_hour is not None else None)
        served = agg + dis
        in_mean, out_mean = _means(problem, w.name)
        gpus = sum(g.gpus for g in groups)
        ttfts = [g.ttft_ms for g in groups if g.ttft_ms is not None and g.count]
        tpots = [(g.tpot_ms, g.rate_per_instance_per_s * g.count) for g in groups
                 if g.tpot_ms is not None]
        means = [(g.tpot_mean_ms, g.rate_per_instance_per_s * g.count) for g in groups
                 if g.tpot_mean_ms is not None]
        weight = sum(r for _, r in means)
        mean_tpot = (sum(t * r for t, r in means) / weight if weight > _EPS
                     else (max(t for t, _ in means) if means else None))
        n_pre = sum(g.count for g in groups if g.role == "prefill")
        n_dec = sum(g.count for g in groups if g.role == "decode")
        kv_bytes = next((c.kv_bytes_per_request for c, _ in members), 0.0)
        if w.demand_per_s is not None and served < w.demand_per_s * (1 - 1e-6):
            notes.append(f"{w.name}: serves {served:.3g} of the {w.demand_per_s:.3g} req/s "
                         "demanded (the pools allow no more within the SLOs)")
        workloads.append(WorkloadPlan(
            name=w.name, model=w.model, precision=w.precision, input_len_mean=in_mean,
            output_len_mean=out_mean, demand_per_s=w.demand_per_s, served_rate_per_s=served,
            aggregated_rate_per_s=agg, disaggregated_rate_per_s=dis,
            input_tokens_per_s=served * in_mean, output_tokens_per_s=served * out_mean,
            gpus=gpus, tokens_per_s_per_gpu=served * out_mean / gpus if gpus else 0.0,
            tokens_per_s_per_user=1e3 / mean_tpot if mean_tpot else 0.0,
            ttft_ms=max(ttfts) if ttfts else None,
            tpot_ms=max((t for t, _ in tpots), default=None), tpot_mean_ms=mean_tpot,
            ttft_limit_ms=w.slo.ttft_s * 1e3, tpot_limit_ms=w.slo.tpot_s * 1e3,
            attainment=w.slo.attainment, pd_ratio=pd_ratio(n_pre, n_dec),
            prefill_instances=n_pre, decode_instances=n_dec,
            kv_transfer_gb_s=dis * kv_bytes / 1e9, groups=tuple(groups)))
    roles = {g.role for wp in workloads for g in wp.groups}
    mode = ("empty" if not roles else "aggregated" if roles == {"aggregated"}
            else "disaggregated" if "aggregated" not in roles else
            "mixed" if roles & {"prefill", "decode"} else "aggregated")
    total = sum(gpus_used.values())
    out_tps = sum(wp.output_tokens_per_s for wp in workloads)
    goodput = sum(w.weight * wp.served_rate_per_s
                  for w, wp in zip(problem.workloads, workloads, strict=True))
    cost = None if any(c is None for c in costs) else float(sum(c or 0.0 for c in costs))
    objective_value = {"max_goodput": goodput, "min_cost": cost if cost is not None else total,
                       "max_goodput_per_dollar": goodput / cost if cost else 0.0}[
        problem.objective]
    return Plan(
        problem=problem.name, label=label, status=report.status, objective=problem.objective,
        objective_value=objective_value, mode=mode, workloads=tuple(workloads),
        gpus_used=gpus_used, gpus_available={p.name: p.count for p in problem.pools},
        total_gpus=total, cost_per_hour=cost,
        served_rate_per_s=sum(wp.served_rate_per_s for wp in workloads),
        output_tokens_per_s=out_tps, tokens_per_s_per_gpu=out_tps / total if total else 0.0,
        solver=report, notes=tuple(notes))


def _means(problem: Problem, workload: str) -> tuple[float, float]:
    from servingcast.planner.capacity import shape_of

    shape = shape_of(problem.workload(workload), problem.engine)
    return shape.input_mean, shape.output_mean
