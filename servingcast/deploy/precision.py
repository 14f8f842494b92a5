"""servingcast precisions as engine flags (``--dtype``, ``--quantization``, ``--kv-cache-dtype``).

What each preset is (:mod:`servingcast.specs.precision`) and how each engine runs it:

========== =============================== ============================================
preset     vLLM                            SGLang
========== =============================== ============================================
fp16/bf16  ``--dtype float16/bfloat16``    ``--dtype float16/bfloat16``
fp8        ``--quantization fp8``          ``--quantization fp8``
int8       a W8A8-INT8 checkpoint          ``--torchao-config int8dq``
w8a16      a W8A16 checkpoint              ``--torchao-config int8wo``
w4a16      an AWQ/GPTQ int4 g128 checkpt.  ``--torchao-config int4wo-128``
w4a16-g32  an int4 g32 checkpoint          ``--torchao-config int4wo-32``
fp4        an NVFP4 checkpoint             an NVFP4 checkpoint, ``modelopt_fp4``
========== =============================== ============================================

``--quantization fp8`` quantizes a 16-bit checkpoint's weights to FP8 when it loads, with
dynamic activation scales (W8A8, as modelled), in both engines. vLLM has no such on-load path
for INT8 or INT4 weights: it reads the method from a pre-quantized checkpoint (AWQ, GPTQ,
compressed-tensors, ModelOpt), so the launch files ask for one (``MODEL``) instead of naming a
flag that would not do what was planned. SGLang quantizes INT8/INT4 on load through torchao.

The KV cache: the modelled bytes per element are what matter for capacity. 16-bit KV with
16-bit activations is the engine default (``auto``); FP8 is ``fp8`` (vLLM) or ``fp8_e4m3``
(SGLang); INT8 KV has no common engine format and is written as FP8 (the same byte per
element); FP4 KV is ``nvfp4`` (vLLM) or ``fp4_e2m1`` (SGLang), recent releases only.
"""

from __future__ import annotations

from dataclasses import dataclass

from servingcast.specs.precision import DTYPE_BITS, Precision

_DTYPE = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
_CHECKPOINT = {
    "int8": "a W8A8-INT8 (SmoothQuant) checkpoint of {repo}, e.g. made with llm-compressor",
    "w8a16": "an INT8 weight-only (W8A16) checkpoint of {repo}: GPTQ 8-bit or compressed-tensors",
    "w4a16": "an INT4 weight-only checkpoint of {repo} with group size 128 (AWQ or GPTQ)",
    "w4a16-g32": "an INT4 weight-only checkpoint of {repo} with group size 32 (GPTQ)",
    "fp4": "an NVFP4 checkpoint of {repo} (NVIDIA ModelOpt, e.g. nvidia/...-FP4 on Hugging Face)",
}


@dataclass(frozen=True)
class EngineFlags:
    """Flags for one engine, what they leave out (``notes``), and the pre-quantized checkpoint
    the model argument must name (``checkpoint``, with ``{repo}`` for the base model)."""

    args: tuple[str, ...]
    notes: tuple[str, ...]
    checkpoint: str | None


def base_name(precision: Precision) -> str:
    """The preset a precision started from (``bf16+kv-fp8`` -> ``bf16``)."""
    return precision.name.split("+", 1)[0]


def _kv_is_default(precision: Precision) -> bool:
    # The engines' default KV dtype is the activation dtype: --dtype's for the unquantized
    # presets, 16-bit for every other.
    base = base_name(precision)
    activation = base if base in _DTYPE else "bf16"
    return DTYPE_BITS[precision.kv_cache_dtype] == DTYPE_BITS[activation]


def vllm_flags(precision: Precision) -> EngineFlags:
    """The ``vllm serve`` flags of ``precision`` (module docstring)."""
    base = base_name(precision)
    args: list[str] = []
    notes: list[str] = []
    if base in _DTYPE:
        args += ["--dtype", _DTYPE[base]]
    elif base == "fp8":
        args += ["--quantization", "fp8"]
        notes.append("fp8: vLLM quantizes the 16-bit weights to FP8 as it loads them (W8A8, "
                     "dynamic activation scales); for a pre-quantized FP8 checkpoint drop "
                     "--quantization (vLLM reads the method from it)")
    elif base in ("w8a16", "w4a16", "w4a16-g32"):
        args += ["--dtype", "float16"]
    checkpoint = _CHECKPOINT.get(base)
    if checkpoint is not None:
        notes.append(f"{base}: vLLM has no on-load flag for it; it reads the quantization from "
                     "a pre-quantized checkpoint, so MODEL must name one")
    kv = precision.kv_cache_dtype
    if _kv_is_default(precision):
        args += ["--kv-cache-dtype", "auto"]
    elif kv == "fp8":
        args += ["--kv-cache-dtype", "fp8"]
    elif kv == "int8":
        args += ["--kv-cache-dtype", "fp8"]
        notes.append("INT8 KV cache: vLLM stores 1-byte KV as FP8, the same size as modelled")
    elif kv == "fp4":
        args += ["--kv-cache-dtype", "nvfp4"]
        notes.append("FP4 KV cache (nvfp4): recent vLLM releases on Blackwell only")
    else:
        notes.append(f"{kv} KV cache: vLLM has no such format; it keeps KV in the model dtype, "
                     "which holds fewer tokens than planned")
    return EngineFlags(tuple(args), tuple(notes), checkpoint)


def sglang_flags(precision: Precision) -> EngineFlags:
    """The ``sglang.launch_server`` flags of ``precision`` (module docstring)."""
    base = base_name(precision)
    args: list[str] = []
    notes: list[str] = []
    checkpoint = None
    torchao = {"int8": "int8dq", "w8a16": "int8wo", "w4a16": "int4wo-128",
               "w4a16-g32": "int4wo-32"}
    if base in _DTYPE:
        args += ["--dtype", _DTYPE[base]]
    elif base == "fp8":
        args += ["--quantization", "fp8"]
    elif base in torchao:
        if base.startswith("w4a16"):
            args += ["--dtype", "bfloat16"]
            notes.append("int4wo: torchao's INT4 kernel takes bf16 activations (modelled as "
                         "fp16: the same bytes and speed)")
        elif base == "w8a16":
            args += ["--dtype", "float16"]
        args += ["--torchao-config", torchao[base]]
        notes.append(f"{base}: SGLang quantizes the weights on load with torchao "
                     f"({torchao[base]}); a pre-quantized checkpoint loads faster")
    elif base == "fp4":
        args += ["--quantization", "modelopt_fp4"]
        checkpoint = _CHECKPOINT["fp4"]
        notes.append("fp4: SGLang needs a pre-quantized NVFP4 checkpoint, so MODEL must name one")
    kv = precision.kv_cache_dtype
    if _kv_is_default(precision):
        args += ["--kv-cache-dtype", "auto"]
    elif kv in ("fp8", "int8"):
        args += ["--kv-cache-dtype", "fp8_e4m3"]
        if kv == "int8":
            notes.append("INT8 KV cache: SGLang stores 1-byte KV as FP8 (e4m3), the same size "
                         "as modelled")
    elif kv == "fp4":
        args += ["--kv-cache-dtype", "fp4_e2m1"]
        notes.append("FP4 KV cache (fp4_e2m1): recent SGLang releases only")
    else:
        notes.append(f"{kv} KV cache: SGLang has no such format; it keeps KV in the model "
                     "dtype, which holds fewer tokens than planned")
    return EngineFlags(tuple(args), tuple(notes), checkpoint)
