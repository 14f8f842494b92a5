"""Candidate instance configurations, their capacities under the SLOs, drops and dominance.

A candidate is one way to run one instance for one workload: a pool × ``tp/pp/ep`` × role
(``aggregated``, ``prefill``, ``decode``) × engine limits (``max_num_seqs``,
``max_num_batched_tokens``). :class:`CandidateBuilder` enumerates them, computes each one's
profile once with the cost model (:mod:`servingcast.planner.capacity`), and turns profiles into
capacities for any SLO limits (the Pareto sweep reuses the profiles). Configurations that cannot
run (sharding, precision, memory, node shape) or cannot meet an SLO at any load are dropped and
counted by reason.

Dominance (before the MILP): within one workload, pool and role, a candidate is dominated when
another uses no more GPUs and serves at least its rate (prefill: alone and per instance in the
largest pooled group, since pooling helps some configurations more than others). GPUs are the
only resource a candidate consumes in the MILP (cost, nodes and budgets all scale with them
inside one pool), so dropping dominated candidates never changes the optimum.

Across sizes (the MILP's candidates, :func:`prune_dominated` with ``across_sizes``): a candidate
``c`` of ``g_c`` GPUs is also dominated by one ``d`` of ``g_d = g_c / k`` GPUs (``k`` a whole
number) when ``k`` instances of ``d`` always serve at least what one of ``c`` serves: for
aggregated and decode ``k μ_d >= μ_c``; for prefill ``k δ_d >= max_n f_c(n) / n``, with ``δ_d``
the least that one more instance adds to a group of ``d`` (``f_d(1)``, the steps of ``f_d``,
and its per-instance rate past the exactly computed sizes) — then ``n_c`` instances of ``c``
swapped for ``k n_c`` more of ``d`` add at least ``k n_c δ_d >= f_c(n_c)`` to ``d``'s group,
whatever its size (the MILP's ``f`` between its levels is a line at most as steep as ``f``'s
chords and at least as steep as ``δ_d``). The swap keeps the GPUs, the cost (one price per GPU
in a pool) and the nodes (``g_c`` GPUs take ``g_c / s_p`` whole nodes or pack as smaller
instances do), so the optimum stays.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from statistics import NormalDist
from typing import Literal

import numpy as np

from servingcast.costmodel.batch import BatchStats
from servingcast.costmodel.comm import kv_transfer_s
from servingcast.costmodel.memory import kv_bytes_per_token, max_batch_size, memory_plan
from servingcast.costmodel.parallel import Parallelism
from servingcast.costmodel.spec import (
    SpeculativeCostModel,
    SpeculativeDecoding,
    draft_cost_model,
    draft_memory_extras,
)
from servingcast.costmodel.step import CostModel
from servingcast.errors import ConfigError
from servingcast.groups import group_name, parallelism_text
from servingcast.planner.capacity import (
    GROUP_LEVELS,
    AggregatedProfile,
    Capacity,
    DecodeProfile,
    Infeasible,
    PrefillProfile,
    Profile,
    Shape,
    StepRequest,
    evaluate_profiles,
    shape_of,
    solve_group_rates,
    solve_ttft,
)
from servingcast.planner.prefix_caching import idle_session_seq_len
from servingcast.planner.problem import Pool, Problem, SearchSpace, Workload, tp_choices
from servingcast.planner.queueing import erlang_c
from servingcast.specs.catalog import get_model
from servingcast.specs.precision import Precision, get_precision
from servingcast.workload import FixedLength

Role = Literal["aggregated", "prefill", "decode"]
ROLES: tuple[Role, ...] = ("aggregated", "prefill", "decode")

#: Drop reasons, in report order, with their meaning.
DROP_REASONS = {
    "pool_size": "more GPUs than the pool has",
    "node_shape": "GPUs per instance neither divide nor fill whole nodes",
    "precision": "the GPU lacks the precision's tensor cores",
    "parallelism": "tp/pp/ep cannot shard the model",
    "memory": "weights and activations leave no room for the KV cache",
    "kv_cache": "the KV cache cannot hold the sequences",
    "ttft": "TTFT limit missed at any load",
    "tpot": "TPOT limit missed at any load",
}


#: Candidates are sized against this much less than the TPOT and TTFT limits. At capacity the
#: attainment falls off a cliff: near a decode instance's knee every request's TPOT is close to
#: the same value, and a saturated prefill group's TTFT percentile climbs steeply with the load.
#: On plans checked in the simulator (``scripts/bench_plan_quality.py``) the simulated TPOT
#: percentile ran up to 0.5 % and the TTFT percentile up to 2-3 % above the planner's at the
#: same load — enough to miss a 90-95 % target. The margins absorb that; where the curves are
#: steep (as they are at capacity) they cost about 1 % of the rate.
TPOT_MARGIN = 0.015
TTFT_MARGIN = 0.05

#: From this many candidates (after dominance) on, the MILP is reduced: dominance across sizes
#: (:func:`prune_dominated`'s ``across_sizes``), instance counts bounded by the demands
#: (:func:`servingcast.planner.milp.instance_bound`) and each lexicographic stage started from
#: the previous one's solution. All three keep the optimum, and cut HiGHS's time on 20 workloads
#: and 8 pools (1 700 candidates) several-fold. Below, the full model solves in about a second
#: and HiGHS returns, among equally good plans, the ones it returned before the reductions.
LARGE_MILP = 200


@dataclass(frozen=True)
class Config:
    """One instance configuration (the naming grammar of :attr:`key` is never parsed back)."""

    workload: str
    pool: str
    role: Role
    tp: int
    pp: int
    ep: int
    max_num_seqs: int
    max_num_batched_tokens: int
    prefix_caching: bool = False
    """Automatic prefix caching on (vLLM ``--enable-prefix-caching``, SGLang's radix cache):
    the capacity counts only the uncached prompt tokens as prefill work and the cached
    prefixes' KV as resident cache (``search.prefix_caching``)."""
    spec_tokens: int = 0
    """Speculative tokens per step (0: speculative decoding off; decode and aggregated only)."""
    draft_model: str | None = None
    """The draft when ``spec_tokens > 0``: a catalog model, or ``"mtp"`` for the target's own
    multi-token-prediction layers (``search.speculative``)."""
    attn_dp: int = 1
    """Attention data-parallel ranks (DEP, ``search.attention_dp``; 1: off). With ``attn_dp > 1``
    the engine spans ``attn_dp * tp`` GPUs, ``ep = attn_dp * tp``, and ``max_num_seqs`` /
    ``max_num_batched_tokens`` are the whole engine's: ``attn_dp`` times the per-rank values
    searched."""

    @property
    def parallelism(self) -> str:
        """``tp2-pp1-ep1`` (``tp1-pp1-ep16-dp16`` with attention data-parallel ranks)."""
        return parallelism_text(self.tp, self.pp, self.ep, self.attn_dp)

    @property
    def speculative(self) -> str:
        """``""`` when off, else ``-spec4-llama-3.2-1b`` or ``-mtp2``."""
        if self.spec_tokens <= 0:
            return ""
        if self.draft_model == "mtp":
            return f"-mtp{self.spec_tokens}"
        return f"-spec{self.spec_tokens}-{self.draft_model}"

    @property
    def key(self) -> str:
        """Unique, readable (:func:`servingcast.groups.group_name`):
        ``chat/h100/prefill/tp2-pp1-ep1/s256-k8192`` (speculative decode:
        ``chat/h100/decode/tp1-pp1-ep1/s64-k64-spec4-llama-3.2-1b``)."""
        return group_name(self.workload, self.pool, self.role, self.tp, self.pp, self.ep,
                          self.max_num_seqs, self.max_num_batched_tokens, self.prefix_caching,
                          self.spec_tokens, self.draft_model, self.attn_dp)


@dataclass(frozen=True)
class Candidate:
    """A configuration that meets the SLOs, with its capacity (req/s per instance)."""

    config: Config
    hardware: str
    gpus: int
    node_size: int
    price_per_hour: float | None
    capacity: Capacity
    kv_bytes_per_request: float
    profile: Profile = field(compare=False, repr=False)
    pooled: tuple[float, ...] = ()
    """``f(n)``, the req/s of a group of ``n = 1, 2, …`` instances behind one router: prefill,
    the pooled queue (:meth:`PrefillProfile.group_rates`); decode and aggregated, ``n`` times
    the per-instance rate of the largest group size at most ``n`` whose capacity was computed
    (their batches swing less in a group, queueing item 10); empty when a group serves no more
    per instance than one instance alone."""
    group_caps: tuple[tuple[int, Capacity], ...] = field(default=(), compare=False, repr=False)
    """Decode and aggregated, once :meth:`with_groups` has run: the capacity of one of ``n``
    instances at the group sizes where it grows
    (:meth:`~servingcast.planner.capacity.DecodeProfile.group_capacities`)."""
    limits_s: tuple[float, float] = field(default=(0.0, 0.0), compare=False, repr=False)
    """The (TTFT, TPOT) limits the capacity was sized against."""

    def with_groups(self, largest: int) -> Candidate:
        """This candidate with the group capacities of a decode or aggregated one for groups
        of up to ``largest`` instances (:attr:`pooled`, :attr:`group_caps`; queueing item 10);
        itself for a prefill one (pooled already) or when groups serve no more per instance.
        Computed on demand: only MILPs small enough to take the binaries use them."""
        if self.config.role == "prefill" or self.group_caps or not isinstance(
                self.profile, (DecodeProfile, AggregatedProfile)):
            return self
        levels = tuple(self.profile.group_capacities(
            *self.limits_s, min(largest, GROUP_LEVELS[-1])))
        pooled = _stepped_group_rates(levels)
        return replace(self, pooled=pooled, group_caps=levels) if pooled else self

    @property
    def key(self) -> str:
        """The configuration's key."""
        return self.config.key

    @property
    def rate(self) -> float:
        """Capacity in req/s."""
        return self.capacity.rate_per_s

    def group_rate(self, count: int) -> float:
        """Req/s that ``count`` instances of this candidate serve together: :attr:`pooled`'s
        ``f(count)`` (past the computed sizes, the per-instance rate of the largest one, a lower
        bound), ``count × rate`` when there is no pooling to count on."""
        if count <= 0:
            return 0.0
        if not self.pooled:
            return count * self.rate
        if count <= len(self.pooled):
            return self.pooled[count - 1]
        return count * self.pooled[-1] / len(self.pooled)

    @functools.cached_property
    def engine_max_num_seqs(self) -> int:
        """:meth:`engine_max_num_seqs_for` one instance alone."""
        return self.engine_max_num_seqs_for(1)

    def group_capacity(self, count: int) -> Capacity:
        """The capacity of one of ``count`` instances: at the largest group size at most
        ``count`` in :attr:`group_caps` (one instance's when there is none)."""
        best = self.capacity
        for n, cap in self.group_caps:
            if n <= count:
                best = cap
        return best

    def engine_max_num_seqs_for(self, count: int) -> int:
        """The engine's ``max_num_seqs`` for each of ``count`` instances in a group (prefill:
        the searched cap), sized at that group's capacity (:meth:`group_capacity`).

        Aggregated and decode: the smallest cap ``m`` (plus one prompt in prefill per virtual
        engine when aggregated) that holds the batch's ``q`` quantile ``b_q`` *and* makes a
        request wait for a free slot at most a quarter of the attainment's tail budget::

            m = min { m >= b_q : C(m, b) <= (1 - q) / 4 }

        with ``b`` the mean batch and ``C`` Erlang's C formula (the slots are ``m`` servers
        offered ``b`` erlangs; :func:`~servingcast.planner.queueing.erlang_c`). A cap at ``b_q``
        alone turns the batch's upper tail into queueing for a slot, which the capacity model
        does not count (the simulator showed TTFT p90 of 1.2-1.6 s against 0.43 s predicted on a
        small aggregated instance); no cap at all lets a batch near the instance's knee grow
        past ``b_q`` and TPOT with it (attainment 0.69 against a 0.95 target). Within the
        searched cap."""
        cfg = self.config
        if cfg.role == "prefill":
            return cfg.max_num_seqs
        extra = cfg.pp if cfg.role == "aggregated" else 0
        quantile = self.profile.quantile
        capacity = self.group_capacity(count)
        low = max(1, math.ceil(capacity.max_batch))
        if low >= cfg.max_num_seqs - extra:
            return max(1, min(cfg.max_num_seqs, low + extra))
        slots = np.arange(low, cfg.max_num_seqs - extra + 1, dtype=np.float64)
        waits = erlang_c(slots, capacity.batch)
        ok = np.flatnonzero(waits <= (1.0 - quantile) / 4.0)
        m = int(slots[ok[0]]) if ok.size else cfg.max_num_seqs - extra
        # The batch swings wider than Erlang's Poisson occupancy near the knee and with
        # prefill beside the decodes (b_q's spread): the cap also holds that law's
        # 1 - (1 - q) / 4 quantile.
        mean = capacity.batch
        z_q, z_cap = (NormalDist().inv_cdf(p) for p in (quantile, 1.0 - (1.0 - quantile) / 4.0))
        wide = math.ceil(mean + (capacity.max_batch - mean) * z_cap / z_q)
        m = max(m, min(wide, cfg.max_num_seqs - extra))
        # Never more slots than the KV cache holds sequences: past it the engine preempts and
        # recomputes prompts, and an instance near its KV limit spirals into overload (the
        # simulator: attainment 1.0 with one seed, 0.003 with another); a full cap only queues.
        kv_slots = int(getattr(self.profile, "b_kv", m))
        return max(low, min(m, kv_slots)) + extra


@dataclass(frozen=True)
class Drop:
    """A configuration set aside, why, and the figure behind it (seconds, bytes or GPUs)."""

    config: Config
    hardware: str
    reason: str
    detail: str = ""
    value: float = 0.0


@dataclass(frozen=True)
class CandidateSet:
    """Candidates that meet the SLOs, the drops, and what dominance removed."""

    candidates: tuple[Candidate, ...]
    dropped: tuple[Drop, ...]
    enumerated: int
    dominated: int = 0

    def drop_counts(self) -> dict[str, int]:
        """Drops per reason, in report order."""
        counts: dict[str, int] = defaultdict(int)
        for d in self.dropped:
            counts[d.reason] += 1
        return {r: counts[r] for r in DROP_REASONS if counts.get(r)}

    def for_workload(self, name: str) -> list[Candidate]:
        """Candidates of one workload."""
        return [c for c in self.candidates if c.config.workload == name]


@dataclass
class _Entry:
    config: Config
    hardware: str
    gpus: int
    node_size: int
    price: float | None
    kv_bytes: float
    profile: Profile | None
    drop: Drop | None


def precision_of(workload: Workload) -> Precision:
    """The workload's precision with its KV-cache dtype override."""
    prec = get_precision(workload.precision)
    if workload.kv_cache_dtype is not None:
        prec = prec.with_kv_cache_dtype(workload.kv_cache_dtype)
    return prec


def ep_choices(problem: Problem, moe: bool, tp: int) -> tuple[int, ...]:
    """Expert-parallel degrees to try with ``tp``: 1 for dense models."""
    if not moe:
        return (1,)
    allowed = problem.search.ep or tuple(e for e in range(1, tp + 1))
    return tuple(e for e in allowed if tp % e == 0)


#: What a profile's :attr:`~servingcast.planner.capacity.StepRequest` becomes once costed: the
#: iterations it asked for are the largest arrays a profile holds (a wide search keeps thousands
#: of profiles for the Pareto sweep), and only :func:`evaluate_profiles` reads them.
_COSTED = StepRequest(BatchStats(**{f.name: np.zeros(0) for f in fields(BatchStats)}),
                      np.zeros(0))


class CandidateBuilder:
    """Enumerates configurations once and applies SLO limits to their profiles on demand.

    ``progress`` (optional) is called with ``"candidates: i/n workloads"`` as each workload's
    configurations are profiled, then with a line for each step of their first rating."""

    def __init__(self, problem: Problem, progress: Callable[[str], None] | None = None) -> None:
        self.problem = problem
        self.progress = progress
        self.shapes = {w.name: shape_of(w, problem.engine) for w in problem.workloads}
        for w in problem.workloads:
            context = get_model(w.model).max_position_embeddings
            longest = self.shapes[w.name].total_max
            if longest > context:
                raise ConfigError(
                    f"workload {w.name!r}: requests reach {longest} tokens (prompt + output), "
                    f"more than {w.model}'s context of {context} tokens; an engine would reject "
                    "them. To fix: lower input_len/output_len (or their max)")
        self._entries: list[_Entry] | None = None
        self._drafts: dict[tuple[int, str], tuple[CostModel, CostModel]] = {}
        self._rated = False  # progress lines only for the first rating (not the Pareto sweep's)

    @property
    def entries(self) -> list[_Entry]:
        """Every configuration with its profile or its drop (computed on first use)."""
        if self._entries is None:
            entries: list[_Entry] = []
            workloads = self.problem.workloads
            for i, w in enumerate(workloads, 1):
                for p in self.problem.pools:
                    entries += self._enumerate(w, p)
                if self.progress is not None:
                    self.progress(f"candidates: {i}/{len(workloads)} workloads")
            self._entries = entries
        return self._entries

    def _enumerate(self, w: Workload, pool: Pool) -> list[_Entry]:
        search = self.problem.search
        model = get_model(w.model)
        roles: list[Role] = []
        if "aggregated" in search.modes:
            roles.append("aggregated")
        if "disaggregated" in search.modes:
            roles += ["prefill", "decode"]
        out: list[_Entry] = []
        for tp in tp_choices(self.problem):
            for pp in search.pp:
                for ep in ep_choices(self.problem, model.moe is not None, tp):
                    configs = [Config(w.name, pool.name, role, tp, pp, ep, s, k)
                               for role in roles
                               for s, k in _limits(role, search.max_num_seqs,
                                                   search.max_num_batched_tokens)]
                    out += self._shape_entries(w, pool, _with_prefix_caching(
                        _with_speculative(configs, search), search, w))
        if "decode" in roles and model.moe is not None:
            for configs in _dep_configs(w.name, pool.name, search, tp_choices(self.problem)):
                out += self._shape_entries(w, pool, configs)  # no speculative DEP yet
        return out

    def _shape_entries(self, w: Workload, pool: Pool, configs: list[Config]) -> list[_Entry]:
        """Entries of configurations sharing one instance shape (pool, tp, pp, ep)."""
        hw, prec, shape = pool.spec, precision_of(w), self.shapes[w.name]
        first = configs[0]
        gpus = first.attn_dp * first.tp * first.pp
        price = None if pool.price is None else pool.price * gpus

        def entry(cfg: Config, profile: Profile | None = None, drop: Drop | None = None,
                  kv: float = 0.0) -> _Entry:
            return _Entry(cfg, hw.name, gpus, pool.node_size, price, kv, profile, drop)

        reason = _shape_reason(gpus, pool)
        if reason is None and hw.peak_flops(prec.compute_dtype) is None:
            reason = ("precision", f"{hw.name} has no {prec.compute_dtype} tensor cores")
        cm = None
        if reason is None:
            try:
                cm = CostModel(get_model(w.model), hw, prec,
                               Parallelism(tp=first.tp, pp=first.pp, ep=first.ep,
                                           attn_dp=first.attn_dp))
            except ConfigError as exc:
                reason = ("parallelism", str(exc))
        if cm is None:
            assert reason is not None
            return [entry(c, drop=Drop(c, hw.name, reason[0], reason[1], gpus))
                    for c in configs]
        kv_request = kv_bytes_per_token(cm) * shape.input_mean
        bw = self.problem.network.per_gpu_bytes_s(hw)
        nic_rate = 1.0 / kv_transfer_s(kv_request, bw * gpus)
        out: list[_Entry] = []
        made: dict[tuple[int, str | None], list[Profile]] = defaultdict(list)
        for cfg in configs:
            result = self._profile(cfg, cm, shape, nic_rate)
            if isinstance(result, Drop):
                out.append(entry(cfg, drop=result))
            else:
                out.append(entry(cfg, profile=result, kv=kv_request))
                made[(cfg.spec_tokens, cfg.draft_model)].append(result)
        for (k, draft), profiles in made.items():  # one cost-model call per speculative setting
            evaluate_profiles(self._speculative(cm, k, draft), profiles)
            for profile in profiles:
                profile.request = _COSTED
        return out

    def _speculative(self, cm: CostModel, k: int, draft_model: str | None) -> CostModel:
        """``cm`` with speculative decoding of ``k`` tokens of ``draft_model``
        (:class:`~servingcast.costmodel.spec.SpeculativeCostModel`: its iterations cost the
        time per emitted token), or ``cm`` itself when off."""
        spec = self.problem.search.speculative
        if k <= 0 or draft_model is None or spec is None:
            return cm
        return SpeculativeCostModel(cm, SpeculativeDecoding(self._draft(cm, draft_model), k,
                                                            spec.acceptance_rate))

    def _draft(self, cm: CostModel, draft_model: str) -> CostModel:
        """:func:`draft_cost_model`, once per target cost model (kept alive with it, so that
        its id keys the cache safely)."""
        key = (id(cm), draft_model)
        if key not in self._drafts:
            self._drafts[key] = (cm, draft_cost_model(cm, draft_model))
        return self._drafts[key][1]

    def _profile(self, cfg: Config, cm: CostModel, shape: Shape,
                 nic_rate: float) -> Profile | Drop:
        search = self.problem.search
        extra_w = extra_kv = 0.0
        if cfg.prefix_caching:  # the uncached prompts and their cached context
            shape = shape_of(self.problem.workload(cfg.workload), self.problem.engine, True,
                             search.block_size, cfg.role == "prefill")
        if cfg.spec_tokens > 0 and cfg.draft_model is not None:
            # The draft's weights and KV share the GPUs; each sequence holds k lookahead slots.
            extra_w, extra_kv = draft_memory_extras(self._draft(cm, cfg.draft_model), cfg.pp)
            shape = replace(shape, seq_len=shape.seq_len + cfg.spec_tokens)
        # Per-rank limits size the activation reserve (each DEP rank runs its own scheduler).
        plan = memory_plan(cm, search.gpu_memory_utilization,
                           -(-cfg.max_num_batched_tokens // cfg.attn_dp),
                           -(-cfg.max_num_seqs // cfg.attn_dp), search.block_size, extra_w,
                           extra_kv)
        if not plan.fits:
            need = plan.weights_bytes_per_gpu + plan.activation_bytes_per_gpu
            return Drop(cfg, cm.hardware.name, "memory",
                        f"{plan.weights_bytes_per_gpu / 1e9:.1f} GB of weights + "
                        f"{plan.activation_bytes_per_gpu / 1e9:.1f} GB of activations per GPU, "
                        f"{plan.usable_bytes_per_gpu / 1e9:.1f} GB usable", need)
        if shape.resident_kv_tokens:  # a warm prefix cache's system prompts / sessions
            plan = replace(plan, kv_capacity_tokens=max(
                0, plan.kv_capacity_tokens - shape.resident_kv_tokens))
        if shape.idle_token_s:  # paused agentic sessions' histories, per running request
            shape = replace(shape, seq_len=idle_session_seq_len(
                cm, plan, shape.seq_len, shape.idle_token_s,
                (shape.prompt_mean or shape.input_mean) + shape.output_mean,
                shape.decode_steps, shape.decode_context, shape.quantile))
        if cfg.role != "prefill" and shape.total_max and max_batch_size(
                plan, shape.total_max) < 1:
            return Drop(cfg, cm.hardware.name, "kv_cache",
                        f"the longest request ({shape.total_max} tokens) does not fit the KV "
                        f"cache ({plan.kv_capacity_tokens} tokens)", float(shape.total_max))
        if cfg.role == "aggregated":
            return AggregatedProfile(cm, shape, plan, cfg.max_num_seqs,
                                     cfg.max_num_batched_tokens,
                                     round_robin=round_robin_router(
                                         self.problem.workload(cfg.workload)))
        if cfg.role == "prefill":
            return PrefillProfile(cm, shape, plan, cfg.max_num_batched_tokens, nic_rate,
                                  cfg.max_num_seqs)
        return DecodeProfile(cm, shape, plan, cfg.max_num_seqs, nic_rate)

    def candidates(self, tpot_scale: float = 1.0) -> CandidateSet:
        """Candidates meeting the SLOs (TPOT limits times ``tpot_scale``) and the drops."""
        kept: list[Candidate] = []
        dropped: list[Drop] = []
        # The slow parts, solved together for every configuration: the pooled queue of each
        # prefill one, the TTFT of each aggregated one where its TPOT holds.
        entries = self.entries
        say = self.progress if self.progress is not None and not self._rated else None
        self._rated = True
        if say is not None:
            say("candidates: pooled prefill queues")
        solve_group_rates([
            (e.profile, self._ttft_limit(e.config.workload),
             self.problem.pool(e.config.pool).count // e.gpus)
            for e in entries if isinstance(e.profile, PrefillProfile)])
        if say is not None:
            say("candidates: TTFT of aggregated configurations")
        solve_ttft([(e.profile, e.profile.pending_ttft(
            self._tpot_limit(e.config.workload, tpot_scale)))
                    for e in entries if isinstance(e.profile, AggregatedProfile)])
        for e in self.entries:
            if e.drop is not None:
                dropped.append(e.drop)
                continue
            assert e.profile is not None
            ttft_s = self._ttft_limit(e.config.workload)
            cap = e.profile.capacity(ttft_s, self._tpot_limit(e.config.workload, tpot_scale))
            if isinstance(cap, Infeasible):
                dropped.append(Drop(e.config, e.hardware, cap.reason, "", cap.best_s))
                continue
            if cap.rate_per_s <= 0.0:
                dropped.append(Drop(e.config, e.hardware, "network", "", 0.0))
                continue
            pooled: tuple[float, ...] = ()
            if isinstance(e.profile, PrefillProfile):
                count = self.problem.pool(e.config.pool).count // e.gpus
                pooled = tuple(float(x) for x in e.profile.group_rates(ttft_s, count))
            kept.append(Candidate(e.config, e.hardware, e.gpus, e.node_size, e.price, cap,
                                  e.kv_bytes, e.profile, pooled,
                                  limits_s=(ttft_s, self._tpot_limit(e.config.workload,
                                                                     tpot_scale))))
        return CandidateSet(tuple(kept), tuple(dropped), len(self.entries))

    def _ttft_limit(self, workload: str) -> float:
        """The TTFT limit candidates are sized against (``TTFT_MARGIN`` below the SLO's)."""
        return self.problem.workload(workload).slo.ttft_s * (1.0 - TTFT_MARGIN)

    def _tpot_limit(self, workload: str, scale: float) -> float:
        """The TPOT limit candidates are sized against (``TPOT_MARGIN`` below the SLO's)."""
        return self.problem.workload(workload).slo.tpot_s * scale * (1.0 - TPOT_MARGIN)


def _with_prefix_caching(configs: list[Config], search: SearchSpace,
                         w: Workload) -> list[Config]:
    """``configs``, each aggregated or prefill one once per value of ``search.prefix_caching``
    (decode instances prefill nothing; a workload without a ``prefix`` has nothing to hit, so
    it keeps caching off)."""
    values = search.prefix_caching if w.prefix is not None else (False,)
    if values == (False,):
        return configs
    return [replace(cfg, prefix_caching=v) for cfg in configs
            for v in (values if cfg.role != "decode" else (False,))]


def speculative_instance(search: SearchSpace, cm: CostModel, spec_tokens: int,
                         draft_model: str | None) -> tuple[CostModel, float, float]:
    """``(cost model, extra weight bytes, extra KV bytes per token)`` per GPU of an instance of
    ``cm``'s shape running ``spec_tokens`` speculative tokens of ``draft_model``
    (:class:`~servingcast.costmodel.spec.SpeculativeCostModel` and the draft's
    :func:`~servingcast.costmodel.spec.draft_memory_extras`); ``(cm, 0, 0)`` when off. For the
    plan's re-check (:mod:`servingcast.planner.verify`), which rebuilds instances on its own."""
    spec = search.speculative
    if spec_tokens <= 0 or draft_model is None or spec is None:
        return cm, 0.0, 0.0
    draft = draft_cost_model(cm, draft_model)
    extra_w, extra_kv = draft_memory_extras(draft, cm.parallel.pp)
    model = SpeculativeCostModel(cm, SpeculativeDecoding(draft, spec_tokens,
                                                         spec.acceptance_rate))
    return model, extra_w, extra_kv


def round_robin_router(w: Workload) -> bool:
    """Whether aggregated groups of ``w`` are exported behind round-robin: every request of
    one prompt and one output length (the rule of
    :func:`servingcast.planner.export.default_router`, which ``tests/planner`` checks)."""
    return isinstance(w.input_len, FixedLength) and isinstance(w.output_len, FixedLength)


def _stepped_group_rates(levels: tuple[tuple[int, Capacity], ...]) -> tuple[float, ...]:
    """``f(n)`` for ``n = 1 …`` the largest level of ``levels`` (:attr:`Candidate.pooled`):
    ``n`` times the per-instance rate of the largest level at most ``n`` (a lower bound: the
    rate grows with the group). Empty when no level beyond the first serves more per
    instance."""
    if len(levels) < 2:
        return ()
    out = []
    j = 0
    for n in range(1, levels[-1][0] + 1):
        while j + 1 < len(levels) and levels[j + 1][0] <= n:
            j += 1
        out.append(n * levels[j][1].rate_per_s)
    return tuple(out)


def _with_speculative(configs: list[Config], search: SearchSpace) -> list[Config]:
    """``configs``, and each decode or aggregated one once more per speculative token count
    ``k > 0`` of ``search.speculative`` (``k = 0`` is the configuration as it is)."""
    spec = search.speculative
    if spec is None:
        return configs
    out: list[Config] = []
    for cfg in configs:
        for k in search.spec_tokens if cfg.role != "prefill" else (0,):
            out.append(cfg if k == 0 else
                       replace(cfg, spec_tokens=k, draft_model=spec.draft_model))
    return out


def _dep_configs(workload: str, pool: str, search: SearchSpace,
                 tps: tuple[int, ...]) -> list[list[Config]]:
    """Decode configurations with attention data-parallel ranks, one list per shape.

    For each ``N > 1`` of ``search.attention_dp`` and ``tp`` of the search: ``pp = 1``,
    ``ep = N tp`` (experts over every GPU of the engine) and the engine's limits ``N`` times
    each searched per-rank cap (decode: the budget equals the cap). Decode engines only: the
    prefill and aggregated profiles model one prompt in prefill per engine at a time, which a
    DEP engine of ``N`` schedulers does not match.
    """
    out = []
    for ranks in search.attention_dp:
        if ranks <= 1:
            continue
        for tp in tps:
            out.append([Config(workload, pool, "decode", tp, 1, ranks * tp, ranks * s, ranks * k,
                               attn_dp=ranks)
                        for s, k in _limits("decode", search.max_num_seqs,
                                            search.max_num_batched_tokens)])
    return out


def _limits(role: Role, seqs: tuple[int, ...], budgets: tuple[int, ...]) -> list[tuple[int, int]]:
    """Engine limits to try per role: (max_num_seqs, max_num_batched_tokens) pairs.

    Aggregated: every pair. Prefill: every budget (it runs one prompt at a time, so
    ``max_num_seqs`` only sizes the logits buffer: the smallest cap, at most the budget, as vLLM
    requires). Decode: every cap, with a budget equal to it (decodes only; no prompt is
    prefilled there).
    """
    if role == "aggregated":
        return [(s, k) for s in seqs for k in budgets]
    if role == "prefill":
        return [(min(min(seqs), k), k) for k in budgets]
    return [(s, s) for s in seqs]


def _shape_reason(gpus: int, pool: Pool) -> tuple[str, str] | None:
    node = pool.node_size
    if gpus > pool.count:
        return "pool_size", f"{gpus} GPUs per instance, the pool has {pool.count}"
    if not (node % gpus == 0 or gpus % node == 0):
        return "node_shape", f"{gpus} GPUs per instance on {node}-GPU nodes"
    return None


def prune_dominated(cands: CandidateSet, by_parallelism: bool = False,
                    across_sizes: bool = False) -> CandidateSet:
    """Remove dominated candidates (module docstring).

    ``by_parallelism=True`` only compares candidates of the same ``tp/pp/ep`` (the best engine
    limits per parallelism): the set the ``--top K`` alternatives are searched in, since an
    alternative must drop a configuration of the plans before it. ``across_sizes=True`` also
    drops candidates that instances a whole fraction of their size dominate (the MILP's set:
    the same optimum, fewer variables).
    """
    groups: dict[tuple[str, ...], list[Candidate]] = defaultdict(list)
    for c in cands.candidates:
        cfg = c.config
        extra = (cfg.parallelism,) if by_parallelism else ()
        groups[(cfg.workload, cfg.pool, cfg.role) + extra].append(c)
    kept: list[Candidate] = []
    for members in groups.values():
        members.sort(key=lambda c: (c.gpus, -c.rate, c.config.key))
        best = best_pooled = -1.0
        for c in members:
            pooled = c.pooled[-1] / len(c.pooled) if c.pooled else c.rate
            if c.rate > best * (1.0 + 1e-9) or pooled > best_pooled * (1.0 + 1e-9):
                kept.append(c)
                best = max(best, c.rate)
                best_pooled = max(best_pooled, pooled)
    if across_sizes:
        kept = _drop_outgrown(kept)
    kept.sort(key=lambda c: c.config.key)
    return CandidateSet(tuple(kept), cands.dropped, cands.enumerated,
                        cands.dominated + len(cands.candidates) - len(kept))


def _drop_outgrown(cands: list[Candidate]) -> list[Candidate]:
    """``cands`` less those dominated across sizes (module docstring). A dominator is smaller
    than what it dominates, so dropping them all at once is dropping them one by one, largest
    first, each while its dominator is still there."""
    groups: dict[tuple[str, str, str], list[Candidate]] = defaultdict(list)
    for c in cands:
        groups[(c.config.workload, c.config.pool, c.config.role)].append(c)
    gone: set[str] = set()
    for members in groups.values():
        for c in members:
            if any(d.gpus < c.gpus and c.gpus % d.gpus == 0 and _outgrows(d, c)
                   for d in members):
                gone.add(c.key)
    return [c for c in cands if c.key not in gone]


def _outgrows(d: Candidate, c: Candidate) -> bool:
    """Whether ``g_c / g_d`` instances of ``d`` always serve at least one of ``c``."""
    k = c.gpus // d.gpus
    if not c.pooled or not d.pooled:
        return k * d.rate >= c.rate
    per_c = max(f / n for n, f in enumerate(c.pooled, 1))
    steps = [d.pooled[0], d.pooled[-1] / len(d.pooled)]
    steps += [b - a for a, b in itertools.pairwise(d.pooled)]
    return k * min(steps) >= per_c
