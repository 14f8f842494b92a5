"""Bad inputs to every command end in one clean message and exit code 2.

Each case runs ``servingcast estimate``, ``servingcast-simulate`` or ``servingcast-solve`` on a
mistake a user could make (files written to ``tmp_path``) and checks: exit code 2, no traceback,
the key words of the message (file, line, field, "To fix"), and that nothing was written. Every
input fails before any simulation or MILP runs, so the whole matrix takes seconds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from servingcast._cli_sim import simulate_command
from servingcast._cli_solve import solve_command
from servingcast.cli import main

Setup = Callable[[Path], list[str]]
DROP = object()  # a value that removes the field

SCENARIO: dict[str, Any] = {
    "model": "llama-3.1-8b",
    "instance_groups": [{"name": "main", "count": 1, "hardware": "h100-sxm"}],
    "workload": {"num_requests": 50, "arrival": {"kind": "poisson", "rate": 4},
                 "input_len": 100, "output_len": 20},
    "slo": {"ttft": "1 s", "tpot": "50 ms", "attainment": 0.9},
    "seed": 0,
}
PROBLEM: dict[str, Any] = {
    "pools": [{"hardware": "h100-sxm", "count": 8}],
    "workloads": [{"name": "chat", "model": "llama-3.1-8b", "input_len": 1024,
                   "output_len": 256, "demand": "maximize",
                   "slo": {"ttft": "500 ms", "tpot": "50 ms", "attainment": 0.9}}],
    "search": {"tp": [1, 2, 4, 8], "pp": [1]},
}
ESTIMATE = ["estimate", "-m", "llama-3.1-8b", "-g", "h100-sxm", "-i", "512", "-o", "64"]
TRACE_YAML = "model: llama-3.1-8b\ninstance_groups:\n  - {name: main, hardware: h100-sxm}\n" \
             "workload:\n  trace: {path: t.csv}\n"
ALIAS_BOMB = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    + ["model: *a9"]) + "\n"


def _changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each dotted path (list indexes as numbers) set, or removed with DROP."""
    data = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
        node: Any = data
        for part in parents:
            node = node[part]
        if value is DROP:
            del node[last]
        else:
            node[last] = value
    return data


def _file(name: str, content: str | bytes | None, extra: dict[str, str | bytes] | None = None,
          command: list[str] | None = None) -> Setup:
    """Write ``content`` (None: no file) and the ``extra`` files; return the command line."""

    def setup(tmp_path: Path) -> list[str]:
        for other, data in (extra or {}).items():
            target = tmp_path / other
            target.write_bytes(data) if isinstance(data, bytes) else target.write_text(data)
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content, encoding="utf-8")
        return [*(command or []), str(path)]

    return setup


def scenario(changes: dict[str, Any] | None = None, *options: str,
             extra: dict[str, str | bytes] | None = None) -> tuple[str, Setup]:
    text = yaml.safe_dump(_changed(SCENARIO, changes or {}), sort_keys=False)
    return "simulate", _file("s.yaml", text, extra, list(options))


def scenario_text(content: str | bytes | None, name: str = "s.yaml",
                  extra: dict[str, str | bytes] | None = None) -> tuple[str, Setup]:
    return "simulate", _file(name, content, extra)


def problem(changes: dict[str, Any] | None = None, *options: str) -> tuple[str, Setup]:
    text = yaml.safe_dump(_changed(PROBLEM, changes or {}), sort_keys=False)
    return "solve", _file("p.yaml", text, command=["--no-refine", *options])


def problem_text(content: str | bytes | None, name: str = "p.yaml") -> tuple[str, Setup]:
    return "solve", _file(name, content)


def estimate(*args: str, base: list[str] = ESTIMATE) -> tuple[str, Setup]:
    return "estimate", lambda tmp_path: [*base, *args]


def estimate_model(make: Callable[[Path], Path]) -> tuple[str, Setup]:
    return "estimate", lambda tmp_path: ["estimate", "-m", str(make(tmp_path)), "-g",
                                         "h100-sxm", "-i", "512", "-o", "64"]


