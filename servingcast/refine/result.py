"""The refinement's result types, and turning a simulated deployment into a :class:`Plan`.

A refined plan is a :class:`servingcast.planner.Plan` (``refined=True``, label ``refined``)
whose rates, latencies and utilisations are the *simulated* ones at the sustained rate, not
cost-model predictions: an instance's rate is the part's sustained rate times the share of
requests the simulated router gave its group, divided by its count; its ``capacity`` is that
same rate (the simulation found no more); ``batch`` is Little's law on the decoding requests
(``rate × mean TPOT × (mean output − 1)``); ``limited_by`` is ``simulation``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from servingcast.planner.plan import InstanceGroup, Plan, WorkloadPlan, pd_ratio
from servingcast.planner.problem import Problem
from servingcast.refine.deployment import Deployment, GroupSetting, Part
from servingcast.refine.evaluate import Evaluation, PartResult, SimPoint
from servingcast.refine.objective import objective_value

_FROZEN = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class TrialRecord(BaseModel):
    """One trial of the study, as the report and the plots need it."""

    model_config = _FROZEN

    number: int
    state: str
    source: str
    values: tuple[float, ...] | None
    feasible: bool
    objective_value: float | None
    goodput_per_s: float | None
    tokens_per_s_per_gpu: float | None
    tokens_per_s_per_user: float | None
    gpus: int | None
    duplicate_of: int | None
    start_s: float | None
    complete_s: float | None
    """Seconds since the study's first trial started."""


class PlannedLoadCheck(BaseModel):
    """One part of the MILP plan simulated at the rate the MILP planned for it."""

    model_config = _FROZEN

    workload: str
    part: Part
    point: SimPoint


class RunStats(BaseModel):
    """What the study holds and what this run did."""

    model_config = _FROZEN

    finished: int
    simulated: int
    infeasible: int
    duplicates: int
    failed: int
    new_trials: int
    elapsed_s: float
    best_trial: int | None
    time_to_best_s: float | None
    jobs: int
    seed: int


class RefinedResult(BaseModel):
    """The refined plan next to the MILP plan, both simulated, and the study behind them."""

    model_config = _FROZEN

    problem: Problem
    mode: str
    milp_plan: Plan
    plan: Plan
    milp_deployment: Deployment
    deployment: Deployment
    milp_evaluation: Evaluation
    evaluation: Evaluation
    milp_at_planned_load: tuple[PlannedLoadCheck, ...]
    milp_value: float
    milp_feasible: bool
    """Whether the MILP plan met every constraint in simulation (min_cost: the demand)."""
    value: float
    gain: float | None
    """(refined − MILP) / |MILP| of the problem's objective, simulated; None when MILP is 0."""
    milp_trial: int | None
    refined_trial: int | None
    changes: tuple[str, ...]
    trials: tuple[TrialRecord, ...]
    pareto_front: tuple[int, ...]
    study_name: str
    storage: str | None
    """The storage URL (password hidden); None when the study was temporary."""
    dashboard_command: str | None
    stats: RunStats
    settings: dict[str, Any]
    sim_requests: dict[str, int]
    """Requests per simulation, per workload."""
    notes: tuple[str, ...] = ()
    storage_in_folder: str | None = None
    """The storage as the output folder's files record it (``study.log``: a file inside the
    folder, relative to it; see :func:`servingcast.refine.run.storage_in_folder`); None:
    :attr:`storage`, as it was given."""

    @property
    def improved(self) -> bool:
        """Whether the refined deployment differs from the MILP plan's."""
        return self.deployment != self.milp_deployment


def _ms(value: float | None) -> float | None:
    return None if value is None else float(value)


def _group(problem: Problem, w: str, g: GroupSetting, part: PartResult | None, scale: float,
           out_mean: float) -> InstanceGroup:
    point = part.point if part is not None else None
    rate = (part.rate_per_s * scale if part is not None else 0.0)
    share = point.share.get(g.slot, 0.0) if point is not None else 0.0
    per_instance = rate * share / g.count
    tpot_mean = point.tpot_ms.mean if point is not None else None
    batch = (per_instance * tpot_mean / 1e3 * max(out_mean - 1.0, 0.0)
             if tpot_mean is not None and g.role != "prefill" else 0.0)
    price = problem.pool(g.pool).price
    return InstanceGroup(
        **g.engine_group().model_dump(), name=g.key, gpus=g.gpus,
        capacity_per_instance_per_s=per_instance, rate_per_instance_per_s=per_instance,
        utilization=point.utilization.get(g.slot, 0.0) if point is not None else 0.0,
        batch=batch,
        ttft_ms=_ms(point.ttft_at_target_ms) if point and g.role != "decode" else None,
        tpot_ms=_ms(point.tpot_at_target_ms) if point and g.role != "prefill" else None,
        tpot_mean_ms=_ms(tpot_mean) if g.role != "prefill" else None,
        limited_by="simulation", cost_per_hour=None if price is None else price * g.gpus)


