"""The hardware what-if: each row equals a plan of the problem written for that GPU type alone,
the ranking follows those plans, prices and budgets come from the documented places."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from servingcast.errors import ConfigError
from servingcast.planner import Plan, solve
from servingcast.planner.compare import (
    compare_csv,
    compare_hardware,
    compare_png,
    compare_table,
    resolve_prices,
)
from servingcast.planner.problem import load_problem, problem_from_dict

from .conftest import PROBLEMS, make_problem

TYPES = ["h100-sxm", "h200-sxm", "mi300x", "l4"]
PRICES = {"h100-sxm": 2.99, "h200-sxm": 3.50, "mi300x": 2.20, "l4": 0.80}
CHAT: dict[str, Any] = {"name": "chat", "model": "llama-3.1-8b", "precision": "bf16",
                        "input_len": 1024, "output_len": 256,
                        "slo": {"ttft": "500 ms", "tpot": "50 ms", "attainment": 0.9}}


def _alone(hardware: str, count: int, price: float, **overrides: Any) -> Plan:
    """The problem written by hand for one GPU type, solved as the what-if solves it."""
    problem = make_problem(pools=[{"hardware": hardware, "count": count,
                                   "price_per_gpu_hour": price}], **overrides)
    return solve(problem, top_k=1, pareto_factors=None, compare_modes=False).plan


def test_rows_equal_per_type_plans_and_rank_consistently() -> None:
    problem = make_problem(compare={"hardware": TYPES, "price_per_gpu_hour": {"mi300x": 2.20}})
    result = compare_hardware(problem, prices={"l4": 0.80})
    plans = {h: _alone(h, 8, PRICES[h]) for h in TYPES}
    for h, plan in plans.items():
        row = result.row(h)
        assert row.feasible and row.gpus_available == 8
        assert row.gpus == plan.total_gpus
        assert row.cost_per_hour == pytest.approx(plan.cost_per_hour, rel=1e-6)
        assert row.served_rate_per_s["chat"] == pytest.approx(plan.served_rate_per_s, rel=1e-6)
        assert row.output_tokens_per_s == pytest.approx(plan.output_tokens_per_s, rel=1e-6)
        assert row.tokens_per_s_per_gpu == pytest.approx(plan.tokens_per_s_per_gpu, rel=1e-6)
        assert row.mode == plan.mode
    # $ per million output tokens by hand: price x GPUs / (req/s x 256 tokens x 3600 s) x 1e6
    usd = {h: PRICES[h] * p.total_gpus / (p.served_rate_per_s * 256 * 3600) * 1e6
           for h, p in plans.items()}
    for h in TYPES:
        assert result.row(h).usd_per_million_output_tokens == pytest.approx(usd[h], rel=1e-6)
    assert [r.hardware for r in result.rows] == sorted(TYPES, key=usd.__getitem__)
    assert result.best is not None and result.best.hardware == min(usd, key=usd.__getitem__)
    # these GPUs differ enough that the ranking is a real test
    assert max(usd.values()) > 2 * min(usd.values())


def test_min_cost_budget_is_enough_for_the_demand() -> None:
    chat = {**CHAT, "demand": 60}
    problem = make_problem(objective="min_cost", workloads=[chat])
    result = compare_hardware(problem, ["h100-sxm", "l4"])
    l4 = result.row("l4")
    assert l4.feasible and l4.gpus_available > 8   # raised above the problem's 8 GPUs
    assert l4.served_rate_per_s["chat"] == pytest.approx(60.0, rel=1e-6)
    for h in ("h100-sxm", "l4"):
        row = result.row(h)
        same = _alone(h, row.gpus_available, PRICES[h], objective="min_cost", workloads=[chat])
        larger = _alone(h, 2 * row.gpus_available, PRICES[h], objective="min_cost",
                        workloads=[chat])
        assert row.gpus == same.total_gpus
        assert row.cost_per_hour == pytest.approx(same.cost_per_hour, rel=1e-6)
        # the bound did not cut the optimum off: twice the GPUs buy no cheaper plan
        assert row.cost_per_hour == pytest.approx(larger.cost_per_hour, rel=1e-3)
    assert [r.hardware for r in result.rows] == ["h100-sxm", "l4"]


def test_infeasible_type_gets_a_row_with_the_reason() -> None:
    tight = {**CHAT, "slo": {"ttft": "500 ms", "tpot": "20 ms"}}
    result = compare_hardware(make_problem(workloads=[tight]), ["l4", "h100-sxm"])
    assert [r.hardware for r in result.rows] == ["h100-sxm", "l4"]
    l4 = result.row("l4")
    assert not l4.feasible and l4.status == "infeasible" and l4.plan is None
    assert l4.reason is not None and "TPOT limit (20.0 ms)" in l4.reason
    assert "l4: no plan (infeasible)" in compare_table(result)
    assert result.best is not None and result.best.hardware == "h100-sxm"

    short = make_problem(objective="min_cost", workloads=[{**CHAT, "demand": 60}])
    row = compare_hardware(short, ["l4"], gpus=8).row("l4")
    assert not row.feasible and row.reason is not None
    assert "the demands cannot be met with 8 l4" in row.reason


def test_prices_come_from_price_section_pool_catalog_in_that_order() -> None:
    problem = make_problem(
        pools=[{"hardware": "h100-sxm", "count": 8, "price_per_gpu_hour": 2.0},
               {"hardware": "h200-sxm", "count": 8, "price_per_gpu_hour": 3.0}],
        compare={"hardware": ["h100-sxm", "h200-sxm", "b200"],
                 "price_per_gpu_hour": {"h200": 3.3}})
    prices = resolve_prices(problem, ["h100-sxm", "h200-sxm", "b200"], {"H100": 1.5})
    assert prices == {"h100-sxm": (1.5, "--price"), "h200-sxm": (3.3, "compare section"),
                      "b200": (4.99, "catalog")}
    assert resolve_prices(problem, ["h100-sxm"])["h100-sxm"] == (2.0, "problem pool")
    # the default budget is the problem's GPUs: 16 here
    result = compare_hardware(problem, ["b200"])
    assert result.rows[0].gpus_available == 16


def test_missing_price_and_unknown_type_are_config_errors() -> None:
    problem = make_problem()
    with pytest.raises(ConfigError, match=r"no price for mi300x: .*--price mi300x="):
        compare_hardware(problem, ["h100-sxm", "mi300x"])
    with pytest.raises(ConfigError) as err:
        compare_hardware(problem, ["h300"])
    assert "unknown GPU type 'h300'" in str(err.value)
    assert "h100-sxm" in str(err.value) and "mi300x" in str(err.value)
    with pytest.raises(ConfigError, match="no compare section"):
        compare_hardware(problem)
    with pytest.raises(ConfigError, match="--price for b200, which is not compared"):
        compare_hardware(problem, ["h100-sxm"], {"b200": 5.0})
    with pytest.raises(ConfigError, match=r"12 GPUs \(--gpus\) are not a whole number"):
        compare_hardware(problem, ["h100-sxm"], gpus=12)


def _with_compare(section: Any) -> dict[str, Any]:
    data = make_problem().model_dump(by_alias=True, exclude_none=True)
    data["compare"] = section
    return data


@pytest.mark.parametrize(("section", "message"), [
    ({"hardware": ["h300"]}, "compare.hardware: unknown GPU type 'h300'; the catalog has"),
    ({"hardware": []}, "compare.hardware: "),
    ({"hardware": ["h100-sxm", "H100"]}, "h100-sxm listed twice"),
    ({"hardware": ["b200"], "price_per_gpu_hour": {"mi300x": 2}},
     "a price for mi300x, which compare.hardware does not list (b200)"),
    ({"hardware": ["b200"], "price_per_gpu_hour": {"b200": -1}},
     "compare.price_per_gpu_hour.b200: "),
    ({"hardware": ["b200"], "gpu": 8}, "compare.gpu: unknown field"),
])
def test_compare_section_errors(section: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        problem_from_dict(_with_compare(section), "p.yaml")
    assert message in str(err.value) and str(err.value).startswith("p.yaml")


def test_compare_section_round_trips_and_is_absent_when_unset() -> None:
    problem = problem_from_dict(_with_compare(
        {"hardware": ["H100", "mi300x"], "price_per_gpu_hour": {"MI300X-192GB": 2.5},
         "gpus": 16}))
    assert problem.compare is not None
    assert problem.compare.hardware == ("h100-sxm", "mi300x")
    assert problem.compare.price_per_gpu_hour == {"mi300x": 2.5}
    assert problem_from_dict(problem.model_dump(by_alias=True, exclude_none=True)) == problem
    # problems without the section dump as before (their study fingerprints do not change)
    assert "compare" not in make_problem().model_dump(mode="json", by_alias=True)


def test_shipped_problem_compares_its_four_types(tmp_path: Path) -> None:
    problem = load_problem(PROBLEMS / "compare-llama-3.1-70b.yaml")
    assert problem.compare is not None
    result = compare_hardware(problem)
    assert {r.hardware for r in result.rows} == {"h100-sxm", "h200-sxm", "b200", "mi300x"}
    assert all(r.feasible and r.gpus_available == 16 for r in result.rows)
    usd = [r.usd_per_million_output_tokens for r in result.rows]
    assert usd == sorted(usd) and all(u is not None and math.isfinite(u) for u in usd)
    lines = compare_csv(result).splitlines()
    assert len(lines) == 5 and lines[1].startswith(f"1,{result.rows[0].hardware},true,")
    assert compare_png(result)[:8] == b"\x89PNG\r\n\x1a\n"
