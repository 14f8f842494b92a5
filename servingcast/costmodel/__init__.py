"""The one analytic hardware cost model: step time, memory and KV capacity of an instance.

Everything else in servingcast (the closed-form estimate, the planner's candidate capacities,
the simulator's iteration times) calls these functions; no other module holds a latency or
memory formula.
"""

from servingcast.costmodel.batch import (
    Batch,
    BatchStats,
    attention_pairs,
    decode_series,
    kv_tokens_read,
)
from servingcast.costmodel.comm import allreduce_s, alltoall_s, kv_transfer_s, p2p_s
from servingcast.costmodel.layers import active_parameter_count, parameter_count
from servingcast.costmodel.memory import (
    MemoryPlan,
    blocks_for,
    kv_bytes_per_token,
    max_batch_size,
    memory_plan,
    require_fit,
)
from servingcast.costmodel.parallel import Parallelism, check_parallelism
from servingcast.costmodel.step import BOUNDS, OPERATORS, CostModel, StepTime, resolve_efficiency

__all__ = [
    "BOUNDS",
    "OPERATORS",
    "Batch",
    "BatchStats",
    "CostModel",
    "MemoryPlan",
    "Parallelism",
    "StepTime",
    "active_parameter_count",
    "allreduce_s",
    "alltoall_s",
    "attention_pairs",
    "blocks_for",
    "check_parallelism",
    "decode_series",
    "kv_bytes_per_token",
    "kv_tokens_read",
    "kv_transfer_s",
    "max_batch_size",
    "memory_plan",
    "p2p_s",
    "parameter_count",
    "require_fit",
    "resolve_efficiency",
]
