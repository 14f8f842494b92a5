"""The hardware schema: one accelerator model as the catalog describes it.

Catalog entries live in ``configs/hardware/*.yaml``, one device a file, every number with its
datasheet cited in a comment. Units are in the field names: ``*_tflops`` are dense (no
structured sparsity) tera-FLOP/s, ``*_gb_s`` decimal gigabytes per second in one direction,
``hbm_gib`` binary gibibytes (the vendors' "80 GB" HBM is 80 GiB), ``*_us`` microseconds.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class Interconnect(BaseModel):
    """A link family as one GPU sees it: bandwidth per GPU, one direction, and per-hop latency."""

    model_config = _FROZEN

    kind: Literal["nvlink", "pcie", "xgmi", "hccs", "infiniband", "roce", "ethernet"]
    bandwidth_gb_s: float = Field(gt=0, description="per GPU, one direction, GB/s")
    latency_us: float = Field(ge=0, description="per message hop, microseconds")


class Efficiency(BaseModel):
    """Fractions of datasheet peak that serving kernels sustain on this device.

    ``compute`` multiplies the dense tensor-core peak, ``memory`` the HBM bandwidth, ``network``
    the interconnect bandwidth. They are calibrated once per device against published
    measurements (``scripts/validate.py``), not fitted row by row.

    ``compute_fp4``, when given, replaces ``compute`` for FP4 (NVFP4/MXFP4) GEMMs: serving
    engines reach a much smaller fraction of the doubled FP4 tensor-core peak than of the FP8 one
    (the scale-factor loads and the FP4 -> MMA operand path, and the attention and
    element-wise kernels that stay in FP8/BF16, do not double).
    """

    model_config = _FROZEN

    compute: float = Field(gt=0, le=1)
    memory: float = Field(gt=0, le=1)
    network: float = Field(gt=0, le=1)
    compute_fp4: float | None = Field(default=None, gt=0, le=1)

    @model_serializer(mode="wrap")
    def _drop_absent_fp4(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave ``compute_fp4`` out of dumps (and written YAML) when the device has none."""
        data: dict[str, Any] = handler(self)
        if data.get("compute_fp4") is None:
            data.pop("compute_fp4", None)
        return data

    def compute_for(self, dtype: str) -> float:
        """The compute efficiency of GEMMs whose datapath is ``dtype``."""
        if dtype == "fp4" and self.compute_fp4 is not None:
            return self.compute_fp4
        return self.compute


class Overheads(BaseModel):
    """Fixed costs that no roofline sees.

    ``iteration_ms`` is paid once per engine iteration (scheduling, sampling, host sync);
    ``layer_us`` once per transformer layer per iteration (kernel launches and the tail of
    small kernels: about 8–12 kernels a layer at a few microseconds each).
    """

    model_config = _FROZEN

    iteration_ms: float = Field(ge=0)
    layer_us: float = Field(ge=0)


class HardwareSpec(BaseModel):
    """One accelerator model."""

    model_config = _FROZEN

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    display_name: str
    vendor: Literal["nvidia", "amd", "huawei", "intel", "google", "other"]
    aliases: tuple[str, ...] = ()
    peak_tflops: dict[
        Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4"], float
    ] = Field(description="dense peak per dtype, TFLOP/s (TOPS for integers)")
    hbm_gib: float = Field(gt=0)
    hbm_bandwidth_gb_s: float = Field(gt=0)
    intra_node: Interconnect
    inter_node: Interconnect
    gpus_per_node: int = Field(ge=1)
    efficiency: Efficiency
    overheads: Overheads
    price_per_hour_usd: float | None = Field(None, gt=0)
    notes: str = ""

    @field_validator("peak_tflops")
    @classmethod
    def _positive_peaks(cls, value: dict[str, float]) -> dict[str, float]:
        for dtype, tflops in value.items():
            if tflops <= 0:
                raise ValueError(f"peak_tflops.{dtype} must be > 0, got {tflops}")
        return value

    @property
    def hbm_bytes(self) -> float:
        """HBM capacity in bytes."""
        return self.hbm_gib * 2.0**30

    @property
    def hbm_bandwidth_bytes_s(self) -> float:
        """HBM bandwidth in bytes/s."""
        return self.hbm_bandwidth_gb_s * 1e9

    def peak_flops(self, dtype: str) -> float | None:
        """Dense peak FLOP/s for ``dtype``, or None when the chip has no such datapath."""
        tflops = self.peak_tflops.get(dtype)  # type: ignore[call-overload]
        return None if tflops is None else float(tflops) * 1e12
