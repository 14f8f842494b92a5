"""Shared by the launch-file tests: solved shipped problems, and parsers that read the emitted
commands back the way the engines do (flag names, types and choices from vLLM's ``EngineArgs``
and ``vllm bench serve``, and SGLang's ``ServerArgs``)."""

from __future__ import annotations

import argparse
import functools
import json
import shlex
from pathlib import Path

from servingcast.deploy import node_sizes, render_deploy
from servingcast.planner import PlanningResult, load_problem, solve
from servingcast.planner.export import scenario_files
from servingcast.planner.plan import InstanceGroup

PROBLEMS = Path(__file__).resolve().parents[2] / "problems"

#: vLLM's ModelDType and CacheDType choices (vllm/config/model.py, vllm/config/cache.py).
VLLM_DTYPES = ["auto", "half", "float16", "bfloat16", "float", "float32"]
VLLM_KV_DTYPES = ["auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "nvfp4"]
SGLANG_KV_DTYPES = ["auto", "fp8_e5m2", "fp8_e4m3", "bf16", "bfloat16", "fp4_e2m1"]


@functools.cache
def solved(name: str) -> PlanningResult:
    """A shipped problem's MILP plan (no alternatives, Pareto sweep or refinement: fast)."""
    return solve(load_problem(PROBLEMS / f"{name}.yaml"), top_k=1, pareto_factors=None,
                 compare_modes=False)


def output_files(result: PlanningResult) -> dict[str, bytes]:
    """The plan's scenario files, as ``servingcast-solve --output`` renders them."""
    return {k: v.encode() for k, v in scenario_files(result.problem, result.plan).items()}


@functools.cache
def deploy(name: str) -> dict[str, str]:
    """Every launch file of a shipped problem's plan, as text."""
    result = solved(name)
    files = render_deploy(output_files(result), node_gpus=node_sizes(result.problem))
    return {k: v.decode() for k, v in files.items()}


def group_stem(g: InstanceGroup) -> str:
    """The file stem of a plan group (the exported scenario's group name)."""
    return (f"{g.role}-{g.pool}-tp{g.tp}" + (f"-pp{g.pp}" if g.pp > 1 else "")
            + (f"-ep{g.ep}" if g.ep > 1 else "") + (f"-dp{g.attn_dp}" if g.attn_dp > 1 else ""))


def part_label(name: str, g: InstanceGroup) -> str | None:
    """The label of the part (scenario file) holding plan group ``g``: none when the plan has
    one part, else ``<workload>-<aggregated|disaggregated>``."""
    result = solved(name)
    modes = {(wp.name, m) for wp in result.plan.workloads
             for m, rate in (("aggregated", wp.aggregated_rate_per_s),
                             ("disaggregated", wp.disaggregated_rate_per_s)) if rate > 0}
    if len(modes) == 1:
        return None
    return f"{g.workload}-{'aggregated' if g.role == 'aggregated' else 'disaggregated'}"


def group_path(name: str, g: InstanceGroup, folder: str, ext: str) -> str:
    """The launch file of plan group ``g`` in ``deploy/<folder>/``."""
    return part_path(part_label(name, g), folder, group_stem(g), ext)


def part_path(label: str | None, folder: str, stem: str, ext: str) -> str:
    """``deploy/<folder>/[<label>-]<stem>.<ext>`` (the emitters' rule)."""
    return f"deploy/{folder}/{label + '-' if label else ''}{stem}.{ext}"


def exec_argv(script: str | bytes) -> list[str]:
    """The argument list of the script's ``exec`` command (continuation lines joined)."""
    text = script.decode() if isinstance(script, bytes) else script
    lines = [line for line in text.replace("\\\n", " ").splitlines() if line.startswith("exec ")]
    assert len(lines) == 1, text
    return shlex.split(lines[0])[1:]


def vllm_parser() -> argparse.ArgumentParser:
    """``vllm serve`` as far as the launch files use it."""
    p = argparse.ArgumentParser(prog="vllm serve")
    p.add_argument("model")
    p.add_argument("--host")
    p.add_argument("--port")
    p.add_argument("--tensor-parallel-size", type=int, required=True)
    p.add_argument("--pipeline-parallel-size", type=int, required=True)
    p.add_argument("--enable-expert-parallel", action="store_true")
    p.add_argument("--max-num-seqs", type=int, required=True)
    p.add_argument("--max-num-batched-tokens", type=int, required=True)
    p.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction,
                   required=True)
    p.add_argument("--block-size", type=int, required=True)
    p.add_argument("--gpu-memory-utilization", type=float, required=True)
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction,
                   required=True)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--dtype", choices=VLLM_DTYPES)
    p.add_argument("--quantization", choices=["fp8", "awq", "gptq", "modelopt_fp4"])
    p.add_argument("--kv-cache-dtype", choices=VLLM_KV_DTYPES, required=True)
    p.add_argument("--distributed-executor-backend", choices=["ray", "mp"])
    p.add_argument("--data-parallel-size", type=int, default=1)
    p.add_argument("--data-parallel-backend", choices=["ray", "mp"])
    p.add_argument("--kv-transfer-config", type=json.loads)
    p.add_argument("--speculative-config", type=json.loads)
    return p


