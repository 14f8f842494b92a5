"""Launch files of a plan that turns prefix caching on: vLLM gets --enable-prefix-caching and
SGLang keeps its radix cache (no --disable-radix-cache)."""

from __future__ import annotations

from .conftest import deploy, exec_argv, group_path, sglang_parser, solved, vllm_parser

NAME = "agentic-llama-3.1-8b"


def test_cached_groups_launch_with_prefix_caching() -> None:
    groups = [g for g in solved(NAME).plan.groups if g.count > 0]
    assert groups and all(g.prefix_caching for g in groups)
    files = deploy(NAME)
    for g in groups:
        vllm = vllm_parser().parse_args(exec_argv(files[group_path(NAME, g, "vllm", "sh")])[2:])
        assert vllm.enable_prefix_caching is True
        sglang = sglang_parser().parse_args(
            exec_argv(files[group_path(NAME, g, "sglang", "sh")])[3:])
        assert not sglang.disable_radix_cache
