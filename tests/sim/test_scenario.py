"""Bad scenarios: one clear message naming the file, the line, the field and the fix."""

from pathlib import Path

import pytest

from servingcast.errors import ConfigError
from servingcast.sim.scenario import load_scenario

GOOD = """\
model: llama-3.1-8b
instance_groups:
  - name: main
    hardware: h100-sxm
workload:
  num_requests: 10
  arrival: {kind: poisson, rate: 2}
  input_len: 100
  output_len: 10
slo:
  ttft: 1 s
  tpot: 50 ms
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


def test_good_scenario_loads(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path, GOOD))
    assert sc.slo.ttft == 1.0 and sc.slo.tpot == 0.05 and sc.seed == 0
    assert load_scenario(write(tmp_path, GOOD), seed=5).seed == 5
    assert sc.router.kind == "least_outstanding"


@pytest.mark.parametrize(("old", "new", "message"), [
    ("    hardware: h100-sxm\n", "    hardware: h100-sxm\n    colour: red\n",
     r"scenario.yaml:5: instance_groups.0.colour: unknown field. To fix: remove it"),
    ("    hardware: h100-sxm\n", "    hardware: h100-sxm\n    count: two\n",
     r"scenario.yaml:5: instance_groups.0.count: Input should be a valid integer"),
    ("rate: 2", "rate: -2",
     r"scenario.yaml:7: workload.arrival.poisson.rate: Input should be greater than 0"),
    ("  ttft: 1 s\n", "  ttft: 200\n",
     r"scenario.yaml:11: slo.ttft: 200 has no unit. To fix: write the unit, e.g. '200 ms'"),
    ("  tpot: 50 ms\n", "  tpot: 50 parsecs\n", r"scenario.yaml:12: slo.tpot: unknown time unit"),
    ("model: llama-3.1-8b", "model: llama-3.1-7b",
     r"scenario.yaml:1: model: .*unknown model 'llama-3.1-7b'. To fix: did you mean"),
    ("hardware: h100-sxm", "hardware: h100-sxn",
     r"scenario.yaml:4: instance_groups.0.hardware: .*did you mean h100-sxm"),
    ("model: llama-3.1-8b", "model: llama-3.1-405b",
     r"scenario.yaml:3: instance_groups.0: llama-3.1-405b in fp16 on h100-sxm \(tp=1 pp=1\) "
     r"does not fit: each GPU needs 8\d\d.\d GB of weights .* To fix: raise tp or pp"),
    ("    hardware: h100-sxm\n", "    hardware: h100-sxm\n    tp: 3\n",
     r"instance_groups.0: tp=3 does not divide the 32 attention heads"),
    ("    hardware: h100-sxm\n", "    hardware: h100-sxm\n    role: prefill\n",
     r"instance_groups: a disaggregated cluster needs a decode group. To fix: add a group with "
     r"role: decode"),
    ("    hardware: h100-sxm\n", "    hardware: h100-sxm\n    max_num_seqs: 9000\n",
     r"max_num_batched_tokens \(8192\) must be >= max_num_seqs \(9000\)"),
    ("  input_len: 100\n", "", r"scenario.yaml:6: workload: missing input_len. To fix: add them"),
    ("seed", "seed", None),
])
def test_bad_scenarios(tmp_path: Path, old: str, new: str, message: str | None) -> None:
    assert old in GOOD + "seed: 1\n"
    path = write(tmp_path, (GOOD + "seed: 1\n").replace(old, new))
    if message is None:
        load_scenario(path)
        return
    with pytest.raises(ConfigError, match=message):
        load_scenario(path)


def test_disaggregated_needs_a_network(tmp_path: Path) -> None:
    text = GOOD.replace("  - name: main\n    hardware: h100-sxm\n",
                        "  - {name: p, hardware: h100-sxm, role: prefill}\n"
                        "  - {name: d, hardware: h100-sxm, role: decode}\n")
    with pytest.raises(ConfigError, match=r"network: a disaggregated cluster moves KV caches"):
        load_scenario(write(tmp_path, text))
    load_scenario(write(tmp_path, text + "network: {bandwidth: 100 GB/s, latency: 5 us}\n"))
    with pytest.raises(ConfigError, match=r"network.bandwidth: 100 has no unit"):
        load_scenario(write(tmp_path, text + "network: {bandwidth: 100}\n"))


def test_trace_errors_name_both_files(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("arrival_time,input_len,output_len\n3,10,10\n1,10,10\n")
    text = GOOD.split("workload:")[0] + "workload:\n  trace: {path: t.csv}\n"
    with pytest.raises(ConfigError, match=r"scenario.yaml:6: workload.trace: .*t.csv:3: "
                                          r"arrival_time 1 comes after 3"):
        load_scenario(write(tmp_path, text))


def test_model_config_json_relative_to_the_scenario(tmp_path: Path) -> None:
    src = Path(__file__).parents[1] / "data" / "hf_configs" / "falcon-7b" / "config.json"
    (tmp_path / "falcon").mkdir()
    (tmp_path / "falcon" / "config.json").write_text(src.read_text())
    sc = load_scenario(write(tmp_path, GOOD.replace("llama-3.1-8b", "falcon/config.json")))
    assert sc.model.endswith("falcon/config.json")


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"scenario.yaml:3: not valid YAML"):
        load_scenario(write(tmp_path, "model: [\n  x: 1\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_scenario(write(tmp_path, "- 1\n"))
