"""A fast scalar evaluator of :meth:`CostModel.iteration_s`, derived by probing the cost model.

The simulator evaluates hundreds of thousands of iterations; the cost model builds a breakdown
per operator for each. This module reads the same numbers off the cost model once and evaluates
them in about a microsecond, with no formula of its own.

Why probing is exact. With ``ROOFLINE_P == 1`` every operator's time is
``FLOPs / rate + bytes / bandwidth``, and FLOPs and bytes are affine in the fields of
:class:`~servingcast.costmodel.batch.BatchStats` — except the routed experts of MoE layers,
whose touched experts and load imbalance are nonlinear in the new tokens ``T``. So for each
pipeline stage ``s`` and iteration stats ``x`` (``T = prefill_tokens + decode_tokens``)::

    stage_s(x)  = g_s(T) + delta_s * decode_tokens + sum_f a_sf * x_f
                  f in {prefill_pairs, prefill_kv_tokens, decode_seqs, decode_pairs,
                        decode_kv_tokens, logit_seqs}
    g_s(T)      = stage_s(prefill_tokens = T, every other field 0)
    a_sf        = (stage_s(x_f = V) - stage_s(0)) / V
    delta_s     = (stage_s(decode_tokens = V) - stage_s(prefill_tokens = V)) / V
    latency(x)  = sum_s stage_s(x) + L(T),    L(T) = latency(T probe)  - sum_s g_s(T)
    interval(x) = max_s stage_s(x) + I(T),    I(T) = interval(T probe) - max_s g_s(T)

``delta_s`` carries what differs between a prefill and a decode token (the attention kernel's
query/output bytes); ``L`` and ``I`` are the pipeline hand-offs and the iteration overhead. For
dense models ``g_s``, ``L`` and ``I`` are affine in ``T`` as well (three probes); for MoE models
they are tabulated for whole ``T`` up to ``max_tokens`` in one vectorised cost-model call and
memoised for any other ``T``. ``tests/costmodel/test_fast.py`` checks the result against
:meth:`CostModel.iteration_s` to 1e-9 on random batches, dense and MoE, with pipeline stages.
"""

from __future__ import annotations

import numpy as np

from servingcast.costmodel.batch import BatchStats
from servingcast.costmodel.roofline import ROOFLINE_P
from servingcast.costmodel.step import CostModel

#: The fields other than the token counts, in the order :meth:`FastCost.parts` takes them.
LINEAR_FIELDS = ("prefill_pairs", "prefill_kv_tokens", "decode_seqs", "decode_pairs",
                 "decode_kv_tokens", "logit_seqs")
#: Probe size: large enough that rounding in the differences is negligible.
_PROBE = 1.0e6


def _stage_values(cm: CostModel, stats: BatchStats) -> list[float]:
    return [float(t) for t in cm.stage_times_s(stats)]


