"""The MILP against brute-force enumeration of every allocation, and its own machinery."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition

from servingcast.planner.candidates import Candidate, CandidateBuilder, prune_dominated
from servingcast.planner.milp import (
    _status,
    build_model,
    exclude_plan,
    extract_allocation,
    extract_plan,
    instance_bound,
    solve_model,
)
from servingcast.planner.plan import SolveStatus
from servingcast.planner.problem import Problem

from .conftest import make_problem

EXACT = 1e-9


def _served(problem: Problem, cands: Sequence[Candidate], counts: Sequence[int]) -> dict[
        str, float]:
    cap = {(w.name, r): 0.0 for w in problem.workloads
           for r in ("aggregated", "prefill", "decode")}
    for c, n in zip(cands, counts, strict=True):
        cap[(c.config.workload, c.config.role)] += c.group_rate(n)
    out = {}
    for w in problem.workloads:
        most = cap[(w.name, "aggregated")] + min(cap[(w.name, "prefill")],
                                                 cap[(w.name, "decode")])
        out[w.name] = most if w.demand_per_s is None else min(most, w.demand_per_s)
    return out


def _allocations(problem: Problem, cands: Sequence[Candidate]):  # type: ignore[no-untyped-def]
    """Every vector of instance counts within the pools' GPUs."""
    budget = {p.name: p.count for p in problem.pools}

    def rec(i: int, left: dict[str, int], counts: list[int]):  # type: ignore[no-untyped-def]
        if i == len(cands):
            yield list(counts)
            return
        c = cands[i]
        for n in range(left[c.config.pool] // c.gpus + 1):
            left[c.config.pool] -= n * c.gpus
            counts.append(n)
            yield from rec(i + 1, left, counts)
            counts.pop()
            left[c.config.pool] += n * c.gpus

    yield from rec(0, dict(budget), [])


def brute_force(problem: Problem, cands: Sequence[Candidate]) -> float:
    """The optimum of the problem's objective over every allocation (all candidates, unpruned):
    max_goodput is lexicographic (share of the demands, then goodput); min_cost the cheapest
    allocation that serves every demand."""
    best: tuple[float, ...] | None = None
    for counts in _allocations(problem, cands):
        served = _served(problem, cands, counts)
        if problem.objective == "min_cost":
            if any(served[w.name] < (w.demand_per_s or 0) * (1 - 1e-9)
                   for w in problem.workloads):
                continue
            key: tuple[float, ...] = (-sum((c.price_per_hour or 0) * n
                                           for c, n in zip(cands, counts, strict=True)),)
        else:
            demands = [served[w.name] / w.demand_per_s for w in problem.workloads
                       if w.demand_per_s is not None]
            share = min(demands) if demands and len(problem.workloads) > 1 else 1.0
            key = (round(share, 9), sum(w.weight * served[w.name] for w in problem.workloads))
        if best is None or key > best:
            best = key
    assert best is not None
    return -best[0] if problem.objective == "min_cost" else best[-1]


def milp_optimum(problem: Problem, cands: Sequence[Candidate]) -> float:
    pm = build_model(problem, cands)
    report = solve_model(pm, time_limit_s=60, mip_gap=EXACT)
    assert report.status == SolveStatus.OPTIMAL
    plan = extract_plan(pm, report)
    if problem.objective == "min_cost":
        assert plan.cost_per_hour is not None
        return plan.cost_per_hour
    return sum(w.weight * wp.served_rate_per_s for w, wp in zip(
        problem.workloads, plan.workloads, strict=True))


SMALL_SEARCH = {"tp": [1, 2], "pp": [1], "max_num_seqs": [512], "max_num_batched_tokens": [2048]}


@pytest.mark.parametrize("case", ["maximize", "demand-cap", "aggregated", "disaggregated",
                                  "two-pools-min-cost", "two-workloads", "pooled-prefill"])
def test_milp_equals_brute_force(case: str) -> None:
    chat = {"name": "chat", "model": "llama-3.1-8b", "input_len": 1024, "output_len": 256,
            "slo": {"ttft": "400 ms", "tpot": "40 ms"}}
    pools = [{"name": "h100", "hardware": "h100-sxm", "count": 6}]
    extra: dict = {"search": SMALL_SEARCH}
    if case == "demand-cap":
        chat["demand"] = 40
    elif case in ("aggregated", "disaggregated"):
        extra["search"] = {**SMALL_SEARCH, "modes": [case]}
    elif case == "two-pools-min-cost":
        chat["demand"] = 55
        pools = [{"name": "h100", "hardware": "h100-sxm", "count": 4},
                 {"name": "a100", "hardware": "a100-sxm4-80gb", "count": 4}]
        extra["objective"] = "min_cost"
    elif case == "pooled-prefill":
        # Long prompts: a prefill group's capacity grows faster than its count (pooled queue),
        # so the brute force's f(n) and the MILP's levels must agree on the best split.
        chat.update(input_len=4000, slo={"ttft": "700 ms", "tpot": "40 ms"})
        pools = [{"name": "h100", "hardware": "h100-sxm", "count": 8}]
        extra["search"] = {**SMALL_SEARCH, "tp": [1, 2], "modes": ["disaggregated"],
                           "max_num_batched_tokens": [4096]}
    if case == "two-workloads":
        other = {"name": "rag", "model": "qwen3-8b", "input_len": 3000, "output_len": 200,
                 "demand": 12, "slo": {"ttft": "1 s", "tpot": "40 ms"}}
        extra["workloads"] = [chat, other]
        extra["search"] = {**SMALL_SEARCH, "tp": [1]}
        pools = [{"name": "h100", "hardware": "h100-sxm", "count": 5}]
    problem = make_problem(pools=pools, **({"workloads": [chat]} | extra))
    # As the MILP sees them: decode and aggregated groups pooled too (a small MILP).
    cands = tuple(c.with_groups(instance_bound(c, problem, by_demand=False))
                  for c in CandidateBuilder(problem).candidates().candidates)
    assert 2 <= len(cands) <= 14
    if case == "pooled-prefill":
        prefill = [c for c in cands if c.config.role == "prefill"]
        assert any(c.group_rate(4) > 4 * c.rate * 1.05 for c in prefill)
    pruned = prune_dominated(CandidateBuilder(problem).candidates()).candidates
    want = brute_force(problem, cands)
    # Stage (c) may give up a relative 1e-6 of goodput (STAGE_SLACK) for a cheaper plan.
    assert milp_optimum(problem, pruned) == pytest.approx(want, rel=3e-6)


def test_whole_nodes_when_sizes_do_not_divide_each_other() -> None:
    """Instances of 2 and 3 GPUs on 6-GPU nodes: first-fit cannot always pack them, so the
    node constraints (2) are in the model and every plan packs onto whole nodes."""
    problem = make_problem(pools=[{"name": "p", "hardware": "h100-sxm", "count": 12,
                                   "gpus_per_node": 6}],
                           search={**SMALL_SEARCH, "tp": [1], "pp": [2, 3],
                                   "modes": ["aggregated"]})
    cands = CandidateBuilder(problem).candidates().candidates
    assert {c.gpus for c in cands} == {2, 3}
    pm = build_model(problem, cands)
    assert hasattr(pm.model, "pool_nodes_le_budget")
    report = solve_model(pm, mip_gap=EXACT)
    alloc = extract_allocation(pm)
    per_node = [0] * 2
    for key, n in sorted(alloc.counts.items(), key=lambda kv: -pm.candidates[kv[0]].gpus):
        for _ in range(n):
            size = pm.candidates[key].gpus
            slot = next(i for i, used in enumerate(per_node) if used + size <= 6)
            per_node[slot] += size
    assert report.status == SolveStatus.OPTIMAL


def test_alternatives_are_distinct_and_no_better(small) -> None:  # type: ignore[no-untyped-def]
    cset = CandidateBuilder(small).candidates()
    pm = build_model(small, prune_dominated(cset, by_parallelism=True).candidates,
                     alternatives=True)
    plans = []
    for _ in range(3):
        report = solve_model(pm, mip_gap=EXACT)
        if not report.status.has_solution:
            break
        plan = extract_plan(pm, report)
        plans.append(plan)
        exclude_plan(pm, [g.name for g in plan.groups])
    assert len(plans) == 3
    goodputs = [p.served_rate_per_s for p in plans]
    assert goodputs == sorted(goodputs, reverse=True)
    for i, later in enumerate(plans):
        for earlier in plans[:i]:
            assert {g.name for g in earlier.groups} - {g.name for g in later.groups}


def test_status_mapping() -> None:
    tc, ss = TerminationCondition, SolutionStatus
    assert _status(tc.convergenceCriteriaSatisfied, ss.optimal) == SolveStatus.OPTIMAL
    assert _status(tc.maxTimeLimit, ss.feasible) == SolveStatus.FEASIBLE
    assert _status(tc.maxTimeLimit, ss.noSolution) == SolveStatus.NO_SOLUTION
    assert _status(tc.provenInfeasible, ss.noSolution) == SolveStatus.INFEASIBLE
    assert _status(tc.error, ss.noSolution) == SolveStatus.ERROR
    assert SolveStatus.FEASIBLE.has_solution and not SolveStatus.INFEASIBLE.has_solution


def test_min_cost_beyond_the_pools_is_infeasible() -> None:
    problem = make_problem(objective="min_cost", workloads=[{
        "name": "chat", "model": "llama-3.1-8b", "input_len": 1024, "output_len": 256,
        "demand": 10_000, "slo": {"ttft": "500 ms", "tpot": "50 ms"}}], search=SMALL_SEARCH)
    pm = build_model(problem, CandidateBuilder(problem).candidates().candidates)
    assert solve_model(pm).status == SolveStatus.INFEASIBLE


def test_report_names_and_sizes(small) -> None:  # type: ignore[no-untyped-def]
    pm = build_model(small, CandidateBuilder(small).candidates().candidates)
    names = {c.name for c in pm.model.component_objects()}
    for expected in ("pool_gpus_le_budget", "served_rate_eq_parts",
                     "aggregated_rate_le_capacity", "disaggregated_rate_le_prefill_capacity",
                     "disaggregated_rate_le_decode_capacity", "served_rate_le_demand"):
        assert expected in names
    report = solve_model(pm)
    assert report.variables > 0 and report.constraints > 0 and report.time_s >= 0
    assert report.gap is not None and report.gap <= 1e-3 + 1e-12
    assert math.isclose(report.objective or 0.0, report.objective_bound or 0.0, rel_tol=1e-3)



def test_highs_rejecting_its_own_optimum_is_solved_again() -> None:
    # random-03 of scripts/bench_plan_quality.py: HiGHS 1.16 "claims optimality, but with
    # ... primal infeasibilities" (1e-6, its tolerance) and reports a solve error; the planner
    # solves again at a 1e-5 MIP feasibility tolerance and the plan re-checks.
    from servingcast.planner import solve, verify_plan
    from servingcast.planner.problem import problem_from_dict

    problem = problem_from_dict({
        "name": "random-03", "pools": [{"name": "h200", "hardware": "h200-sxm", "count": 32}],
        "network": {"bandwidth_per_gpu": "50 GB/s"},
        "workloads": [{"name": "w", "model": "qwen3-8b", "precision": "bf16",
                       "input_len": 8000, "output_len": 1000,
                       "slo": {"ttft": "4 s", "tpot": "80 ms", "attainment": 0.95}}],
        "search": {"tp": [1, 2, 4, 8], "pp": [1], "max_num_seqs": [128, 256, 512],
                   "max_num_batched_tokens": [2048, 8192]}})
    plan = solve(problem, top_k=1, pareto_factors=None, compare_modes=False).plan
    assert plan.served_rate_per_s > 40 and verify_plan(problem, plan) == []
