"""Launch files of scenarios built in code: multi-node instances (LeaderWorkerSet), AMD GPUs,
expert parallelism, plans of several parts, placeholders for pre-quantized checkpoints, the
benchmark's length mapping, and regeneration when the scenarios change (the refinement)."""

from __future__ import annotations

import itertools
import math
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from servingcast.deploy import parse_emit, render_deploy
from servingcast.deploy.bench import random_length
from servingcast.errors import ConfigError
from servingcast.planner.problem import load_problem
from servingcast.workload import LognormalLength, UniformLength

from .conftest import PROBLEMS, exec_argv, sglang_parser, vllm_parser


def scenario(model: str, groups: list[dict[str, Any]], precision: str = "bf16",
             workload: dict[str, Any] | None = None) -> bytes:
    data: dict[str, Any] = {"model": model, "precision": precision, "instance_groups": groups,
            "workload": workload or {"num_requests": 1200, "arrival": {"kind": "poisson",
                                                                       "rate": 3.5},
                                     "input_len": 1000, "output_len": 200},
            "slo": {"ttft": "800 ms", "tpot": "40 ms", "attainment": 0.95}, "seed": 0}
    if any(g["role"] != "aggregated" for g in groups):
        data["network"] = {"bandwidth": "50 GB/s", "latency": "6 us"}
    return yaml.safe_dump(data).encode()


def group(name: str, hardware: str, tp: int, pp: int = 1, ep: int = 1, count: int = 2,
          role: str = "aggregated") -> dict[str, Any]:
    return {"name": name, "count": count, "hardware": hardware, "role": role, "tp": tp,
            "pp": pp, "ep": ep, "max_num_seqs": 64, "max_num_batched_tokens": 2048,
            "enable_chunked_prefill": True, "block_size": 32, "gpu_memory_utilization": 0.85,
            "enable_prefix_caching": False}


