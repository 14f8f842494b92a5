"""Refining the MILP's plans with an Optuna study whose every trial is simulated.

The MILP plans with steady-state capacities; the simulator sees queues, bursts, tails and
scheduler limits. :func:`refine` searches around the MILP's best plans (instance counts, so
the P:D split, tp/pp among the top plans, ``max_num_seqs``, the chunk budget, the router),
scores every trial by the highest arrival rate the simulator sustains within the SLOs, and
returns the best plan found — never worse than the MILP plan, which is trial 0::

    from servingcast.planner import load_problem, solve
    from servingcast.refine import RefineOptions, refine

    problem = load_problem("problems/quickstart.yaml")
    result = refine(problem, solve(problem), RefineOptions(trials=50,
                                                           storage="out/study.log"))
    print(result.plan, result.gain, result.dashboard_command)

Studies live in an Optuna journal file (a path, shared by local worker processes) or any
Optuna RDB storage (a URL); :func:`join` runs a worker on an existing study from another
machine. See :mod:`servingcast.refine.space` for the search space,
:mod:`servingcast.refine.evaluate` for the rate search and :mod:`servingcast.refine.objective`
for values and constraints. Optuna is imported only when a study is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servingcast._lazy import lazy_getattr

_LAZY = {
    "RefineOptions": "servingcast.refine.options",
    "StudySettings": "servingcast.refine.options",
    "RefinedResult": "servingcast.refine.result",
    "WorkerReport": "servingcast.refine.run",
    "refine": "servingcast.refine.run",
    "join": "servingcast.refine.run",
    "format_refinement": "servingcast.refine.report",
    "refined_section": "servingcast.refine.report",
    "apply_refinement": "servingcast.refine.report",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from servingcast.refine.options import RefineOptions as RefineOptions
    from servingcast.refine.options import StudySettings as StudySettings
    from servingcast.refine.report import apply_refinement as apply_refinement
    from servingcast.refine.report import format_refinement as format_refinement
    from servingcast.refine.report import refined_section as refined_section
    from servingcast.refine.result import RefinedResult as RefinedResult
    from servingcast.refine.run import WorkerReport as WorkerReport
    from servingcast.refine.run import join as join
    from servingcast.refine.run import refine as refine


__getattr__ = lazy_getattr(__name__, _LAZY)
