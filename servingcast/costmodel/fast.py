"""A fast scalar evaluator of :meth:`CostModel.iteration_s`, derived by probing the cost model.

The simulator evaluates hundreds of thousands of iterations; the cost model builds a breakdown
per operator for each. This module reads the same numbers off the cost model once and evaluates
them in about a microsecond, with no formula of its own.

Why probing is exact. The attention kernels are costed as ``FLOPs / rate + bytes / bandwidth``
(no overlap, :data:`~servingcast.costmodel.roofline.ATTENTION_NON_OVERLAP`), with FLOPs and bytes
affine in the fields of :class:`~servingcast.costmodel.batch.BatchStats`. Everything nonlinear
depends on one count only: the GEMMs (partial compute/memory overlap), the routed experts
(touched experts, load imbalance) and the collectives on the new tokens ``T``, and the LM head on
the sequences that need logits ``L = logit_seqs`` (last stage only). So for each pipeline stage
``s`` and iteration stats ``x`` (``T = prefill_tokens + decode_tokens``)::

    stage_s(x)  = g_s(T) + [s last] h(L) + delta_s * decode_tokens + sum_f a_sf * x_f
                  f in {prefill_pairs, prefill_kv_tokens, decode_seqs, decode_pairs,
                        decode_kv_tokens}
    g_s(T)      = stage_s(prefill_tokens = T, every other field 0)
    h(L)        = stage_last(logit_seqs = L) - stage_last(0)
    a_sf        = (stage_s(x_f = V) - stage_s(0)) / V
    delta_s     = (stage_s(decode_tokens = V) - stage_s(prefill_tokens = V)) / V
    latency(x)  = sum_s stage_s(x) + L(T),    L(T) = latency(T probe)  - sum_s g_s(T)
    interval(x) = max_s stage_s(x) + I(T),    I(T) = interval(T probe) - max_s g_s(T)

``delta_s`` carries what differs between a prefill and a decode token (the attention kernel's
query/output bytes); ``L`` and ``I`` are the pipeline hand-offs and the iteration overhead.
``g_s``, ``L``, ``I`` and ``h`` are tabulated for whole counts up to ``max_tokens`` in one
vectorised cost-model call each and memoised for any other count.
``tests/costmodel/test_fast.py`` checks the result against :meth:`CostModel.iteration_s` to 1e-9
on random batches, dense and MoE, with pipeline stages.
"""

from __future__ import annotations

import numpy as np

from servingcast.costmodel.batch import BatchStats
from servingcast.costmodel.step import CostModel

#: The fields other than the token and logit counts, in the order :meth:`FastCost.parts` takes
#: them (after ``prefill_tokens``, ``decode_tokens`` and before ``logit_seqs``).
LINEAR_FIELDS = ("prefill_pairs", "prefill_kv_tokens", "decode_seqs", "decode_pairs",
                 "decode_kv_tokens")
#: Probe size: large enough that rounding in the differences is negligible.
_PROBE = 1.0e6


def _stage_values(cm: CostModel, stats: BatchStats) -> list[float]:
    return [float(t) for t in cm.stage_times_s(stats)]


