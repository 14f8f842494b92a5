"""The roofline of one operator.

Every operator is a pair (FLOPs, bytes moved to and from HBM). Its time on one GPU is

    t_compute = FLOPs / (peak_flops * eff_compute)
    t_memory  = bytes / (hbm_bandwidth * eff_memory)
    t         = (t_compute**p + t_memory**p) ** (1 / p)

With ``p -> inf`` this is the classic roofline ``max(t_compute, t_memory)`` (Williams, Waterman &
Patterson, "Roofline: an insightful visual performance model", CACM 2009). Real kernels do not
overlap compute and memory perfectly near the ridge point, where both terms are close (a GEMM of
128 tokens, a batch of decodes at moderate batch size); the p-norm blends the two there and
returns to the roofline far from it. ``p = ROOFLINE_P`` is fixed once for all devices, chosen
against the published measurements in ``scripts/validate.py`` — an approximation, documented as
one. (Hockney & Curington's ``f_1/2`` model and the ECM model of Treibig & Hager 2010 make the
same no-overlap assumption for in-core and memory time.) Decode is far on the memory side
(Pope et al., "Efficiently Scaling Transformer Inference", MLSys 2023), long prefill far on the
compute side, so both are plain roofline there.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

#: Sharpness of the compute/memory blend (see the module docstring). ``p = 1`` (no overlap:
#: ``t = t_compute + t_memory``) fits the published measurements best of 1, 1.5, 2 and inf —
#: chiefly the 128-token prefills and moderate-batch decodes near the ridge point — and differs
#: from the plain roofline by under 5% wherever one term is 20x the other.
ROOFLINE_P = 1.0

#: A scalar, or an array of values evaluated elementwise (a series of iterations).
ArrayOrFloat: TypeAlias = "float | npt.NDArray[np.float64]"


def op_time_s(
    flops: ArrayOrFloat, bytes_moved: ArrayOrFloat, flops_per_s: float, bytes_per_s: float
) -> tuple[ArrayOrFloat, ArrayOrFloat, ArrayOrFloat]:
    """Return ``(t, t_compute, t_memory)`` in seconds for one operator on one GPU.

    ``flops_per_s`` and ``bytes_per_s`` are the *effective* rates (peak times efficiency).
    Works elementwise on numpy arrays, so a series of future iterations costs one call.
    """
    t_compute = flops / flops_per_s
    t_memory = bytes_moved / bytes_per_s
    t = (t_compute**ROOFLINE_P + t_memory**ROOFLINE_P) ** (1.0 / ROOFLINE_P)
    return t, t_compute, t_memory
