"""What ``servingcast-solve --output DIR`` writes, as data first and files last.

:func:`to_scenario` turns a plan into a simulator scenario (``servingcast-simulate`` checks the
plan at its planned load) through :func:`groups_scenario`, which builds it from engine groups
(:class:`servingcast.groups.EngineGroup`) alone, as the refinement does for its trials;
:func:`render_outputs` renders every output file to bytes without touching the disk. Writing
them is the CLI's job, through :func:`servingcast._output.write_outputs` (no overwrite unless
asked; all files or none).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from servingcast.errors import ConfigError
from servingcast.groups import ROLES, EngineGroup, Part, unique_labels
from servingcast.planner.pareto import pareto_csv, pareto_json, pareto_png
from servingcast.planner.plan import Plan
from servingcast.planner.problem import Problem, Workload
from servingcast.workload import FixedLength

if TYPE_CHECKING:
    from servingcast.planner.planning import ModeComparison, PlanningResult

#: Simulated requests per scenario: a minute of traffic at the planned rate, within these bounds.
SCENARIO_REQUESTS = (1000, 10_000)

OUTPUT_FILES = ("plan.json", "alternatives.json", "pareto.csv", "pareto.png", "scenario.yaml")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:g} ms"


def _length(dist: Any) -> Any:
    data = dist.model_dump(mode="json", exclude_none=True)
    if data.get("kind") == "fixed":
        return data["value"]
    if data.get("values") is not None:
        data.pop("path", None)
        data.pop("column", None)
    return data


def default_router(workload: Workload, part: str) -> str:
    """The router a part of a plan is exported with (and its refinement starts from).

    Least-outstanding balances instances whose requests differ in length. When every request
    has the same prompt and output length, round-robin is the perfect balance, and a
    count-based router phase-locks aggregated instances: requests admitted together finish
    together, the instance is then the least loaded by several, takes the next arrivals in a
    burst and queues their prompts (the simulator showed TTFT p90 climbing from 60 to 220 ms
    over a 120 000-request run at half capacity, against a flat 40 ms with round-robin).
    Prefill groups keep least-outstanding: they are planned as pooled queues behind it."""
    fixed = (isinstance(workload.input_len, FixedLength)
             and isinstance(workload.output_len, FixedLength))
    return "round_robin" if part == "aggregated" and fixed else "least_outstanding"


def to_scenario(problem: Problem, plan: Plan, workload: str | None = None,
                part: str | None = None) -> dict[str, Any]:
    """A simulator scenario (``servingcast.sim.scenario``) of ``workload``'s groups in ``plan``,
    with Poisson arrivals at the planned rate and the workload's lengths and SLOs.

    Each group is one pool behind the router: when a role has several groups, each gets its
    planned share of the traffic as its ``weight`` (the MILP adds the groups' capacities, which
    holds only if the traffic is split that way); prefill groups chunk prompts longer than
    their token budget (``enable_chunked_prefill``), as the planner's service times assume.

    A scenario holds one model and one mode, so a workload served both aggregated and
    disaggregated (a mixed plan) becomes two scenarios, ``part="aggregated"`` and
    ``part="disaggregated"``, each at the rate the plan gives that part (the two parts share no
    instance, so they can be checked apart). The KV-transfer link is the slowest prefill or
    decode instance's, and each group's own ``network_bandwidth`` is its instances' link: the
    per-GPU bandwidth (``network.bandwidth_per_gpu``, else the pool hardware's inter-node link)
    times its GPUs. A problem's ``engine`` other than vLLM becomes the scenario's ``engine``
    (the groups' limits are the plan's, so only the engine's scheduling policy applies).
    """
    names = [w.name for w in plan.workloads]
    if workload is None:
        if len(names) != 1:
            raise ConfigError(f"the plan serves {len(names)} workloads ({', '.join(names)}); a "
                              "scenario holds one model. To fix: pass workload=<name>")
        workload = names[0]
    wp = next((w for w in plan.workloads if w.name == workload), None)
    if wp is None:
        raise ConfigError(f"no workload {workload!r} in the plan. To fix: use one of {names}")
    groups = list(wp.groups)
    parts: list[Part] = sorted({g.part for g in groups})
    if part is None:
        if len(parts) > 1:
            raise ConfigError(f"workload {workload!r} is served both aggregated and "
                              "disaggregated; a scenario holds one mode. To fix: pass "
                              "part='aggregated' or part='disaggregated'")
        part = parts[0] if parts else "aggregated"
    mode: Part = "aggregated" if part == "aggregated" else "disaggregated"
    groups = [g for g in groups if g.part == mode]
    rate = wp.aggregated_rate_per_s if mode == "aggregated" else wp.disaggregated_rate_per_s
    if not groups or rate <= 0:
        raise ConfigError(f"workload {workload!r} has no {part} groups in the plan")
    return groups_scenario(problem, workload, mode, groups, rate,
                           [g.rate_per_instance_per_s * g.count for g in groups])


def groups_scenario(problem: Problem, workload: str, part: Part,
                    groups: Sequence[EngineGroup], rate: float,
                    planned_per_s: Sequence[float]) -> dict[str, Any]:
    """The simulator scenario of ``groups`` (one part of ``workload``: its aggregated groups,
    or its prefill and decode groups) at ``rate`` req/s, as :func:`to_scenario` describes it.

    ``planned_per_s[i]`` is the req/s the plan gives group ``i`` (its routing ``weight`` when
    its role has several groups). The scenario's groups are named by
    :func:`servingcast.groups.unique_labels` and keep the order of ``groups``, so instance
    ``i`` of the simulation belongs to ``groups[group_of_instances(counts)[i]]``.
    """
    if len(planned_per_s) != len(groups):
        raise ConfigError(f"{len(groups)} groups but {len(planned_per_s)} planned rates")
    wrong = [g.role for g in groups if g.part != part]
    if wrong or not groups:
        raise ConfigError(f"workload {workload!r}: the {part} part cannot hold "
                          f"{', '.join(wrong) or 'no'} groups")
    w = problem.workload(workload)
    search = problem.search
    entries: list[dict[str, Any]] = [{
        "name": name, "count": g.count, "hardware": g.hardware,
        "role": g.role, "tp": g.tp, "pp": g.pp, "ep": g.ep, "max_num_seqs": g.max_num_seqs,
        "max_num_batched_tokens": g.max_num_batched_tokens,
        "enable_chunked_prefill": g.enable_chunked_prefill, "block_size": search.block_size,
        "gpu_memory_utilization": search.gpu_memory_utilization,
        "enable_prefix_caching": g.prefix_caching,
    } for g, name in zip(groups, unique_labels(groups), strict=True)]
    for entry, g in zip(entries, groups, strict=True):
        if g.attn_dp > 1:  # DEP: the scenario's limits are each attention rank's
            entry.update(attn_dp=g.attn_dp, max_num_seqs=g.rank_max_num_seqs,
                         max_num_batched_tokens=g.rank_max_num_batched_tokens)
        speculative = _speculative(problem, g)
        if speculative is not None:
            entry["speculative"] = speculative
    # The plan splits each role's traffic between its groups by capacity: when a role has
    # several groups, the scenario's gateway does the same (weights = planned req/s).
    for role in ROLES:
        members = [i for i, g in enumerate(groups) if g.role == role]
        if len(members) > 1:
            for i in members:
                entries[i]["weight"] = round(max(planned_per_s[i], 1e-6), 6)
    lo, hi = SCENARIO_REQUESTS
    scenario: dict[str, Any] = {"model": w.model, "precision": w.precision}
    if w.kv_cache_dtype is not None:
        scenario["kv_cache_dtype"] = w.kv_cache_dtype
    engine = problem.engine
    if engine.kind != "vllm":  # every group runs the problem's engine
        options = engine.model_dump(mode="json", exclude_defaults=True)
        if engine.kind == "sglang":
            # The capacity model plans mixed iterations (a prefill chunk beside the decodes),
            # SGLang's --enable-mixed-chunk, which the launch files turn on; its default
            # prefill-first iterations are not modelled.
            options["enable_mixed_chunk"] = True
        scenario["engine"] = {"kind": engine.kind, **options} if options else engine.kind
    scenario["instance_groups"] = entries
    scenario["router"] = {"kind": default_router(w, part)}
    if part == "disaggregated":
        links = []
        for entry, g in zip(entries, groups, strict=True):
            spec = problem.pool(g.pool).spec
            per_gpu = problem.network.per_gpu_bytes_s(spec)
            links.append((per_gpu * g.gpus_per_instance, spec.inter_node.latency_us))
            # Each instance's links are its GPUs' NICs, as the planner's capacities assume.
            entry["network_bandwidth"] = f"{per_gpu * g.gpus_per_instance / 1e9:g} GB/s"
        bw, latency = min(links)
        scenario["network"] = {"bandwidth": f"{bw / 1e9:g} GB/s", "latency": f"{latency:g} us"}
    scenario["workload"] = {
        "num_requests": int(min(hi, max(lo, round(60 * rate)))),
        "arrival": {"kind": "poisson", "rate": round(rate, 6)},
        "input_len": _length(w.input_len),
        "output_len": _length(w.output_len),
    }
    if w.prefix is not None:  # shared prefixes / sessions: what prefix caching hits
        scenario["workload"]["prefix"] = w.prefix.model_dump(mode="json")
    scenario["slo"] = {"ttft": _ms(w.slo.ttft_s), "tpot": _ms(w.slo.tpot_s),
                       "attainment": w.slo.attainment}
    scenario["seed"] = 0
    return scenario


def _speculative(problem: Problem, g: EngineGroup) -> dict[str, Any] | None:
    """The ``speculative`` section of group ``g``'s scenario entry (None when it does not
    speculate): its draft (a catalog model or ``mtp``), tokens and the problem's acceptance
    rate. Each group carries its own, so a part whose groups speculate differently — or not at
    all — is simulated as planned."""
    spec = problem.search.speculative
    if g.role == "prefill" or g.spec_tokens <= 0 or g.draft_model is None or spec is None:
        return None
    return {"draft_model": g.draft_model, "acceptance_rate": spec.acceptance_rate,
            "num_speculative_tokens": g.spec_tokens}


#: Renders one part of a plan (workload, mode, rate, whether the workload has both modes) as
#: ``(scenario data, header comment)``.
PartRenderer = Callable[[str, str, float, bool], tuple[dict[str, Any], str]]


def hardware_files(problem: Problem) -> dict[str, tuple[str, str]]:
    """The devices of ``problem``'s pools that come from a YAML file of the user's (e.g. from
    ``servingcast calibrate``), by name: ``(file name, YAML)``. The output folder gets a copy
    (``hardware-<name>.yaml``) and its scenarios point at it, so ``servingcast-simulate`` runs
    them in a fresh process and the folder holds no absolute path."""
    out: dict[str, tuple[str, str]] = {}
    for pool in problem.pools:
        if Path(pool.hardware).suffix in (".yaml", ".yml"):
            spec = pool.spec
            text = (f"# {spec.name}: copied from the problem's hardware file "
                    f"{Path(pool.hardware).name} by servingcast-solve.\n"
                    + yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, width=100))
            out[spec.name] = (f"hardware-{spec.name}.yaml", text)
    return out


def plan_scenario_files(plan: Plan, render: PartRenderer, label: str,
                        problem: Problem | None = None) -> dict[str, str]:
    """Name and assemble the scenario files of ``plan``, each part rendered by ``render``:
    ``scenario.yaml`` when the plan is one workload in one mode; otherwise
    ``scenario-<workload>[-<mode>].yaml`` for each part, and ``scenario.yaml`` repeating the part
    of the first workload that carries the most traffic. ``label`` names the plan in comments.
    With ``problem``, devices from the user's own files are copied next to the scenarios
    (:func:`hardware_files`)."""
    devices = hardware_files(problem) if problem is not None else {}
    parts: list[tuple[str, str, float]] = []
    for wp in plan.workloads:
        if wp.aggregated_rate_per_s > 0:
            parts.append((wp.name, "aggregated", wp.aggregated_rate_per_s))
        if wp.disaggregated_rate_per_s > 0:
            parts.append((wp.name, "disaggregated", wp.disaggregated_rate_per_s))
    mixed = {name for name, _, _ in parts if sum(1 for n, _, _ in parts if n == name) > 1}
    files: dict[str, str] = {}
    for name, mode, rate in parts:
        data, header = render(name, mode, rate, name in mixed)
        for group in data.get("instance_groups", []):
            if group.get("hardware") in devices:
                group["hardware"] = devices[group["hardware"]][0]
        suffix = f"-{mode}" if name in mixed else ""
        files[f"scenario-{name}{suffix}.yaml"] = header + yaml.safe_dump(
            data, sort_keys=False, width=100)
    if not files:
        return {}
    copies = {file: text for file, text in devices.values()}
    if len(files) == 1:
        return {"scenario.yaml": next(iter(files.values())), **copies}
    first = parts[0][0]
    main = max((p for p in parts if p[0] == first), key=lambda p: p[2])
    suffix = f"-{main[1]}" if first in mixed else ""
    others = ", ".join(sorted(files))
    files["scenario.yaml"] = (f"# One of several scenarios of {label} ({others}); this one "
                              "repeats the busiest part of the first workload.\n"
                              + files[f"scenario-{first}{suffix}.yaml"])
    return {**files, **copies}


def scenario_files(problem: Problem, plan: Plan) -> dict[str, str]:
    """Every scenario of ``plan`` as YAML, each part at its planned load (see
    :func:`plan_scenario_files` for the file names)."""

    def render(name: str, mode: str, rate: float, mixed: bool) -> tuple[dict[str, Any], str]:
        header = (f"# {plan.label} plan for {problem.name!r}: workload {name!r}"
                  + (f", its {mode} part" if mixed else "")
                  + f", at its planned load ({rate:.4g} req/s).\n"
                  "# Check it with: servingcast-simulate <this file>\n")
        return to_scenario(problem, plan, name, mode), header

    return plan_scenario_files(plan, render, "this plan", problem)


def result_dict(result: PlanningResult) -> dict[str, Any]:
    """The whole planning result as JSON-ready data (``--json``)."""
    return {
        "plan": plan_json_dict(result),
        "alternatives": [a.to_dict() for a in result.alternatives],
        "aggregated_only": _comparison(result.aggregated_only),
        "disaggregated_only": _comparison(result.disaggregated_only),
        "pareto": pareto_json(result.pareto),
    }


def _comparison(c: ModeComparison | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"mode": c.mode, "plan": c.plan.to_dict() if c.plan else None, "reason": c.reason}


def plan_json_dict(result: PlanningResult) -> dict[str, Any]:
    """``plan.json``: the best plan, with the candidate counts, timings and refinement state."""
    data: dict[str, Any] = result.plan.to_dict()
    data["refined"] = result.refined
    data["refinement"] = result.refinement
    data["candidates"] = result.candidates.model_dump(mode="json")
    data["timings"] = result.timings.model_dump(mode="json")
    return data


def render_outputs(result: PlanningResult) -> dict[str, bytes]:
    """Every output file's name and bytes (nothing is written)."""
    problem, plan = result.problem, result.plan
    files: dict[str, bytes] = {
        "plan.json": json.dumps({**plan_json_dict(result), "pareto": pareto_json(result.pareto)},
                                indent=2).encode(),
        "alternatives.json": json.dumps({
            "alternatives": [a.to_dict() for a in result.alternatives],
            "aggregated_only": _comparison(result.aggregated_only),
            "disaggregated_only": _comparison(result.disaggregated_only),
        }, indent=2).encode(),
        "pareto.csv": pareto_csv(result.pareto).encode(),
    }
    files["pareto.png"] = pareto_png(
        result.pareto, f"{problem.name}: output tokens/s per GPU, per mode, as the SLO limits vary")
    for name, text in scenario_files(problem, plan).items():
        files[name] = text.encode()
    return files
