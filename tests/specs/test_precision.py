import pytest

from servingcast.errors import ConfigError
from servingcast.specs import get_precision


def test_presets() -> None:
    fp8 = get_precision("fp8")
    assert (fp8.weight_bytes, fp8.kv_bytes, fp8.compute_dtype) == (1.0, 1.0, "fp8")
    assert get_precision("bf16").weight_bytes == 2.0
    assert get_precision("w4a16").weight_bytes == pytest.approx((4 + 16 / 128) / 8)
    assert get_precision("w4a16-g32").weight_bytes == pytest.approx(4.5 / 8)
    assert get_precision("AWQ").name == "w4a16"


def test_kv_override() -> None:
    p = get_precision("fp16").with_kv_cache_dtype("fp8")
    assert p.kv_bytes == 1.0 and p.weight_bytes == 2.0


def test_unknown_precision_lists_presets() -> None:
    with pytest.raises(ConfigError, match=r"unknown precision 'fp7'.*fp16"):
        get_precision("fp7")
