import re
from pathlib import Path

import pytest

from servingcast.errors import ConfigError
from servingcast.specs import config_dir, get_hardware, hardware_catalog
from servingcast.specs.catalog import normalize

REQUIRED = ["a100-sxm4-40gb", "a100-sxm4-80gb", "h100-sxm", "h100-pcie", "h200-sxm", "b200",
            "l40s", "l4", "mi300x", "ascend-910b"]


def test_required_devices_present() -> None:
    assert set(REQUIRED) <= set(hardware_catalog())


def test_names_and_aliases_unique() -> None:
    seen: dict[str, str] = {}
    for spec in hardware_catalog().values():
        for key in (spec.name, *map(normalize, spec.aliases)):
            assert seen.setdefault(key, spec.name) == spec.name, f"{key} is claimed twice"


@pytest.mark.parametrize("path", sorted((config_dir() / "hardware").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_number_cites_a_source(path: Path) -> None:
    """Each datasheet figure carries a trailing comment naming where it comes from."""
    in_calibrated_block = False
    for line in path.read_text().splitlines():
        if line.startswith(("efficiency:", "overheads:")):
            in_calibrated_block = True  # calibrated values, documented by the block comment
            continue
        if not line.startswith(" "):
            in_calibrated_block = False
        if in_calibrated_block:
            continue
        if re.match(r"^\s*[a-z0-9_]+:\s*[0-9.]+\s*(#.*)?$", line):
            assert "#" in line, f"{path.name}: no source for '{line.strip()}'"


def test_dense_peaks_are_plausible() -> None:
    for spec in hardware_catalog().values():
        if "fp8" in spec.peak_tflops and "bf16" in spec.peak_tflops:
            assert spec.peak_tflops["fp8"] == pytest.approx(2 * spec.peak_tflops["bf16"], rel=0.05)
        assert 0 < spec.efficiency.compute <= 1 and 0 < spec.efficiency.memory <= 1


def test_lookup_by_alias_and_spelling() -> None:
    assert get_hardware("H100-SXM").name == "h100-sxm"
    assert get_hardware("h100_sxm5").name == "h100-sxm"
    assert get_hardware("H200-SXM-141GB").name == "h200-sxm"


def test_unknown_hardware_suggests_close_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown hardware 'h100-sxn'.*did you mean h100-sxm"):
        get_hardware("h100-sxn")


def test_hardware_yaml_of_ones_own(tmp_path: Path) -> None:
    src = (config_dir() / "hardware" / "l4.yaml").read_text()
    path = tmp_path / "my-gpu.yaml"
    path.write_text(src.replace("name: l4", "name: my-gpu"))
    assert get_hardware(str(path)).name == "my-gpu"


def test_bad_field_names_file_line_and_field(tmp_path: Path) -> None:
    src = (config_dir() / "hardware" / "l4.yaml").read_text()
    path = tmp_path / "bad.yaml"
    path.write_text(src.replace("gpus_per_node:", "gpus_per_nod:"))
    with pytest.raises(ConfigError) as info:
        get_hardware(str(path))
    message = str(info.value)
    assert f"{path}:" in message and "gpus_per_nod: unknown field" in message
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1)
                if t.startswith("gpus_per_nod:"))
    assert f"{path}:{line}: gpus_per_nod" in message
