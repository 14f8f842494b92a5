"""servingcast: plan LLM inference serving before you buy or deploy GPUs.

The public API is small; heavy modules load on first use so ``import servingcast`` stays fast::

    import servingcast as sc
    e = sc.estimate("llama-3.1-70b", "h100-sxm", seq_len=2048, batch_size=64,
                    output_len=256, tp=4)   # calibrated efficiency, as the CLI
    print(e.ttft_ms, e.tpot_ms)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servingcast._lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY = {
    "estimate": "servingcast._estimate",
    "Estimate": "servingcast._estimate",
    "CostModel": "servingcast.costmodel",
    "Batch": "servingcast.costmodel",
    "Parallelism": "servingcast.costmodel",
    "get_model": "servingcast.specs",
    "get_hardware": "servingcast.specs",
    "get_precision": "servingcast.specs",
    "ServingcastError": "servingcast.errors",
    "ConfigError": "servingcast.errors",
    "InfeasibleError": "servingcast.errors",
}

__all__ = [*sorted(_LAZY), "__version__"]

if TYPE_CHECKING:
    from servingcast._estimate import Estimate as Estimate
    from servingcast._estimate import estimate as estimate
    from servingcast.costmodel import Batch as Batch
    from servingcast.costmodel import CostModel as CostModel
    from servingcast.costmodel import Parallelism as Parallelism
    from servingcast.errors import ConfigError as ConfigError
    from servingcast.errors import InfeasibleError as InfeasibleError
    from servingcast.errors import ServingcastError as ServingcastError
    from servingcast.specs import get_hardware as get_hardware
    from servingcast.specs import get_model as get_model
    from servingcast.specs import get_precision as get_precision


__getattr__ = lazy_getattr(__name__, _LAZY)
