"""The time of one engine iteration for an arbitrary batch, with a per-operator breakdown.

Per layer and GPU, each operator is costed by :func:`~servingcast.costmodel.roofline.op_time_s`:

* GEMMs (QKV, attention output, MLP, shared experts, router, LM head): ``2 T in out`` FLOPs for
  ``T`` new tokens; bytes ``in out b_w`` of weights plus ``T (in + out) b_a`` of activations.
* Attention core: ``F_pair * pairs`` FLOPs (see :mod:`layers`), bytes of the KV entries read
  (``kv_tokens * kv_elements * b_kv``) plus queries and outputs. Prefill and decode are costed
  as separate kernels, as vLLM and TensorRT-LLM launch them.
* Routed experts: each of ``T`` tokens goes to ``k`` of ``E`` experts. A GPU computes
  ``T k / ep`` token-expert pairs times the load imbalance of its EP group, plus the padding of
  each touched expert's last tile (:data:`MOE_PAD_TOKENS_PER_EXPERT`), and reads the weights of
  the experts the batch actually touches, ``E/ep * (1 - (1 - k/E)^T)``.

GEMMs blend compute and memory time with :data:`~servingcast.costmodel.roofline.GEMM_NON_OVERLAP`
(``gemm_non_overlap``); FP4 GEMMs use the device's ``compute_fp4`` efficiency where it has one.

Communication per layer: two TP all-reduces of ``T h b_a`` bytes (one for models whose attention
and MLP run in parallel, GPT-J and Falcon), MoE dispatch and combine all-to-alls over ``ep``, and
one pipeline hand-off per stage boundary. ``tp_comm_overlap`` hides a fraction of the all-reduce
behind the layer's GEMMs for engines that overlap them (:meth:`CostModel._exposed`; none by
default). Overheads: ``layer_us`` per layer (kernel launches, or the gaps between the kernels
of a replayed CUDA graph: the Hopper-class devices are calibrated at 10 us, which is what
CUDA-graph decode in TensorRT-LLM, vLLM and SGLang leaves) and ``iteration_ms`` per iteration
(scheduler, sampling, host sync).

With ``pp`` stages, an iteration's *latency* is the sum of the stages and hand-offs; engines keep
``pp`` micro-batches in flight, so successive iterations leave the pipeline every *interval*,
the slowest stage's time (GPipe, Huang et al. 2019; vLLM virtual engines).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from servingcast.costmodel import comm, dep, layers
from servingcast.costmodel.batch import Batch, BatchStats
from servingcast.costmodel.parallel import Parallelism, check_parallelism
from servingcast.costmodel.roofline import (
    ATTENTION_NON_OVERLAP,
    GEMM_NON_OVERLAP,
    ArrayOrFloat,
    op_time_s,
    split_bounds,
)
from servingcast.errors import ConfigError
from servingcast.specs.hardware import Efficiency, HardwareSpec, Interconnect
from servingcast.specs.model import ModelSpec
from servingcast.specs.precision import Precision

#: Operator classes of the breakdown, in report order.
OPERATORS = ("qkv", "attention", "attn_out", "mlp", "moe", "lm_head",
             "tp_comm", "ep_comm", "pp_comm", "overhead")
#: Grouped expert GEMMs (one GEMM per expert over the tokens routed to it) waste the unfilled
#: rows of each expert's last tile: a kernel with ``M``-row tiles computes ``ceil(n / M) M`` rows
#: for ``n`` tokens, on average ``n + M/2`` (MegaBlocks, Gale et al. 2023, sec. 3, measure the
#: same padding for block-sparse experts; TensorRT-LLM's and vLLM's fused-MoE kernels use
#: 64-128-row tiles, and 16-64 rows in their small-batch configurations). So a GPU that computes
#: ``A`` token-expert assignments over ``E_t`` touched experts pays for ``A + E_t * pad`` rows:
#: efficiency ``n / (n + pad)`` at ``n = A / E_t`` tokens per expert (Hockney's ``n_1/2`` form),
#: near 1 for Mixtral's 8 experts at serving batches and well below it for 128 small experts
#: (Qwen3-30B-A3B) or a batch of one. 32 rows is half a 64-row tile, a physical prior rather
#: than a fit: the published MoE rows (Mixtral, 8 experts, many tokens each at their batches)
#: cannot tell 0 from 64 (the medians of ``scripts/validate.py`` move by under 0.5 points).
MOE_PAD_TOKENS_PER_EXPERT = 32.0
#: The weight stream of grouped expert GEMMs (many separate matrices, the permute/unpermute of
#: the tokens, top-k routing kernels) reaches this fraction of a dense GEMM's bandwidth; fitted
#: with the compute factor below on all 194 rows (grid 0.75/0.85 x 0.75/0.85/1.0).
MOE_MEMORY_EFFICIENCY = 0.85
#: What the grouped expert GEMMs reach of a dense GEMM's compute rate on full tiles (the token
#: permutation, the gather of scattered rows, the routing kernels); fitted with the one above.
MOE_COMPUTE_EFFICIENCY = 0.75
#: Bounds of the breakdown.
BOUNDS = ("compute", "memory", "communication", "overhead")


def resolve_efficiency(
    hardware: HardwareSpec, efficiency: float | Efficiency | dict[str, float] | None
) -> Efficiency:
    """``None``: the device's calibrated defaults; a number: that fraction for compute, memory
    and network alike; a mapping or :class:`Efficiency`: per resource."""
    if efficiency is None:
        return hardware.efficiency
    if isinstance(efficiency, Efficiency):
        return efficiency
    if isinstance(efficiency, dict):
        merged = hardware.efficiency.model_dump() | efficiency
        try:
            return Efficiency(**merged)
        except ValueError as exc:
            raise ConfigError(f"invalid efficiency {efficiency}: {exc}") from None
    value = float(efficiency)
    if not 0.0 < value <= 1.0:
        raise ConfigError(
            f"efficiency must be in (0, 1], got {value}. To fix: pass e.g. 0.5, or None for "
            f"the calibrated defaults of {hardware.name}"
        )
    return Efficiency(compute=value, memory=value, network=value)


@dataclass(frozen=True)
class StepTime:
    """One iteration: latency through all stages, pipeline interval, and where the time goes.

    ``by_operator`` and ``by_bound`` split ``latency_s`` (seconds, summed over stages).
    """

    latency_s: float
    interval_s: float
    by_operator: dict[str, float] = field(default_factory=dict)
    by_bound: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Link:
    bytes_per_s: float
    latency_s: float


def _link(ic: Interconnect, eff: Efficiency) -> _Link:
    return _Link(comm.link_bytes_per_s(ic, eff), ic.latency_us * 1e-6)


class _Acc:
    """Accumulates operator times into operator and bound buckets."""

    def __init__(self) -> None:
        self.op: dict[str, ArrayOrFloat] = {}
        self.bound: dict[str, ArrayOrFloat] = {}

    def add(self, op: str, bound: str, t: ArrayOrFloat) -> None:
        self.op[op] = self.op.get(op, 0.0) + t
        self.bound[bound] = self.bound.get(bound, 0.0) + t

    def add_roofline(self, op: str, t: ArrayOrFloat, tc: ArrayOrFloat, tm: ArrayOrFloat) -> None:
        """Add an operator, splitting its time between the bounds with
        :func:`~servingcast.costmodel.roofline.split_bounds`."""
        self.op[op] = self.op.get(op, 0.0) + t
        compute, _ = split_bounds(t, tc, tm)
        self.bound["compute"] = self.bound.get("compute", 0.0) + compute
        self.bound["memory"] = self.bound.get("memory", 0.0) + (t - compute)

    def scaled(self, factor: float) -> _Acc:
        out = _Acc()
        out.op = {k: v * factor for k, v in self.op.items()}
        out.bound = {k: v * factor for k, v in self.bound.items()}
        return out

    def merge(self, other: _Acc) -> None:
        for k, v in other.op.items():
            self.op[k] = self.op.get(k, 0.0) + v
        for k, v in other.bound.items():
            self.bound[k] = self.bound.get(k, 0.0) + v

    def total(self) -> ArrayOrFloat:
        return sum(self.op.values(), 0.0)


class CostModel:
    """The analytic cost of one instance: ``model`` on ``hardware`` with ``parallel`` degrees.

    Construction validates the sharding and precomputes per-GPU operator shapes; the methods are
    pure functions of their arguments.
    """

    def __init__(
        self,
        model: ModelSpec,
        hardware: HardwareSpec,
        precision: Precision,
        parallel: Parallelism | None = None,
        efficiency: float | Efficiency | dict[str, float] | None = None,
        tp_comm_overlap: float = 0.0,
        gemm_non_overlap: float | None = None,
    ) -> None:
        par = parallel or Parallelism()
        check_parallelism(model, hardware, par)
        if not 0.0 <= tp_comm_overlap < 1.0:
            raise ConfigError(
                f"tp_comm_overlap is the fraction of the TP all-reduce hidden behind the GEMMs "
                f"and must be in [0, 1), got {tp_comm_overlap}. To fix: pass e.g. 0.0 (no "
                f"overlap, vLLM/SGLang defaults) or 0.5"
            )
        #: Fraction of the TP all-reduce time hidden behind the GEMMs (see :meth:`_exposed`).
        self.tp_comm_overlap = tp_comm_overlap
        beta = GEMM_NON_OVERLAP if gemm_non_overlap is None else gemm_non_overlap
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(
                f"gemm_non_overlap is the exposed fraction of the smaller of a GEMM's compute "
                f"and memory time and must be in [0, 1], got {beta}. To fix: pass e.g. 1.0 (no "
                f"overlap, the calibrated default) or 0.3"
            )
        #: Exposed fraction of the smaller of a GEMM's compute and memory time
        #: (:mod:`~servingcast.costmodel.roofline`).
        self.gemm_non_overlap = beta
        self.model = model
        self.hardware = hardware
        self.precision = precision
        self.parallel = par
        self.efficiency = resolve_efficiency(hardware, efficiency)
        eff = self.efficiency

        peak = hardware.peak_flops(precision.compute_dtype)
        if peak is None:
            have = ", ".join(sorted(hardware.peak_tflops))
            raise ConfigError(
                f"{hardware.name} has no {precision.compute_dtype} tensor cores (it has {have}), "
                f"so precision {precision.name!r} cannot run on it. To fix: use a precision whose "
                f"compute dtype it has (e.g. fp16 or w8a16)"
            )
        half = hardware.peak_flops("bf16") or hardware.peak_flops("fp16")
        self._gemm_flops_s = peak * eff.compute_for(precision.compute_dtype)
        self._attn_flops_s = (half or hardware.peak_flops("fp32") or peak) * eff.compute
        self._half_flops_s = (half or peak) * eff.compute
        self._bytes_s = hardware.hbm_bandwidth_bytes_s * eff.memory
        self._weight_bytes_s = self._bytes_s * precision.dequant_efficiency
        tp = par.tp
        self._tp_link = _link(
            hardware.intra_node if tp <= hardware.gpus_per_node else hardware.inter_node, eff
        )
        self._intra = _link(hardware.intra_node, eff)
        self._inter = _link(hardware.inter_node, eff)
        self._layer_overhead_s = hardware.overheads.layer_us * 1e-6
        self._iteration_overhead_s = hardware.overheads.iteration_ms * 1e-3

        self._wb = precision.weight_bytes
        self._ab = precision.activation_bytes
        self._kvb = precision.kv_bytes
        self._attn = layers.attention_gemms(model, tp)
        self._dense_mlp = layers.dense_mlp_gemms(model, tp)
        self._moe_fixed = layers.moe_fixed_gemms(model, tp) if model.moe else []
        self._expert = layers.expert_gemms(model, par) if model.moe else []
        self._lm_head = layers.Gemm("lm_head", "lm_head", model.hidden_size,
                                    -(-model.vocab_size // tp))
        self._kv_el = layers.kv_elements_per_token_layer(model, tp)
        self._pair_flops_prefill = layers.attention_flops_per_pair(model, tp, decode=False)
        self._pair_flops_decode = layers.attention_flops_per_pair(model, tp, decode=True)
        q_local = model.num_attention_heads // tp
        if model.mla is not None:
            self._qo_el_prefill = q_local * (model.mla.qk_nope_head_dim
                                             + model.mla.qk_rope_head_dim + model.mla.v_head_dim)
            self._qo_el_decode = q_local * (2 * model.mla.kv_lora_rank
                                            + model.mla.qk_rope_head_dim)
        else:
            self._qo_el_prefill = self._qo_el_decode = 2 * q_local * model.head_size
        self._stage_layers = layers.layer_counts(model, par.pp)
        gpn = hardware.gpus_per_node
        self._hop_links = [
            self._intra if (s * tp) // gpn == ((s + 1) * tp) // gpn else self._inter
            for s in range(par.pp - 1)
        ]

    # -- operators ---------------------------------------------------------------------------

    def _gemms(self, acc: _Acc, gemms: list[layers.Gemm], tokens: ArrayOrFloat,
               weight_bytes: float | None = None) -> None:
        """Quantised GEMMs stream weights at the dequantising kernels' rate; a 16-bit
        ``weight_bytes`` override (the LM head) runs on the half-precision path."""
        wb = self._wb if weight_bytes is None else weight_bytes
        flops_s = self._gemm_flops_s if weight_bytes is None else self._half_flops_s
        bytes_s = self._weight_bytes_s if weight_bytes is None else self._bytes_s
        for g in gemms:
            flops = g.flops_per_token * tokens
            moved = g.weights * wb + tokens * (g.in_features + g.out_features) * self._ab
            t, tc, tm = op_time_s(flops, moved, flops_s, bytes_s, self.gemm_non_overlap)
            acc.add_roofline(g.op, t, tc, tm)

    def _attention(self, acc: _Acc, s: BatchStats) -> None:
        for tokens, pairs, kv_tokens, pair_flops, qo_el in (
            (s.prefill_tokens, s.prefill_pairs, s.prefill_kv_tokens,
             self._pair_flops_prefill, self._qo_el_prefill),
            (s.decode_tokens, s.decode_pairs, s.decode_kv_tokens,
             self._pair_flops_decode, self._qo_el_decode),
        ):
            flops = pair_flops * pairs
            moved = kv_tokens * self._kv_el * self._kvb + tokens * qo_el * self._ab
            t, tc, tm = op_time_s(flops, moved, self._attn_flops_s, self._bytes_s,
                                  ATTENTION_NON_OVERLAP)
            acc.add_roofline("attention", t, tc, tm)

    def _experts(self, acc: _Acc, tokens: ArrayOrFloat) -> None:
        moe = self.model.moe
        assert moe is not None
        ep = self.parallel.ep
        assignments = tokens * moe.top_k
        local = assignments / ep * layers.expert_load_imbalance(assignments, ep)
        touched = layers.expected_distinct_experts(moe.num_experts, moe.top_k, tokens) / ep
        # Rows computed: the assignments plus the padding of each touched expert's last tile.
        rows = local + touched * MOE_PAD_TOKENS_PER_EXPERT
        for g in self._expert:
            flops = g.flops_per_token * rows
            moved = touched * g.weights * self._wb + local * (g.in_features + g.out_features) * (
                self._ab)
            t, tc, tm = op_time_s(flops, moved, self._gemm_flops_s * MOE_COMPUTE_EFFICIENCY,
                                  self._weight_bytes_s * MOE_MEMORY_EFFICIENCY,
                                  self.gemm_non_overlap)
            acc.add_roofline("moe", t, tc, tm)

    def _allreduce(self, tokens: ArrayOrFloat, n: int) -> ArrayOrFloat:
        link = self._tp_link
        return comm.allreduce_s(tokens * self.model.hidden_size * self._ab, n,
                                link.bytes_per_s, link.latency_s)

    def _layer(self, s: BatchStats, moe_layer: bool) -> _Acc:
        if self.parallel.attn_dp > 1:  # attention data-parallel + expert-parallel (dep.py)
            return dep.dep_layer(self, _Acc(), s, moe_layer)  # type: ignore[no-any-return]
        acc = _Acc()
        tokens = s.new_tokens
        tp, ep = self.parallel.tp, self.parallel.ep
        self._gemms(acc, self._attn, tokens)
        self._attention(acc, s)
        if moe_layer:
            self._gemms(acc, self._moe_fixed, tokens)
            self._experts(acc, tokens)
        else:
            self._gemms(acc, self._dense_mlp, tokens)
        n_allreduce = 1 if self.model.parallel_attention_mlp else 2
        if tp > 1:
            if moe_layer and ep > 1:
                # Attention all-reduce, then dispatch + combine over ep, and the partial sums of
                # experts split tp/ep ways are all-reduced inside each expert's group.
                allreduce = self._allreduce(tokens, tp)
                if tp // ep > 1:
                    allreduce = allreduce + self._allreduce(tokens, tp // ep)
                acc.add("tp_comm", "communication", self._exposed(acc, allreduce))
                link = self._tp_link
                a2a = comm.alltoall_s(tokens * self.model.moe.top_k  # type: ignore[union-attr]
                                      * self.model.hidden_size * self._ab / ep, ep,
                                      link.bytes_per_s, link.latency_s)
                acc.add("ep_comm", "communication", 2.0 * a2a)
            else:
                acc.add("tp_comm", "communication",
                        self._exposed(acc, n_allreduce * self._allreduce(tokens, tp)))
        acc.add("overhead", "overhead", tokens * 0.0 + self._layer_overhead_s)
        return acc

    def _exposed(self, acc: _Acc, allreduce: ArrayOrFloat) -> ArrayOrFloat:
        """The part of a layer's TP all-reduce time that is not hidden behind its GEMMs.

        ``exposed = t_ar - min(f * t_ar, t_gemm)`` with ``f = tp_comm_overlap`` and ``t_gemm``
        the layer's projection, MLP and expert GEMMs: an engine that overlaps the all-reduce
        with compute (splitting the GEMM into chunks and reducing chunk ``i`` while computing
        ``i + 1``: TensorRT-LLM's GEMM + all-reduce fusion and UserBuffers on Hopper and
        Blackwell, vLLM's opt-in async TP, ``enable_async_tp``; Wang et al., "Overlap
        communication with dependent computation via decomposition", ASPLOS 2023; Chang et al.,
        "FLUX", 2024) hides at most a fraction ``f`` of it, and never more than the compute it
        overlaps with. vLLM and SGLang by default do not overlap (``f = 0``, the default here);
        the ``f`` an engine reaches depends on its kernels and is left to the caller.
        """
        if self.tp_comm_overlap == 0.0:
            return allreduce
        gemm = sum((acc.op.get(op, 0.0) for op in ("qkv", "attn_out", "mlp", "moe")), 0.0)
        return allreduce - np.minimum(self.tp_comm_overlap * allreduce, gemm)

    def _stage_accs(self, s: BatchStats) -> list[_Acc]:
        has_dense = any(d for d, _ in self._stage_layers)
        has_moe = any(m for _, m in self._stage_layers)
        dense = self._layer(s, moe_layer=False) if has_dense else None
        moe = self._layer(s, moe_layer=True) if has_moe else None
        stages = []
        for index, (n_dense, n_moe) in enumerate(self._stage_layers):
            acc = _Acc()
            if dense is not None and n_dense:
                acc.merge(dense.scaled(n_dense))
            if moe is not None and n_moe:
                acc.merge(moe.scaled(n_moe))
            if index == len(self._stage_layers) - 1:
                # LM head on the tokens that need logits; the embedding table is a gather of
                # T * h elements, negligible next to any layer. Kept in 16-bit like the engines do.
                self._gemms(acc, [self._lm_head], dep.busiest_rank_rows(
                    s.logit_seqs, self.parallel.attn_dp), weight_bytes=2.0)
            stages.append(acc)
        return stages

    # -- public ------------------------------------------------------------------------------

    def iteration_s(self, stats: BatchStats) -> tuple[ArrayOrFloat, ArrayOrFloat]:
        """``(latency_s, interval_s)`` of one iteration; elementwise over array-valued stats."""
        step = self._evaluate(stats)
        return step.op["_latency"], step.op["_interval"]

    def _evaluate(self, stats: BatchStats) -> _Acc:
        stages = self._stage_accs(stats)
        total = _Acc()
        stage_times = []
        for acc in stages:
            total.merge(acc)
            stage_times.append(acc.total())
        hop_bytes = stats.new_tokens * self.model.hidden_size * self._ab
        hops = [comm.p2p_s(hop_bytes, link.bytes_per_s, link.latency_s)
                for link in self._hop_links]
        for hop in hops:
            total.add("pp_comm", "communication", hop)
        total.add("overhead", "overhead", stats.new_tokens * 0.0 + self._iteration_overhead_s)
        latency = total.total()
        interval = stage_times[0]
        for t in stage_times[1:]:
            interval = np.maximum(interval, t)
        if hops:
            interval = interval + max(hops, key=lambda h: float(np.max(h)))
        interval = interval + self._iteration_overhead_s
        total.op["_latency"] = latency
        total.op["_interval"] = interval
        return total

    def stage_times_s(self, stats: BatchStats) -> list[ArrayOrFloat]:
        """Time of each pipeline stage's layers (s), without hand-offs or iteration overhead.

        ``latency = sum(stages) + hand-offs + overhead`` and ``interval = max(stages) + slowest
        hand-off + overhead``; :mod:`servingcast.costmodel.fast` probes these.
        """
        return [acc.total() for acc in self._stage_accs(stats)]

    def step(self, batch: Batch | BatchStats) -> StepTime:
        """Time and breakdown of one iteration of ``batch`` (scalar stats)."""
        stats = batch.stats(self.model.sliding_window) if isinstance(batch, Batch) else batch
        acc = self._evaluate(stats)
        by_op = {k: float(acc.op.get(k, 0.0)) for k in OPERATORS}
        by_bound = {k: float(acc.bound.get(k, 0.0)) for k in BOUNDS}
        return StepTime(
            latency_s=float(acc.op["_latency"]),
            interval_s=float(acc.op["_interval"]),
            by_operator=by_op,
            by_bound=by_bound,
        )

    def breakdown_arrays(self, stats: BatchStats) -> tuple[dict[str, ArrayOrFloat],
                                                            dict[str, ArrayOrFloat]]:
        """Per-operator and per-bound time (s) for array-valued stats (summed by the caller)."""
        acc = self._evaluate(stats)
        return ({k: acc.op.get(k, 0.0) for k in OPERATORS},
                {k: acc.bound.get(k, 0.0) for k in BOUNDS})
