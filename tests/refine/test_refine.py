"""refine() end to end on a tiny problem: the MILP plan is trial 0 and the result never
worse; trials carry their plan, one metrics attribute and the MILP's prediction; the study
names its values; seeded runs repeat; min_cost uses constraints; the Pareto mode gives a
front; Optuna's logging and the warning filters are left as they were."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import optuna

from servingcast.refine import refine
from servingcast.refine.deployment import deployment_of
from servingcast.refine.objective import evaluation_of, is_simulated
from servingcast.refine.study import open_storage

from .conftest import fast_options, planning_of, sqlite, tiny_data, tiny_problem


def test_milp_plan_is_trial_zero_and_never_beaten_by_worse(tmp_path: Path) -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    url = sqlite(tmp_path / "study.db")
    result = refine(problem, planning, fast_options(trials=8, storage=url))
    assert result.milp_trial == 0
    assert result.trials[0].source == "milp: best"
    assert result.value >= result.milp_value
    best = max(t.objective_value for t in result.trials if t.feasible)
    assert result.value == best
    assert result.plan.refined and result.plan.label == "refined"
    assert result.plan.served_rate_per_s == result.evaluation.served_per_s
    assert result.stats.simulated == 8 and result.stats.new_trials == 8
    assert result.stats.finished == 8 + result.stats.infeasible + result.stats.duplicates
    assert result.dashboard_command == f"optuna-dashboard {url}"
    study = optuna.load_study(study_name="tiny", storage=open_storage(url))
    assert study.metric_names == ["goodput (req/s)"]
    attrs = study.trials[0].user_attrs
    assert set(attrs) == {"source", "plan", "milp_prediction", "worker", "metrics"}
    metrics = attrs["metrics"]
    assert json.loads(json.dumps(metrics)) == metrics
    for key in ("objective_value", "goodput_req_s", "attainment", "ttft_p50_ms", "ttft_p90_ms",
                "ttft_p99_ms", "tpot_p50_ms", "tpot_p90_ms", "tpot_p99_ms",
                "tokens_per_s_per_gpu", "tokens_per_s_per_user", "gpus", "cost_per_hour",
                "evaluation"):
        assert key in metrics, key
    keys = list(metrics)
    assert (keys[0], keys[-1]) == ("objective_value", "evaluation")  # headline first
    assert metrics["objective_value"] == study.trials[0].value == result.milp_value
    assert metrics["goodput_req_s"] == round(result.milp_evaluation.goodput_per_s, 4)
    assert evaluation_of(study.trials[0]) == result.milp_evaluation
    assert result.trials[0].goodput_per_s == metrics["goodput_req_s"]
    assert result.trials[0].gpus == metrics["gpus"]
    assert attrs["milp_prediction"]["same_as_milp_plan"] == "best"
    assert attrs["milp_prediction"]["predicted"]["served_rate_per_s"] == round(
        planning.plan.served_rate_per_s, 4)
    assert metrics["attainment"] >= 0.9
    assert study.trials[0].constraints == {"gpu_budget": 0.0, "engine_limits": 0.0,
                                           "slo_demand": 0.0}


def test_seeded_runs_repeat(tmp_path: Path) -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    runs = [refine(problem, planning, fast_options(trials=5, storage=sqlite(tmp_path / f"{i}.db")))
            for i in range(2)]
    a, b = ([(t.number, t.values, t.state) for t in r.trials] for r in runs)
    assert a == b
    assert runs[0].deployment == runs[1].deployment
    assert runs[0].value == runs[1].value


def test_over_budget_trial_is_infeasible_and_unsimulated(tmp_path: Path) -> None:
    problem = tiny_problem()
    planning = planning_of(problem)
    url = sqlite(tmp_path / "study.db")
    refine(problem, planning, fast_options(trials=3, storage=url))
    study = optuna.load_study(study_name="tiny", storage=open_storage(url))
    # The MILP's disaggregated plan (one prefill and one decode instance, whatever its rank).
    disagg = next(t for t in study.trials if t.user_attrs["source"].startswith("milp")
                  and sum(k.endswith("/count") for k in t.params) == 2)
    params = {k: v for k, v in disagg.params.items()}
    counts = [k for k in params if k.endswith("/count")]
    for k in counts:  # every group at the top of its range: more GPUs than the pool
        params[k] = 2
    study.enqueue_trial(params, user_attrs={"source": "test"})
    refine(problem, planning, fast_options(trials=4, storage=url))
    over = next(t for t in optuna.load_study(study_name="tiny", storage=open_storage(
        url)).trials if t.user_attrs.get("source") == "test")
    assert over.constraints["gpu_budget"] > 0
    assert not is_simulated(over) and over.user_attrs["metrics"]["gpus"] == 4
    assert over.user_attrs["metrics"]["objective_value"] == over.value == 0.0
    assert "GPUs > 2" in over.user_attrs["infeasible"]
    assert [g["count"] for g in over.user_attrs["plan"]["workloads"][0]["groups"]] == [2, 2]


def test_min_cost_uses_the_demand_as_a_constraint(tmp_path: Path) -> None:
    data = tiny_data(objective="min_cost")
    data["workloads"][0]["demand"] = 6.0
    data["pools"] = [{"name": "h100", "hardware": "h100-sxm", "count": 4}]
    from servingcast.planner.problem import problem_from_dict

    problem = problem_from_dict(data)
    planning = planning_of(problem)
    result = refine(problem, planning, fast_options(trials=6,
                                                    storage=sqlite(tmp_path / "s.db")))
    assert result.evaluation.workloads[0].rate_per_s >= 6.0
    assert result.value == result.evaluation.cost_per_hour
    assert result.value <= result.milp_value or result.milp_evaluation.workloads[
        0].rate_per_s < 6.0
    infeasible = [t for t in result.trials if t.state == "complete" and not t.feasible]
    assert all(t.number != result.refined_trial for t in infeasible)
    study = optuna.load_study(study_name="tiny", storage=open_storage(sqlite(tmp_path / "s.db")))
    assert study.metric_names == ["cost ($/h)"]


def test_pareto_mode_gives_a_front(tmp_path: Path) -> None:
    from servingcast.refine.options import StudySettings

    problem = tiny_problem()
    planning = planning_of(problem)
    settings = StudySettings(mode="pareto", sim_requests=300, max_sim_requests=300)
    result = refine(problem, planning, fast_options(trials=6, settings=settings,
                                                    storage=sqlite(tmp_path / "p.db")))
    assert result.study_name == "tiny-pareto"
    assert result.pareto_front
    front = [t for t in result.trials if t.number in result.pareto_front]
    assert all(t.values is not None and len(t.values) == 2 for t in front)
    assert result.value >= result.milp_value
    study = optuna.load_study(study_name="tiny-pareto",
                              storage=open_storage(sqlite(tmp_path / "p.db")))
    assert study.metric_names == ["tokens/s per GPU", "tokens/s per user"]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_temporary_study_leaves_nothing(tmp_path: Path) -> None:
    """No files, and Optuna's verbosity and the warning filters as they were: quiet inside
    (no per-trial log lines, no experimental warnings), untouched outside."""
    problem = tiny_problem()
    planning_of(problem)
    handler = _Records()
    optuna.logging.get_logger("optuna").addHandler(handler)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            filters = list(warnings.filters)
            result = refine(problem, planning_of(problem), fast_options(trials=3))
            assert warnings.filters == filters
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(verbosity)
        optuna.logging.get_logger("optuna").removeHandler(handler)
    assert not [r.getMessage() for r in handler.records if r.levelno < logging.WARNING]
    assert not [w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
    assert result.storage is None and result.dashboard_command is None
    assert result.deployment == deployment_of(problem, planning_of(problem).plan) or (
        result.value > result.milp_value)
