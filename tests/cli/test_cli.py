import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from servingcast.cli import main

ESTIMATE = ["estimate", "--model", "llama-3.1-70b", "--hardware", "h100-sxm", "--tp", "4",
            "--batch-size", "64", "--input-len", "2048", "--output-len", "256"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_estimate_table_has_breakdown() -> None:
    code, out, _ = invoke(*ESTIMATE)
    assert code == 0
    for text in ("TTFT (ms)", "TPOT (ms)", "output tokens/s per GPU", "MLP", "TP all-reduce",
                 "by bound:", "efficiency: calibrated"):
        assert text in out


def test_estimate_json_fields() -> None:
    code, out, _ = invoke(*ESTIMATE, "--json")
    assert code == 0
    data = json.loads(out)
    for key in ("ttft_ms", "tpot_ms", "e2e_ms", "output_tokens_per_s",
                "output_tokens_per_s_per_gpu", "batch_size", "max_batch_size",
                "weights_gb_per_gpu", "kv_cache_gb_per_gpu", "feasible", "breakdown"):
        assert key in data
    assert set(data["breakdown"]) == {"prefill_ms", "decode_ms_per_token"}
    assert data["batch_size"] == 64 and data["feasible"] is True


def test_estimate_all_options() -> None:
    code, out, _ = invoke(*ESTIMATE, "--precision", "fp8", "--decode-hardware", "h200-sxm",
                          "--network-bandwidth", "400 Gb/s", "--draft-model", "llama-3.2-1b",
                          "--draft-acceptance-rate", "0.6", "--cached-prefix-len", "1024",
                          "--prefill-chunk-tokens", "512", "--efficiency", "0.6", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["kv_transfer_ms"] > 0 and data["spec_tokens_per_step"] > 1
    assert data["max_chunk_stall_ms"] > 0 and data["efficiency"]["compute"] == 0.6


def test_batch_size_max() -> None:
    code, out, _ = invoke(*ESTIMATE[:-6], "--batch-size", "max", "--input-len", "2048",
                          "--output-len", "256", "--json")
    data = json.loads(out)
    assert code == 0 and data["batch_size"] == data["max_batch_size"] > 64


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--model", "llama-3.1-7b"], "unknown model 'llama-3.1-7b'"),
     (["--hardware", "h100-sxn"], "did you mean h100-sxm"),
     (["--tp", "3"], "tp=3 does not divide the 64 attention heads"),
     (["--cached-prefix-len", "4096"],
      "cached_prefix_len (--cached-prefix-len) must be >= 0 and < seq_len"),
     (["--draft-model", "llama-3.2-1b", "--draft-acceptance-rate", "-0.1"],
      r"draft_acceptance_rate (--draft-acceptance-rate) must be in [0, 1]"),
     (["--input-len", "0"], "seq_len (--input-len) must be a whole number > 0"),
     (["--batch-size", "100000"], "room for"),
     (["--batch-size", "-4"], "must be > 0"),
     (["--efficiency", "2"], "must be in (0, 1]")],
)
def test_bad_input_is_one_clean_line(args: list[str], message: str) -> None:
    base = dict(zip(ESTIMATE[1::2], ESTIMATE[2::2], strict=True))
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["estimate", *[x for kv in base.items() for x in kv]]
    code, out, err = invoke(*argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out


def test_model_too_big_for_one_gpu() -> None:
    code, _, err = invoke("estimate", "-m", "llama-3.1-405b", "-g", "l4", "-i", "100", "-o", "10")
    assert code == 2 and "does not fit" in err and "To fix" in err


def test_catalog_listings() -> None:
    code, out, _ = invoke("catalog", "hardware")
    assert code == 0 and "h100-sxm" in out and "mi300x" in out
    code, out, _ = invoke("catalog", "models")
    assert code == 0 and "deepseek-v3" in out and "MLA" in out
    code, out, _ = invoke("catalog", "models", "--json")
    assert code == 0 and any(m["name"] == "mixtral-8x7b" for m in json.loads(out))


def test_validate_prints_accuracy() -> None:
    code, out, _ = invoke("validate", "--worst", "1")
    assert code == 0 and "median APE" in out and "c max throughput" in out


def test_debug_shows_traceback() -> None:
    result = CliRunner().invoke(main, ["estimate", "-m", "nope", "-g", "h100", "-i", "1", "-o",
                                       "1", "--debug"])
    assert result.exit_code != 0 and result.exception is not None


@pytest.mark.parametrize(("command", "argument"), [("simulate", "SCENARIO"), ("solve", "PROBLEM")])
def test_subcommands_are_wired(command: str, argument: str) -> None:
    code, out, _ = invoke(command, "--help")
    assert code == 0 and argument in out


def test_console_script_error_has_no_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "servingcast.cli", "estimate", "-m", "gpt-5",
                           "-g", "h100", "-i", "10", "-o", "10"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown model 'gpt-5'")
    assert "Traceback" not in proc.stderr
