"""Numeric formats: what the weights are stored in, what the GEMMs run in, what the KV cache holds.

A :class:`Precision` is three dtypes plus the storage overhead of quantisation scales. Presets
cover what serving engines ship (TensorRT-LLM, vLLM, SGLang):

========== ============ ============= ========= =================================================
preset     weights      GEMM compute  KV cache  what it is
========== ============ ============= ========= =================================================
fp32       fp32         fp32          fp32      reference only
fp16/bf16  fp16/bf16    fp16/bf16     fp16/bf16 the unquantised default
fp8        fp8          fp8           fp8       W8A8 FP8 with FP8 KV (TensorRT-LLM "fp8")
int8       int8         int8          int8      W8A8 SmoothQuant with INT8 KV
w8a16      int8         fp16          fp16      int8 weight-only (gpt-fast int8, vLLM Marlin W8)
w4a16      int4 + g128  fp16          fp16      int4 weight-only, AWQ/GPTQ group 128
w4a16-g32  int4 + g32   fp16          fp16      int4 weight-only, group 32 (gpt-fast int4)
fp4        fp4 + g16    fp4           fp8       NVFP4 (Blackwell), FP8 KV
========== ============ ============= ========= =================================================

A group-quantised weight also stores one 16-bit scale per group: ``16 / group`` extra bits per
weight (0.125 bit at group 128, 0.5 bit at group 32; the NVFP4 scale is 8-bit per 16 values).
The KV dtype of any preset can be overridden (``kv_cache_dtype='fp8'``). Weight-only presets
carry a ``dequant_efficiency`` (see :data:`W8A16_DEQUANT_EFFICIENCY`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from servingcast.errors import ConfigError

Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4"]

#: Storage bits per element of each dtype.
DTYPE_BITS: dict[str, float] = {
    "fp32": 32.0,
    "tf32": 32.0,
    "bf16": 16.0,
    "fp16": 16.0,
    "fp8": 8.0,
    "int8": 8.0,
    "int4": 4.0,
    "fp4": 4.0,
}


class Precision(BaseModel):
    """The numeric formats of one deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    weight_dtype: Dtype
    compute_dtype: Dtype = Field(description="dtype of the GEMM datapath (tensor-core peak used)")
    kv_cache_dtype: Dtype
    weight_scale_bits: float = Field(0.0, ge=0.0, description="extra bits per weight for scales")
    dequant_efficiency: float = Field(
        1.0, gt=0.0, le=1.0,
        description="fraction of the device's memory efficiency a dequantising GEMM reaches",
    )
    #: Activations between layers and the all-reduce payload stay 16-bit in every engine we model.
    activation_bytes: float = 2.0

    @property
    def weight_bytes(self) -> float:
        """Bytes per stored weight element, scales included."""
        return (DTYPE_BITS[self.weight_dtype] + self.weight_scale_bits) / 8.0

    @property
    def kv_bytes(self) -> float:
        """Bytes per KV-cache element."""
        return DTYPE_BITS[self.kv_cache_dtype] / 8.0

    def with_kv_cache_dtype(self, kv_cache_dtype: str) -> Precision:
        """The same precision with another KV-cache dtype."""
        if kv_cache_dtype not in DTYPE_BITS:
            raise ConfigError(
                f"unknown KV-cache dtype {kv_cache_dtype!r}. To fix: use one of "
                f"{', '.join(sorted(DTYPE_BITS))}"
            )
        return self.model_copy(
            update={"kv_cache_dtype": kv_cache_dtype, "name": f"{self.name}+kv-{kv_cache_dtype}"}
        )


def _preset(name: str, w: Dtype, c: Dtype, kv: Dtype, scale_bits: float = 0.0,
            dequant: float = 1.0) -> Precision:
    return Precision(
        name=name, weight_dtype=w, compute_dtype=c, kv_cache_dtype=kv,
        weight_scale_bits=scale_bits, dequant_efficiency=dequant,
    )


#: Weight-only kernels unpack every weight on the fly and reach less of the HBM bandwidth than
#: 16-bit GEMMs: gpt-fast on one A100 reports 1069–1322 GB/s achieved for int8 and 863–1098 GB/s
#: for int4 (group 32) against 1397–1482 GB/s for bf16 (pytorch-labs/gpt-fast README). Marlin
#: (Frantar et al. 2024) narrows the gap; these factors describe typical kernels, not the best.
W8A16_DEQUANT_EFFICIENCY = 0.85
W4A16_DEQUANT_EFFICIENCY = 0.72


PRESETS: dict[str, Precision] = {
    p.name: p
    for p in (
        _preset("fp32", "fp32", "fp32", "fp32"),
        _preset("fp16", "fp16", "fp16", "fp16"),
        _preset("bf16", "bf16", "bf16", "bf16"),
        _preset("fp8", "fp8", "fp8", "fp8"),
        _preset("int8", "int8", "int8", "int8"),
        _preset("w8a16", "int8", "fp16", "fp16", 0.0, W8A16_DEQUANT_EFFICIENCY),
        _preset("w4a16", "int4", "fp16", "fp16", 16.0 / 128.0, W4A16_DEQUANT_EFFICIENCY),
        _preset("w4a16-g32", "int4", "fp16", "fp16", 16.0 / 32.0, W4A16_DEQUANT_EFFICIENCY),
        _preset("fp4", "fp4", "fp4", "fp8", 8.0 / 16.0),
    )
}

_ALIASES = {
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "float32": "fp32",
    "w8a8-fp8": "fp8",
    "fp8-w8a8": "fp8",
    "w8a8": "int8",
    "smoothquant": "int8",
    "int8-weight-only": "w8a16",
    "int8-wo": "w8a16",
    "int4-weight-only": "w4a16",
    "int4-wo": "w4a16",
    "awq": "w4a16",
    "gptq": "w4a16",
    "nvfp4": "fp4",
}


def get_precision(value: str | Precision) -> Precision:
    """Resolve a preset name (or alias) to a :class:`Precision`."""
    if isinstance(value, Precision):
        return value
    key = value.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in PRESETS:
        raise ConfigError(
            f"unknown precision {value!r}. To fix: use one of {', '.join(PRESETS)} "
            f"(aliases: {', '.join(sorted(_ALIASES))})"
        )
    return PRESETS[key]
