"""The result-file readers: every shipped format parsed right, bad files named in errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servingcast.calibrate import read_all, read_results
from servingcast.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "calibration"


def _json(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def test_vllm_result() -> None:
    raw = _json("vllm-llama-3.1-8b-c1.json")
    (m,) = read_results(EXAMPLES / "vllm-llama-3.1-8b-c1.json")
    assert m.format == "vllm"
    assert m.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert m.tp == 1 and m.pp == 1  # --metadata tp=1 is a string in the file
    assert m.input_len == raw["total_input_tokens"] / raw["completed"]
    assert m.output_len == raw["total_output_tokens"] / raw["completed"]
    assert m.concurrency == 1 and m.request_rate_per_s is None  # request_rate "inf"
    assert m.num_prompts == raw["num_prompts"]
    assert m.ttft_ms.mean == raw["mean_ttft_ms"] and m.ttft_ms.median == raw["median_ttft_ms"]
    assert m.tpot_ms.p99 == raw["p99_tpot_ms"]
    assert m.output_throughput_tok_s == raw["output_throughput"]
    assert m.request_throughput_per_s == raw["request_throughput"]


def test_vllm_append_result_holds_one_run_a_line(tmp_path: Path) -> None:
    raw = _json("vllm-llama-3.1-8b-c1.json")
    path = tmp_path / "appended.json"
    path.write_text(json.dumps(raw) + "\n" + json.dumps(raw | {"request_rate": 2.5}))
    first, second = read_results(path)
    assert (first.source, second.source) == (f"{path}:1", f"{path}:2")
    assert second.request_rate_per_s == 2.5


def test_sglang_jsonl() -> None:
    lines = [json.loads(line) for line in
             (EXAMPLES / "sglang-llama-3.1-8b.jsonl").read_text().splitlines()]
    closed, poisson = read_results(EXAMPLES / "sglang-llama-3.1-8b.jsonl")
    assert closed.format == poisson.format == "sglang"
    assert closed.source.endswith("sglang-llama-3.1-8b.jsonl:1")
    assert closed.model is None and closed.tp is None  # SGLang records neither
    assert closed.request_rate_per_s is None and closed.concurrency == lines[0]["max_concurrency"]
    assert poisson.request_rate_per_s == lines[1]["request_rate"] and poisson.concurrency is None
    assert closed.num_prompts == lines[0]["completed"]
    assert closed.tpot_ms.mean == lines[0]["mean_tpot_ms"]
    # its "concurrency" key is the measured mean in flight, not the client's limit
    assert lines[0]["concurrency"] != lines[0]["max_concurrency"]


def test_genai_perf_export() -> None:
    raw = _json("genai-perf-llama-3.2-1b.json")
    (m,) = read_results(EXAMPLES / "genai-perf-llama-3.2-1b.json")
    assert m.format == "genai-perf"
    assert m.model == raw["input_config"]["model"][0]
    assert m.tp is None
    assert m.concurrency == raw["input_config"]["concurrency"]
    assert m.num_prompts == raw["input_config"]["request_count"]
    assert m.input_len == raw["input_sequence_length"]["avg"]
    assert m.ttft_ms.mean == raw["time_to_first_token"]["avg"]
    assert m.tpot_ms.median == raw["inter_token_latency"]["p50"]
    assert m.output_throughput_tok_s == raw["output_token_throughput"]["avg"]


def test_aiperf_export_converts_units() -> None:
    raw = _json("aiperf-llama-3.2-1b.json")
    (m,) = read_results(EXAMPLES / "aiperf-llama-3.2-1b.json")
    assert m.format == "aiperf"
    assert raw["time_to_first_token"]["unit"] == "s"
    assert m.ttft_ms.mean == pytest.approx(raw["time_to_first_token"]["avg"] * 1e3)
    assert m.concurrency == raw["input_config"]["loadgen"]["concurrency"]
    assert m.num_prompts == raw["request_count"]["avg"]
    assert m.model == raw["input_config"]["endpoint"]["model_names"][0]


def test_csv_rows() -> None:
    closed, poisson = read_results(EXAMPLES / "runs.csv")
    assert closed.source.endswith("runs.csv:2") and poisson.source.endswith("runs.csv:3")
    assert (closed.model, closed.tp, closed.concurrency) == ("llama-3.1-8b", 2, 8)
    assert (poisson.model, poisson.tp, poisson.request_rate_per_s) == ("llama-3.2-1b", 1, 10.0)
    assert closed.ttft_ms.mean is not None and closed.ttft_ms.p99 is None
    assert closed.output_throughput_tok_s is not None


def test_every_example_is_read() -> None:
    runs = read_all(sorted(EXAMPLES.glob("*.json*")) + [EXAMPLES / "runs.csv"])
    assert {m.format for m in runs} == {"vllm", "sglang", "genai-perf", "aiperf", "csv"}
    assert len(runs) == 8


# -- bad files ----------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_field_names_file_format_and_field(tmp_path: Path) -> None:
    raw = _json("vllm-llama-3.1-8b-c1.json")
    del raw["total_output_tokens"]
    path = _write(tmp_path, "run.json", json.dumps(raw))
    with pytest.raises(ConfigError) as exc:
        read_results(path)
    assert str(exc.value).startswith(
        f"{path} (vllm bench serve result): no 'total_output_tokens' field. To fix:")


def test_profile_export_without_lengths(tmp_path: Path) -> None:
    raw = _json("genai-perf-llama-3.2-1b.json")
    del raw["output_sequence_length"]
    path = _write(tmp_path, "profile_export_genai_perf.json", json.dumps(raw))
    with pytest.raises(ConfigError, match=r"genai-perf profile export\): no "
                                          r"output_sequence_length\.avg > 0"):
        read_results(path)


def test_unknown_json(tmp_path: Path) -> None:
    path = _write(tmp_path, "other.json", json.dumps({"hello": 1}))
    with pytest.raises(ConfigError, match=r"other\.json: not a benchmark result this reads"):
        read_results(path)


def test_bad_json_line(tmp_path: Path) -> None:
    good = (EXAMPLES / "sglang-llama-3.1-8b.jsonl").read_text().splitlines()[0]
    path = _write(tmp_path, "runs.jsonl", good + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"runs\.jsonl:2: not JSON"):
        read_results(path)


def test_not_a_number(tmp_path: Path) -> None:
    raw = _json("vllm-llama-3.1-8b-c1.json") | {"mean_ttft_ms": "fast"}
    path = _write(tmp_path, "run.json", json.dumps(raw))
    with pytest.raises(ConfigError, match="mean_ttft_ms is 'fast', not a number"):
        read_results(path)


def test_no_metrics(tmp_path: Path) -> None:
    path = _write(tmp_path, "runs.csv", "model,tp,input_len,output_len,concurrency\n"
                                        "llama-3.1-8b,1,100,10,4\n")
    with pytest.raises(ConfigError, match=r"runs\.csv:2 \(calibration CSV\): no TTFT, TPOT or "
                                          "throughput figure"):
        read_results(path)


def test_csv_unknown_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "runs.csv", "model,tp,input_len,output_len,concurrency,ttft\n")
    with pytest.raises(ConfigError, match=r"unknown column 'ttft'. To fix: did you mean "
                                          r"'ttft_ms'\?"):
        read_results(path)


def test_csv_row_without_load(tmp_path: Path) -> None:
    path = _write(tmp_path, "runs.csv", "model,tp,input_len,output_len,ttft_ms\n"
                                        "llama-3.1-8b,1,100,10,20\n")
    with pytest.raises(ConfigError, match=r"runs\.csv:2 \(calibration CSV\): neither "
                                          "concurrency nor request_rate_per_s"):
        read_results(path)


def test_csv_negative_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "runs.csv", "model,tp,input_len,output_len,concurrency,ttft_ms\n"
                                        "llama-3.1-8b,1,100,10,4,-3\n")
    with pytest.raises(ConfigError, match=r"runs\.csv:2 .*ttft_ms must be a finite number"):
        read_results(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        read_results(tmp_path / "absent.json")