class FastCost:
    """``iteration_s`` of one :class:`CostModel` as precomputed coefficients (module docstring).

    Raises ``ValueError`` unless ``ROOFLINE_P == 1`` (the coefficients are exact only then); the
    caller falls back to the cost model itself.
    """

    def __init__(self, cm: CostModel, max_tokens: int = 0) -> None:
        if ROOFLINE_P != 1.0:
            raise ValueError(f"FastCost needs ROOFLINE_P == 1, got {ROOFLINE_P}")
        self.cost_model = cm
        self.pp = cm.parallel.pp
        zero = _stage_values(cm, BatchStats())
        pre = _stage_values(cm, BatchStats(prefill_tokens=_PROBE))
        dec = _stage_values(cm, BatchStats(decode_tokens=_PROBE))
        slopes = [_stage_values(cm, BatchStats(**{f: _PROBE})) for f in LINEAR_FIELDS]
        #: Per stage: (delta, a_prefill_pairs, ..., a_logit_seqs).
        self._coef: tuple[tuple[float, ...], ...] = tuple(
            ((dec[s] - pre[s]) / _PROBE,
             *((probe[s] - zero[s]) / _PROBE for probe in slopes))
            for s in range(self.pp)
        )
        self._memo: dict[float, tuple[float, ...]] = {}
        self._affine: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        if cm.model.moe is None:
            g0, g1 = self._probe_t(0.0), self._probe_t(_PROBE)
            self._affine = (g0, tuple((b - a) / _PROBE for a, b in zip(g0, g1, strict=True)))
        elif max_tokens > 0:
            self._tabulate(np.arange(max_tokens + 1, dtype=np.float64))

    # -- the T-dependent part ----------------------------------------------------------------

    def _probe_t(self, tokens: float) -> tuple[float, ...]:
        stats = BatchStats(prefill_tokens=tokens)
        g = _stage_values(self.cost_model, stats)
        latency, interval = self.cost_model.iteration_s(stats)
        return (*g, float(latency) - sum(g), float(interval) - max(g))

    def _tabulate(self, tokens: np.ndarray) -> None:
        stats = BatchStats(prefill_tokens=tokens)
        g = np.asarray(self.cost_model.stage_times_s(stats), dtype=np.float64).reshape(
            self.pp, -1)
        latency, interval = self.cost_model.iteration_s(stats)
        lat_extra = np.asarray(latency) - g.sum(axis=0)
        int_extra = np.asarray(interval) - g.max(axis=0)
        for i, t in enumerate(tokens.tolist()):
            self._memo[t] = (*g[:, i].tolist(), float(lat_extra[i]), float(int_extra[i]))

    def _t_part(self, tokens: float) -> tuple[float, ...]:
        """``(g_0(T), ..., g_{pp-1}(T), L(T), I(T))``."""
        if self._affine is not None:
            a, b = self._affine
            return tuple(x + y * tokens for x, y in zip(a, b, strict=True))
        part = self._memo.get(tokens)
        if part is None:
            part = self._memo[tokens] = self._probe_t(tokens)
        return part

    # -- evaluation --------------------------------------------------------------------------

    def parts(
        self, prefill_tokens: float, prefill_pairs: float, prefill_kv_tokens: float,
        decode_seqs: float, decode_tokens: float, decode_pairs: float, decode_kv_tokens: float,
        logit_seqs: float,
    ) -> tuple[float, list[float]]:
        """``(latency, [stage_s + I(T) for each stage])``; the interval is the list's max."""
        tokens = prefill_tokens + decode_tokens
        if self._affine is not None:
            a, b = self._affine
            t_part: tuple[float, ...] | list[float] = [
                x + y * tokens for x, y in zip(a, b, strict=True)]
        else:
            t_part = self._memo.get(tokens) or self._t_part(tokens)
        pp = self.pp
        if pp == 1:
            c = self._coef[0]
            stage = (t_part[0] + c[0] * decode_tokens + c[1] * prefill_pairs
                     + c[2] * prefill_kv_tokens + c[3] * decode_seqs + c[4] * decode_pairs
                     + c[5] * decode_kv_tokens + c[6] * logit_seqs)
            return stage + t_part[1], [stage + t_part[2]]
        stages = [
            t_part[s] + c[0] * decode_tokens + c[1] * prefill_pairs + c[2] * prefill_kv_tokens
            + c[3] * decode_seqs + c[4] * decode_pairs + c[5] * decode_kv_tokens
            + c[6] * logit_seqs
            for s, c in enumerate(self._coef)
        ]
        extra = t_part[pp + 1]
        return sum(stages) + t_part[pp], [st + extra for st in stages]

    def iteration_s(self, stats: BatchStats) -> tuple[float, float]:
        """``(latency_s, interval_s)`` of scalar ``stats``, equal to the cost model's."""
        latency, parts = self.parts(*(float(getattr(stats, f)) for f in (
            "prefill_tokens", "prefill_pairs", "prefill_kv_tokens", "decode_seqs",
            "decode_tokens", "decode_pairs", "decode_kv_tokens", "logit_seqs")))
        return latency, max(parts)
