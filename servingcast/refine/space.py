"""The search space around the MILP's plans, and how a trial samples a deployment from it.

Notation, per workload ``w``::

    plans        the MILP's best plan and its top alternatives (the planner's ``top_k``)
    slot s       one instance configuration (role, pool, tp, pp, ep) that some plan uses for w,
                 or (structural slots) any shape with a candidate that meets the SLOs, with the
                 engine limits and capacity of its best candidate
                 (:class:`servingcast.planner.candidates.CandidateBuilder`)
    layout ℓ     the set of slots one plan uses for w (plans with equal sets share a layout),
                 or a structural layout: ``any-aggregated`` (one aggregated group) or
                 ``any-disaggregated`` (one prefill and one decode group), each group's shape
                 chosen freely
    c_s          the counts plans give slot s; Δ_s = max(1, ⌈spread · max c_s⌉)
    G_pool, g_s  the pool's GPUs, the slot's GPUs per instance

Parameters (Optuna names in brackets)::

    1. layout ℓ ∈ layouts(w)                         [w/layout]
    2. plan layouts: n_s ∈ [max(0, min c_s − Δ_s), min(G_pool / g_s, max c_s + Δ_s)]  for s ∈ ℓ
                                                     [w/s/count] (n_s = 0 drops the group, so
                                                     the P:D split and the mode can move)
       structural layouts, per role r of ℓ: the shape s_r (tp, pp, ep, pool) among the
       role's slots                                  [w/ℓ/r/shape]
       and its count, log-uniform in [1, G_pool / g_s]   [w/ℓ/s/count]
       (so e.g. 20 tp1 prefill + 3 tp4 decode instances is reachable whatever the MILP chose)
    3. max_num_seqs_s, log-uniform integer in [⌊min seen / 4⌋, max(search caps, seen)]
       (aggregated and decode slots; prefill keeps the plans' values)   [w/s/max_num_seqs]
    4. max_num_batched_tokens_s ∈ search.max_num_batched_tokens ∪ seen (aggregated and
       prefill: the chunk budget; decode: the plans' values, raised to max_num_seqs)
                                                     [w/s/max_num_batched_tokens]
    5. router ∈ {least_outstanding, round_robin, least_kv_load, power_of_two}  [w/router]

A parameter whose domain holds one value is not sampled. Every plan the MILP returned lies in
the space (:func:`params_of` gives its parameters, enqueued as the first trials). The space does
not know the GPU budget: a trial that exceeds it (a structural count can reach a whole pool per
group) is marked infeasible by the objective, never clipped into it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from servingcast.groups import EngineGroup, EngineKind
from servingcast.planner.plan import Plan
from servingcast.planner.problem import Problem
from servingcast.refine.deployment import (
    ROUTERS,
    Deployment,
    GroupSetting,
    Role,
    WorkloadSetting,
    plan_slots,
    slot_key,
)
from servingcast.refine.options import StudySettings

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class SlotSpace(BaseModel):
    """One slot's domains (see the module docstring)."""

    model_config = _FROZEN

    key: str
    pool: str
    hardware: str
    role: Role
    tp: int
    pp: int
    ep: int
    gpus_per_instance: int
    count_low: int
    count_high: int
    seqs_low: int
    seqs_high: int
    seqs_choices: tuple[int, ...]
    tokens_choices: tuple[int, ...]
    enable_chunked_prefill: bool
    capacity_per_instance_per_s: float
    """The MILP's predicted capacity of one instance (the rate search starts from it)."""
    engine: EngineKind = "vllm"
    prefix_caching: bool = False
    spec_tokens: int = 0
    draft_model: str | None = None
    """The engine and its features, as the slot's groups run them (never searched)."""
    wide_count_high: int = 0
    """The highest count of a structural layout's group (0: the slot is in none)."""


class Layout(BaseModel):
    """The slots one (or more) of the MILP's plans use for a workload."""

    model_config = _FROZEN

    name: str
    slots: tuple[str, ...]
    roles: tuple[Role, ...] = ()
    """A structural layout's roles, one group each (empty: a plan's fixed slots)."""
    choices: tuple[tuple[str, ...], ...] = ()
    """A structural layout's slots per role (aligned with ``roles``)."""


class WorkloadSpace(BaseModel):
    """A workload's slots, layouts and simulation size."""

    model_config = _FROZEN

    name: str
    slots: tuple[SlotSpace, ...]
    layouts: tuple[Layout, ...]
    num_requests: int
    """N₀: the floor of every simulation's size (see :mod:`servingcast.refine.evaluate`)."""
    output_len_mean: float
    input_len_mean: float = 0.0

    def slot(self, key: str) -> SlotSpace:
        """The slot called ``key``."""
        return next(s for s in self.slots if s.key == key)


class SearchSpace(BaseModel):
    """Every workload's space; stored in the study so that workers need no MILP."""

    model_config = _FROZEN

    workloads: tuple[WorkloadSpace, ...]
    plan_labels: tuple[str, ...]

    def workload(self, name: str) -> WorkloadSpace:
        """The space of workload ``name``."""
        return next(w for w in self.workloads if w.name == name)


