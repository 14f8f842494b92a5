"""The closed-form serving estimate of one configuration (``servingcast estimate``).

A static batch of ``batch_size`` requests, each with ``seq_len`` prompt tokens and
``output_len`` output tokens, on one instance:

* **TTFT** — the batch's prefill: ``batch_size * (seq_len - cached_prefix_len)`` new tokens after
  ``cached_prefix_len`` cached ones, in one iteration (static batching, as TensorRT-LLM's
  benchmark runs it), or in iterations of ``prefill_chunk_tokens`` (chunked prefill, Agrawal et
  al., "Sarathi-Serve", OSDI 2024). Every request's first token comes at the end of it.
* **TPOT** — the mean of the ``output_len - 1`` decode iterations, the batch at context
  ``seq_len + j`` in iteration ``j``. With ``pp`` stages the batch is split into ``min(pp, B)``
  micro-batches in flight; each request waits for its micro-batch to pass every stage.
* **E2E** — ``TTFT + (output_len - 1) * TPOT`` (+ the KV transfer when disaggregated).
* **Throughput** — ``batch_size * output_len / E2E`` per instance, times ``dp`` replicas.

Disaggregated (``decode_hardware``): prefill on ``hardware``, decode on ``decode_hardware``;
the batch's KV cache crosses ``network_bandwidth`` between them (DistServe, Zhong et al., OSDI
2024). The first token comes from prefill, so TTFT excludes the transfer; E2E includes it.

Speculative decoding (``draft_model``): each step the draft proposes ``num_speculative_tokens``
(k) tokens in k decode steps, then the target verifies k + 1 tokens per sequence in one step.
With per-token acceptance rate a, the expected tokens per step are ``(1 - a^(k+1)) / (1 - a)``
(``k + 1`` at a = 1; Leviathan, Kalman & Matias, "Fast Inference from Transformers via
Speculative Decoding", ICML 2023, eq. 1). TPOT = step time / expected tokens.

Chunked prefill also reports the worst stall a running decode sees: the longest iteration that
carries a prefill piece (a chunk, or a whole prompt without chunking) next to ``batch_size``
decodes at their mean context.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from servingcast.costmodel.batch import Batch, BatchStats, decode_series
from servingcast.costmodel.comm import kv_transfer_s
from servingcast.costmodel.memory import (
    MemoryPlan,
    blocks_for,
    kv_bytes_per_token,
    max_batch_size,
    memory_plan,
    require_fit,
)
from servingcast.costmodel.parallel import Parallelism
from servingcast.costmodel.spec import (
    draft_memory_extras,
    draft_parallelism,
    expected_tokens_per_step,
    micro_batches,
    pipelined_step_s,
)
from servingcast.costmodel.step import BOUNDS, OPERATORS, CostModel
from servingcast.errors import ConfigError, InfeasibleError
from servingcast.specs.catalog import get_hardware, get_model
from servingcast.specs.hardware import Efficiency, HardwareSpec
from servingcast.specs.model import ModelSpec
from servingcast.specs.precision import Precision, get_precision
from servingcast.units import parse_bandwidth
from servingcast.workload import MAX_TOKENS

GB = 1e9
#: Most prefill iterations an estimate walks through one by one (chunked prefill).
MAX_PREFILL_ITERATIONS = 100_000


@dataclass(frozen=True)
class PhaseBreakdown:
    """Where the time of a phase goes, in ms, by operator class and by bound."""

    by_operator_ms: dict[str, float]
    by_bound_ms: dict[str, float]


@dataclass(frozen=True)
class Estimate:
    """The result of :func:`estimate`. Times in ms, sizes in GB (1e9 bytes)."""

    model: str
    hardware: str
    decode_hardware: str | None
    precision: str
    tp: int
    pp: int
    ep: int
    dp: int
    num_gpus: int
    seq_len: int
    output_len: int
    batch_size: int
    max_batch_size: int
    feasible: bool
    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    output_tokens_per_s: float
    output_tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    weights_gb_per_gpu: float
    kv_cache_gb_per_gpu: float
    kv_cache_used_gb_per_gpu: float
    activation_gb_per_gpu: float
    kv_capacity_tokens: int
    efficiency: dict[str, float]
    prefill: PhaseBreakdown
    decode: PhaseBreakdown
    kv_transfer_ms: float | None = None
    kv_transfer_gb: float | None = None
    max_chunk_stall_ms: float | None = None
    prefill_chunks: int = 1
    pipeline_bubble_fraction: float = 0.0
    spec_tokens_per_step: float | None = None
    notes: list[str] = field(default_factory=list)
    attn_dp: int = 1
    """Attention data-parallel ranks of the instance (1: off); ``batch_size`` is their total."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be a whole number > 0, got {value!r}. To fix: e.g. "
                          f"{'512' if 'len' in name else '4'}")


