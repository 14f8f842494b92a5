"""Large problems: progress lines, the secondary solves' time budget, workloads served nothing,
and the memory a wide search keeps."""

from __future__ import annotations

import pytest

from servingcast.planner import solve
from servingcast.planner.candidates import CandidateBuilder
from servingcast.planner.planning import _sweep_order
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
    assert lines[:2] == ["candidates: 1/2 workloads", "candidates: 2/2 workloads"]
    assert lines[2].startswith("candidates: ") and "configurations in the MILP" in lines[2]
    assert lines[3] == "MILP: solving…" and lines[4].startswith("MILP: best plan in ")
    assert lines[5:] == ["alternatives 1/1", "single-mode: aggregated only",
                         "single-mode: disaggregated only", "Pareto 1/2 (TPOT limits x1.6)",
                         "Pareto 2/2 (TPOT limits x0.7)"]


def test_no_time_left_skips_the_secondary_solves_not_the_best_plan(small) -> None:  # type: ignore[no-untyped-def]
    full = solve(small, top_k=3)
    cut = solve(small, top_k=3, secondary_time_s=0.0)
    assert cut.plan.signature() == full.plan.signature()
    assert full.notes == () and len(full.alternatives) == 2 and len(full.pareto) > 1
    assert cut.alternatives == () and [p.tpot_factor for p in cut.pareto] == [1.0]
    assert cut.aggregated_only is not None and cut.aggregated_only.plan is None
    assert cut.notes[0].startswith("skipped for time (0 s budget after the best plan): "
                                   "alternatives 1-2, aggregated only, disaggregated only, "
                                   "Pareto TPOT x0.4, Pareto TPOT x2, ")
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