def validate(content: str | bytes) -> tuple[str, Setup]:
    return "estimate", _file("m.csv", content, command=["validate"])


def _trace(text: str | bytes) -> tuple[str, Setup]:
    return scenario_text(TRACE_YAML, extra={"t.csv": text})


def _yaml_flow(text: str, **replace: str) -> str:
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


SCENARIO_TEXT = yaml.safe_dump(SCENARIO, sort_keys=False)
PROBLEM_TEXT = yaml.safe_dump(PROBLEM, sort_keys=False)


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "empty-model"
    folder.mkdir()
    return folder


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _binary_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    return path


CASES = [
    # -- servingcast estimate ------------------------------------------------------------------
    pytest.param(*estimate("-m", "llama-3.1-7b", base=ESTIMATE[:1] + ESTIMATE[3:]),
                 ["unknown model 'llama-3.1-7b'", "did you mean", "servingcast catalog models"],
                 id="est-unknown-model"),
    pytest.param(*estimate("-g", "h100-sxn", base=ESTIMATE[:3] + ESTIMATE[5:]),
                 ["did you mean h100-sxm", "'servingcast catalog hardware'"],
                 id="est-unknown-hardware"),
    pytest.param(*estimate("-i", "-5", base=ESTIMATE[:5] + ESTIMATE[7:]),
                 ["--input-len", "> 0, got -5", "To fix"], id="est-negative-input-len"),
    pytest.param(*estimate("-o", "0", base=ESTIMATE[:7]), ["--output-len", "> 0, got 0"],
                 id="est-zero-output-len"),
    pytest.param(*estimate("-b", "0"), ["--batch-size", "must be > 0, got 0"],
                 id="est-batch-size-0"),
    pytest.param(*estimate("-b", "lots"), ["--batch-size", "not a whole number or 'max'"],
                 id="est-batch-size-text"),
    pytest.param(*estimate("--tp", "3"), ["tp=3 does not divide the 32 attention heads",
                                          "To fix: use tp in"], id="est-tp-3"),
    pytest.param(*estimate("--tp", "0"), ["--tp", "0"], id="est-tp-0"),
    pytest.param(*estimate("--decode-hardware", "h200-sxm", "--network-bandwidth", "400"),
                 ["'400' has no unit", "'400 Gb/s' (bits) or '400 GB/s' (bytes)"],
                 id="est-bare-bandwidth"),
    pytest.param(*estimate("--network-bandwidth", "400"), ["'400' has no unit"],
                 id="est-bare-bandwidth-colocated"),
    pytest.param(*estimate("--network-bandwidth", "fast"),
                 ["cannot read 'fast' as a bandwidth", "To fix"], id="est-bandwidth-word"),
    pytest.param(*estimate("--network-bandwidth", "100 GB"), ["no '/s'", "To fix"],
                 id="est-bandwidth-not-per-second"),
    pytest.param(*estimate("--network-bandwidth", "1e400 GB/s"), ["too large"],
                 id="est-bandwidth-overflow"),
    pytest.param(*estimate("--efficiency", "1.5"), ["--efficiency", "(0, 1]"],
                 id="est-efficiency-above-1"),
    pytest.param(*estimate("--efficiency", "fast"), ["'calibrated'"], id="est-efficiency-word"),
    pytest.param(*estimate("-p", "fp7"), ["unknown precision 'fp7'", "To fix"],
                 id="est-unknown-precision"),
    pytest.param(*estimate("--draft-model", "llama-3.2-1b", "--draft-acceptance-rate", "1.5"),
                 ["--draft-acceptance-rate", "[0, 1]", "To fix"], id="est-acceptance-above-1"),
    pytest.param(*estimate("--cached-prefix-len", "512"), ["--cached-prefix-len", "< seq_len"],
                 id="est-cached-prefix-whole-prompt"),
    pytest.param(*estimate("--gpu-memory-utilization", "1.5"),
                 ["--gpu-memory-utilization", "(0, 1]", "To fix"], id="est-gmu-above-1"),
    pytest.param(*estimate("-m", "llama-3.1-405b", "-g", "l4", base=ESTIMATE[:1] + ESTIMATE[5:]),
                 ["does not fit", "To fix"], id="est-model-too-big"),
    pytest.param(*estimate("-i", "1000000", base=ESTIMATE[:5] + ESTIMATE[7:]),
                 ["one sequence of", "To fix: shorten the sequence"], id="est-one-sequence"),
    pytest.param(*estimate("-i", "20000000", base=ESTIMATE[:5] + ESTIMATE[7:]),
                 ["at most 10,000,000 tokens"], id="est-absurd-length"),
    pytest.param(*estimate("-b", "64", "-i", "4096", "--prefill-chunk-tokens", "1",
                           base=ESTIMATE[:5] + ESTIMATE[7:]),
                 ["100,000 iterations", "--prefill-chunk-tokens"], id="est-tiny-chunks"),
    pytest.param(*estimate("--decode-hardware", "h100-sxn"), ["did you mean h100-sxm"],
                 id="est-unknown-decode-hardware"),
    pytest.param(*estimate("--draft-model", "llama-9"), ["unknown model 'llama-9'"],
                 id="est-unknown-draft"),
    pytest.param(*estimate_model(lambda tmp: tmp / "nope" / "config.json"),
                 ["config.json: no such file", "To fix"], id="est-missing-config-json"),
    pytest.param(*estimate_model(_folder), ["config.json: no such file"],
                 id="est-folder-without-config"),
    pytest.param(*estimate_model(_binary_config), ["config.json: is a binary file", "To fix"],
                 id="est-binary-config-json"),
    pytest.param(*estimate_model(lambda tmp: _write(tmp / "config.json", "{'hidden': 1")),
                 ["config.json:1: not valid JSON", "To fix"], id="est-broken-config-json"),
    # -- servingcast validate (the same group as estimate) ------------------------------------
    pytest.param(*validate(b"id,model\n1,caf\xe9\n"), ["m.csv:2: not UTF-8 text"],
                 id="validate-latin1-csv"),
    pytest.param(*validate("id,model\n1,llama\n"), ["m.csv:1: missing column(s)", "To fix"],
                 id="validate-missing-columns"),
    # -- servingcast-simulate: the file itself -------------------------------------------------
    pytest.param(*scenario_text(SCENARIO_TEXT.encode().replace(
        b"llama-3.1-8b", b"llama-3.1-8b # caf\xe9", 1)),
                 ["s.yaml:1: not UTF-8 text", "byte 0xe9", "To fix: save"], id="sim-latin1"),
    pytest.param(*scenario_text(b"\x7fELF\x02\x01\x01\x00" + bytes(300)),
                 ["s.yaml: is a binary file", "To fix"], id="sim-binary"),
    pytest.param(*scenario_text(ALIAS_BOMB), ["alias bombs", "1,000,000 YAML nodes"],
                 id="sim-alias-bomb"),
    pytest.param(*scenario_text("a: &x [1, *x]\n"), ["s.yaml:1", "recursive"],
                 id="sim-recursive-alias"),
    pytest.param(*scenario_text(""), ["s.yaml: the file is empty"], id="sim-empty-file"),
    pytest.param(*scenario_text(None, name=""), ["is a folder", "To fix"], id="sim-folder"),
    pytest.param(*scenario_text(None), ["s.yaml: cannot read (no such file)"],
                 id="sim-missing-file"),
    pytest.param(*scenario_text("model: [llama\ninstance_groups: 1\n"),
                 ["s.yaml:2: not valid YAML", "To fix"], id="sim-yaml-syntax"),
    pytest.param(*scenario_text("- model\n- workload\n"), ["expected a mapping"],
                 id="sim-top-level-list"),
    pytest.param(*scenario_text("a: 1\n---\nb: 2\n"), ["keep one document"],
                 id="sim-two-documents"),
    pytest.param(*scenario_text("model: llama\x07\n"), ["#x0007", "To fix"],
                 id="sim-control-character"),
    # -- servingcast-simulate: fields ----------------------------------------------------------
    pytest.param(*scenario({"seed": -1}), ["s.yaml:", "seed", ">= 0"], id="sim-seed-negative"),
    pytest.param(*scenario({}, "--seed", "-1"), ["--seed", "-1"], id="sim-seed-flag-negative"),
    pytest.param(*scenario_text(_yaml_flow(SCENARIO_TEXT, **{"num_requests: 50":
                                                            "num_requests: 1e12"})),
                 ["workload.num_requests", "as text", "1.0e+12"], id="sim-requests-1e12"),
    pytest.param(*scenario({"workload.num_requests": 10**12}),
                 ["workload.num_requests", "10000000"], id="sim-requests-too-many"),
    pytest.param(*scenario({"workload.arrival.rate": float("inf")}),
                 ["workload.arrival.poisson.rate", "finite"], id="sim-rate-inf"),
    pytest.param(*scenario({"workload.arrival.rate": 0}),
                 ["workload.arrival.poisson.rate", "greater than 0", "To fix"], id="sim-rate-0"),
    pytest.param(*scenario({"workload.arrival.kind": "poison"}),
                 ["workload.arrival", "'poison'", "To fix"], id="sim-arrival-kind"),
    pytest.param(*scenario({"workload.num_requests": DROP, "workload.duration": "1000 h",
                            "workload.arrival.rate": 1e6}),
                 ["requests, more than the 10,000,000"], id="sim-duration-times-rate"),
    pytest.param(*scenario({"workload.num_requests": DROP, "workload.duration": 60}),
                 ["workload.duration", "has no unit"], id="sim-duration-no-unit"),
    pytest.param(*scenario({"instance_groups.0.count": 1_000_000_000}),
                 ["s.yaml:", "instance_groups", "more than the 10,000", "To fix"],
                 id="sim-count-1e9"),
    pytest.param(*scenario({"instance_groups.0.count": 0}),
                 ["instance_groups.0.count", ">= 1"], id="sim-count-0"),
    pytest.param(*scenario({"model": "llama-3.1-7b"}), ["model", "did you mean"],
                 id="sim-unknown-model"),
    pytest.param(*scenario({"instance_groups.0.hardware": "h100-sxn"}),
                 ["instance_groups.0.hardware", "did you mean h100-sxm"],
                 id="sim-unknown-hardware"),
    pytest.param(*scenario({"instance_group": []}), ["instance_group", "unknown field"],
                 id="sim-unknown-key"),
    pytest.param(*scenario({"workload": DROP}), ["workload", "required field is missing"],
                 id="sim-missing-workload"),
    pytest.param(*scenario({"workload.input_len": -5}),
                 ["workload.input_len", "greater than or equal to 1"], id="sim-negative-length"),
    pytest.param(*scenario({"workload.input_len": "long"}),
                 ["workload.input_len", "cannot read 'long' as a token length", "To fix"],
                 id="sim-length-wrong-type"),
    pytest.param(*scenario({"workload.output_len": 20.5}),
                 ["workload.output_len", "cannot read 20.5", "To fix"],
                 id="sim-length-fraction"),
    pytest.param(*scenario({"workload.output_len": 10**9}),
                 ["workload.output_len", "10000000"], id="sim-absurd-length"),
    pytest.param(*scenario({"workload.input_len": {"kind": "lognormal", "mean": float("nan"),
                                                   "std": 10}}),
                 ["workload.input_len.lognormal.mean", "finite"], id="sim-length-nan"),
    pytest.param(*scenario({"slo.attainment": 1.5}), ["slo.attainment", "<= 1"],
                 id="sim-attainment-above-1"),
    pytest.param(*scenario({"slo.ttft": 500}), ["slo.ttft", "has no unit"],
                 id="sim-slo-no-unit"),
    pytest.param(*scenario({"slo.ttft": "500"}), ["slo.ttft", "has no unit"],
                 id="sim-slo-quoted-number"),
    pytest.param(*scenario({"network": {"bandwidth": "400"}}),
                 ["network.bandwidth", "'400' has no unit"], id="sim-bandwidth-no-unit"),
    pytest.param(*scenario({"instance_groups.0.tp": 3}), ["tp=3", "attention heads"],
                 id="sim-tp-3"),
    pytest.param(*scenario({"model": "llama-3.1-405b", "instance_groups.0.hardware": "l4"}),
                 ["does not fit", "To fix"], id="sim-model-too-big"),
    pytest.param(*scenario({"efficiency": 2.0}), ["efficiency", "(0, 1]", "To fix"],
                 id="sim-efficiency-above-1"),
    pytest.param(*scenario({"precision": "fp7"}), ["precision", "unknown precision 'fp7'"],
                 id="sim-unknown-precision"),
    pytest.param(*scenario({"instance_groups.0.name": "my group"}),
                 ["instance_groups.0.name", "To fix"], id="sim-group-name"),
    pytest.param(*scenario({"router": {"kind": "fastest"}}), ["router", "'fastest'"],
                 id="sim-unknown-router"),
    # -- servingcast-simulate: trace files -----------------------------------------------------
    pytest.param(*_trace(b"arrival_time,input_len\x00\xff\xfe" + bytes(100)),
                 ["t.csv: is a binary file", "workload.trace"], id="sim-trace-binary"),
    pytest.param(*_trace(b"arrival_time,input_len,output_len\n0,1,1\n0.5,caf\xe9,1\n"),
                 ["t.csv:3: not UTF-8 text"], id="sim-trace-latin1"),
    pytest.param(*_trace("arrival_time,input_len,output_len\n0,10,10\nnan,10,10\n"),
                 ["t.csv:3", "arrival_time = 'nan' is not a finite number"],
                 id="sim-trace-nan"),
    pytest.param(*_trace("arrival_time,input_len,output_len\n0,10,10\n1,inf,10\n"),
                 ["t.csv:3", "input_len = 'inf' is not a finite whole number"],
                 id="sim-trace-inf-length"),
    pytest.param(*_trace("arrival_time,input_len,output_len\n5,10,10\n1,10,10\n"),
                 ["t.csv:3", "must not decrease"], id="sim-trace-decreasing"),
    pytest.param(*_trace("arrival_time,input_len\n0,10\n"),
                 ["t.csv:2", "column 'output_len' is missing"], id="sim-trace-missing-column"),
    pytest.param(*scenario_text(TRACE_YAML), ["t.csv: cannot read (no such file)"],
                 id="sim-trace-missing-file"),
    # -- servingcast-solve ---------------------------------------------------------------------
    pytest.param(*problem_text(PROBLEM_TEXT.encode().replace(b"pools:", b"# caf\xe9\npools:")),
                 ["p.yaml:1: not UTF-8 text"], id="solve-latin1"),
    pytest.param(*problem_text(bytes(range(256)) * 4), ["p.yaml: is a binary file"],
                 id="solve-binary"),
    pytest.param(*problem_text(ALIAS_BOMB), ["alias bombs"], id="solve-alias-bomb"),
    pytest.param(*problem_text("   \n# nothing\n"), ["the file is empty"], id="solve-empty"),
    pytest.param(*problem_text(None), ["p.yaml: cannot read (no such file)"],
                 id="solve-missing-file"),
    pytest.param(*problem_text(None, name=""), ["is a folder"], id="solve-folder"),
    pytest.param(*problem_text(_yaml_flow(PROBLEM_TEXT, **{"count: 8": "count: 1e9"})),
                 ["pools.0.count", "as text", "1.0e+09"], id="solve-count-1e9-text"),
    pytest.param(*problem({"pools.0.count": 10**9}),
                 ["pools.0.count", "more than the 1,000,000 a pool may hold"],
                 id="solve-count-1e9"),
    pytest.param(*problem({"pools.0.count": 0}), ["pools.0.count", "at least one GPU"],
                 id="solve-count-0"),
    pytest.param(*problem({"pools.0.count": 12}), ["not a whole number of 8-GPU nodes"],
                 id="solve-partial-node"),
    pytest.param(*problem({"workloads.0.demand": float("inf")}),
                 ["workloads.0.demand", "at most 1,000,000 req/s"], id="solve-demand-inf"),
    pytest.param(*problem({"workloads.0.demand": "1e308 req/s"}),
                 ["workloads.0.demand", "at most 1,000,000 req/s", "To fix"],
                 id="solve-demand-absurd"),
    pytest.param(*problem({"workloads.0.demand": 0}), ["workloads.0.demand", "> 0"],
                 id="solve-demand-0"),
    pytest.param(*problem({"workloads.0.demand": "5 req/day"}),
                 ["cannot read '5 req/day' as a demand"], id="solve-demand-unit"),
    pytest.param(*problem({"workloads.0.slo.attainment": 1.5}),
                 ["workloads.0.slo.attainment", "less than 1"], id="solve-attainment-above-1"),
    pytest.param(*problem({"workloads.0.slo.ttft": 500}), ["workloads.0.slo.ttft",
                                                           "has no unit"],
                 id="solve-slo-no-unit"),
    pytest.param(*problem({"network": {"bandwidth_per_gpu": 400}}),
                 ["network.bandwidth_per_gpu", "has no unit"], id="solve-bandwidth-number"),
    pytest.param(*problem({"network": {"bandwidth_per_gpu": "400"}}),
                 ["network.bandwidth_per_gpu", "'400' has no unit", "400 Gb/s"],
                 id="solve-bandwidth-quoted"),
    pytest.param(*problem({"workloads.0.model": "llama-3.1-7b"}),
                 ["workloads.0.model", "did you mean"], id="solve-unknown-model"),
    pytest.param(*problem({"pools.0.hardware": "h100-sxn"}),
                 ["did you mean h100-sxm", "servingcast catalog hardware'"],
                 id="solve-unknown-hardware"),
    pytest.param(*problem({"pool": []}), ["pool", "unknown field"], id="solve-unknown-key"),
    pytest.param(*problem({"workloads": DROP}), ["workloads", "required field is missing"],
                 id="solve-missing-workloads"),
    pytest.param(*problem({"workloads.0.input_len": -5}),
                 ["workloads.0.input_len", "greater than or equal to 1"],
                 id="solve-negative-length"),
    pytest.param(*problem({"workloads.0.weight": float("inf")}),
                 ["workloads.0.weight", "finite"], id="solve-weight-inf"),
    pytest.param(*problem({"pools.0.price_per_gpu_hour": -1}),
                 ["pools.0.price_per_gpu_hour", "greater than 0"], id="solve-negative-price"),
    pytest.param(*problem({"objective": "fastest"}), ["objective", "'fastest'"],
                 id="solve-unknown-objective"),
    pytest.param(*problem({"search.tp": []}), ["search.tp", "the list is empty"],
                 id="solve-empty-tp"),
    pytest.param(*problem({"search.tp": [3]}),
                 ["tp=3, pp=1 on h100-sxm", "3 GPUs per instance on 8-GPU nodes",
                  "tp=3 does not divide the 32 attention heads", "e.g. [1, 2, 4, 8]"],
                 id="solve-tp-3"),
    pytest.param(*problem({"search.tp": [16]}), ["tp=16", "largest pool"],
                 id="solve-tp-larger-than-pool"),
    pytest.param(*problem({}, "--sim-requests", "3"), ["--sim-requests", "50"],
                 id="solve-sim-requests-flag"),
]

COMMANDS = {"estimate": main, "simulate": simulate_command, "solve": solve_command}


@pytest.mark.parametrize(("command", "setup", "words"), CASES)
def test_bad_input_is_one_clean_message(tmp_path: Path, command: str, setup: Setup,
                                        words: list[str]) -> None:
    args = setup(tmp_path)
    out = tmp_path / "out"
    if command != "estimate":
        args = [*args, "--output", str(out)]
    result = CliRunner().invoke(COMMANDS[command], args)
    text = result.output
    assert result.exit_code == 2, (result.exit_code, text, result.exc_info)
    assert result.exception is None or isinstance(result.exception, SystemExit), text
    assert "Traceback" not in text
    for word in words:
        assert word in text, (word, text)
    # (servingcast-solve may create the --output folder for its lock; no file may appear in it)
    assert not out.exists() or not any(out.iterdir()), "nothing may be written for a bad input"


def test_the_matrix_is_large_enough() -> None:
    kinds = [case.values[0] for case in CASES]
    assert len(CASES) >= 60 and {"estimate", "simulate", "solve"} <= set(kinds)