def plan_of(problem: Problem, deployment: Deployment, ev: Evaluation, milp: Plan,
            label: str = "refined", notes: tuple[str, ...] = (),
            others: tuple[Plan, ...] = ()) -> Plan:
    """The simulated deployment as a :class:`Plan` (module docstring). The KV bytes a request
    moves come from the first of ``milp`` and ``others`` that serves the workload
    disaggregated."""
    workloads = []
    for w in problem.workloads:
        ws, wr = deployment.workload(w.name), ev.workload(w.name)
        ref = next(p for p in milp.workloads if p.name == w.name)
        kv_ref = next((p for plan in (milp, *others) for p in plan.workloads
                       if p.name == w.name and p.disaggregated_rate_per_s > 0), ref)
        scale = wr.served_per_s / wr.rate_per_s if wr.rate_per_s > 0 else 0.0
        parts = {p.part: p for p in wr.parts}
        groups = tuple(_group(problem, w.name, g, parts.get(g.part), scale, ref.output_len_mean)
                       for g in ws.groups)
        agg = parts["aggregated"].rate_per_s * scale if "aggregated" in parts else 0.0
        dis = parts["disaggregated"].rate_per_s * scale if "disaggregated" in parts else 0.0
        n_pre = sum(g.count for g in groups if g.role == "prefill")
        n_dec = sum(g.count for g in groups if g.role == "decode")
        kv_per_request = (kv_ref.kv_transfer_gb_s / kv_ref.disaggregated_rate_per_s
                          if kv_ref.disaggregated_rate_per_s > 0 else 0.0)
        workloads.append(WorkloadPlan(
            name=w.name, model=w.model, precision=w.precision,
            input_len_mean=ref.input_len_mean, output_len_mean=ref.output_len_mean,
            demand_per_s=w.demand_per_s, served_rate_per_s=wr.served_per_s,
            aggregated_rate_per_s=agg, disaggregated_rate_per_s=dis,
            input_tokens_per_s=wr.served_per_s * ref.input_len_mean,
            output_tokens_per_s=wr.served_per_s * ref.output_len_mean, gpus=wr.gpus,
            tokens_per_s_per_gpu=wr.tokens_per_s_per_gpu,
            tokens_per_s_per_user=wr.tokens_per_s_per_user,
            ttft_ms=max((g.ttft_ms for g in groups if g.ttft_ms is not None), default=None),
            tpot_ms=max((g.tpot_ms for g in groups if g.tpot_ms is not None), default=None),
            tpot_mean_ms=wr.tpot_ms.mean, ttft_limit_ms=w.slo.ttft_s * 1e3,
            tpot_limit_ms=w.slo.tpot_s * 1e3, attainment=w.slo.attainment,
            pd_ratio=pd_ratio(n_pre, n_dec), prefill_instances=n_pre, decode_instances=n_dec,
            kv_transfer_gb_s=dis * kv_per_request, groups=groups))
    roles = {g.role for wp in workloads for g in wp.groups}
    mode = ("empty" if not roles else "aggregated" if roles == {"aggregated"}
            else "disaggregated" if "aggregated" not in roles else "mixed")
    used = {p.name: 0 for p in problem.pools}
    for wp in workloads:
        for g in wp.groups:
            used[g.pool] += g.gpus
    total = sum(used.values())
    out = sum(wp.output_tokens_per_s for wp in workloads)
    return Plan(
        problem=problem.name, label=label, status=milp.status, objective=problem.objective,
        objective_value=objective_value(problem, deployment, ev), mode=mode,
        workloads=tuple(workloads), gpus_used=used,
        gpus_available={p.name: p.count for p in problem.pools}, total_gpus=total,
        cost_per_hour=ev.cost_per_hour, served_rate_per_s=ev.served_per_s,
        output_tokens_per_s=out, tokens_per_s_per_gpu=out / total if total else 0.0,
        solver=milp.solver, refined=True, notes=notes)


def changes(before: Deployment, after: Deployment) -> tuple[str, ...]:
    """What the refinement changed, one line per group or router (empty: nothing)."""
    lines = []
    for wb in before.workloads:
        wa = after.workload(wb.name)
        if wa.router != wb.router:
            lines.append(f"{wb.name}: router {wb.router} -> {wa.router}")
        old = {g.slot: g for g in wb.groups}
        new = {g.slot: g for g in wa.groups}
        for slot in [*old, *(s for s in new if s not in old)]:
            a, b = old.get(slot), new.get(slot)
            if a is None and b is not None:
                lines.append(f"{wb.name}: + {b.describe()}")
            elif b is None and a is not None:
                lines.append(f"{wb.name}: - {a.describe()}")
            elif a is not None and b is not None and a != b:
                diffs = [f"{f} {getattr(a, f)} -> {getattr(b, f)}"
                         for f in ("count", "max_num_seqs", "max_num_batched_tokens")
                         if getattr(a, f) != getattr(b, f)]
                lines.append(f"{wb.name}: {slot}: " + ", ".join(diffs))
    return tuple(lines)

