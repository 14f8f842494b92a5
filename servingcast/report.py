"""Formatting results as text tables and JSON. Functions return strings; only the CLI prints."""

from __future__ import annotations

import json
from typing import Any

from servingcast._estimate import Estimate
from servingcast.costmodel.layers import active_parameter_count, parameter_count
from servingcast.costmodel.step import BOUNDS, OPERATORS
from servingcast.specs.hardware import HardwareSpec
from servingcast.specs.model import ModelSpec

_OPERATOR_LABELS = {
    "qkv": "QKV projection",
    "attention": "attention (core)",
    "attn_out": "attention output",
    "mlp": "MLP",
    "moe": "MoE (router+experts)",
    "lm_head": "LM head",
    "tp_comm": "TP all-reduce",
    "ep_comm": "EP all-to-all",
    "pp_comm": "PP send/recv",
    "overhead": "fixed overhead",
}


def _num(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _rows(rows: list[tuple[str, str]], indent: str = "  ") -> list[str]:
    width = max(len(label) for label, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    return [f"{indent}{label:<{width}}  {value:>{vwidth}}" for label, value in rows]


def estimate_json(e: Estimate) -> str:
    """The estimate as JSON, with the breakdown under ``breakdown``."""
    data: dict[str, Any] = e.to_dict()
    data["breakdown"] = {"prefill_ms": data.pop("prefill"),
                         "decode_ms_per_token": data.pop("decode")}
    return json.dumps(data, indent=2, sort_keys=False)


def estimate_table(e: Estimate, efficiency_label: str) -> str:
    """A readable estimate: headline numbers, memory, and the per-operator breakdown."""
    where = e.hardware if e.decode_hardware is None else (
        f"{e.hardware} (prefill) -> {e.decode_hardware} (decode)")
    par = f"tp={e.tp} pp={e.pp}" + (f" ep={e.ep}" if e.ep > 1 else "") + (
        f" dp={e.dp}" if e.dp > 1 else "")
    if e.attn_dp > 1:  # attention data-parallel ranks (DEP), batch split over them
        par = f"attn_dp={e.attn_dp} " + par + f" ({e.batch_size / e.attn_dp:g} requests per rank)"
    eff = e.efficiency
    lines = [
        f"{e.model} on {where}, {par}, {e.precision}, {e.num_gpus} GPU(s)",
        f"batch {e.batch_size} (max that fits: {e.max_batch_size}), input {e.seq_len} tokens, "
        f"output {e.output_len} tokens",
        f"efficiency: {efficiency_label} (compute {eff['compute']:.2f}, memory "
        f"{eff['memory']:.2f}, network {eff['network']:.2f})",
        "",
        "Latency and throughput",
    ]
    rows = [("TTFT (ms)", _num(e.ttft_ms)), ("TPOT (ms)", _num(e.tpot_ms, 2)),
            ("E2E (ms)", _num(e.e2e_ms))]
    if e.kv_transfer_ms is not None and e.kv_transfer_gb is not None:
        rows.append((f"KV transfer (ms, {e.kv_transfer_gb:,.2f} GB)", _num(e.kv_transfer_ms, 2)))
    if e.max_chunk_stall_ms is not None:
        rows.append((f"worst decode stall (ms, {e.prefill_chunks} prefill iterations)",
                     _num(e.max_chunk_stall_ms, 2)))
    if e.spec_tokens_per_step is not None:
        rows.append(("tokens per speculative step", _num(e.spec_tokens_per_step, 2)))
    rows += [("output tokens/s", _num(e.output_tokens_per_s)),
             ("output tokens/s per GPU", _num(e.output_tokens_per_s_per_gpu)),
             ("tokens/s per user", _num(e.tokens_per_s_per_user))]
    lines += _rows(rows)
    lines += ["", "Memory per GPU" + (" (decode side)" if e.decode_hardware else "")]
    lines += _rows([
        ("weights (GB)", _num(e.weights_gb_per_gpu, 2)),
        ("activations + runtime (GB)", _num(e.activation_gb_per_gpu, 2)),
        ("KV cache available (GB)", _num(e.kv_cache_gb_per_gpu, 2)),
        ("KV cache used by the batch (GB)", _num(e.kv_cache_used_gb_per_gpu, 2)),
        ("KV capacity (tokens per instance)", f"{e.kv_capacity_tokens:,}"),
    ])
    lines += ["", "Breakdown                 prefill (ms)   decode (ms/token)"]
    for op in OPERATORS:
        pre, dec = e.prefill.by_operator_ms[op], e.decode.by_operator_ms[op]
        if pre == 0.0 and dec == 0.0:
            continue
        lines.append(f"  {_OPERATOR_LABELS[op]:<22} {pre:>13,.2f} {dec:>19,.3f}")
    lines.append("  by bound:")
    for bound in BOUNDS:
        pre, dec = e.prefill.by_bound_ms[bound], e.decode.by_bound_ms[bound]
        lines.append(f"    {bound:<20} {pre:>13,.2f} {dec:>19,.3f}")
    for note in e.notes:
        lines.append(f"note: {note}")
    lines.append("note: analytic roofline estimate; see README 'Accuracy' for measured errors")
    return "\n".join(lines)


def hardware_table(specs: list[HardwareSpec]) -> str:
    """The hardware catalog as a table."""
    header = (f"{'name':<16} {'HBM (GiB)':>9} {'HBM (GB/s)':>10} {'bf16 TFLOPS':>11} "
              f"{'fp8 TFLOPS':>10} {'link':<7} {'link (GB/s)':>11} {'$/h':>6}  description")
    lines = [header]
    for s in specs:
        bf16 = s.peak_tflops.get("bf16") or s.peak_tflops.get("fp16")
        fp8 = s.peak_tflops.get("fp8")
        price = f"{s.price_per_hour_usd:.2f}" if s.price_per_hour_usd else "-"
        lines.append(
            f"{s.name:<16} {s.hbm_gib:>9g} {s.hbm_bandwidth_gb_s:>10,.0f} "
            f"{(f'{bf16:,.0f}' if bf16 else '-'):>11} {(f'{fp8:,.0f}' if fp8 else '-'):>10} "
            f"{s.intra_node.kind:<7} {s.intra_node.bandwidth_gb_s:>11,.0f} {price:>6}  "
            f"{s.display_name}"
        )
    return "\n".join(lines)


def model_table(specs: list[ModelSpec]) -> str:
    """The model catalog as a table."""
    header = (f"{'name':<18} {'params (B)':>10} {'active (B)':>10} {'layers':>6} {'hidden':>6} "
              f"{'attention':<9} {'KV heads':>8} {'experts':>9} {'context':>8}")
    lines = [header]
    for m in specs:
        experts = f"{m.moe.top_k}/{m.moe.num_experts}" if m.moe else "-"
        kv = "latent" if m.mla else str(m.num_kv_heads)
        lines.append(
            f"{m.name:<18} {parameter_count(m) / 1e9:>10,.1f} "
            f"{active_parameter_count(m) / 1e9:>10,.1f} {m.num_layers:>6} {m.hidden_size:>6} "
            f"{m.attention_kind:<9} {kv:>8} {experts:>9} {m.max_position_embeddings:>8,}"
        )
    return "\n".join(lines)
