"""The Optuna objective: sample a deployment, check it against the pools, simulate it, and
record everything a dashboard user needs on the trial.

Values and constraints (Optuna 5: ``trial.set_constraint``; a trial is feasible when every
constraint is ≤ 0)::

    objective               value                          direction
    max_goodput             G = Σ_w ω_w min(R_w, d_w)      maximize   (req/s within the SLOs)
    min_cost                Σ GPUs × price ($/h)           minimize
    max_goodput_per_dollar  G / cost                       maximize
    pareto mode             (tokens/s per GPU, tokens/s per user)  maximize both

    gpu_budget     max over pools of the relative excess of GPUs or whole nodes (0: fits)
    engine_limits  groups with max_num_batched_tokens < max_num_seqs, or that cannot run
    slo_demand     max_w (d_w − R_w) / d_w   (min_cost only: the demand must be sustained)

A trial outside the budget or the engine rules is not simulated: it gets the worst value and
its positive constraint, never a clipped deployment. A trial whose parameters equal those of a
finished trial is not simulated again: it is pruned, pointing at that trial (so no two finished
trials hold the same parameters), with that trial's value reported.

A trial's user attributes: ``plan`` (the deployment), ``source``, ``milp_prediction``,
``worker``, ``infeasible`` or ``duplicate_of`` when so, and one ``metrics`` dict (JSON): the
objective value, GPUs and cost, and — for a simulated trial — the headline figures (goodput,
attainment, worst TTFT/TPOT percentiles, tokens/s per GPU and per user) followed by the full
``evaluation`` that the report reads back. The study names its values (:func:`metric_names`).
"""

from __future__ import annotations

import os
import socket
from typing import Any, Literal

from servingcast.errors import ServingcastError
from servingcast.planner.problem import Problem
from servingcast.refine.deployment import Deployment, budget_violation, engine_violation
from servingcast.refine.evaluate import Evaluation, Evaluator, cost_per_hour
from servingcast.refine.options import StudySettings
from servingcast.refine.space import SearchSpace, suggest

CONSTRAINTS = ("gpu_budget", "engine_limits", "slo_demand")


def directions(problem: Problem,
               settings: StudySettings) -> list[Literal["minimize", "maximize"]]:
    """The study's optimization directions."""
    if settings.mode == "pareto":
        return ["maximize", "maximize"]
    return ["minimize" if problem.objective == "min_cost" else "maximize"]


def metric_names(problem: Problem, settings: StudySettings) -> list[str]:
    """What each of the study's values is, with its unit (``study.set_metric_names``: the
    dashboard's axis titles instead of "Objective 0")."""
    if settings.mode == "pareto":
        return ["tokens/s per GPU", "tokens/s per user"]
    return [{"min_cost": "cost ($/h)",
             "max_goodput_per_dollar": "goodput per dollar (req/s per $/h)"}.get(
                 problem.objective, "goodput (req/s)")]


def objective_value(problem: Problem, deployment: Deployment, ev: Evaluation | None) -> float:
    """The problem's own objective (module docstring); for an unsimulated trial, the worst."""
    cost = cost_per_hour(problem, deployment)
    if problem.objective == "min_cost":
        return cost if cost is not None else float(deployment.total_gpus)
    if ev is None:
        return 0.0
    if problem.objective == "max_goodput_per_dollar":
        return ev.goodput_per_s / cost if cost else 0.0
    return ev.goodput_per_s


def demand_violation(problem: Problem, ev: Evaluation) -> float:
    """``max_w (d_w − R_w) / d_w`` over workloads with a demand (≤ 0: every demand met)."""
    gaps = [(w.demand_per_s - ev.workload(w.name).rate_per_s) / w.demand_per_s
            for w in problem.workloads if w.demand_per_s is not None]
    return max(gaps, default=0.0)


def headline(ev: Evaluation) -> dict[str, Any]:
    """The flat figures at the head of a trial's ``metrics`` (worst workload's latencies)."""
    def worst(field: str, stat: str) -> float | None:
        values = [getattr(getattr(w, field), stat) for w in ev.workloads]
        values = [v for v in values if v is not None]
        return round(max(values), 3) if values else None

    rates = [(w.attainment, w.rate_per_s) for w in ev.workloads if w.attainment is not None]
    total = sum(r for _, r in rates)
    return {
        "goodput_req_s": round(ev.goodput_per_s, 4),
        "attainment": round(sum(a * r for a, r in rates) / total, 4) if total else None,
        **{f"{m}_{s}_ms": worst(f"{m}_ms", s) for m in ("ttft", "tpot")
           for s in ("p50", "p90", "p99")},
        "tokens_per_s_per_gpu": round(ev.tokens_per_s_per_gpu, 2),
        "tokens_per_s_per_user": round(ev.tokens_per_s_per_user, 2),
        "simulations": ev.simulations,
        "sim_wall_s": round(ev.wall_s, 3),
    }


