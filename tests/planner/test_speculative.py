"""Speculative decoding as a planner decision: the problem's ``search.speculative``, the
candidates it adds, their capacities against ``servingcast estimate``, the export and the
shipped problem checked in the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import servingcast as sc
from servingcast.errors import ConfigError
from servingcast.planner import load_problem, solve, verify_plan
from servingcast.planner.candidates import CandidateBuilder, Config
from servingcast.planner.capacity import DecodeProfile
from servingcast.planner.export import to_scenario
from servingcast.planner.problem import Problem

from .conftest import PROBLEMS, make_problem

SPEC = {"draft_model": "llama-3.2-1b", "acceptance_rate": 0.7, "num_speculative_tokens": [0, 4]}


def _search(**extra: Any) -> dict[str, Any]:
    return {"tp": [1], "pp": [1], "max_num_seqs": [64], "max_num_batched_tokens": [2048],
            **extra}


def _spec_problem(modes: list[str], spec: dict[str, Any] | None = None,
                  tpot: str = "20 ms") -> Problem:
    return make_problem(
        workloads=[{"name": "chat", "model": "llama-3.1-8b", "precision": "bf16",
                    "input_len": 512, "output_len": 257,
                    "slo": {"ttft": "2000 ms", "tpot": tpot, "attainment": 0.9}}],
        search=_search(modes=modes, speculative=spec or SPEC))


# -- the problem --------------------------------------------------------------------------


def test_search_speculative_defaults_and_dump() -> None:
    p = make_problem(search=_search(speculative={"draft_model": "Llama-3.2-1B",
                                                 "acceptance_rate": 0.8}))
    spec = p.search.speculative
    assert spec is not None and spec.draft_model == "llama-3.2-1b"
    assert spec.num_speculative_tokens == (0, 2, 4) and p.search.spec_tokens == (0, 2, 4)
    assert make_problem().search.spec_tokens == (0,)
    # A search without it dumps (and fingerprints) as before.
    assert "speculative" not in make_problem().search.model_dump()
    assert p.search.model_dump()["speculative"]["acceptance_rate"] == 0.8


@pytest.mark.parametrize(("spec", "message"), [
    ({"draft_model": "no-such-model", "acceptance_rate": 0.7}, "To fix: name a catalog model"),
    ({"draft_model": "llama-3.2-1b", "acceptance_rate": 1.5}, "less than or equal to 1"),
    ({"draft_model": "llama-3.2-1b", "acceptance_rate": 0.7, "num_speculative_tokens": [0, 20]},
     "every value must be in 0..16"),
    ({"draft_model": "llama-3.2-1b"}, "acceptance_rate"),
    ({"draft_model": "mistral-7b", "acceptance_rate": 0.7},
     "a draft must propose the target's tokens"),
    ({"draft_model": "mtp", "acceptance_rate": 0.7}, "llama-3.1-8b (workload 'chat') has none"),
    ({"draft_model": "llama-3.1-8b", "acceptance_rate": 0.7}, "the draft is the target itself"),
])
def test_bad_speculative_search_is_one_clear_error(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"search\.speculative") as err:
        make_problem(search=_search(speculative=spec))
    assert message in str(err.value)


def test_bad_speculative_search_exits_2(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from servingcast._cli_solve import solve_command

    text = (PROBLEMS / "spec-decode-llama-3.1-70b.yaml").read_text().replace(
        "draft_model: llama-3.2-1b", "draft_model: mtp")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = CliRunner().invoke(solve_command, [str(path), "--no-refine"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "bad.yaml:" in result.stderr and "search.speculative.draft_model" in result.stderr
    assert "multi-token-prediction" in result.stderr and "To fix" in result.stderr


# -- candidates ---------------------------------------------------------------------------


def test_config_key_and_defaults() -> None:
    base = Config("chat", "h100", "decode", 1, 1, 1, 64, 64)
    assert base.spec_tokens == 0 and base.draft_model is None
    assert base.key == "chat/h100/decode/tp1-pp1-ep1/s64-k64"
    spec = Config("chat", "h100", "decode", 1, 1, 1, 64, 64, spec_tokens=4,
                  draft_model="llama-3.2-1b")
    assert spec.key == "chat/h100/decode/tp1-pp1-ep1/s64-k64-spec4-llama-3.2-1b"
    mtp = Config("chat", "h100", "aggregated", 8, 1, 8, 64, 2048, spec_tokens=1,
                 draft_model="mtp")
    assert mtp.key.endswith("s64-k2048-mtp1")


def test_enumeration_adds_decode_and_aggregated_per_k() -> None:
    builder = CandidateBuilder(_spec_problem(["aggregated", "disaggregated"]))
    keys = sorted(e.config.key for e in builder.entries)
    assert keys == [
        "chat/h100/aggregated/tp1-pp1-ep1/s64-k2048",
        "chat/h100/aggregated/tp1-pp1-ep1/s64-k2048-spec4-llama-3.2-1b",
        "chat/h100/decode/tp1-pp1-ep1/s64-k64",
        "chat/h100/decode/tp1-pp1-ep1/s64-k64-spec4-llama-3.2-1b",
        "chat/h100/prefill/tp1-pp1-ep1/s64-k2048",   # prefill never speculates
    ]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("batch", [1, 8, 32])
def test_decode_capacity_matches_the_estimate(batch: int) -> None:
    """At the same batch, the planner's TPOT and per-instance rate of a speculative decode
    candidate are ``servingcast estimate``'s with the same settings (within 1 %)."""
    builder = CandidateBuilder(_spec_problem(["disaggregated"]))
    entry = next(e for e in builder.entries
                 if e.config.role == "decode" and e.config.spec_tokens == 4)
    profile = entry.profile
    assert isinstance(profile, DecodeProfile)
    est = sc.estimate("llama-3.1-8b", "h100-sxm", seq_len=512, output_len=257,
                      batch_size=batch, precision="bf16", draft_model="llama-3.2-1b",
                      num_speculative_tokens=4, draft_acceptance_rate=0.7)
    tpot_s = float(np.interp(batch, profile.batch, profile.tpot_mean))
    assert tpot_s * 1e3 == pytest.approx(est.tpot_ms, rel=0.01)
    # Little's law on both sides: b requests, each 256 decode steps of TPOT.
    rate = float(np.interp(batch, profile.batch, profile.rate))
    assert rate == pytest.approx(batch / (256 * est.tpot_ms / 1e3), rel=0.01)


