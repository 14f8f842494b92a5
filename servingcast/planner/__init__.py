"""The throughput planner: problem → candidates (cost model) → MILP (Pyomo/HiGHS) → plan.

The public API, imported lazily (Pyomo loads only when a problem is solved)::

    from servingcast.planner import load_problem, solve, to_scenario

    problem = load_problem("problems/quickstart.yaml")
    result = solve(problem, top_k=3)
    print(result.plan)                     # a frozen Plan
    scenario = to_scenario(problem, result.plan)

See :mod:`servingcast.planner.milp` for the mathematical program and
:mod:`servingcast.planner.capacity` for how each instance's capacity comes from the cost model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servingcast._lazy import lazy_getattr

_LAZY = {
    "Problem": "servingcast.planner.problem",
    "load_problem": "servingcast.planner.problem",
    "problem_from_dict": "servingcast.planner.problem",
    "solve": "servingcast.planner.planning",
    "PlanningResult": "servingcast.planner.planning",
    "Plan": "servingcast.planner.plan",
    "InstanceGroup": "servingcast.planner.plan",
    "WorkloadPlan": "servingcast.planner.plan",
    "SolveStatus": "servingcast.planner.plan",
    "SolverReport": "servingcast.planner.plan",
    "verify_plan": "servingcast.planner.verify",
    "to_scenario": "servingcast.planner.export",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from servingcast.planner.export import to_scenario as to_scenario
    from servingcast.planner.plan import InstanceGroup as InstanceGroup
    from servingcast.planner.plan import Plan as Plan
    from servingcast.planner.plan import SolverReport as SolverReport
    from servingcast.planner.plan import SolveStatus as SolveStatus
    from servingcast.planner.plan import WorkloadPlan as WorkloadPlan
    from servingcast.planner.planning import PlanningResult as PlanningResult
    from servingcast.planner.planning import solve as solve
    from servingcast.planner.problem import Problem as Problem
    from servingcast.planner.problem import load_problem as load_problem
    from servingcast.planner.problem import problem_from_dict as problem_from_dict
    from servingcast.planner.verify import verify_plan as verify_plan


__getattr__ = lazy_getattr(__name__, _LAZY)
