"""Launch files of attention data-parallel + expert-parallel (DEP) engines."""

from __future__ import annotations

import shlex

import yaml

from servingcast.deploy import render_deploy

from .conftest import deploy, exec_argv, group_path, sglang_parser, solved, vllm_parser
from .test_layout import scenario


def dep_group(name: str, attn_dp: int, tp: int = 1, count: int = 1) -> dict[str, object]:
    return {"name": name, "count": count, "hardware": "h200-sxm", "role": "decode", "tp": tp,
            "pp": 1, "ep": attn_dp * tp, "attn_dp": attn_dp, "max_num_seqs": 128,
            "max_num_batched_tokens": 128, "enable_chunked_prefill": True, "block_size": 16,
            "gpu_memory_utilization": 0.9, "enable_prefix_caching": False}


def prefill_group() -> dict[str, object]:
    return {"name": "pre", "count": 2, "hardware": "h200-sxm", "role": "prefill", "tp": 8,
            "pp": 1, "ep": 8, "max_num_seqs": 64, "max_num_batched_tokens": 8192,
            "enable_chunked_prefill": True, "block_size": 16, "gpu_memory_utilization": 0.9,
            "enable_prefix_caching": False}


def files_of(*groups: dict[str, object]) -> dict[str, bytes]:
    return render_deploy({"scenario.yaml": scenario("deepseek-v3", list(groups),
                                                    precision="fp8")})


def test_vllm_dep8_in_one_node() -> None:
    files = files_of(prefill_group(), dep_group("dec", 8))
    args = vllm_parser().parse_args(exec_argv(files["deploy/vllm/dec.sh"])[2:])
    assert (args.tensor_parallel_size, args.data_parallel_size) == (1, 8)
    assert args.enable_expert_parallel
    assert args.max_num_seqs == 128  # per DP rank, as the scenario's
    pre = vllm_parser().parse_args(exec_argv(files["deploy/vllm/pre.sh"])[2:])
    assert pre.data_parallel_size == 1  # a plain group keeps its flags


def test_sglang_dep8_flags() -> None:
    files = files_of(prefill_group(), dep_group("dec", 8))
    args = sglang_parser().parse_args(exec_argv(files["deploy/sglang/dec.sh"])[3:])
    assert (args.tp_size, args.dp_size, args.ep_size) == (8, 8, 8)
    assert args.enable_dp_attention and args.moe_a2a_backend == "deepep"
    assert args.max_running_requests == 8 * 128  # the engine's total over its ranks
    pre = sglang_parser().parse_args(exec_argv(files["deploy/sglang/pre.sh"])[3:])
    assert not pre.enable_dp_attention and pre.dp_size == 1


def test_dep16_spans_two_nodes_with_all_its_gpus() -> None:
    files = files_of(prefill_group(), dep_group("dec", 16))
    workload, _ = yaml.safe_load_all(files["deploy/k8s/dec.yaml"])
    assert workload["kind"] == "LeaderWorkerSet"
    template = workload["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2  # 16 GPUs = attn_dp x tp on 8-GPU nodes
    (leader,) = template["leaderTemplate"]["spec"]["containers"]
    assert leader["resources"]["limits"] == {"nvidia.com/gpu": 8}
    serve = leader["args"][0].split("exec ", 1)[1]
    args = vllm_parser().parse_args(shlex.split(serve)[2:])
    assert args.data_parallel_size == 16 and args.data_parallel_backend == "ray"
    assert args.distributed_executor_backend is None
    sglang = sglang_parser().parse_args(exec_argv(files["deploy/sglang/dec.sh"])[3:])
    assert (sglang.tp_size, sglang.dp_size) == (16, 16)


def test_shipped_dep_plan_launches_as_planned() -> None:
    """The shipped DeepSeek-V3 problem's DEP decode group, flag by flag against the plan."""
    name = "deepseek-v3-dep-h200x32"
    decode = [g for g in solved(name).plan.groups if g.role == "decode" and g.count > 0]
    assert decode and all(g.attn_dp > 1 for g in decode)
    files = deploy(name)
    for g in decode:
        vllm = vllm_parser().parse_args(exec_argv(files[group_path(name, g, "vllm", "sh")])[2:])
        assert (vllm.tensor_parallel_size, vllm.data_parallel_size) == (g.tp, g.attn_dp)
        assert vllm.enable_expert_parallel
        assert vllm.max_num_seqs == g.rank_max_num_seqs
        sglang = sglang_parser().parse_args(
            exec_argv(files[group_path(name, g, "sglang", "sh")])[3:])
        assert (sglang.tp_size, sglang.dp_size, sglang.ep_size) == (
            g.attn_dp * g.tp, g.attn_dp, g.ep)
        assert sglang.max_running_requests == g.rank_max_num_seqs * g.attn_dp
        workload, _ = yaml.safe_load_all(files[group_path(name, g, "k8s", "yaml")])
        spec = workload["spec"]
        pods = spec["leaderWorkerTemplate"]["size"] if "leaderWorkerTemplate" in spec else 1
        text = yaml.safe_dump(workload)
        per_pod = g.gpus_per_instance // pods
        assert g.gpus_per_instance == g.attn_dp * g.tp * g.pp and per_pod <= 8
        assert f"nvidia.com/gpu: {per_pod}" in text