class FastCost:
    """``iteration_s`` of one :class:`CostModel` as precomputed coefficients (module docstring)."""

    def __init__(self, cm: CostModel, max_tokens: int = 0) -> None:
        self.cost_model = cm
        self.pp = cm.parallel.pp
        zero = _stage_values(cm, BatchStats())
        self._zero_last = zero[-1]
        pre = _stage_values(cm, BatchStats(prefill_tokens=_PROBE))
        dec = _stage_values(cm, BatchStats(decode_tokens=_PROBE))
        slopes = [_stage_values(cm, BatchStats(**{f: _PROBE})) for f in LINEAR_FIELDS]
        #: Per stage: (delta, a_prefill_pairs, ..., a_decode_kv_tokens).
        self._coef: tuple[tuple[float, ...], ...] = tuple(
            ((dec[s] - pre[s]) / _PROBE,
             *((probe[s] - zero[s]) / _PROBE for probe in slopes))
            for s in range(self.pp)
        )
        self._memo: dict[float, tuple[float, ...]] = {}
        self._logit_memo: dict[float, float] = {}
        if max_tokens > 0:
            self._tabulate(np.arange(max_tokens + 1, dtype=np.float64))

    # -- the T- and L-dependent parts --------------------------------------------------------

    def _probe_t(self, tokens: float) -> tuple[float, ...]:
        stats = BatchStats(prefill_tokens=tokens)
        g = _stage_values(self.cost_model, stats)
        latency, interval = self.cost_model.iteration_s(stats)
        return (*g, float(latency) - sum(g), float(interval) - max(g))

    def _probe_logits(self, logit_seqs: float) -> float:
        last = _stage_values(self.cost_model, BatchStats(logit_seqs=logit_seqs))[-1]
        return last - self._zero_last

    def _tabulate(self, counts: np.ndarray) -> None:
        cm = self.cost_model
        stats = BatchStats(prefill_tokens=counts)
        g = np.asarray(cm.stage_times_s(stats), dtype=np.float64).reshape(self.pp, -1)
        latency, interval = cm.iteration_s(stats)
        lat_extra = np.asarray(latency) - g.sum(axis=0)
        int_extra = np.asarray(interval) - g.max(axis=0)
        logits = np.asarray(cm.stage_times_s(BatchStats(logit_seqs=counts))[-1],
                            dtype=np.float64).reshape(-1) - self._zero_last
        for i, t in enumerate(counts.tolist()):
            self._memo[t] = (*g[:, i].tolist(), float(lat_extra[i]), float(int_extra[i]))
            self._logit_memo[t] = float(logits[i])

    def _t_part(self, tokens: float) -> tuple[float, ...]:
        """``(g_0(T), ..., g_{pp-1}(T), L(T), I(T))``."""
        part = self._memo.get(tokens)
        if part is None:
            part = self._memo[tokens] = self._probe_t(tokens)
        return part

    def _logit_part(self, logit_seqs: float) -> float:
        """``h(L)``: the LM head's time on the last stage."""
        part = self._logit_memo.get(logit_seqs)
        if part is None:
            part = self._logit_memo[logit_seqs] = self._probe_logits(logit_seqs)
        return part

    # -- evaluation --------------------------------------------------------------------------

    def parts(
        self, prefill_tokens: float, prefill_pairs: float, prefill_kv_tokens: float,
        decode_seqs: float, decode_tokens: float, decode_pairs: float, decode_kv_tokens: float,
        logit_seqs: float,
    ) -> tuple[float, list[float]]:
        """``(latency, [stage_s + I(T) for each stage])``; the interval is the list's max."""
        tokens = prefill_tokens + decode_tokens
        t_part = self._memo.get(tokens) or self._t_part(tokens)
        head = self._logit_memo.get(logit_seqs)
        if head is None:
            head = self._logit_part(logit_seqs)
        pp = self.pp
        if pp == 1:
            c = self._coef[0]
            stage = (t_part[0] + head + c[0] * decode_tokens + c[1] * prefill_pairs
                     + c[2] * prefill_kv_tokens + c[3] * decode_seqs + c[4] * decode_pairs
                     + c[5] * decode_kv_tokens)
            return stage + t_part[1], [stage + t_part[2]]
        stages = [
            t_part[s] + c[0] * decode_tokens + c[1] * prefill_pairs + c[2] * prefill_kv_tokens
            + c[3] * decode_seqs + c[4] * decode_pairs + c[5] * decode_kv_tokens
            for s, c in enumerate(self._coef)
        ]
        stages[-1] += head
        extra = t_part[pp + 1]
        return sum(stages) + t_part[pp], [st + extra for st in stages]

    def iteration_s(self, stats: BatchStats) -> tuple[float, float]:
        """``(latency_s, interval_s)`` of scalar ``stats``, equal to the cost model's."""
        latency, parts = self.parts(*(float(getattr(stats, f)) for f in (
            "prefill_tokens", "prefill_pairs", "prefill_kv_tokens", "decode_seqs",
            "decode_tokens", "decode_pairs", "decode_kv_tokens", "logit_seqs")))
        return latency, max(parts)