def test_the_draft_takes_memory() -> None:
    builder = CandidateBuilder(_spec_problem(["disaggregated"], tpot="50 ms"))
    kv = {e.config.spec_tokens: e.profile.b_kv for e in builder.entries
          if e.config.role == "decode" and isinstance(e.profile, DecodeProfile)}
    # The 1B draft's weights (2.5 GB) and KV (1/8 of the target's per token) leave less room.
    assert kv[4] < 0.85 * kv[0]


def test_mtp_candidates_on_deepseek() -> None:
    p = make_problem(
        pools=[{"name": "h200", "hardware": "h200-sxm", "count": 8}],
        workloads=[{"name": "chat", "model": "deepseek-v3", "precision": "fp8",
                    "input_len": 1024, "output_len": 256,
                    "slo": {"ttft": "2000 ms", "tpot": "50 ms", "attainment": 0.9}}],
        search={"modes": ["disaggregated"], "tp": [8], "pp": [1], "ep": [8],
                "max_num_seqs": [64], "max_num_batched_tokens": [2048],
                "speculative": {"draft_model": "mtp", "acceptance_rate": 0.8,
                                "num_speculative_tokens": [0, 1]}})
    decodes = {e.config.spec_tokens: e for e in CandidateBuilder(p).entries
               if e.config.role == "decode"}
    assert decodes[1].config.key.endswith("-mtp1")
    plain, mtp = decodes[0].profile, decodes[1].profile
    assert isinstance(plain, DecodeProfile) and isinstance(mtp, DecodeProfile)
    # E = 1.8 tokens a step for one extra layer and a 2-token verification: TPOT well below.
    assert float(mtp.tpot_mean[0]) < 0.9 * float(plain.tpot_mean[0])


# -- export -------------------------------------------------------------------------------