def test_an_instance_larger_than_a_node_is_a_leader_worker_set() -> None:
    files = render_deploy({"scenario.yaml": scenario(
        "llama-3.1-405b", [group("big", "h100-sxm", tp=8, pp=2, count=3)])})
    workload, service = yaml.safe_load_all(files["deploy/k8s/big.yaml"])
    assert workload["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert workload["kind"] == "LeaderWorkerSet" and workload["spec"]["replicas"] == 3
    template = workload["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2  # 16 GPUs on 8-GPU nodes
    for role in ("leaderTemplate", "workerTemplate"):
        (container,) = template[role]["spec"]["containers"]
        assert container["resources"]["limits"] == {"nvidia.com/gpu": 8}
    (leader,) = template["leaderTemplate"]["spec"]["containers"]
    serve = leader["args"][0].split("exec ", 1)[1]
    args = vllm_parser().parse_args(shlex.split(serve)[2:])
    assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (8, 2)
    assert args.distributed_executor_backend == "ray"
    assert args.block_size == 32 and args.gpu_memory_utilization == 0.85
    assert service["spec"]["selector"]["role"] == "leader"
    sglang = sglang_parser().parse_args(exec_argv(files["deploy/sglang/big.sh"])[3:])
    assert (sglang.nnodes, sglang.node_rank, sglang.dist_init_addr) == (
        2, "$NODE_RANK", "$LEADER_ADDR:5000")
    graph = yaml.safe_load(files["deploy/dynamo/graph.yaml"])
    assert graph["spec"]["services"]["big"]["multinode"] == {"nodeCount": 2}
    assert graph["spec"]["services"]["big"]["resources"]["limits"]["gpu"] == "8"


def test_a_problem_node_size_overrides_the_catalog() -> None:
    files = render_deploy({"scenario.yaml": scenario(
        "llama-3.1-8b", [group("g", "h100-sxm", tp=8, count=1)])}, node_gpus={"h100-sxm": 4})
    workload, _ = yaml.safe_load_all(files["deploy/k8s/g.yaml"])
    assert workload["kind"] == "LeaderWorkerSet"
    assert workload["spec"]["leaderWorkerTemplate"]["size"] == 2
    (c,) = workload["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"]
    assert c["resources"]["requests"] == {"nvidia.com/gpu": 4}


def test_amd_gpus_are_requested_by_their_resource_name() -> None:
    files = render_deploy({"scenario.yaml": scenario(
        "llama-3.1-70b", [group("mi", "mi300x", tp=2, count=5)])}, ["k8s"])
    workload, _ = yaml.safe_load_all(files["deploy/k8s/mi.yaml"])
    assert workload["kind"] == "Deployment" and workload["spec"]["replicas"] == 5
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["limits"] == {"amd.com/gpu": 2} and c["image"].startswith("rocm/")
    assert set(files) == {"deploy/k8s/mi.yaml", "deploy/bench.sh", "deploy/README.md"}


@pytest.mark.parametrize(("ep", "vllm_ep"), [(4, True), (2, False)])
def test_expert_parallelism(ep: int, vllm_ep: bool) -> None:
    files = render_deploy({"scenario.yaml": scenario(
        "qwen3-235b-a22b", [group("moe", "h200-sxm", tp=4, ep=ep)], precision="fp8")})
    text = files["deploy/vllm/moe.sh"].decode()
    args = vllm_parser().parse_args(exec_argv(text)[2:])
    assert args.enable_expert_parallel == vllm_ep  # vLLM's EP spans every tp rank
    assert vllm_ep or "ep 2 inside tp 4" in text
    sglang = sglang_parser().parse_args(exec_argv(files["deploy/sglang/moe.sh"])[3:])
    assert (sglang.tp_size, sglang.ep_size) == (4, ep)


def test_a_plan_of_several_parts_prefixes_its_files() -> None:
    chat = scenario("llama-3.1-8b", [group("aggregated-h100-tp1", "h100-sxm", tp=1)])
    rag = scenario("qwen3-8b", [group("prefill-h100-tp1", "h100-sxm", 1, role="prefill"),
                                group("decode-h100-tp2", "h100-sxm", 2, role="decode")])
    files = render_deploy({"scenario.yaml": chat, "scenario-chat.yaml": chat,
                           "scenario-rag.yaml": rag, "plan.json": b"{}"})
    assert {"deploy/bench-chat.sh", "deploy/bench-rag.sh", "deploy/dynamo/chat-graph.yaml",
            "deploy/vllm/rag-proxy.sh", "deploy/sglang/rag-router.sh",
            "deploy/vllm/chat-aggregated-h100-tp1.sh",
            "deploy/k8s/rag-decode-h100-tp2.yaml"} <= set(files)
    assert not any("/aggregated-h100-tp1" in name for name in files)  # scenario.yaml repeats
    proxy = exec_argv(files["deploy/vllm/rag-proxy.sh"])
    hosts = proxy[proxy.index("--prefiller-hosts") + 1:proxy.index("--prefiller-ports")]
    assert hosts == ["prefill-h100-tp1-0", "prefill-h100-tp1-1"]  # one per planned instance


def test_scripts_are_valid_bash_and_a_quantized_model_must_be_named(tmp_path: Path) -> None:
    files = render_deploy({"scenario.yaml": scenario(
        "llama-3.1-8b", [group("q", "h100-sxm", tp=1)], precision="w4a16")})
    for name, data in files.items():
        if name.endswith(".sh"):
            path = tmp_path / name.replace("/", "_")
            path.write_bytes(data)
            assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0, name
    env = {k: v for k, v in os.environ.items() if k != "MODEL"}
    run = subprocess.run(["bash", str(tmp_path / "deploy_vllm_q.sh")], capture_output=True,
                         text=True, env=env, check=False, timeout=30)
    assert run.returncode != 0
    assert ("set MODEL to an INT4 weight-only checkpoint of meta-llama/Llama-3.1-8B with "
            "group size 128") in run.stderr
    workload, _ = yaml.safe_load_all(files["deploy/k8s/q.yaml"])
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    assert c["args"][0].startswith("<an INT4 weight-only checkpoint")


def test_bench_lengths_and_arrivals() -> None:
    assert random_length(UniformLength(kind="uniform", low=1000, high=3000)) == (2000, 0.5, True)
    lognormal = LognormalLength(kind="lognormal", mean=800, std=300)
    length, ratio, exact = random_length(lognormal)
    sample = lognormal.sample(np.random.default_rng(3), 200_000)
    assert not exact and math.isclose(length, sample.mean(), rel_tol=0.01)
    assert math.isclose(ratio, math.sqrt(3) * sample.std() / sample.mean(), rel_tol=0.1)
    files = render_deploy({"scenario.yaml": scenario(
        "llama-3.1-8b", [group("g", "h100-sxm", tp=1)],
        workload={"num_requests": 500, "arrival": {"kind": "gamma", "rate": 2.0, "cv": 2.0},
                  "input_len": {"kind": "uniform", "low": 500, "high": 1500},
                  "output_len": 100})}, ["vllm"])
    argv = exec_argv(files["deploy/bench.sh"])
    value = dict(itertools.pairwise(argv))
    assert value["--request-rate"] == "2.0" and value["--burstiness"] == "0.25"
    assert value["--random-input-len"] == "1000" and value["--random-range-ratio"] == "0.5"
    assert value["--metric-percentiles"] == "50,95,99" and value["--num-prompts"] == "500"
    assert argv[argv.index("--goodput") + 1:argv.index("--goodput") + 3] == [
        "ttft:800", "tpot:40"]


def test_parse_emit() -> None:
    assert parse_emit(None) == parse_emit("all") == ("vllm", "sglang", "dynamo", "k8s")
    assert parse_emit(" K8S, vllm ") == ("vllm", "k8s") and parse_emit("none") == ()
    with pytest.raises(ConfigError, match=r"--emit 'vllm,trt': unknown launch-file kind 'trt'"):
        parse_emit("vllm,trt")


def test_launch_files_follow_the_scenarios_they_are_rendered_from() -> None:
    """What the CLI does after a refinement: old launch files out, new ones from the new
    scenarios (here the refinement changed a count and a group)."""
    from servingcast._cli_solve import _with_deploy

    problem = load_problem(PROBLEMS / "quickstart.yaml")
    engines = parse_emit(None)
    before = _with_deploy({"scenario.yaml": scenario(
        "llama-3.1-8b", [group("aggregated-h100-tp1", "h100-sxm", 1, count=8)])}, engines,
        problem)
    after = _with_deploy({**before, "scenario.yaml": scenario(
        "llama-3.1-8b", [group("aggregated-h100-tp2", "h100-sxm", 2, count=3)])}, engines,
        problem)
    assert "deploy/k8s/aggregated-h100-tp1.yaml" in before
    assert not any("tp1" in name for name in after)
    workload, _ = yaml.safe_load_all(after["deploy/k8s/aggregated-h100-tp2.yaml"])
    assert workload["spec"]["replicas"] == 3
