"""Large problems: progress lines, the secondary solves' time budget, workloads served nothing,
the memory a wide search keeps, and what makes them fast (vectorised root finding, batched
rating, the reduced MILP) giving the results of the plain methods."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from servingcast.planner import milp, solve
from servingcast.planner.candidates import (
    TTFT_MARGIN,
    Candidate,
    CandidateBuilder,
    prune_dominated,
)
from servingcast.planner.capacity import AggregatedProfile, PrefillProfile
from servingcast.planner.milp import build_model, extract_plan, solve_model
from servingcast.planner.plan import SolveStatus
from servingcast.planner.planning import _sweep_order
from servingcast.planner.queueing import (
    _gamma_sf,
    _jsq_wait_law,
    _tail,
    gated_batch_ttft_quantile_s,
    jsq_wait_quantile_s,
    pooled_rates_per_s,
    ttft_miss_fraction,
    wait_plus_service_quantile_s,
)
from servingcast.planner.report import format_result

from .conftest import make_problem

CHAT = {"model": "llama-3.1-8b", "precision": "bf16", "input_len": 1024, "output_len": 256,
        "slo": {"ttft": "500 ms", "tpot": "50 ms", "attainment": 0.9}}


def test_a_maximized_workload_left_out_is_explained() -> None:
    problem = make_problem(workloads=[{"name": "w1", **CHAT}, {"name": "w2", **CHAT,
                                                                "weight": 0.5}])
    result = solve(problem, top_k=1, pareto_factors=None, compare_modes=False)
    served = {w.name: w.served_rate_per_s for w in result.plan.workloads}
    assert served["w1"] > 0 and served["w2"] == 0
    note = next(n for n in result.plan.notes if n.startswith("w2:"))
    assert note.startswith("w2: 0 req/s — the MILP gives the GPUs left after the demands to "
                           "w1, whose weighted goodput per GPU is higher (w1: weight 1 x up to ")
    assert "w2: weight 0.5 x up to " in note
    assert note.endswith("To serve w2: give it a demand (demands are served first) or a weight "
                         "above 1")
    assert f"Note: {note}" in format_result(result)
    # The figures are the same workload's: the weight alone decides.
    per_gpu = note.split("up to ")
    assert per_gpu[1].split(" req/s")[0] == per_gpu[2].split(")")[0]


def test_progress_lines() -> None:
    lines: list[str] = []
    problem = make_problem(workloads=[{"name": "a", **CHAT}, {"name": "b", **CHAT}])
    solve(problem, top_k=2, pareto_factors=(0.7, 1.0, 1.6), progress=lines.append)
    assert lines[:4] == ["candidates: 1/2 workloads", "candidates: 2/2 workloads",
                         "candidates: pooled prefill queues",
                         "candidates: TTFT of aggregated configurations"]
    assert lines[4].startswith("candidates: ") and "configurations in the MILP" in lines[4]
    # A line per MILP stage (most goodput, then least cost for it) and for the plan's check.
    assert lines[5:9] == ["MILP: solving…", "MILP: most goodput",
                          "MILP: least cost for that goodput", "MILP: checking the plan"]
    assert lines[9].startswith("MILP: best plan in ")
    # The Pareto sweeps (3 TPOT limits, then 5 TTFT limits): a line for every fifth TPOT
    # limit and every TTFT limit.
    assert lines[10:] == ["alternatives 1/1", "single-mode: aggregated only",
                          "single-mode: disaggregated only", "Pareto 1/8 (TPOT limits x1)",
                          "Pareto 5/8 (TTFT limits x0.5)", "Pareto 6/8 (TTFT limits x2)",
                          "Pareto 7/8 (TTFT limits x0.707)", "Pareto 8/8 (TTFT limits x1.41)"]


def test_no_time_left_skips_the_secondary_solves_not_the_best_plan(small) -> None:  # type: ignore[no-untyped-def]
    full = solve(small, top_k=3)
    cut = solve(small, top_k=3, secondary_time_s=0.0)
    assert cut.plan.signature() == full.plan.signature()
    assert full.notes == () and len(full.alternatives) == 2 and len(full.pareto) > 1
    assert cut.alternatives == () and [p.tpot_factor for p in cut.pareto] == [1.0]
    assert cut.aggregated_only is not None and cut.aggregated_only.plan is None
    assert cut.notes[0].startswith("skipped for time (0 s budget after the best plan): "
                                   "alternatives 1-2, aggregated only, disaggregated only, "
                                   "Pareto sweep. To get them: ")
    assert "Note: skipped for time" in format_result(cut)


def test_the_sweep_spans_the_range_first() -> None:
    assert _sweep_order((0.4, 0.55, 0.7, 0.85, 1.0, 1.25, 1.6, 2.0)) == [
        1.0, 0.4, 2.0, 0.7, 0.55, 1.25, 1.6, 0.85]
    assert _sweep_order(()) == [1.0]


def test_costed_profiles_release_their_iterations(small) -> None:  # type: ignore[no-untyped-def]
    builder = CandidateBuilder(small)
    cset = builder.candidates()
    assert all(e.profile is None or e.profile.request.micro.size == 0 for e in builder.entries)
    # Capacities under other limits (the Pareto sweep) still come from the kept curves.
    assert len(builder.candidates(tpot_scale=2.0).candidates) >= len(cset.candidates)
    assert pytest.approx(cset.candidates[0].rate) == builder.candidates().candidates[0].rate


# -- what makes large problems fast keeps the results --------------------------------------


def _bisect(miss: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray,
            rising: bool) -> np.ndarray:
    """Plain bisection (100 halvings) for where ``miss`` crosses 0.1: the reference."""
    lo, hi = lo.copy(), hi.copy()
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        below = (miss(mid) <= 0.1) if rising else (miss(mid) > 0.1)
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return lo if rising else hi


def test_ttft_quantiles_equal_bisection() -> None:
    rng = np.random.default_rng(3)
    rows, q = 400, 0.9
    own = np.sort(rng.lognormal(-2.0, 0.8, (rows, 32)), axis=1)
    own[:50] = own[:50, :1]  # one prompt length: the quantile sits on a jump of the mixture
    lam, tau = rng.uniform(0.1, 40.0, rows), rng.uniform(0.005, 0.05, rows)
    es = own.mean(axis=1) * rng.uniform(0.05, 0.6, rows)
    es2 = es**2 * rng.uniform(1.0, 3.0, rows)
    _, a, p_wait, mean = _jsq_wait_law(1.0, lam, es, es2)
    stable = a < 1.0
    lo = np.quantile(own, q, axis=1)
    hi = jsq_wait_quantile_s(q, 1.0, lam, es, es2) + own.max(axis=1)

    def mg1_miss(t: np.ndarray) -> np.ndarray:
        return _tail(t[:, None] - own, p_wait[:, None], mean[:, None],
                     ~stable[:, None]).mean(axis=1)

    want = _bisect(mg1_miss, lo, np.where(stable, hi, lo), rising=False)
    got = wait_plus_service_quantile_s(q, 1.0, lam, es, es2, own)
    assert np.array_equal(np.isinf(got), ~stable) and stable.sum() > 200
    np.testing.assert_allclose(got[stable], want[stable], rtol=1e-12)

    work = es / 4.0
    gated = gated_batch_ttft_quantile_s(q, lam, tau, work, es2 / 16.0, own)
    finite = np.isfinite(gated)
    assert finite.sum() > 200
    # The gated law's mixture is solved by regula falsi (not bisection): to 1e-12 where it is
    # not flat, and never on the wrong side of the quantile.
    rho = lam * work
    d1 = tau / (1.0 - rho)
    var_d = lam * d1 * es2 / 16.0 / (1.0 - rho**2)
    d2, d3 = d1**2 + var_d, d1**3 + 3 * d1 * var_d + 2 * var_d**2 / d1
    mean_x = (0.5 + rho) * d2 / d1
    var_x = np.maximum((1 / 3 + rho + rho**2) * d3 / d1 + lam * es2 / 16.0 * d2 / d1
                       - mean_x**2, 1e-12 * mean_x**2)

    def gated_miss(t: np.ndarray) -> np.ndarray:
        return _gamma_sf(t[:, None] - own, mean_x[:, None], var_x[:, None]).mean(axis=1)

    glo = np.quantile(own, q, axis=1)
    want = _bisect(gated_miss, glo, glo + 20 * (mean_x + np.sqrt(var_x)), rising=False)
    np.testing.assert_allclose(gated[finite], want[finite], rtol=1e-9)
    assert np.all(gated_miss(np.where(finite, gated, glo))[finite] <= 0.1 * (1 + 1e-12))


def test_pooled_rates_equal_bisection_and_do_not_depend_on_their_neighbours() -> None:
    es, es2, limit, points = 0.45, 0.45**2 * 1.3, 1.0, np.linspace(0.2, 0.7, 8)
    servers = np.arange(1.0, 65.0)
    got = pooled_rates_per_s(0.9, servers, es, es2, points, limit)
    want = _bisect(lambda lam: ttft_miss_fraction(limit, servers, lam, es, es2, points),
                   np.zeros_like(servers), servers / es, rising=True)
    np.testing.assert_allclose(got, want, rtol=1e-11)
    # Solved beside other queues (another limit, other service times), the same numbers.
    both = pooled_rates_per_s(0.9, servers[None, :], np.array([[es], [0.3]]),
                              np.array([[es2], [0.1]]),
                              np.stack([points, points * 0.6])[:, None, :],
                              np.array([[limit], [0.8]]))
    assert np.array_equal(both[0], got)


def test_batched_rating_equals_one_profile_at_a_time() -> None:
    problem = make_problem(workloads=[{"name": "a", **CHAT, "input_len": 3000}],
                           pools=[{"name": "h100", "hardware": "h100-sxm", "count": 16}],
                           search={"tp": [1, 2], "pp": [1], "max_num_seqs": [256, 512],
                                   "max_num_batched_tokens": [2048, 4096]})
    batched = CandidateBuilder(problem).candidates()  # solve_group_rates and solve_ttft
    alone = CandidateBuilder(problem)
    for e in alone.entries:  # each profile's own solves, on demand
        if isinstance(e.profile, PrefillProfile):
            e.profile.group_rates(0.5 * (1 - TTFT_MARGIN), 16 // e.gpus)
        elif isinstance(e.profile, AggregatedProfile):
            assert e.profile.ttft.size > 0
    one = alone.candidates()
    assert [c.key for c in one.candidates] == [c.key for c in batched.candidates]
    roles = {c.config.role for c in batched.candidates}
    assert roles == {"aggregated", "prefill", "decode"}
    for x, y in zip(batched.candidates, one.candidates, strict=True):
        assert x.capacity == y.capacity and x.pooled == y.pooled


def test_large_model_reductions_keep_the_optimum(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dominance across sizes, demand bounds and warm starts (``LARGE_MILP``) on a problem
    small enough to solve exactly both ways."""
    problem = make_problem(
        workloads=[{"name": "a", **CHAT, "demand": "30 req/s"},
                   {"name": "b", **CHAT, "input_len": 3000, "demand": "6 req/s"},
                   {"name": "c", **CHAT, "weight": 0.5}],
        pools=[{"name": "h100", "hardware": "h100-sxm", "count": 16}],
        search={"tp": [1, 2, 4], "pp": [1], "max_num_seqs": [512],
                "max_num_batched_tokens": [2048, 8192]})
    cset = CandidateBuilder(problem).candidates()
    full = prune_dominated(cset).candidates
    reduced = prune_dominated(cset, across_sizes=True).candidates
    assert len(reduced) < len(full)

    def best(cands: tuple[Candidate, ...]) -> tuple[float, float]:
        pm = build_model(problem, cands)
        report = solve_model(pm, time_limit_s=60, mip_gap=1e-9)
        assert report.status == SolveStatus.OPTIMAL
        plan = extract_plan(pm, report)
        assert plan.cost_per_hour is not None
        return plan.objective_value, plan.cost_per_hour

    want = best(full)
    monkeypatch.setattr(milp, "LARGE_MILP", 1)
    pm = build_model(problem, reduced)
    assert pm.large
    bounds = [v.ub for v in pm.model.instances.values()]
    assert min(bounds) < 16 // max(c.gpus for c in reduced)  # a demand bounds some counts
    got = best(reduced)
    assert got[0] == pytest.approx(want[0], rel=3e-6)
    assert got[1] == pytest.approx(want[1], rel=3e-6)


