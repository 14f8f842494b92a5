"""Communication: tensor-parallel all-reduce, pipeline send/recv, expert all-to-all, KV transfer.

The alpha-beta model throughout: a message of ``S`` bytes over a link of bandwidth ``B`` with
per-hop latency ``alpha`` takes ``alpha + S / B`` (Hockney 1994). Bandwidths are effective
(datasheet per-GPU one-direction bandwidth times the network efficiency).
"""

from __future__ import annotations

import math

from servingcast.costmodel.roofline import ArrayOrFloat
from servingcast.specs.hardware import Efficiency, Interconnect


def link_bytes_per_s(link: Interconnect, efficiency: Efficiency) -> float:
    """Effective bandwidth of one GPU's link: datasheet one-direction GB/s times the network
    efficiency, in bytes/s."""
    return link.bandwidth_gb_s * 1e9 * efficiency.network


def allreduce_s(
    nbytes: ArrayOrFloat, n: int, bytes_per_s: float, latency_s: float
) -> ArrayOrFloat:
    """All-reduce of ``nbytes`` (per GPU) among ``n`` GPUs.

    Bandwidth term of the ring algorithm, ``2 (n-1)/n * S / B`` (every byte crosses the ring
    twice: reduce-scatter then all-gather), latency term of recursive doubling,
    ``2 ceil(log2 n) * alpha`` — NCCL (and TensorRT-LLM's one-shot/two-shot kernels) pick the
    better algorithm per message size, and this is the lower envelope of the two. Thakur,
    Rabenseifner & Gropp, "Optimization of Collective Communication Operations in MPICH",
    IJHPCA 2005; NCCL's busBw = algBw * 2(n-1)/n (nccl-tests, PERFORMANCE.md).
    """
    if n <= 1:
        return nbytes * 0.0
    return 2.0 * (n - 1) / n * nbytes / bytes_per_s + 2.0 * math.ceil(math.log2(n)) * latency_s


def alltoall_s(
    nbytes: ArrayOrFloat, n: int, bytes_per_s: float, latency_s: float
) -> ArrayOrFloat:
    """All-to-all where each of ``n`` GPUs holds ``nbytes`` to scatter evenly.

    A fraction ``(n-1)/n`` leaves each GPU, in ``n-1`` messages sent concurrently over the GPU's
    link: ``(n-1)/n * S / B + (n-1) * alpha`` (pairwise exchange, Thakur et al. 2005). Used for
    the MoE dispatch and combine of expert parallelism (GShard, Lepikhin et al. 2020).
    """
    if n <= 1:
        return nbytes * 0.0
    return (n - 1) / n * nbytes / bytes_per_s + (n - 1) * latency_s


def p2p_s(nbytes: ArrayOrFloat, bytes_per_s: float, latency_s: float) -> ArrayOrFloat:
    """One point-to-point send of ``nbytes``: ``alpha + S / B`` (pipeline stage hand-off)."""
    return nbytes / bytes_per_s + latency_s


def kv_transfer_s(kv_bytes: float, bytes_per_s: float, latency_s: float = 0.0) -> float:
    """Moving a request's KV cache from a prefill to a decode instance: ``alpha + S / B``.

    ``kv_bytes`` is the whole cache of the request (every layer); the link bandwidth is the
    prefill→decode path (DistServe, Zhong et al., OSDI 2024, section 4.3).
    """
    return kv_bytes / bytes_per_s + latency_s
