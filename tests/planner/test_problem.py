"""The problem schema: every shipped problem loads; bad input is one clear error per problem."""

from pathlib import Path

import pytest

from servingcast.errors import ConfigError
from servingcast.planner.problem import check_problem, load_problem, problem_from_dict
from servingcast.workload import NormalLength

from .conftest import PROBLEMS, make_problem


@pytest.mark.parametrize("path", sorted(PROBLEMS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_problems_load(path: Path) -> None:
    problem = load_problem(path)
    assert problem.pools and problem.workloads


def test_defaults_and_units() -> None:
    p = make_problem()
    w = p.workloads[0]
    assert w.slo.ttft_s == pytest.approx(0.5) and w.slo.tpot_s == pytest.approx(0.05)
    assert w.maximize and p.objective == "max_goodput"
    assert p.pools[0].node_size == 8 and p.pools[0].nodes == 1
    assert p.pools[0].price == pytest.approx(2.99)   # the catalog's indicative price
    assert p.search.modes == ("aggregated", "disaggregated")


def test_demands_with_units_and_distributions() -> None:
    p = make_problem(workloads=[{
        "name": "a", "model": "llama-3.1-8b", "demand": "600 req/min",
        "input_len": {"kind": "normal", "mean": 900, "std": 100},
        "output_len": 200, "slo": {"ttft": "1 s", "tpot": "40 ms"}}])
    w = p.workloads[0]
    assert w.demand_per_s == pytest.approx(10.0)
    assert isinstance(w.input_len, NormalLength)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


BASE = """\
pools:
  - hardware: h100-sxm
    count: 8
workloads:
  - name: chat
    model: llama-3.1-8b
    input_len: 1000
    output_len: 200
    slo: {ttft: 1 s, tpot: 50 ms}
"""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [("hardware: h100-sxm", "hardware: h100-sxn",
      "p.yaml:2: pools.0.hardware: unknown hardware 'h100-sxn'. To fix: did you mean h100-sxm"),
     ("model: llama-3.1-8b", "model: llama-3.1-7b",
      "p.yaml:6: workloads.0.model: unknown model 'llama-3.1-7b'"),
     ("count: 8", "count: 0",
      "p.yaml:3: pools.0.count: a pool needs at least one GPU, got 0. To fix:"),
     ("ttft: 1 s", "ttft: 1000",
      "workloads.0.slo.ttft: 1000 has no unit. To fix: write the limit with a unit"),
     ("tpot: 50 ms", "tpot: 0 ms", "workloads.0.slo.tpot: a limit must be > 0"),
     ("tpot: 50 ms", "tpot: '-5 ms'", "workloads.0.slo.tpot: a limit must be > 0"),
     ("output_len: 200", "output_len: 200\n    demand: -3",
      "p.yaml:9: workloads.0.demand: a demand must be a rate > 0 req/s, got -3"),
     ("output_len: 200", "output_len: 200\n    demand: 5 req/day",
      "workloads.0.demand: cannot read '5 req/day' as a demand"),
     ("count: 8", "count: 8\n    colour: blue",
      "pools.0.colour: unknown field. To fix: remove it or check its spelling"),
     ("output_len: 200", "output_len: 1", "workloads.0.output_len: one output token has no TPOT"),
     ("count: 8", "count: 12",
      "pools.0.count: 12 GPUs are not a whole number of 8-GPU nodes. To fix: use a multiple of 8")])
def test_bad_input_names_file_line_field_and_fix(tmp_path: Path, old: str, new: str,
                                                 message: str) -> None:
    path = _write(tmp_path, BASE.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_problem(path)
    assert message in str(err.value)


def test_contradictory_search_space(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "search: {tp: [8, 16]}\n")
    with pytest.raises(ConfigError) as err:
        load_problem(path)
    assert ("p.yaml:10: search.tp: tp=16 (with pp=1) needs 16 GPUs but the largest pool "
            "(h100-sxm) has 8. To fix: remove tp=16 or add GPUs") in str(err.value)


def test_min_cost_needs_demands_and_prices(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("h100-sxm", "ascend-910b") + "objective: min_cost\n")
    with pytest.raises(ConfigError) as err:
        load_problem(path)
    text = str(err.value)
    assert "pools.0.price_per_gpu_hour: objective min_cost needs a price" in text
    assert "workloads.0.demand: objective min_cost serves every demand" in text


def test_duplicate_names_and_empty_lists() -> None:
    with pytest.raises(ConfigError, match="duplicate pool name 'h100'"):
        problem_from_dict({"pools": [{"name": "h100", "hardware": "h100-sxm", "count": 8},
                                     {"name": "h100", "hardware": "h200", "count": 8}],
                           "workloads": make_problem().model_dump(by_alias=True)["workloads"]})
    with pytest.raises(ConfigError, match=r"pools: no pools\. To fix"):
        problem_from_dict({"pools": [], "workloads": []})


def test_yaml_errors_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_problem(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_problem(_write(tmp_path, "pools: [\n"))


def test_problem_built_in_code_is_checked() -> None:
    p = make_problem()
    assert check_problem(p) is p


@pytest.mark.parametrize("path", sorted(PROBLEMS.glob("*.yaml")), ids=lambda p: p.stem)
def test_problems_round_trip(path: Path) -> None:
    problem = load_problem(path)
    again = problem_from_dict(problem.model_dump(by_alias=True, exclude_none=True))
    assert again == problem


def test_engine_default_options_and_errors(tmp_path: Path) -> None:
    from servingcast.engines import SglangEngine, TrtllmEngine, VllmEngine

    plain = load_problem(_write(tmp_path, BASE))
    assert plain.engine == VllmEngine()
    # The default engine leaves the dump (and the fingerprint) as it was before engines.
    assert "engine" not in plain.model_dump(by_alias=True)
    assert load_problem(_write(tmp_path, BASE + "engine: sglang\n")).engine == SglangEngine()
    mu = load_problem(_write(tmp_path, BASE + "engine: {kind: trtllm, capacity_scheduler: "
                             "max_utilization}\n"))
    assert mu.engine == TrtllmEngine(capacity_scheduler="max_utilization")
    again = problem_from_dict(mu.model_dump(by_alias=True, exclude_none=True))
    assert again == mu
    with pytest.raises(ConfigError) as err:
        load_problem(_write(tmp_path, BASE + "engine: tensorrt\n"))
    assert ("p.yaml:10: engine: unknown engine 'tensorrt'; servingcast models vllm, sglang, "
            "trtllm. To fix: use one of those") in str(err.value)


def test_engine_goes_to_the_exported_scenario() -> None:
    from servingcast.engines import TrtllmEngine
    from servingcast.planner import solve, to_scenario
    from servingcast.sim.scenario import scenario_from_dict

    problem = make_problem(engine="trtllm")
    plan = solve(problem, top_k=1, pareto_factors=None, compare_modes=False).plan
    data = to_scenario(problem, plan)
    assert data["engine"] == "trtllm"
    scenario = scenario_from_dict(data)
    planned = plan.workloads[0].groups[0]
    for g in scenario.instance_groups:
        assert g.engine == TrtllmEngine()
        # The plan's limits are set explicitly, so they win over TensorRT-LLM's defaults.
        assert (g.max_num_seqs, g.block_size) == (planned.max_num_seqs, 16)
    vllm = make_problem()
    assert "engine" not in to_scenario(vllm, solve(vllm, top_k=1, pareto_factors=None,
                                                   compare_modes=False).plan)
    mu = make_problem(engine={"kind": "trtllm", "capacity_scheduler": "max_utilization"})
    assert to_scenario(mu, plan)["engine"] == {"kind": "trtllm",
                                               "capacity_scheduler": "max_utilization"}