def test_export_turns_speculative_decoding_on() -> None:
    p = _spec_problem(["disaggregated"], {**SPEC, "num_speculative_tokens": [4]}, tpot="8 ms")
    plan = solve(p, top_k=1, pareto_factors=None, compare_modes=False).plan
    decode = [g for g in plan.groups if g.role == "decode"]
    assert decode and all(g.spec_tokens == 4 and g.draft_model == "llama-3.2-1b"
                          for g in decode)
    assert all(g.spec_tokens == 0 for g in plan.groups if g.role == "prefill")
    assert verify_plan(p, plan) == []
    data = to_scenario(p, plan)
    assert "speculative" not in data   # each group carries its own
    for entry in data["instance_groups"]:
        if entry["role"] == "decode":
            assert entry["speculative"] == {"draft_model": "llama-3.2-1b",
                                            "acceptance_rate": 0.7, "num_speculative_tokens": 4}
        else:
            assert "speculative" not in entry
    from servingcast.sim.scenario import scenario_from_dict

    groups = scenario_from_dict(data).instance_groups
    assert [g.speculative is not None for g in groups] == [
        e["role"] == "decode" for e in data["instance_groups"]]


def test_groups_speculating_differently_are_simulated_as_planned() -> None:
    """A part whose groups speculate differently (or not at all), and MTP drafts, export each
    group's own setting, which the simulator runs."""
    from servingcast.sim import simulate
    from servingcast.sim.scenario import scenario_from_dict

    p = _spec_problem(["aggregated"])
    plan = solve(p, top_k=1, pareto_factors=None, compare_modes=False).plan
    g = plan.groups[0]
    other = g.model_copy(update={"spec_tokens": 4 if g.spec_tokens == 0 else 0,
                                 "draft_model": None if g.spec_tokens else "llama-3.2-1b",
                                 "name": g.name + "-other"})
    wp = plan.workloads[0].model_copy(update={"groups": (g, other)})
    mixed = plan.model_copy(update={"workloads": (wp,)})
    data = to_scenario(p, mixed)
    data["workload"]["num_requests"] = 200
    scenario = scenario_from_dict(data)
    assert sorted(x.speculative is None for x in scenario.instance_groups) == [False, True]
    result = simulate(scenario)
    assert result.summary.completed == 200


def test_mtp_scenario_simulates_and_needs_an_mtp_target() -> None:
    from servingcast.sim import simulate
    from servingcast.sim.scenario import scenario_from_dict

    data = {"model": "deepseek-v3", "precision": "fp8",
            "instance_groups": [{"name": "a", "hardware": "h200-sxm", "tp": 8, "ep": 8,
                                 "max_num_seqs": 64,
                                 "speculative": {"draft_model": "mtp", "acceptance_rate": 0.8,
                                                 "num_speculative_tokens": 1}}],
            "workload": {"num_requests": 100, "arrival": {"kind": "poisson", "rate": 2},
                         "input_len": 1000, "output_len": 100}}
    with_mtp = simulate(scenario_from_dict(data)).summary
    plain = dict(data, instance_groups=[{k: v for k, v in data["instance_groups"][0].items()
                                        if k != "speculative"}])
    without = simulate(scenario_from_dict(plain)).summary
    assert with_mtp.completed == without.completed == 100
    assert with_mtp.tpot_ms.mean < 0.9 * without.tpot_ms.mean
    dense = dict(data, model="llama-3.1-8b", instance_groups=[
        {**data["instance_groups"][0], "tp": 1, "ep": 1}])
    with pytest.raises(ConfigError, match="no multi-token-prediction layers"):
        simulate(scenario_from_dict(dense))


# -- the shipped problem ------------------------------------------------------------------


def test_shipped_problem_speculation_wins_and_the_simulator_agrees() -> None:
    from servingcast.planner.simcheck import check_plan

    problem = load_problem(PROBLEMS / "spec-decode-llama-3.1-70b.yaml")
    plan = solve(problem, top_k=1, pareto_factors=None, compare_modes=False).plan
    assert all(g.spec_tokens > 0 for g in plan.groups)
    plain_problem = problem.model_copy(
        update={"search": problem.search.model_copy(update={"speculative": None})})
    plain = solve(plain_problem, top_k=1, pareto_factors=None, compare_modes=False).plan
    # At a 10 ms TPOT only tp8 meets it without a draft, at small batches; with one, tp4
    # instances meet it at larger batches and serve far more.
    assert plan.served_rate_per_s > 1.8 * plain.served_rate_per_s
    for check in check_plan(problem, plan):
        assert check.meets_target, check
