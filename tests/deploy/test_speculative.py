"""Speculative decoding in the launch files: vLLM's ``--speculative-config`` and SGLang's
``--speculative-*`` flags, parsed back and compared with the plan and its scenario."""

from __future__ import annotations

import pytest

from servingcast.costmodel.spec import draft_parallelism
from servingcast.deploy import node_sizes, render_deploy
from servingcast.planner import solve
from servingcast.planner.problem import problem_from_dict
from servingcast.specs.catalog import get_model

from .conftest import (
    deploy,
    exec_argv,
    group_path,
    output_files,
    sglang_parser,
    solved,
    vllm_parser,
)

NAME = "spec-decode-llama-3.1-70b"


def test_shipped_plan_launches_with_its_draft() -> None:
    files = deploy(NAME)
    result = solved(NAME)
    spec = result.problem.search.speculative
    assert spec is not None
    for g in result.plan.groups:
        assert g.spec_tokens > 0 and g.draft_model == "llama-3.2-1b"
        vllm = vllm_parser().parse_args(
            exec_argv(files[group_path(NAME, g, "vllm", "sh")])[2:])
        assert vllm.speculative_config == {
            "model": "meta-llama/Llama-3.2-1B", "num_speculative_tokens": g.spec_tokens,
            "draft_tensor_parallel_size": draft_parallelism(get_model("llama-3.2-1b"), g.tp).tp}
        script = files[group_path(NAME, g, "sglang", "sh")]
        sglang = sglang_parser().parse_args(exec_argv(script)[3:])
        assert sglang.speculative_algorithm == "STANDALONE"
        assert sglang.speculative_draft_model_path == "meta-llama/Llama-3.2-1B"
        assert sglang.speculative_num_steps == g.spec_tokens
        assert sglang.speculative_eagle_topk == 1
        assert sglang.speculative_num_draft_tokens == g.spec_tokens + 1
        assert f"acceptance rate of {spec.acceptance_rate:g}" in script


def test_disaggregated_prefill_does_not_speculate() -> None:
    problem = problem_from_dict({
        "name": "spec-pd",
        "pools": [{"name": "h100", "hardware": "h100-sxm", "count": 8}],
        "workloads": [{"name": "chat", "model": "llama-3.1-8b", "precision": "bf16",
                       "input_len": 512, "output_len": 257,
                       "slo": {"ttft": "2000 ms", "tpot": "8 ms", "attainment": 0.9}}],
        "search": {"modes": ["disaggregated"], "tp": [1], "pp": [1], "max_num_seqs": [64],
                   "max_num_batched_tokens": [2048],
                   "speculative": {"draft_model": "llama-3.2-1b", "acceptance_rate": 0.7,
                                   "num_speculative_tokens": [4]}}})
    result = solve(problem, top_k=1, pareto_factors=None, compare_modes=False)
    files = {k: v.decode() for k, v in render_deploy(
        output_files(result), node_gpus=node_sizes(problem)).items()}
    roles = {g.role for g in result.plan.groups}
    assert roles == {"prefill", "decode"}
    for path, text in files.items():
        if not path.endswith(".sh") or "proxy" in path or "router" in path or "bench" in path:
            continue
        argv = exec_argv(text)
        if "/vllm/" in path:
            args = vllm_parser().parse_args(argv[2:])
            speculates = args.speculative_config is not None
        else:
            args = sglang_parser().parse_args(argv[3:])
            speculates = args.speculative_algorithm is not None
        assert speculates == ("decode" in path), path


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_plain_plans_have_no_speculative_flags(engine: str) -> None:
    for text in deploy("quickstart").values():
        assert "--speculative" not in text, engine


def test_mtp_plans_launch_with_the_models_own_layers() -> None:
    """DeepSeek-V3 drafting with its MTP layer: vLLM's ``"method": "mtp"``, SGLang's NEXTN,
    each with the plan's number of speculative tokens; the scenario runs it too."""
    problem = problem_from_dict({
        "name": "mtp",
        "pools": [{"name": "h200", "hardware": "h200-sxm", "count": 8}],
        "workloads": [{"name": "chat", "model": "deepseek-v3", "precision": "fp8",
                       "input_len": 1000, "output_len": 300,
                       "slo": {"ttft": "3 s", "tpot": "40 ms", "attainment": 0.9}}],
        "search": {"modes": ["aggregated"], "tp": [8], "pp": [1], "ep": [8],
                   "max_num_seqs": [64], "max_num_batched_tokens": [8192],
                   "speculative": {"draft_model": "mtp", "acceptance_rate": 0.8,
                                   "num_speculative_tokens": [1]}}})
    result = solve(problem, top_k=1, pareto_factors=None, compare_modes=False)
    (g,) = result.plan.groups
    assert g.spec_tokens == 1 and g.draft_model == "mtp"
    files = {k: v.decode() for k, v in render_deploy(
        output_files(result), node_gpus=node_sizes(problem)).items()}
    vllm = [t for p, t in files.items() if "/vllm/" in p and p.endswith(".sh")
            and "bench" not in p]
    sglang = [t for p, t in files.items() if "/sglang/" in p and p.endswith(".sh")
              and "bench" not in p and "router" not in p]
    assert vllm and sglang
    args = vllm_parser().parse_args(exec_argv(vllm[0])[2:])
    assert args.speculative_config == {"method": "mtp", "num_speculative_tokens": 1}
    sg = sglang_parser().parse_args(exec_argv(sglang[0])[3:])
    assert sg.speculative_algorithm == "NEXTN" and sg.speculative_draft_model_path is None
    assert sg.speculative_num_steps == 1 and sg.speculative_num_draft_tokens == 2