def _phase(cm: CostModel, stats: BatchStats, weights: np.ndarray | float = 1.0,
           scale: float = 1.0) -> PhaseBreakdown:
    by_op, by_bound = cm.breakdown_arrays(stats)

    def total(v: Any) -> float:
        return float(np.sum(np.asarray(v) * weights)) * scale * 1e3

    return PhaseBreakdown({k: total(by_op[k]) for k in OPERATORS},
                          {k: total(by_bound[k]) for k in BOUNDS})


def _prefill_pieces(batch_size: int, new_tokens: int, prior: int,
                    chunk: int | None) -> list[list[tuple[int, int]]]:
    """Iterations of the batch's prefill: each a list of ``(tokens, prior)`` pieces."""
    if chunk is None:
        return [[(new_tokens, prior)] * batch_size]
    iterations: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    room = chunk
    for _ in range(batch_size):
        done = 0
        while done < new_tokens:
            take = min(room, new_tokens - done)
            current.append((take, prior + done))
            done += take
            room -= take
            if room == 0:
                iterations.append(current)
                current, room = [], chunk
    if current:
        iterations.append(current)
    return iterations


def _stats_of_iterations(iterations: list[list[tuple[int, int]]], window: int | None,
                         logits: list[int]) -> BatchStats:
    """Array-valued stats, one element per prefill iteration."""
    per_iteration = [Batch.of(prefill=pieces).stats(window) for pieces in iterations]

    def column(name: str) -> npt.NDArray[np.float64]:
        return np.asarray([getattr(s, name) for s in per_iteration], dtype=np.float64)

    zeros = np.zeros(len(iterations))
    return BatchStats(prefill_tokens=column("prefill_tokens"),
                      prefill_pairs=column("prefill_pairs"),
                      prefill_kv_tokens=column("prefill_kv_tokens"), decode_seqs=zeros,
                      decode_tokens=zeros, decode_pairs=zeros, decode_kv_tokens=zeros,
                      logit_seqs=np.asarray(logits, dtype=np.float64))


def _decode_phase(
    cm: CostModel, batch_size: int, seq_len: int, output_len: int,
    draft: CostModel | None, k: int, acceptance: float,
) -> tuple[float, PhaseBreakdown, float, float | None]:
    """``(tpot_s, breakdown per token, bubble fraction, tokens per step)`` of the decode phase."""
    window = cm.model.sliding_window
    steps = output_len - 1
    pp = cm.parallel.pp
    micro = micro_batches(pp, batch_size)
    mb = batch_size / micro
    bubble = 1.0 - micro / pp
    if steps <= 0:
        empty = PhaseBreakdown(dict.fromkeys(OPERATORS, 0.0), dict.fromkeys(BOUNDS, 0.0))
        return 0.0, empty, bubble, None
    window_d = None if draft is None else draft.model.sliding_window
    if draft is None:
        stats = decode_series(round(mb), seq_len + np.arange(steps), window)
        latency, interval = cm.iteration_s(stats)
        # Each micro-batch advances once per max(latency, micro * interval).
        per_step = pipelined_step_s(latency, interval, micro, pp)
        scale = float(np.mean(per_step)) / max(float(np.mean(latency)), 1e-30)
        return float(np.mean(per_step)), _phase(cm, stats, 1.0 / steps, scale), bubble, None
    # Speculative decoding: k draft decode steps, then one verification of k + 1 tokens.
    expected = expected_tokens_per_step(acceptance, k)
    n_steps = max(1, math.ceil(steps / expected))
    ctx = seq_len + np.arange(n_steps) * expected
    verify = decode_series(round(mb), ctx, window, query_tokens=k + 1)
    v_lat, v_int = cm.iteration_s(verify)
    draft_s = sum((draft.iteration_s(decode_series(round(mb), ctx + j, window_d))[0]
                   for j in range(k)), np.zeros_like(ctx))
    per_step = pipelined_step_s(v_lat, v_int, micro, pp, draft_s)
    tpot = float(np.mean(per_step)) / expected
    scale = float(np.mean(per_step)) / max(float(np.mean(v_lat)), 1e-30) / expected
    return tpot, _phase(cm, verify, 1.0 / n_steps, scale), bubble, expected


