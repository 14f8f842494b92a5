"""Small problems built in code, shared by the planner tests."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from servingcast.planner import PlanningResult, load_problem, solve
from servingcast.planner.problem import Problem, problem_from_dict

PROBLEMS = Path(__file__).resolve().parents[2] / "problems"


def make_problem(**overrides: Any) -> Problem:
    """Llama-3.1-8B on 8 H100 with a narrow search space (fast), updated by ``overrides``."""
    data: dict[str, Any] = {
        "name": "small",
        "pools": [{"name": "h100", "hardware": "h100-sxm", "count": 8}],
        "workloads": [{"name": "chat", "model": "llama-3.1-8b", "precision": "bf16",
                       "input_len": 1024, "output_len": 256,
                       "slo": {"ttft": "500 ms", "tpot": "50 ms", "attainment": 0.9}}],
        "search": {"tp": [1, 2], "pp": [1], "max_num_seqs": [512],
                   "max_num_batched_tokens": [2048]},
    }
    data.update(overrides)
    return problem_from_dict(data)


@pytest.fixture
def small() -> Problem:
    return make_problem()


@functools.cache
def cached_solve(stem: str) -> PlanningResult:
    """A shipped problem solved once per test session (default options)."""
    return solve(load_problem(PROBLEMS / f"{stem}.yaml"))