def metrics_of(trial: Any) -> dict[str, Any]:
    """A trial's ``metrics`` attribute (empty before it has one)."""
    metrics: dict[str, Any] = trial.user_attrs.get("metrics") or {}
    return metrics


def is_simulated(trial: Any) -> bool:
    """Whether the trial was simulated (its ``metrics`` hold an evaluation)."""
    return "evaluation" in metrics_of(trial)


def evaluation_of(trial: Any) -> Evaluation:
    """The evaluation a simulated trial recorded (:func:`is_simulated`)."""
    return Evaluation.model_validate(metrics_of(trial)["evaluation"])


class Objective:
    """Callable for ``study.optimize`` (module docstring). ``predictions`` maps each MILP
    plan's label to its prediction; ``plan_keys`` maps deployments' keys to those labels."""

    def __init__(self, problem: Problem, space: SearchSpace, settings: StudySettings,
                 predictions: dict[str, dict[str, Any]], plan_keys: dict[str, str]) -> None:
        self.problem = problem
        self.space = space
        self.settings = settings
        self.predictions = predictions
        self.plan_keys = plan_keys
        self.evaluator = Evaluator(problem, space, settings)

    def __call__(self, trial: Any) -> float | tuple[float, float]:
        import optuna

        deployment = suggest(trial, self.space)
        trial.set_user_attr("plan", deployment.model_dump(mode="json"))
        if "source" not in trial.user_attrs:
            trial.set_user_attr("source", "sampler")
        trial.set_user_attr("milp_prediction", self._prediction(deployment))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        size = {"gpus": deployment.total_gpus,
                "cost_per_hour": cost_per_hour(self.problem, deployment)}
        twin = self._twin(trial, (optuna.trial.TrialState.COMPLETE,), earlier_only=False)
        if twin is not None:
            for key, item in twin.constraints.items():
                trial.set_constraint(key, item)
            trial.set_user_attr("metrics", size)
            self._prune_as_duplicate(trial, twin, twin.values)
        budget, over = budget_violation(self.problem, deployment)
        engine, broken = engine_violation(deployment)
        ev: Evaluation | None = None
        if budget <= 0 and engine <= 0:
            try:
                ev = self.evaluator.evaluate(deployment)
            except ServingcastError as exc:
                engine, broken = 1.0, [str(exc).splitlines()[0]]
        slo = 0.0
        if ev is not None and self.problem.objective == "min_cost":
            slo = demand_violation(self.problem, ev)
        trial.set_constraint("gpu_budget", budget)
        trial.set_constraint("engine_limits", engine)
        trial.set_constraint("slo_demand", slo)
        if over or broken:
            trial.set_user_attr("infeasible", "; ".join(over + broken))
        value = objective_value(self.problem, deployment, ev)
        metrics: dict[str, Any] = {"objective_value": value}
        if ev is not None:
            metrics.update(headline(ev))
        metrics.update(size)
        if ev is not None:
            metrics["evaluation"] = ev.model_dump(mode="json")
        trial.set_user_attr("metrics", metrics)
        values = self._values(ev, value)
        twin = self._twin(trial, (optuna.trial.TrialState.COMPLETE,
                                  optuna.trial.TrialState.RUNNING), earlier_only=True)
        if twin is not None:
            self._prune_as_duplicate(trial, twin, list(values) if isinstance(values, tuple)
                                     else [values])
        return values

    def _values(self, ev: Evaluation | None, value: float) -> float | tuple[float, float]:
        if self.settings.mode == "pareto":
            if ev is None:
                return 0.0, 0.0
            return ev.tokens_per_s_per_gpu, ev.tokens_per_s_per_user
        return value

    def _prediction(self, deployment: Deployment) -> dict[str, Any]:
        same = self.plan_keys.get(deployment.key())
        estimate = sum(self.evaluator.estimate(ws, part)
                       for ws in deployment.workloads for part in ws.parts)
        return {"same_as_milp_plan": same,
                "predicted": self.predictions.get(same or "best"),
                "capacity_estimate_req_s": round(estimate, 4)}

    @staticmethod
    def _twin(trial: Any, states: tuple[Any, ...], earlier_only: bool) -> Any | None:
        params = trial.params
        for other in trial.study.get_trials(deepcopy=False, states=states):
            if other.number == trial.number or (earlier_only and other.number > trial.number):
                continue
            if other.params == params and "duplicate_of" not in other.user_attrs:
                return other
        return None

    def _prune_as_duplicate(self, trial: Any, twin: Any, values: list[float] | None) -> None:
        import optuna

        trial.set_user_attr("duplicate_of", twin.number)
        if values and self.settings.mode != "pareto":
            trial.report(values[0], 0)
        raise optuna.TrialPruned(f"same parameters as trial {twin.number}")