def estimate(
    model: str | ModelSpec,
    hardware: str | HardwareSpec,
    *,
    seq_len: int,
    batch_size: int | str = 1,
    precision: str | Precision = "fp16",
    efficiency: float | Efficiency | dict[str, float] | None = None,
    decode_hardware: str | HardwareSpec | None = None,
    network_bandwidth: str = "100 GB/s",
    draft_model: str | ModelSpec | None = None,
    draft_acceptance_rate: float = 0.7,
    cached_prefix_len: int = 0,
    prefill_chunk_tokens: int | None = None,
    output_len: int = 128,
    tp: int = 1,
    pp: int = 1,
    ep: int = 1,
    dp: int = 1,
    num_speculative_tokens: int = 4,
    kv_cache_dtype: str | None = None,
    gpu_memory_utilization: float = 0.9,
    max_num_batched_tokens: int | None = None,
    block_size: int = 16,
    kv_cache_free_memory_fraction: float | None = None,
    attn_dp: int = 1,
) -> Estimate:
    """Estimate TTFT, TPOT, E2E latency, throughput and memory of one serving configuration.

    ``model`` and ``hardware`` may be positional; every other parameter is keyword-only::

        import servingcast as sc
        e = sc.estimate("llama-3.1-70b", "h100-sxm", seq_len=2048, batch_size=64,
                        output_len=256, tp=4)   # the calibrated factors, like the CLI
        print(e.ttft_ms, e.tpot_ms)

    Parameters (units in the names or stated):

    model, hardware
        Catalog names (``"llama-3.1-70b"``, ``"h100-sxm"``), specs, or a Hugging Face
        ``config.json`` (or its folder) for the model.
    seq_len
        Prompt tokens per request.
    batch_size
        Requests in the static batch, or ``"max"`` for the largest that fits in memory.
    precision
        A preset of :mod:`servingcast.specs.precision` (``fp16``, ``bf16``, ``fp8``, ``w4a16``…).
    efficiency
        Fraction of datasheet peak sustained. ``None`` (the default, as the CLI's
        ``--efficiency calibrated``) uses the device's calibrated factors (what
        ``scripts/validate.py`` checks against measurements); a number in (0, 1] applies one
        flat factor to compute, memory and network alike.
    decode_hardware
        Serve decode on this device instead (disaggregated); same tp/pp.
    network_bandwidth
        Prefill→decode KV-transfer bandwidth with its unit, ``"100 GB/s"`` or ``"400 Gb/s"``
        (a bare number is refused, as in problem files: bits or bytes would be a guess).
    draft_model, draft_acceptance_rate, num_speculative_tokens
        Speculative decoding with this draft (run with the same tp on the decode GPUs), the
        per-token acceptance rate in [0, 1] and the draft length k.
    cached_prefix_len
        Prompt tokens already in the prefix cache (< seq_len): prefill skips them, the KV cache
        still holds them.
    prefill_chunk_tokens
        Chunked prefill: at most this many prefill tokens per iteration.
    output_len
        Output tokens per request (the first from prefill).
    tp, pp, ep, dp
        Tensor, pipeline and expert parallel degrees of one instance, and its replicas.
    kv_cache_dtype
        Override the precision's KV-cache dtype (``"fp8"``).
    gpu_memory_utilization, max_num_batched_tokens, block_size
        vLLM's memory knobs: the fraction of HBM the engine may use, the token budget its
        activation reserve is sized for (default: the chunk size, else 8192), the KV block size.
    kv_cache_free_memory_fraction
        TensorRT-LLM's rule instead of ``gpu_memory_utilization``: the KV cache takes this
        fraction of the memory left after weights and activations.
    attn_dp
        Attention data-parallel ranks with the experts expert-parallel over all
        ``attn_dp * tp`` GPUs (MoE models; :mod:`servingcast.costmodel.dep`). ``batch_size`` is
        then the whole engine's batch, split over the ranks (256 per rank on 16 ranks: 4096).
    """
    _check_positive("seq_len (--input-len)", seq_len)
    _check_positive("output_len (--output-len)", output_len)
    if seq_len + output_len > MAX_TOKENS:
        raise ConfigError(
            f"seq_len + output_len (--input-len + --output-len) must be at most {MAX_TOKENS:,} "
            f"tokens, got {seq_len + output_len:,}. To fix: use the lengths of real requests")
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ConfigError(
            f"gpu_memory_utilization (--gpu-memory-utilization) must be in (0, 1], got "
            f"{gpu_memory_utilization}. To fix: e.g. 0.9 (vLLM's default)")
    bandwidth = parse_bandwidth(network_bandwidth, require_unit=True)
    if not 0 <= cached_prefix_len < seq_len:
        raise ConfigError(
            f"cached_prefix_len (--cached-prefix-len) must be >= 0 and < seq_len ({seq_len}), got "
            f"{cached_prefix_len}. To fix: at least one prompt token must be computed"
        )
    if not 0.0 <= draft_acceptance_rate <= 1.0:
        raise ConfigError(
            f"draft_acceptance_rate (--draft-acceptance-rate) must be in [0, 1], got "
            f"{draft_acceptance_rate}. To fix: pass the per-token probability, e.g. 0.7"
        )
    if prefill_chunk_tokens is not None:
        _check_positive("prefill_chunk_tokens (--prefill-chunk-tokens)", prefill_chunk_tokens)
    _check_positive("num_speculative_tokens (--num-speculative-tokens)", num_speculative_tokens)
    model_spec = get_model(model)
    hw = get_hardware(hardware)
    prec = get_precision(precision)
    if kv_cache_dtype is not None:
        prec = prec.with_kv_cache_dtype(kv_cache_dtype)
    _check_positive("attn_dp (--attn-dp)", attn_dp)
    par = Parallelism(tp=tp, pp=pp, ep=ep, dp=dp, attn_dp=attn_dp)
    total_len = seq_len + output_len
    budget = max_num_batched_tokens or prefill_chunk_tokens or 8192
    notes: list[str] = []
    if total_len > model_spec.max_position_embeddings:
        notes.append(
            f"seq_len + output_len = {total_len} exceeds the {model_spec.max_position_embeddings}"
            f"-token context {model_spec.name} was trained for; costed anyway"
        )

    prefill_cm = CostModel(model_spec, hw, prec, par, efficiency)
    decode_hw = get_hardware(decode_hardware) if decode_hardware is not None else None
    decode_cm = (CostModel(model_spec, decode_hw, prec, par, efficiency)
                 if decode_hw is not None else prefill_cm)
    draft_cm = None
    if draft_model is not None:
        draft_spec = get_model(draft_model)
        draft_cm = CostModel(draft_spec, decode_cm.hardware, prec,
                             draft_parallelism(draft_spec, tp), efficiency)

    def plan_for(cm: CostModel) -> MemoryPlan:
        extra_w = extra_kv = 0.0
        if draft_cm is not None and cm is decode_cm:
            extra_w, extra_kv = draft_memory_extras(draft_cm, pp)
        return memory_plan(cm, gpu_memory_utilization, budget, 256, block_size, extra_w, extra_kv,
                           kv_cache_free_memory_fraction)

    decode_plan = plan_for(decode_cm)
    prefill_plan = plan_for(prefill_cm) if decode_hw is not None else decode_plan
    # The decode side holds the whole sequence; a prefill instance only the prompt.
    max_b = max_batch_size(decode_plan, total_len)
    if decode_hw is not None:
        max_b = min(max_b, max_batch_size(prefill_plan, seq_len))
    if isinstance(batch_size, str):
        if batch_size.strip().lower() != "max":
            raise ConfigError(
                f"batch_size (--batch-size) must be a whole number > 0 or 'max', "
                f"got {batch_size!r}")
        require_fit(decode_cm, decode_plan, total_len, 1)
        if decode_hw is not None:
            require_fit(prefill_cm, prefill_plan, seq_len, 1)
        batch = max_b
    else:
        _check_positive("batch_size (--batch-size)", batch_size)
        batch = int(batch_size)
        require_fit(decode_cm, decode_plan, total_len, batch)
        if decode_hw is not None:
            require_fit(prefill_cm, prefill_plan, seq_len, batch)

    # -- prefill ------------------------------------------------------------------------------
    window = model_spec.sliding_window
    new_tokens = seq_len - cached_prefix_len
    if prefill_chunk_tokens is not None and (
            batch * new_tokens > MAX_PREFILL_ITERATIONS * prefill_chunk_tokens):
        raise ConfigError(
            f"chunked prefill of {batch} x {new_tokens} tokens in chunks of "
            f"{prefill_chunk_tokens} takes more than {MAX_PREFILL_ITERATIONS:,} iterations, the "
            "limit. To fix: raise --prefill-chunk-tokens or lower --batch-size")
    iterations = _prefill_pieces(batch, new_tokens, cached_prefix_len, prefill_chunk_tokens)
    logits = [sum(1 for t, p in it if p + t == seq_len) for it in iterations]
    pre_stats = _stats_of_iterations(iterations, window, logits)
    pre_latency, pre_interval = prefill_cm.iteration_s(pre_stats)
    # Successive prefill iterations pipeline through pp stages: the last one leaves after
    # (n - 1) intervals plus one latency.
    n_iter = len(iterations)
    if pp == 1:
        ttft_s = float(np.sum(pre_latency))
    else:
        ttft_s = float(np.max(pre_latency) + np.sum(pre_interval) - np.max(pre_interval))
    prefill_breakdown = _phase(prefill_cm, pre_stats,
                               scale=ttft_s / max(float(np.sum(pre_latency)), 1e-30))

    # The worst stall of a running decode: the largest prefill piece next to the batch's decodes.
    largest = max(iterations, key=lambda it: sum(t for t, _ in it))
    mid_ctx = seq_len + output_len // 2
    stall_batch = Batch.of(prefill=largest, decode=[mid_ctx] * batch)
    stall_ms = prefill_cm.step(stall_batch).latency_s * 1e3 if prefill_chunk_tokens else None

    # -- decode -------------------------------------------------------------------------------
    k = num_speculative_tokens
    tpot_s, decode_breakdown, bubble, spec_tokens = _decode_phase(
        decode_cm, batch, seq_len, output_len, draft_cm, k, draft_acceptance_rate)
    if bubble > 0:
        notes.append(f"pipeline bubble: {batch} sequences fill only {min(pp, batch)} of {pp} "
                     "stages")

    transfer_ms = transfer_gb = None
    e2e_s = ttft_s + (output_len - 1) * tpot_s
    if decode_hw is not None:
        kv_total = kv_bytes_per_token(prefill_cm) * seq_len * batch
        transfer_s = kv_transfer_s(kv_total, bandwidth)
        transfer_ms, transfer_gb = transfer_s * 1e3, kv_total / GB
        e2e_s += transfer_s

    num_gpus = par.total_gpus * (2 if decode_hw is not None else 1)
    out_tps = batch * output_len / e2e_s * dp
    kv_used = (batch * blocks_for(total_len, block_size) * block_size
               * decode_plan.kv_bytes_per_token_per_gpu / attn_dp)  # a rank's share
    eff = prefill_cm.efficiency
    if efficiency is not None and not isinstance(efficiency, (Efficiency, dict)):
        notes.append(f"flat efficiency {float(efficiency):g}; pass efficiency=None "
                     "(CLI: --efficiency calibrated) for the calibrated per-device factors")
    return Estimate(
        model=model_spec.name,
        hardware=hw.name,
        decode_hardware=decode_hw.name if decode_hw is not None else None,
        precision=prec.name,
        tp=tp, pp=pp, ep=par.ep, dp=dp,
        num_gpus=num_gpus,
        seq_len=seq_len,
        output_len=output_len,
        batch_size=batch,
        max_batch_size=max_b,
        feasible=True,
        ttft_ms=ttft_s * 1e3,
        tpot_ms=tpot_s * 1e3,
        e2e_ms=e2e_s * 1e3,
        output_tokens_per_s=out_tps,
        output_tokens_per_s_per_gpu=out_tps / num_gpus,
        tokens_per_s_per_user=1.0 / tpot_s if tpot_s > 0 else math.inf,
        weights_gb_per_gpu=decode_plan.weights_bytes_per_gpu / GB,
        kv_cache_gb_per_gpu=decode_plan.kv_cache_bytes_per_gpu / GB,
        kv_cache_used_gb_per_gpu=kv_used / GB,
        activation_gb_per_gpu=decode_plan.activation_bytes_per_gpu / GB,
        kv_capacity_tokens=decode_plan.kv_capacity_tokens,
        efficiency={"compute": eff.compute, "memory": eff.memory, "network": eff.network},
        prefill=prefill_breakdown,
        decode=decode_breakdown,
        kv_transfer_ms=transfer_ms,
        kv_transfer_gb=transfer_gb,
        max_chunk_stall_ms=stall_ms,
        prefill_chunks=n_iter,
        pipeline_bubble_fraction=bubble,
        spec_tokens_per_step=spec_tokens,
        notes=notes,
        attn_dp=attn_dp,
    )


__all__ = ["Estimate", "InfeasibleError", "PhaseBreakdown", "estimate"]
