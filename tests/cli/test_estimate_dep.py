"""``servingcast estimate --attn-dp``: attention data-parallel + expert-parallel engines."""

import json

from click.testing import CliRunner

from servingcast.cli import main

BASE = ["estimate", "-m", "deepseek-v3", "-g", "h200", "-p", "fp8", "-i", "2048", "-o", "64"]


def test_attn_dp_is_accepted_and_printed() -> None:
    result = CliRunner().invoke(main, [*BASE, "--attn-dp", "16", "-b", "4096"])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert "attn_dp=16 tp=1 pp=1 ep=16 (256 requests per rank)" in first
    assert "16 GPU(s)" in first


def test_attn_dp_json_and_kv_capacity() -> None:
    dep = CliRunner().invoke(main, [*BASE, "--attn-dp", "16", "-b", "4096", "--json"])
    tp = CliRunner().invoke(main, [*BASE, "--tp", "16", "--ep", "16", "-b", "256", "--json"])
    d, t = json.loads(dep.output), json.loads(tp.output)
    assert (d["attn_dp"], d["ep"], d["num_gpus"]) == (16, 16, 16)
    assert t["attn_dp"] == 1
    assert d["kv_capacity_tokens"] > 10 * t["kv_capacity_tokens"]
    # The batch's KV per GPU is one rank's share.
    assert d["kv_cache_used_gb_per_gpu"] < d["kv_cache_gb_per_gpu"]


def test_attn_dp_on_a_dense_model_is_a_clean_error() -> None:
    result = CliRunner().invoke(main, ["estimate", "-m", "llama-3.1-8b", "-g", "h100", "-i",
                                       "100", "-o", "10", "--attn-dp", "2"])
    assert result.exit_code == 2
    assert "needs a mixture-of-experts model" in result.output
    assert "Traceback" not in result.output
