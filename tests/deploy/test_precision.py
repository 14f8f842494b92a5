"""Each servingcast precision as engine flags: only values the engines accept, and a
pre-quantized checkpoint asked for (never an invalid flag) where no flag does the job."""

from __future__ import annotations

import pytest

from servingcast.deploy.precision import sglang_flags, vllm_flags
from servingcast.specs.precision import PRESETS, get_precision

from .conftest import SGLANG_KV_DTYPES, VLLM_DTYPES, VLLM_KV_DTYPES


def _value(args: tuple[str, ...], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


# (preset, vLLM --dtype, --quantization, --kv-cache-dtype, checkpoint needed)
VLLM = [
    ("fp16", "float16", None, "auto", False),
    ("bf16", "bfloat16", None, "auto", False),
    ("fp32", "float32", None, "auto", False),
    ("fp8", None, "fp8", "fp8", False),
    ("int8", None, None, "fp8", True),
    ("w8a16", "float16", None, "auto", True),
    ("w4a16", "float16", None, "auto", True),
    ("w4a16-g32", "float16", None, "auto", True),
    ("fp4", None, None, "fp8", True),
]
# (preset, SGLang --dtype, --quantization, --torchao-config, --kv-cache-dtype, checkpoint)
SGLANG = [
    ("fp32", "float32", None, None, "auto", False),
    ("fp16", "float16", None, None, "auto", False),
    ("bf16", "bfloat16", None, None, "auto", False),
    ("fp8", None, "fp8", None, "fp8_e4m3", False),
    ("int8", None, None, "int8dq", "fp8_e4m3", False),
    ("w8a16", "float16", None, "int8wo", "auto", False),
    ("w4a16", "bfloat16", None, "int4wo-128", "auto", False),
    ("w4a16-g32", "bfloat16", None, "int4wo-32", "auto", False),
    ("fp4", None, "modelopt_fp4", None, "fp8_e4m3", True),
]


def test_the_tables_cover_every_preset() -> None:
    assert {row[0] for row in VLLM} == set(PRESETS)
    assert {row[0] for row in SGLANG} == set(PRESETS)


@pytest.mark.parametrize(("preset", "dtype", "quant", "kv", "checkpoint"), VLLM)
def test_vllm(preset: str, dtype: str | None, quant: str | None, kv: str | None,
              checkpoint: bool) -> None:
    flags = vllm_flags(get_precision(preset))
    assert _value(flags.args, "--dtype") == dtype
    assert _value(flags.args, "--quantization") == quant
    assert _value(flags.args, "--kv-cache-dtype") == kv
    assert (flags.checkpoint is not None) == checkpoint
    assert dtype is None or dtype in VLLM_DTYPES
    assert kv is None or kv in VLLM_KV_DTYPES
    if checkpoint:
        assert "MODEL must name one" in " ".join(flags.notes)


@pytest.mark.parametrize(("preset", "dtype", "quant", "torchao", "kv", "checkpoint"), SGLANG)
def test_sglang(preset: str, dtype: str | None, quant: str | None, torchao: str | None,
                kv: str, checkpoint: bool) -> None:
    flags = sglang_flags(get_precision(preset))
    assert _value(flags.args, "--dtype") == dtype
    assert _value(flags.args, "--quantization") == quant
    assert _value(flags.args, "--torchao-config") == torchao
    assert _value(flags.args, "--kv-cache-dtype") == kv
    assert kv in SGLANG_KV_DTYPES
    assert (flags.checkpoint is not None) == checkpoint


def test_group_sizes_reach_the_checkpoint_text() -> None:
    assert "group size 128" in str(vllm_flags(get_precision("w4a16")).checkpoint)
    assert "group size 32" in str(vllm_flags(get_precision("w4a16-g32")).checkpoint)
    assert "NVFP4" in str(vllm_flags(get_precision("fp4")).checkpoint)


@pytest.mark.parametrize(("kv", "vllm", "sglang"), [
    ("fp8", "fp8", "fp8_e4m3"), ("int8", "fp8", "fp8_e4m3"), ("fp4", "nvfp4", "fp4_e2m1"),
    ("bf16", "auto", "auto"), ("int4", None, None)])
def test_kv_cache_dtype_override(kv: str, vllm: str | None, sglang: str | None) -> None:
    precision = get_precision("bf16").with_kv_cache_dtype(kv)
    v, s = vllm_flags(precision), sglang_flags(precision)
    assert _value(v.args, "--dtype") == "bfloat16"
    assert _value(v.args, "--kv-cache-dtype") == vllm
    assert _value(s.args, "--kv-cache-dtype") == sglang
    if vllm is None:  # no engine format: said, not flagged
        assert "holds fewer tokens than planned" in " ".join(v.notes)
        assert "holds fewer tokens than planned" in " ".join(s.notes)
