"""Attention data-parallelism + expert parallelism ("DEP"): the cost of one engine iteration.

Layout (:class:`~servingcast.costmodel.parallel.Parallelism` with ``attn_dp = N > 1``): one
engine of ``N`` attention ranks of ``tp`` GPUs each, ``G = N tp`` GPUs in all. Each rank runs its
own scheduler over its own requests and KV cache; attention, dense MLPs, the router, the shared
experts and the LM head are replicated per rank and tensor-parallel over its ``tp`` GPUs; the
routed experts are expert-parallel over all ``G`` GPUs (``ep = G``, one whole expert per GPU
slot). Every MoE layer dispatches each token to the GPUs owning its ``k`` experts and combines
the results back (all-to-all). Sources: DeepSeek-V3 technical report (arXiv:2412.19437, 2024),
sec. 3.4 "Inference and Deployment" (decode: attention DP with TP4 + SP, EP32 and EP320 for the
experts; dispatch/combine all-to-all over IB and NVLink); SGLang, "DP attention" (LMSYS blog,
2024-12, v0.4 release: ``--enable-dp-attention``); vLLM docs, "Data Parallel Deployment" and
"Expert Parallel Deployment" (``--data-parallel-size N --enable-expert-parallel``: attention
data-parallel, experts expert-parallel over the DP x TP ranks).

Notation: a batch of stats ``x`` (:class:`~servingcast.costmodel.batch.BatchStats`) over the
whole engine, ``T`` new tokens, ``L`` sequences needing logits, ``h`` the hidden size, ``k`` the
experts per token, ``b_a`` activation bytes.

1. Load split over ranks. Requests are assigned to ranks by count (SGLang's round-robin /
   shortest-queue DP controller, vLLM's least-loaded DP balancing), so the busiest rank holds
   ``ceil(n / N)`` of ``n`` sequences: a balanced split, one more on some ranks when ``N`` does
   not divide ``n``. The iteration waits for the busiest rank (the ranks synchronise at every
   MoE all-to-all), so per rank::

       T_r = ceil(T / N)          rows of every per-rank GEMM (QKV, output, dense MLP, router,
                                  shared experts) and of the dispatch
       L_r = ceil(L / N)          rows of the LM head
       x_r = x / N                attention work (pairs, KV tokens read, sequences)

   The attention work uses the balanced share without the rounding: it must stay affine in the
   batch sums, which :mod:`~servingcast.costmodel.fast` relies on, and the least-loaded
   assignment keeps ranks' KV within about one request of each other (an approximation that
   neglects that last request's KV; at a batch of 256 per rank it is under 0.5%).
2. Routed experts: all ``T`` tokens of the engine, ``T k`` token-expert assignments over
   ``ep = G`` GPUs, with the load imbalance of the busiest GPU
   (:func:`~servingcast.costmodel.layers.expert_load_imbalance`, the expected maximum of
   ``G`` binomial loads) and the touched experts' weight reads, exactly as
   :meth:`CostModel._experts` costs them for any ``ep``.
3. Dispatch and combine (:func:`alltoall_s`): each GPU sends its ``T_r / tp`` tokens (a rank's
   ``tp`` GPUs hold the same tokens after the attention all-reduce, and each dispatches a
   ``1/tp`` slice, DeepEP's low-latency mode) to the owners of their ``k`` experts,
   ``S = T_r / tp * k * h * b`` bytes, and receives as much back at the combine. The dispatch
   moves ``b = 1`` byte per element when the GEMMs run in FP8 (activations are quantised before
   the dispatch, DeepSeek-V3 report sec. 3.3.2 and DeepEP's FP8 dispatch), else ``b_a``; the
   combine moves ``b_a`` (BF16). Dispatch/combine are not overlapped with compute here (no
   two-micro-batch overlap): an upper bound for engines that do overlap them.
4. Inside a rank (``tp > 1``): two all-reduces of ``T_r h b_a`` bytes per layer over its ``tp``
   GPUs (attention output; dense MLP or shared expert), as Megatron-LM's layer.
5. Overheads as in :mod:`~servingcast.costmodel.step`: ``layer_us`` per layer, ``iteration_ms``
   per iteration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from servingcast.costmodel import comm
from servingcast.costmodel.batch import BatchStats
from servingcast.costmodel.roofline import ArrayOrFloat
from servingcast.specs.hardware import Efficiency, HardwareSpec

if TYPE_CHECKING:
    from servingcast.costmodel.step import CostModel


def busiest_rank_rows(count: ArrayOrFloat, ranks: int) -> ArrayOrFloat:
    """Rows of the busiest of ``ranks`` ranks for ``count`` rows split by count:
    ``ceil(count / ranks)`` (item 1 of the module docstring); elementwise on arrays."""
    if ranks <= 1:
        return count
    # A hair below the quotient, so 4096 / 16 stays 256 in floating point.
    rows = np.ceil(np.asarray(count, dtype=np.float64) / ranks - 1e-9)
    rows = np.maximum(rows, 0.0)
    return float(rows) if np.ndim(rows) == 0 else rows


def rank_stats(stats: BatchStats, ranks: int) -> BatchStats:
    """The attention work of one rank: every sum of ``stats`` divided by ``ranks`` (item 1)."""
    if ranks <= 1:
        return stats
    return BatchStats(**{name: getattr(stats, name) / ranks for name in (
        "prefill_tokens", "prefill_pairs", "prefill_kv_tokens", "decode_seqs", "decode_tokens",
        "decode_pairs", "decode_kv_tokens", "logit_seqs")})


def alltoall_s(nbytes: ArrayOrFloat, gpus: int, hardware: HardwareSpec,
               efficiency: Efficiency) -> ArrayOrFloat:
    """All-to-all among the ``gpus`` GPUs of an expert-parallel group, ``nbytes`` per GPU.

    Each GPU sends ``nbytes / gpus`` to every peer; with ``g`` GPUs per node, ``(g' - 1) / G``
    of its bytes go over NVLink to peers of its node (``g' = min(g, G)``) and ``(G - g') / G``
    over its own NIC to other nodes, both at once (DeepEP and NCCL's all-to-all post every
    message concurrently, NVLink and RDMA in parallel). So::

        t = max((g' - 1) / G * S / B_nvlink, (G - g') / G * S / B_nic) + alpha

    with ``alpha`` the latency of the slower link in use (one round of concurrent puts). The
    alpha-beta model of :mod:`~servingcast.costmodel.comm` (Hockney 1994); the split of traffic
    over NVLink and IB follows the DeepSeek-V3 report, sec. 3.4 / 3.2.2 (dispatch over IB
    between nodes and NVLink within one). DeepEP's published low-latency kernels (EP16, 128
    tokens per GPU, top-8, hidden 7168, FP8 dispatch: 118 us on H800 with 400 Gb/s CX7) sit
    near this with the calibrated network efficiency of 0.5 (147 us).
    """
    if gpus <= 1:
        return nbytes * 0.0
    g = min(hardware.gpus_per_node, gpus)
    intra_s = (g - 1) / gpus * nbytes / comm.link_bytes_per_s(hardware.intra_node, efficiency)
    if gpus <= g:
        return intra_s + hardware.intra_node.latency_us * 1e-6
    inter_s = (gpus - g) / gpus * nbytes / comm.link_bytes_per_s(hardware.inter_node, efficiency)
    alpha_s = max(hardware.intra_node.latency_us, hardware.inter_node.latency_us) * 1e-6
    return np.maximum(intra_s, inter_s) + alpha_s


def dep_layer(cm: CostModel, acc: Any, s: BatchStats, moe_layer: bool) -> Any:
    """One layer of a DEP engine on the busiest rank's GPU (module docstring, items 1-5).

    ``acc`` is the step module's accumulator; the operators go into the same breakdown as a
    tensor-parallel layer (``qkv``, ``attention``, ``attn_out``, ``mlp``, ``moe``,
    ``tp_comm``, ``ep_comm``, ``overhead``).
    """
    par = cm.parallel
    ranks, tp = par.attn_dp, par.tp
    tokens = s.new_tokens
    rows = busiest_rank_rows(tokens, ranks)
    cm._gemms(acc, cm._attn, rows)
    cm._attention(acc, rank_stats(s, ranks))
    if moe_layer:
        moe = cm.model.moe
        assert moe is not None
        cm._gemms(acc, cm._moe_fixed, rows)
        cm._experts(acc, tokens)
        per_token = rows / tp * moe.top_k * cm.model.hidden_size
        dispatch_b = 1.0 if cm.precision.compute_dtype == "fp8" else cm._ab
        acc.add("ep_comm", "communication",
                alltoall_s(per_token * dispatch_b, par.ep, cm.hardware, cm.efficiency)
                + alltoall_s(per_token * cm._ab, par.ep, cm.hardware, cm.efficiency))
    else:
        cm._gemms(acc, cm._dense_mlp, rows)
    if tp > 1:
        n_allreduce = 1 if cm.model.parallel_attention_mlp else 2
        acc.add("tp_comm", "communication",
                cm._exposed(acc, n_allreduce * cm._allreduce(rows, tp)))
    acc.add("overhead", "overhead", tokens * 0.0 + cm._layer_overhead_s)
    return acc
