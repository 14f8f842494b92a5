"""The roofline of one operator, with partial overlap of compute and memory time.

Every operator is a pair (FLOPs, bytes moved to and from HBM). Its time on one GPU is

    t_compute = FLOPs / (peak_flops * eff_compute)
    t_memory  = bytes / (hbm_bandwidth * eff_memory)
    t         = max(t_compute, t_memory) + beta * min(t_compute, t_memory)

``beta = 0`` is the classic roofline (Williams, Waterman & Patterson, "Roofline: an insightful
visual performance model", CACM 2009): perfect overlap of loads and math. ``beta = 1`` is no
overlap, ``t_compute + t_memory`` (the assumption of Hockney & Curington's ``f_1/2`` model and of
the ECM model, Treibig & Hager 2010). Real GEMM kernels sit between: a software-pipelined
Hopper/Ampere GEMM (CUTLASS multistage / TMA warp-specialised mainloop, cp.async
double-buffering) hides most of the weight stream behind the MMAs, but the prologue and epilogue
of each tile (first loads, the write-back of the output), wave quantisation and the L2 misses
near the ridge point are not hidden. ``beta`` is the fraction of the smaller term that stays
exposed.

Far from the ridge point both forms agree: at batch 1 a GEMM is ``t_memory (1 + beta x)`` with
``x = t_compute / t_memory`` under 1%, and a 2 048-token prefill is compute-bound the same way.
They differ at the ridge, where serving batches of 200–900 tokens sit: there the sum is up to
2x the max, the overlap form ``(1 + beta)`` times it.

:data:`GEMM_NON_OVERLAP` is one number for every device, fitted on all 194 rows of
``scripts/validate.py`` together with the per-device efficiency factors and overheads (a grid
over ``beta`` in {0, 0.2, 0.35, 0.5, 0.6, 0.7, 1}, each with compute and memory efficiency
refitted per device family, and the overheads too at 0.35, 0.5, 0.6 and 1; no per-row
fitting). The fit is ``beta = 1``: with overlap, the 128-token prefills (batch-1 TTFT), which
sit right at the ridge, come out 15–25% too fast on every device, far more than the 2 048-token
ones (0–12%), and no efficiency factor repairs both (median TTFT error on A100 12–15% at
``beta`` 0.35–0.5 against 6% at 1; max-throughput rows on H100 7–8% against 5%). Those
measurements (TensorRT-LLM 0.9–0.14, 2024) are the engines the factors describe; a newer engine
whose GEMMs hide more of the weight stream is a smaller ``beta``, which
:class:`~servingcast.costmodel.step.CostModel` takes as ``gemm_non_overlap``.

Attention kernels keep ``beta = 1`` (the sum): decode attention reads the KV cache at an
intensity of about the query-group size (1–8 FLOP/byte, against ridge points of 100–300), prefill
attention is compute-bound, so the smaller term is a few percent either way, and the sum keeps
the attention cost affine in the batch sums, which :mod:`~servingcast.costmodel.fast` relies on.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

#: Exposed fraction of the smaller of compute and memory time in a GEMM (module docstring):
#: fitted on the published rows, where no overlap fits best.
GEMM_NON_OVERLAP = 1.0
#: The non-overlap of attention kernels: none hidden (see the module docstring).
ATTENTION_NON_OVERLAP = 1.0

#: A scalar, or an array of values evaluated elementwise (a series of iterations).
ArrayOrFloat: TypeAlias = "float | npt.NDArray[np.float64]"


def op_time_s(
    flops: ArrayOrFloat, bytes_moved: ArrayOrFloat, flops_per_s: float, bytes_per_s: float,
    non_overlap: float = 1.0,
) -> tuple[ArrayOrFloat, ArrayOrFloat, ArrayOrFloat]:
    """Return ``(t, t_compute, t_memory)`` in seconds for one operator on one GPU.

    ``t = max(t_compute, t_memory) + non_overlap * min(t_compute, t_memory)``; the default
    ``non_overlap = 1`` is ``t_compute + t_memory`` (no overlap). ``flops_per_s`` and
    ``bytes_per_s`` are the *effective* rates (peak times efficiency). Works elementwise on numpy
    arrays, so a series of future iterations costs one call.
    """
    t_compute = flops / flops_per_s
    t_memory = bytes_moved / bytes_per_s
    if non_overlap == 1.0:
        return t_compute + t_memory, t_compute, t_memory
    t = np.maximum(t_compute, t_memory) + non_overlap * np.minimum(t_compute, t_memory)
    return t, t_compute, t_memory


def split_bounds(
    t: ArrayOrFloat, t_compute: ArrayOrFloat, t_memory: ArrayOrFloat
) -> tuple[ArrayOrFloat, ArrayOrFloat]:
    """Split an operator's time ``t`` into ``(compute, memory)`` parts that sum to ``t``.

    The larger term is the operator's bound and gets its whole time; the exposed rest
    ``t - max`` goes to the other bound (at ``non_overlap = 1``: exactly ``t_compute`` and
    ``t_memory``).
    """
    split = np.where(t_compute >= t_memory, t_compute, t - t_memory)
    compute: ArrayOrFloat = float(split) if np.ndim(split) == 0 else split
    return compute, t - compute