def test_patience_stops_within_its_gap_and_the_next_solve_is_whole(
        caplog: pytest.LogCaptureFixture) -> None:
    problem = make_problem(
        workloads=[{"name": "a", **CHAT, "demand": "30 req/s"},
                   {"name": "b", **CHAT, "input_len": 3000, "demand": "6 req/s"},
                   {"name": "c", **CHAT, "weight": 0.5}],
        pools=[{"name": "h100", "hardware": "h100-sxm", "count": 64}],
        search={"tp": [1, 2, 4], "pp": [1], "max_num_seqs": [512],
                "max_num_batched_tokens": [2048, 8192]})
    pm = build_model(problem, prune_dominated(CandidateBuilder(problem).candidates()).candidates)
    # Patient from the start with any gap: HiGHS stops at its first callback with a plan.
    hasty = solve_model(pm, time_limit_s=60, mip_gap=1e-9, patience_s=0.0, patience_gap=1.0)
    assert hasty.status == SolveStatus.FEASIBLE and hasty.termination == "interrupted"
    assert hasty.gap is not None and hasty.gap > 1e-9
    assert "unhandled" not in caplog.text
    # HiGHS keeps an interrupt for its next run unless told otherwise: this one runs to the end.
    whole = solve_model(pm, time_limit_s=60, mip_gap=1e-9)
    assert whole.status == SolveStatus.OPTIMAL and whole.gap == pytest.approx(0.0, abs=1e-9)
    assert whole.objective is not None and hasty.objective is not None
    assert whole.objective >= hasty.objective