def _layout_name(label: str) -> str:
    return label.replace(" ", "-")


#: Structural layouts: name and roles (one group per role, any shape).
STRUCTURAL = (("any-aggregated", ("aggregated",)), ("any-disaggregated", ("prefill", "decode")))


def _best_candidates(problem: Problem) -> dict[str, dict[str, Any]]:
    """Per workload, the best candidate (highest capacity) of every instance shape that meets
    the SLOs, keyed by its slot key; empty when the candidates cannot be built."""
    from servingcast.errors import ServingcastError
    from servingcast.planner.candidates import CandidateBuilder

    try:
        cands = CandidateBuilder(problem).candidates().candidates
    except ServingcastError:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for c in cands:
        cfg = c.config
        key = slot_key(cfg.role, cfg.pool, cfg.tp, cfg.pp, cfg.ep)
        best = out.setdefault(cfg.workload, {})
        if key not in best or c.rate > best[key].rate:
            best[key] = c
    return out


def _slot_space(problem: Problem, key: str, first: EngineGroup, counts: list[int], seqs: list[int],
                tokens: list[int], capacity: float, spread: float) -> SlotSpace:
    pool = problem.pool(first.pool)
    delta = max(1, math.ceil(spread * max(counts))) if counts else 0
    searched = first.role != "prefill"
    seqs_high = max(*problem.search.max_num_seqs, *seqs)
    tokens = sorted(set(tokens))
    if first.role != "decode":
        tokens = sorted(set(tokens) | set(problem.search.max_num_batched_tokens))
    return SlotSpace(
        key=key, pool=first.pool, hardware=first.hardware, role=first.role, tp=first.tp,
        pp=first.pp, ep=first.ep, gpus_per_instance=first.gpus_per_instance,
        count_low=max(0, min(counts) - delta) if counts else 0,
        count_high=min(pool.count // first.gpus_per_instance, max(counts) + delta)
        if counts else 0,
        seqs_low=max(1, min(seqs) // 4) if searched else 0,
        seqs_high=seqs_high if searched else 0,
        seqs_choices=() if searched else tuple(sorted(set(seqs))),
        tokens_choices=tuple(tokens), enable_chunked_prefill=first.enable_chunked_prefill,
        capacity_per_instance_per_s=capacity, engine=first.engine,
        prefix_caching=first.prefix_caching, spec_tokens=first.spec_tokens,
        draft_model=first.draft_model)


def build_space(problem: Problem, plans: Sequence[Plan], spread: float,
                settings: StudySettings, structural: bool = True) -> SearchSpace:
    """The space around ``plans`` (best first), as the module docstring defines it, with each
    workload's simulation floor N₀ from ``settings``; ``structural=False`` leaves out the
    structural layouts (only the plans' slots)."""
    candidates = _best_candidates(problem) if structural else {}
    workloads = []
    for w in problem.workloads:
        seen: dict[str, list[Any]] = {}
        layouts: list[Layout] = []
        for plan in plans:
            slots = plan_slots(plan, w.name)
            for key, g in slots:
                seen.setdefault(key, []).append(g)
            keys = tuple(k for k, _ in slots)
            if not any(set(lay.slots) == set(keys) for lay in layouts):
                layouts.append(Layout(name=_layout_name(plan.label), slots=keys))
        spaces: dict[str, SlotSpace] = {}
        for key, groups in seen.items():
            first = groups[0]
            spaces[key] = _slot_space(
                problem, key, first, [g.count for g in groups],
                [g.max_num_seqs for g in groups], [g.max_num_batched_tokens for g in groups],
                max(g.capacity_per_instance_per_s for g in groups), spread)
        shapes = candidates.get(w.name, {})
        for key, c in shapes.items():
            cfg = c.config
            gpi = c.gpus
            wide = problem.pool(cfg.pool).count // gpi
            if key not in spaces:
                first = EngineGroup.from_config(
                    cfg, hardware=c.hardware, gpus_per_instance=gpi, count=1,
                    max_num_seqs=c.engine_max_num_seqs,
                    enable_chunked_prefill=cfg.role != "decode", engine=problem.engine.kind)
                spaces[key] = _slot_space(problem, key, first, [], [c.engine_max_num_seqs],
                                          [cfg.max_num_batched_tokens], c.rate, spread)
            spaces[key] = spaces[key].model_copy(update={"wide_count_high": wide})
        for name, roles in STRUCTURAL:
            choices = tuple(tuple(k for k, sp in spaces.items()
                                  if sp.role == role and sp.wide_count_high > 0)
                            for role in roles)
            if all(choices):
                layouts.append(Layout(name=name, slots=tuple(k for c in choices for k in c),
                                      roles=roles, choices=choices))
        best = next(wp for wp in plans[0].workloads if wp.name == w.name)
        wanted = max(math.ceil(settings.sim_window_s * best.served_rate_per_s),
                     settings.sim_requests)
        n = min(settings.max_sim_requests, wanted)
        workloads.append(WorkloadSpace(name=w.name, slots=tuple(spaces.values()),
                                       layouts=tuple(layouts), num_requests=n,
                                       output_len_mean=best.output_len_mean,
                                       input_len_mean=best.input_len_mean))
    return SearchSpace(workloads=tuple(workloads), plan_labels=tuple(p.label for p in plans))


class _Sampler:
    """Draws parameters from an Optuna trial, or reads them from a fixed dict (the same code
    path gives a trial's deployment and checks what a plan's parameters decode to)."""

    def __init__(self, trial: Any | None, fixed: dict[str, Any] | None = None) -> None:
        self.trial = trial
        self.fixed = fixed or {}

    def categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if len(choices) == 1:
            return choices[0]
        if self.trial is None:
            return self.fixed[name]
        return self.trial.suggest_categorical(name, list(choices))

    def integer(self, name: str, low: int, high: int, log: bool = False) -> int:
        if low == high:
            return low
        if self.trial is None:
            return int(self.fixed[name])
        return int(self.trial.suggest_int(name, low, high, log=log))


def _group(ws: WorkloadSpace, s: SlotSpace, count: int, draw: _Sampler) -> GroupSetting:
    prefix = f"{ws.name}/{s.key}"
    if s.seqs_choices:
        seqs = int(draw.categorical(f"{prefix}/max_num_seqs", s.seqs_choices))
    else:
        seqs = draw.integer(f"{prefix}/max_num_seqs", s.seqs_low, s.seqs_high, log=True)
    tokens = int(draw.categorical(f"{prefix}/max_num_batched_tokens", s.tokens_choices))
    if s.role == "decode":  # a decode engine's budget only has to hold its batch
        tokens = max(tokens, seqs)
    return GroupSetting(
        slot=s.key, workload=ws.name, pool=s.pool, hardware=s.hardware, role=s.role, tp=s.tp,
        pp=s.pp, ep=s.ep, gpus_per_instance=s.gpus_per_instance, count=count,
        max_num_seqs=seqs, max_num_batched_tokens=tokens,
        enable_chunked_prefill=s.enable_chunked_prefill, prefix_caching=s.prefix_caching,
        spec_tokens=s.spec_tokens, draft_model=s.draft_model, engine=s.engine,
        capacity_per_instance_per_s=s.capacity_per_instance_per_s)


def _decode(space: SearchSpace, draw: _Sampler) -> Deployment:
    workloads = []
    for ws in space.workloads:
        layout_name = draw.categorical(f"{ws.name}/layout", [lay.name for lay in ws.layouts])
        layout = next(lay for lay in ws.layouts if lay.name == layout_name)
        router = draw.categorical(f"{ws.name}/router", ROUTERS)
        groups = []
        if layout.roles:  # structural: one group per role, any shape, any count
            for role, choices in zip(layout.roles, layout.choices, strict=True):
                s = ws.slot(draw.categorical(f"{ws.name}/{layout.name}/{role}/shape", choices))
                count = draw.integer(f"{ws.name}/{layout.name}/{s.key}/count", 1,
                                     s.wide_count_high, log=True)
                groups.append(_group(ws, s, count, draw))
        else:
            for key in layout.slots:
                s = ws.slot(key)
                count = draw.integer(f"{ws.name}/{key}/count", s.count_low, s.count_high)
                if count > 0:
                    groups.append(_group(ws, s, count, draw))
        workloads.append(WorkloadSetting(name=ws.name, router=router, groups=tuple(groups)))
    return Deployment(workloads=tuple(workloads))


def suggest(trial: Any, space: SearchSpace) -> Deployment:
    """The deployment an Optuna trial samples (or is fixed to, for enqueued trials)."""
    return _decode(space, _Sampler(trial))


def params_of(space: SearchSpace, deployment: Deployment) -> dict[str, Any]:
    """The parameters that make :func:`suggest` return ``deployment`` (to enqueue a plan).

    Raises ``ValueError`` when the deployment is not in the space."""
    params: dict[str, Any] = {}
    for ws in space.workloads:
        setting = deployment.workload(ws.name)
        used = {g.slot: g for g in setting.groups}
        layout = next((lay for lay in ws.layouts
                       if not lay.roles and set(lay.slots) == set(used)), None)
        if layout is None:
            raise ValueError(f"{ws.name}: no layout has the slots {sorted(used)}")
        if len(ws.layouts) > 1:
            params[f"{ws.name}/layout"] = layout.name
        params[f"{ws.name}/router"] = setting.router
        for key in layout.slots:
            s, g = ws.slot(key), used[key]
            prefix = f"{ws.name}/{key}"
            if s.count_low < s.count_high:
                params[f"{prefix}/count"] = g.count
            if len(s.seqs_choices) > 1 or (not s.seqs_choices and s.seqs_low < s.seqs_high):
                params[f"{prefix}/max_num_seqs"] = g.max_num_seqs
            if len(s.tokens_choices) > 1:
                params[f"{prefix}/max_num_batched_tokens"] = g.max_num_batched_tokens
    if not _decode(space, _Sampler(None, params)).same_groups(deployment):
        raise ValueError("the deployment is not reproduced by its parameters")
    return params
