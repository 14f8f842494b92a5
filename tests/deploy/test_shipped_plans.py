"""The launch files of shipped problems, parsed back and compared with the plan, flag by flag.

quickstart is aggregated (bf16), qwen3-32b-h200x32 disaggregated with two decode groups (bf16),
llama-3.1-70b-h100x64 disaggregated in fp8 (FP8 weights and KV cache).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from servingcast.costmodel.memory import memory_plan
from servingcast.costmodel.parallel import Parallelism
from servingcast.costmodel.step import CostModel
from servingcast.planner.plan import InstanceGroup
from servingcast.planner.problem import Workload
from servingcast.specs.catalog import get_hardware, get_model
from servingcast.specs.precision import get_precision
from servingcast.workload import FixedLength

from .conftest import (
    bench_parser,
    deploy,
    exec_argv,
    group_path,
    group_stem,
    part_label,
    part_path,
    sglang_parser,
    solved,
    vllm_parser,
)

SHIPPED = ["quickstart", "qwen3-32b-h200x32", "llama-3.1-70b-h100x64"]
#: What each precision of these problems must launch as: (--dtype, --quantization, KV dtype).
VLLM_PRECISION = {"bf16": ("bfloat16", None, "auto"), "fp8": (None, "fp8", "fp8")}
SGLANG_PRECISION = {"bf16": ("bfloat16", None, "auto"), "fp8": (None, "fp8", "fp8_e4m3")}


def _groups(name: str) -> list[InstanceGroup]:
    return [g for g in solved(name).plan.groups if g.count > 0]


def _bench(label: str | None) -> str:
    return f"deploy/bench-{label}.sh" if label else "deploy/bench.sh"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_plan_group_has_its_files(name: str) -> None:
    files = deploy(name)
    labels = set()
    for g in _groups(name):
        for path in (group_path(name, g, "vllm", "sh"), group_path(name, g, "sglang", "sh"),
                     group_path(name, g, "k8s", "yaml")):
            assert path in files, sorted(files)
        label = part_label(name, g)
        labels.add(label)
        disaggregated = g.role != "aggregated"
        assert (part_path(label, "vllm", "proxy", "sh") in files) == disaggregated
        assert (part_path(label, "sglang", "router", "sh") in files) == disaggregated
        assert part_path(label, "dynamo", "graph", "yaml") in files
    assert "deploy/README.md" in files
    assert {_bench(label) for label in labels} <= set(files)
    assert all(text.startswith("#!/usr/bin/env bash\n") for path, text in files.items()
               if path.endswith(".sh"))


@pytest.mark.parametrize("name", SHIPPED)
def test_vllm_flags_equal_the_plan(name: str) -> None:
    result = solved(name)
    search = result.problem.search
    workload = result.problem.workloads[0]
    for g in _groups(name):
        text = deploy(name)[group_path(name, g, "vllm", "sh")]
        argv = exec_argv(text)
        assert argv[:2] == ["vllm", "serve"]
        args = vllm_parser().parse_args(argv[2:])
        assert args.model == get_model(workload.model).hf_id
        assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (g.tp, g.pp)
        assert args.max_num_seqs == g.max_num_seqs
        assert args.max_num_batched_tokens == g.max_num_batched_tokens
        if g.role == "decode":  # vLLM needs it on below the context length; decode never prefills
            assert args.enable_chunked_prefill and not g.enable_chunked_prefill
            assert "decode instances run no prefill" in text
        else:
            assert args.enable_chunked_prefill == g.enable_chunked_prefill
        assert args.block_size == search.block_size
        assert args.gpu_memory_utilization == search.gpu_memory_utilization
        assert args.enable_prefix_caching is False
        assert (args.dtype, args.quantization, args.kv_cache_dtype) == VLLM_PRECISION[
            workload.precision]
        assert args.enable_expert_parallel is False and args.distributed_executor_backend is None
        if g.role == "aggregated":
            assert args.kv_transfer_config is None
        else:
            role = {"prefill": "kv_producer", "decode": "kv_consumer"}[g.role]
            assert args.kv_transfer_config == {"kv_connector": "NixlConnector", "kv_role": role}


@pytest.mark.parametrize("name", SHIPPED)
def test_sglang_flags_equal_the_plan(name: str) -> None:
    result = solved(name)
    search = result.problem.search
    workload = result.problem.workloads[0]
    precision = get_precision(workload.precision)
    for g in _groups(name):
        args = sglang_parser().parse_args(
            exec_argv(deploy(name)[group_path(name, g, "sglang", "sh")])[3:])
        assert args.model_path == get_model(workload.model).hf_id
        assert (args.tp_size, args.pp_size, args.ep_size) == (g.tp, g.pp, g.ep)
        assert args.max_running_requests == g.max_num_seqs
        if g.role == "decode":
            assert args.chunked_prefill_size is None
        else:
            assert args.chunked_prefill_size == (
                g.max_num_batched_tokens if g.enable_chunked_prefill else -1)
        assert args.enable_mixed_chunk == (g.role == "aggregated")
        assert args.page_size == search.block_size
        assert args.disable_radix_cache
        assert (args.dtype, args.quantization, args.kv_cache_dtype) == SGLANG_PRECISION[
            workload.precision]
        expected_mode = "null" if g.role == "aggregated" else g.role
        assert args.disaggregation_mode == expected_mode
        if g.role != "aggregated":
            assert args.disaggregation_transfer_backend == "nixl"
        # The static fraction holds weights + the modelled KV cache, no more (within 0.001).
        hardware = get_hardware(g.hardware)
        cm = CostModel(get_model(workload.model), hardware, precision,
                       Parallelism(tp=g.tp, pp=g.pp, ep=g.ep))
        mem = memory_plan(cm, search.gpu_memory_utilization, g.max_num_batched_tokens,
                          g.max_num_seqs, search.block_size)
        pool_bytes = args.mem_fraction_static * hardware.hbm_bytes - mem.weights_bytes_per_gpu
        assert 0 <= mem.kv_cache_bytes_per_gpu - pool_bytes <= 0.001 * hardware.hbm_bytes
        assert args.mem_fraction_static < search.gpu_memory_utilization


@pytest.mark.parametrize("name", SHIPPED)
def test_k8s_replicas_and_gpus_equal_the_plan(name: str) -> None:
    for g in _groups(name):
        text = deploy(name)[group_path(name, g, "k8s", "yaml")]
        workload, service = list(yaml.safe_load_all(text))
        assert workload["kind"] == "Deployment"  # every instance here fits one node
        assert workload["spec"]["replicas"] == g.count
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["resources"]["limits"] == {"nvidia.com/gpu": g.tp * g.pp}
        assert container["resources"]["requests"] == {"nvidia.com/gpu": g.tp * g.pp}
        argv = container["command"] + container["args"]
        script = exec_argv(deploy(name)[group_path(name, g, "vllm", "sh")])
        assert argv[:2] == ["vllm", "serve"]
        assert vars(vllm_parser().parse_args(argv[2:])) == {
            **vars(vllm_parser().parse_args(script[2:])), "port": "8000"}
        assert service["kind"] == "Service"
        assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("name", SHIPPED)
def test_dynamo_graph_equals_the_plan(name: str) -> None:
    for g in _groups(name):
        graph = yaml.safe_load(deploy(name)[part_path(part_label(name, g), "dynamo", "graph",
                                                      "yaml")])
        assert graph["kind"] == "DynamoGraphDeployment"
        services = graph["spec"]["services"]
        assert services["Frontend"]["componentType"] == "frontend"
        service = services[group_stem(g)]
        assert service["replicas"] == g.count
        assert service["resources"]["limits"]["gpu"] == str(g.tp * g.pp)
        assert service.get("subComponentType") == (None if g.role == "aggregated" else g.role)
        container = service["extraPodSpec"]["mainContainer"]
        assert container["command"] == ["python3", "-m", "dynamo.vllm"]
        args = container["args"]
        assert args[args.index("--tensor-parallel-size") + 1] == str(g.tp)
        assert args[args.index("--max-num-seqs") + 1] == str(g.max_num_seqs)
        assert args[args.index("--max-num-batched-tokens") + 1] == str(g.max_num_batched_tokens)
        assert ("--disaggregation-mode" in args) == (g.role != "aggregated")
        assert "--kv-transfer-config" not in args  # Dynamo wires NIXL itself


@pytest.mark.parametrize("name", SHIPPED)
def test_bench_reproduces_the_planned_workload(name: str) -> None:
    result = solved(name)
    w = result.problem.workloads[0]
    wp = result.plan.workloads[0]
    rates = {part_label(name, g): (wp.aggregated_rate_per_s if g.role == "aggregated"
                                   else wp.disaggregated_rate_per_s) for g in _groups(name)}
    for label, rate in rates.items():
        _check_bench(name, label, rate, w)


def _check_bench(name: str, label: str | None, part_rate: float, w: Workload) -> None:
    """The bench of part ``label``: its planned rate, lengths and SLO percentiles."""
    bench = deploy(name)[_bench(label)]
    argv = exec_argv(bench)
    assert argv[:3] == ["vllm", "bench", "serve"]
    args = bench_parser().parse_args(argv[3:])
    assert math.isclose(args.request_rate, part_rate, rel_tol=1e-6)
    if isinstance(w.input_len, FixedLength) and isinstance(w.output_len, FixedLength):
        assert args.random_input_len == w.input_len.value
        assert args.random_output_len == w.output_len.value
        assert args.random_range_ratio == 0.0
    else:  # log-normal lengths: a uniform of the same mean and (nearly) the same spread
        rng = np.random.default_rng(1)
        ratios = []
        for dist, length in ((w.input_len, args.random_input_len),
                             (w.output_len, args.random_output_len)):
            sample = dist.sample(rng, 200_000)
            assert math.isclose(length, sample.mean(), rel_tol=0.01)
            ratios.append(min(0.99, math.sqrt(3) * sample.std() / sample.mean()))
        assert 0.9 * max(ratios) <= args.random_range_ratio <= max(ratios) + 1e-9
        assert "approximated by uniform ones" in bench
    assert args.ignore_eos and args.burstiness == 1.0
    assert args.dataset_name == "random" and args.model == get_model(w.model).hf_id
    assert args.percentile_metrics == "ttft,tpot,itl,e2el"
    target = f"{w.slo.attainment * 100:g}"
    assert target in args.metric_percentiles.split(",")
    assert sorted(args.goodput) == sorted([f"ttft:{w.slo.ttft_s * 1e3:g}",
                                           f"tpot:{w.slo.tpot_s * 1e3:g}"])
    assert args.num_prompts == max(1000, min(10_000, round(60 * part_rate)))
    assert args.save_result
