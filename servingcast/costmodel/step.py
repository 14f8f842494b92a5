"""The time of one engine iteration for an arbitrary batch, with a per-operator breakdown.

Per layer and GPU, each operator is costed by :func:`~servingcast.costmodel.roofline.op_time_s`:

* GEMMs (QKV, attention output, MLP, shared experts, router, LM head): ``2 T in out`` FLOPs for
  ``T`` new tokens; bytes ``in out b_w`` of weights plus ``T (in + out) b_a`` of activations.
* Attention core: ``F_pair * pairs`` FLOPs (see :mod:`layers`), bytes of the KV entries read
  (``kv_tokens * kv_elements * b_kv``) plus queries and outputs. Prefill and decode are costed
  as separate kernels, as vLLM and TensorRT-LLM launch them.
* Routed experts: each of ``T`` tokens goes to ``k`` of ``E`` experts. A GPU computes
  ``T k / ep`` token-expert pairs times the load imbalance of its EP group, and reads the
  weights of the experts the batch actually touches, ``E/ep * (1 - (1 - k/E)^T)``.

Communication per layer: two TP all-reduces of ``T h b_a`` bytes (one for models whose attention
and MLP run in parallel, GPT-J and Falcon), MoE dispatch and combine all-to-alls over ``ep``, and
one pipeline hand-off per stage boundary. Overheads: ``layer_us`` per layer (kernel launches)
and ``iteration_ms`` per iteration (scheduler, sampling, host sync).

With ``pp`` stages, an iteration's *latency* is the sum of the stages and hand-offs; engines keep
``pp`` micro-batches in flight, so successive iterations leave the pipeline every *interval*,
the slowest stage's time (GPipe, Huang et al. 2019; vLLM virtual engines).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from servingcast.costmodel import comm, layers
from servingcast.costmodel.batch import Batch, BatchStats
from servingcast.costmodel.parallel import Parallelism, check_parallelism
from servingcast.costmodel.roofline import ROOFLINE_P, ArrayOrFloat, op_time_s
from servingcast.errors import ConfigError
from servingcast.specs.hardware import Efficiency, HardwareSpec, Interconnect
from servingcast.specs.model import ModelSpec
from servingcast.specs.precision import Precision

#: Operator classes of the breakdown, in report order.
OPERATORS = ("qkv", "attention", "attn_out", "mlp", "moe", "lm_head",
             "tp_comm", "ep_comm", "pp_comm", "overhead")
#: Grouped expert GEMMs reach less of peak than dense ones: tokens are permuted to experts and
#: back, each expert's tile is small and partly empty, and top-k routing adds kernels (MegaBlocks,
#: Gale et al. 2023, measure 1.4-2x gaps for padded expert GEMMs). One factor for compute and
#: memory, calibrated on the Mixtral rows of the validation set; an approximation.
MOE_GEMM_EFFICIENCY = 0.75
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
        """Add an operator, splitting its time between the bounds in proportion to
        ``t_compute^p : t_memory^p`` (exactly ``t_compute`` and ``t_memory`` at ``p = 1``)."""
        self.op[op] = self.op.get(op, 0.0) + t
        wc, wm = tc**ROOFLINE_P, tm**ROOFLINE_P
        compute = t * wc / np.maximum(wc + wm, 1e-300)
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
    ) -> None:
        par = parallel or Parallelism()
        check_parallelism(model, hardware, par)
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
        self._gemm_flops_s = peak * eff.compute
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
            t, tc, tm = op_time_s(flops, moved, flops_s, bytes_s)
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
            t, tc, tm = op_time_s(flops, moved, self._attn_flops_s, self._bytes_s)
            acc.add_roofline("attention", t, tc, tm)

    def _experts(self, acc: _Acc, tokens: ArrayOrFloat) -> None:
        moe = self.model.moe
        assert moe is not None
        ep = self.parallel.ep
        assignments = tokens * moe.top_k
        local = assignments / ep * layers.expert_load_imbalance(assignments, ep)
        touched = layers.expected_distinct_experts(moe.num_experts, moe.top_k, tokens) / ep
        for g in self._expert:
            flops = g.flops_per_token * local
            moved = touched * g.weights * self._wb + local * (g.in_features + g.out_features) * (
                self._ab)
            t, tc, tm = op_time_s(flops, moved, self._gemm_flops_s * MOE_GEMM_EFFICIENCY,
                                  self._weight_bytes_s * MOE_GEMM_EFFICIENCY)
            acc.add_roofline("moe", t, tc, tm)

    def _allreduce(self, tokens: ArrayOrFloat, n: int) -> ArrayOrFloat:
        link = self._tp_link
        return comm.allreduce_s(tokens * self.model.hidden_size * self._ab, n,
                                link.bytes_per_s, link.latency_s)

    def _layer(self, s: BatchStats, moe_layer: bool) -> _Acc:
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
                acc.add("tp_comm", "communication", self._allreduce(tokens, tp))
                if tp // ep > 1:
                    acc.add("tp_comm", "communication", self._allreduce(tokens, tp // ep))
                link = self._tp_link
                a2a = comm.alltoall_s(tokens * self.model.moe.top_k  # type: ignore[union-attr]
                                      * self.model.hidden_size * self._ab / ep, ep,
                                      link.bytes_per_s, link.latency_s)
                acc.add("ep_comm", "communication", 2.0 * a2a)
            else:
                acc.add("tp_comm", "communication", n_allreduce * self._allreduce(tokens, tp))
        acc.add("overhead", "overhead", tokens * 0.0 + self._layer_overhead_s)
        return acc

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
                self._gemms(acc, [self._lm_head], s.logit_seqs, weight_bytes=2.0)
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
