"""The fit: recovers known factors from runs generated with them, says what it cannot identify,
and writes a device that estimate, simulate and solve take."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from servingcast import estimate
from servingcast.calibrate import Calibration, Defaults, calibrate, hardware_yaml, read_all
from servingcast.calibrate.report import device_name, format_report
from servingcast.calibrate.runs import device, resolve_model
from servingcast.errors import ConfigError
from servingcast.sim import simulate
from servingcast.sim.scenario import scenario_from_dict
from servingcast.specs import get_hardware
from tests.calibrate.synth import (
    DEFAULT_MODEL,
    DEFAULT_TP,
    TRUE_FACTORS,
    RunSpec,
    true_hardware,
    write_results,
)

DEFAULTS = Defaults(model=DEFAULT_MODEL, tp=DEFAULT_TP)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Calibration:
    """Every run of :data:`RUNS`, in every format, simulated with the true factors, fitted."""
    folder = tmp_path_factory.mktemp("runs")
    paths = write_results(folder / "results", true_hardware(folder))
    return calibrate(read_all(paths), "h100-sxm", defaults=DEFAULTS)


def test_recovers_known_factors_within_3_percent(full: Calibration) -> None:
    base = get_hardware("h100-sxm")
    for p in full.parameters:
        true = TRUE_FACTORS[p.name]
        assert p.status == "fitted", (p.name, p.reason)
        assert p.fitted == pytest.approx(true, rel=0.03), p.name
        # ... from a base that is far from them
        assert abs(p.base - true) > 0.1 * true
    assert full.hardware.efficiency.compute == full.fitted["compute"]
    assert full.base == base


def test_fit_error_before_and_after(full: Calibration) -> None:
    assert full.median_abs_error_before > 0.05
    assert full.median_abs_error_after < 0.01
    assert full.rms_log_error_after < full.rms_log_error_before / 10
    for run in full.runs:
        for m in run.metrics:
            assert m.before is not None and m.after is not None
            assert m.error_before == pytest.approx((m.before - m.observation.measured)
                                                   / m.observation.measured)


def test_report_and_file(full: Calibration, tmp_path: Path) -> None:
    report = format_report(full)
    assert "Fit error, median |error| over 24 figures" in report
    assert "compute           0.650    0.550" in report
    text = hardware_yaml(full, "my-h100", engine="vllm")
    assert text.startswith("# NVIDIA H100 SXM5 80GB, calibrated")
    assert "Engine: vllm." in text
    data = yaml.safe_load(text)
    assert data["name"] == "my-h100" and data["aliases"] == []
    assert data["efficiency"] == {p: full.fitted[p] for p in ("compute", "memory", "network")}
    with pytest.raises(ConfigError, match="unknown engine 'tgi'"):
        hardware_yaml(full, "my-h100", engine="tgi")


def test_written_file_works_in_estimate_and_simulate(full: Calibration, tmp_path: Path) -> None:
    path = tmp_path / "my-h100.yaml"
    path.write_text(hardware_yaml(full, "my-h100"))
    loaded = get_hardware(str(path))
    assert loaded.efficiency == full.hardware.efficiency
    assert loaded.overheads == full.hardware.overheads
    # estimate: the file gives the fitted device's numbers, not the base's
    args = {"seq_len": 2048, "output_len": 128, "batch_size": 8}
    from_file = estimate("llama-3.1-8b", str(path), **args)
    fitted = estimate("llama-3.1-8b", full.hardware, **args)
    base = estimate("llama-3.1-8b", "h100-sxm", **args)
    assert from_file.ttft_ms == fitted.ttft_ms and from_file.tpot_ms == fitted.tpot_ms
    assert from_file.ttft_ms > base.ttft_ms * 1.1  # compute 0.65 -> 0.55
    # simulate: a scenario naming the file
    scenario = scenario_from_dict({
        "model": "llama-3.1-8b",
        "instance_groups": [{"name": "g", "hardware": "my-h100.yaml"}],
        "workload": {"num_requests": 20, "arrival": {"kind": "concurrency", "concurrency": 4},
                     "input_len": 512, "output_len": 32},
    }, base_dir=tmp_path)
    assert simulate(scenario).summary.completed == 20
    # the planner names a device by its name once resolved: the file's device is found by it
    assert get_hardware("my-h100") == loaded
    assert get_hardware("h100-sxm").name == "h100-sxm"


def test_unidentified_factors_keep_base_values(tmp_path: Path) -> None:
    """One model at tp=1 only: no network figure, and the overheads cannot be told from memory
    efficiency (a per-iteration cost, whatever the batch)."""
    runs = {"vllm-one.json": [RunSpec("llama-3.1-8b", 1, 4096, 64, concurrency=1, num_prompts=8),
                         RunSpec("llama-3.1-8b", 1, 1024, 128, concurrency=16,
                                 num_prompts=32)]}
    paths = write_results(tmp_path / "results", true_hardware(tmp_path), runs)
    cal = calibrate(read_all(paths), "h100-sxm")
    status = {p.name: p for p in cal.parameters}
    base = get_hardware("h100-sxm")
    assert status["network"].status == "kept"
    assert status["network"].reason == "not identified: no run has tp > 1"
    assert status["network"].fitted == base.efficiency.network
    assert status["layer_us"].status == "kept"
    assert "confounded with" in status["layer_us"].reason
    assert status["layer_us"].fitted == base.overheads.layer_us
    assert status["compute"].status == "fitted"
    assert status["compute"].fitted == pytest.approx(TRUE_FACTORS["compute"], rel=0.03)
    assert cal.median_abs_error_after < 0.01  # memory absorbs the overheads it kept
    assert "kept at base: no run has tp > 1" in format_report(cal)
    text = hardware_yaml(cal, "x")
    assert "Kept at h100-sxm's value: network 0.5 (not identified: no run has tp > 1)" in text
    # Reproducible: the same runs and seed give the same factors.
    assert calibrate(read_all(paths), "h100-sxm").fitted == cal.fitted


def test_base_device_from_a_file(tmp_path: Path) -> None:
    """A calibrated file can be the base of another calibration (its factors the start)."""
    (tmp_path / "base").mkdir()
    base_path = true_hardware(tmp_path / "base", factors=dict(TRUE_FACTORS, compute=0.8))
    runs = {"vllm-c1.json": [RunSpec("llama-3.1-8b", 1, 4096, 16, concurrency=1, num_prompts=4)]}
    paths = write_results(tmp_path / "results", true_hardware(tmp_path), runs)
    cal = calibrate(read_all(paths), str(base_path))
    assert cal.base.efficiency.compute == 0.8
    assert cal.fitted["compute"] == pytest.approx(TRUE_FACTORS["compute"], rel=0.03)


# -- runs that cannot be simulated --------------------------------------------------------------


@pytest.fixture(scope="module")
def sglang_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sglang")
    runs = {"sglang.jsonl": [RunSpec("llama-3.1-8b", 1, 256, 16, concurrency=2, num_prompts=4)]}
    return write_results(folder / "results", true_hardware(folder), runs)[0]


def test_missing_tp_names_the_run(sglang_file: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        calibrate(read_all([sglang_file]), "h100-sxm", defaults=Defaults(model="llama-3.1-8b"))
    assert str(exc.value) == (
        f"{sglang_file} (SGLang bench_serving result): the tensor-parallel size is not "
        "recorded. To fix: pass --tp N (e.g. --tp 1)")


def test_missing_model_names_the_run(sglang_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"sglang\.jsonl \(SGLang bench_serving result\): "
                                          "the model is not recorded in the file. To fix: pass "
                                          "--model"):
        calibrate(read_all([sglang_file]), "h100-sxm", defaults=Defaults(tp=1))


def test_unknown_model(sglang_file: Path) -> None:
    with pytest.raises(ConfigError, match="--model: model 'llama-9'"):
        calibrate(read_all([sglang_file]), "h100-sxm", defaults=Defaults(model="llama-9", tp=1))


def test_runs_of_another_device(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("model,hardware,tp,input_len,output_len,concurrency,tpot_ms\n"
                    "llama-3.1-8b,a100-sxm4-80gb,1,128,16,1,12\n")
    with pytest.raises(ConfigError, match=r"runs\.csv:2: the run is of a100-sxm4-80gb, but "
                                          "--hardware is h100-sxm"):
        calibrate(read_all([path]), "h100-sxm")


def test_model_that_does_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("model,tp,input_len,output_len,concurrency,tpot_ms\n"
                    "llama-3.1-70b,1,128,16,1,12\n")
    with pytest.raises(ConfigError, match=r"runs\.csv:2: cannot simulate this run: .*does not "
                                          "fit"):
        calibrate(read_all([path]), "h100-sxm")


def test_hugging_face_ids_and_paths_resolve() -> None:
    assert resolve_model("meta-llama/Llama-3.1-8B-Instruct", "x") == "llama-3.1-8b"
    assert resolve_model("/models/Meta-Llama-3.1-8B-Instruct/", "x") == "llama-3.1-8b"
    with pytest.raises(ConfigError, match="To fix: pass --model"):
        resolve_model("my-org/finetune-v2", "x")


def test_device_names() -> None:
    assert device_name("my-h100", "h100-sxm") == "my-h100"
    assert device_name("My H100_calibrated", "h100-sxm") == "my-h100-calibrated"
    assert device_name("h100-sxm", "h100-sxm") == "h100-sxm-calibrated"  # a catalog name
    assert device_name("H100", "h100-sxm") == "h100-calibrated"  # a catalog alias
    assert device_name("___", "h100-sxm") == "h100-sxm-calibrated"
    assert device(get_hardware("h100-sxm"), TRUE_FACTORS).overheads.layer_us == 25.0