def sglang_parser() -> argparse.ArgumentParser:
    """``python -m sglang.launch_server`` as far as the launch files use it."""
    p = argparse.ArgumentParser(prog="sglang.launch_server")
    p.add_argument("--model-path", required=True)
    p.add_argument("--host")
    p.add_argument("--port")
    p.add_argument("--tp-size", type=int, required=True)
    p.add_argument("--pp-size", type=int, required=True)
    p.add_argument("--ep-size", type=int, default=1)
    p.add_argument("--dp-size", type=int, default=1)
    p.add_argument("--enable-dp-attention", action="store_true")
    p.add_argument("--moe-a2a-backend", choices=["none", "deepep", "mooncake"])
    p.add_argument("--max-running-requests", type=int, required=True)
    p.add_argument("--chunked-prefill-size", type=int)
    p.add_argument("--enable-mixed-chunk", action="store_true")
    p.add_argument("--page-size", type=int, required=True)
    p.add_argument("--mem-fraction-static", type=float, required=True)
    p.add_argument("--disable-radix-cache", action="store_true")
    p.add_argument("--context-length", type=int)
    p.add_argument("--dtype", choices=VLLM_DTYPES)
    p.add_argument("--quantization", choices=["fp8", "modelopt_fp4", "w8a8_int8"])
    p.add_argument("--torchao-config")
    p.add_argument("--kv-cache-dtype", choices=SGLANG_KV_DTYPES, required=True)
    p.add_argument("--disaggregation-mode", choices=["null", "prefill", "decode"],
                   default="null")
    p.add_argument("--disaggregation-transfer-backend", choices=["mooncake", "nixl"])
    p.add_argument("--disaggregation-bootstrap-port", type=int)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank")
    p.add_argument("--dist-init-addr")
    p.add_argument("--speculative-algorithm",
                   choices=["EAGLE", "EAGLE3", "NEXTN", "STANDALONE", "NGRAM"])
    p.add_argument("--speculative-draft-model-path")
    p.add_argument("--speculative-num-steps", type=int)
    p.add_argument("--speculative-eagle-topk", type=int)
    p.add_argument("--speculative-num-draft-tokens", type=int)
    return p


def bench_parser() -> argparse.ArgumentParser:
    """``vllm bench serve`` as far as the launch files use it."""
    p = argparse.ArgumentParser(prog="vllm bench serve")
    for flag in ("--backend", "--base-url", "--endpoint", "--model", "--dataset-name",
                 "--percentile-metrics", "--metric-percentiles", "--result-dir",
                 "--result-filename"):
        p.add_argument(flag, required=True)
    p.add_argument("--random-input-len", type=int, required=True)
    p.add_argument("--random-output-len", type=int, required=True)
    p.add_argument("--random-range-ratio", type=float, default=0.0)
    p.add_argument("--request-rate", type=float, required=True)
    p.add_argument("--burstiness", type=float, default=1.0)
    p.add_argument("--num-prompts", type=int, required=True)
    p.add_argument("--seed", type=int)
    p.add_argument("--goodput", nargs="+")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--save-result", action="store_true")
    return p
