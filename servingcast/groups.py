"""Engine groups: ``count`` identical engines of one configuration, and the names they go by.

One type, :class:`EngineGroup`, describes a group wherever one is decided or run: the planner's
plan (:class:`servingcast.planner.plan.InstanceGroup` adds its predictions), the refinement's
trials (:class:`servingcast.refine.deployment.GroupSetting` adds its search slot) and the
scenarios exported from both (:func:`servingcast.planner.export.groups_scenario`). Its
per-instance part carries every field of the planner's candidate configuration
(:class:`servingcast.planner.candidates.Config`), so a candidate becomes a group with
:meth:`EngineGroup.from_config`.

Names follow one grammar, made here and never parsed back:

* :func:`group_name` — the unique key of a configuration within a problem,
  ``chat/h100/prefill/tp2-pp1-ep1/s256-k8192`` (a candidate's key, a plan group's ``name``);
* :func:`group_label` — the short name of a group within one workload's part, valid as a
  scenario's instance-group name and used as the refinement's search slot,
  ``prefill-h100-tp2`` (``-pp2``, ``-ep4`` when above 1; ``-2``, ``-3`` for a repeated shape,
  :func:`unique_labels`);
* :func:`instance_name` — engine ``k`` of a group, ``prefill-h100-tp2/0``.

To go from an instance back to its group, use :func:`group_of_instances`: the simulator numbers
instances group by group in the scenario's order (``count`` each), so instance ``i`` belongs to
the group whose cumulative count first exceeds ``i`` — an index lookup, not a parse.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from typing_extensions import Self

Role = Literal["aggregated", "prefill", "decode"]
Part = Literal["aggregated", "disaggregated"]
EngineKind = Literal["vllm", "sglang", "trtllm"]
ROLES: tuple[Role, ...] = ("aggregated", "prefill", "decode")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def parallelism_text(tp: int, pp: int, ep: int, attn_dp: int = 1) -> str:
    """``tp2-pp1-ep1``: every degree, as in :func:`group_name`; ``-dp16`` appended with
    attention data-parallel ranks (``attn_dp > 1``, DEP)."""
    return f"tp{tp}-pp{pp}-ep{ep}" + (f"-dp{attn_dp}" if attn_dp > 1 else "")


def speculative_text(spec_tokens: int, draft_model: str | None) -> str:
    """``""`` when speculative decoding is off, else ``-spec4-llama-3.2-1b`` or ``-mtp2``."""
    if spec_tokens <= 0:
        return ""
    if draft_model == "mtp":
        return f"-mtp{spec_tokens}"
    return f"-spec{spec_tokens}-{draft_model}"


def group_name(workload: str, pool: str, role: str, tp: int, pp: int, ep: int,
               max_num_seqs: int, max_num_batched_tokens: int, prefix_caching: bool = False,
               spec_tokens: int = 0, draft_model: str | None = None, attn_dp: int = 1) -> str:
    """Unique, readable key of one instance configuration of a problem:
    ``chat/h100/prefill/tp2-pp1-ep1/s256-k8192`` (``-pc`` with prefix caching; speculative
    decoding: ``chat/h100/decode/tp1-pp1-ep1/s64-k64-spec4-llama-3.2-1b``; attention
    data-parallel ranks: ``chat/h200/decode/tp1-pp1-ep16-dp16/s4096-k4096``)."""
    return (f"{workload}/{pool}/{role}/{parallelism_text(tp, pp, ep, attn_dp)}/"
            f"s{max_num_seqs}-k{max_num_batched_tokens}"
            + ("-pc" if prefix_caching else "") + speculative_text(spec_tokens, draft_model))


def group_label(role: str, pool: str, tp: int, pp: int, ep: int, occurrence: int = 1,
                attn_dp: int = 1) -> str:
    """``decode-h200-tp4`` (``-pp2``/``-ep4``/``-dp16`` when above 1), a valid scenario group
    name (any character outside ``[A-Za-z0-9_.-]`` becomes ``-``); ``occurrence`` ``k > 1``
    appends ``-k`` (the second group of that shape in one workload)."""
    base = f"{role}-{pool}-tp{tp}" + (f"-pp{pp}" if pp > 1 else "") + (
        f"-ep{ep}" if ep > 1 else "") + (f"-dp{attn_dp}" if attn_dp > 1 else "")
    base = _UNSAFE.sub("-", base)
    return base if occurrence == 1 else f"{base}-{occurrence}"


def unique_labels(groups: Iterable[EngineGroup]) -> list[str]:
    """The :func:`group_label` of each group, in order, ``-2``, ``-3``, … on repeated shapes."""
    seen: dict[str, int] = {}
    out = []
    for g in groups:
        base = group_label(g.role, g.pool, g.tp, g.pp, g.ep, attn_dp=g.attn_dp)
        seen[base] = seen.get(base, 0) + 1
        out.append(group_label(g.role, g.pool, g.tp, g.pp, g.ep, seen[base], g.attn_dp))
    return out


def instance_name(group: str, index: int) -> str:
    """Engine ``index`` (from 0) of the group named ``group``: ``decode-h200-tp4/3``."""
    return f"{group}/{index}"


def group_of_instances(counts: Sequence[int]) -> tuple[int, ...]:
    """The group index of each instance, when groups of ``counts`` instances are numbered one
    group after the other (the simulator's order): ``(2, 1) -> (0, 0, 1)``."""
    return tuple(i for i, n in enumerate(counts) for _ in range(n))


def stable_dump(model: type[BaseModel], data: dict[str, Any], order: Sequence[str],
                omit: Collection[str] = ()) -> dict[str, Any]:
    """A dump (``data``, of a ``model``) in a file format that predates the engine-group
    fields: the keys of ``order`` first, in that order; any other key only when its value
    differs from its default (so older files and newer ones read the same); ``omit`` never."""
    out = {k: data[k] for k in order if k in data}
    for key, value in data.items():
        if key in out or key in omit:
            continue
        info = model.model_fields.get(key)
        if info is None or info.is_required() or value != info.default:
            out[key] = value
    return out


class SingleRankOmitted(BaseModel):
    """A model with an ``attn_dp`` field that dumps without it when it is 1 (no attention
    data-parallelism), as it did before the field existed: plan groups and scenario groups."""

    @model_serializer(mode="wrap")
    def _without_attn_dp(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and getattr(self, "attn_dp", 1) == 1:
            data.pop("attn_dp", None)
        return data


class EngineGroup(SingleRankOmitted):
    """``count`` identical engines of one configuration on ``hardware``.

    The configuration (``workload`` … ``max_num_batched_tokens``) is the planner's candidate
    configuration; ``max_num_seqs`` and ``max_num_batched_tokens`` are the engine's limits as
    launched. ``dp`` is the data-parallel degree inside one engine (1: servingcast replicates
    engines with ``count`` instead); ``gpus_per_instance`` is what one engine occupies.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    workload: str
    pool: str
    hardware: str
    role: Role
    count: int = Field(ge=0)
    tp: int = Field(ge=1)
    pp: int = Field(ge=1)
    ep: int = Field(ge=1)
    gpus_per_instance: int = Field(ge=1)
    max_num_seqs: int = Field(ge=1)
    max_num_batched_tokens: int = Field(ge=1)
    enable_chunked_prefill: bool
    prefix_caching: bool = False
    """Automatic prefix caching (vLLM ``--enable-prefix-caching``, SGLang's radix cache)."""
    spec_tokens: int = Field(0, ge=0)
    """Speculative tokens per step (0: speculative decoding off)."""
    draft_model: str | None = None
    """The draft when ``spec_tokens > 0``: a catalog model, or ``"mtp"``."""
    dp: int = Field(1, ge=1)
    engine: EngineKind = "vllm"
    attn_dp: int = Field(1, ge=1)
    """Attention data-parallel ranks of one engine, experts expert-parallel over all
    ``attn_dp * tp`` GPUs (DEP; 1: off). ``max_num_seqs`` and ``max_num_batched_tokens`` are
    the whole engine's; each rank launches with ``ceil(value / attn_dp)``
    (:meth:`rank_max_num_seqs`)."""

    @property
    def rank_max_num_seqs(self) -> int:
        """``max_num_seqs`` of each attention rank: ``ceil(max_num_seqs / attn_dp)``."""
        return -(-self.max_num_seqs // self.attn_dp)

    @property
    def rank_max_num_batched_tokens(self) -> int:
        """``max_num_batched_tokens`` of each attention rank."""
        return -(-self.max_num_batched_tokens // self.attn_dp)

    @classmethod
    def from_config(cls, config: Any, **rest: Any) -> Self:
        """The group of a candidate configuration (a dataclass such as
        :class:`servingcast.planner.candidates.Config`): every field of it, then ``rest``
        (``hardware``, ``count``, …; a key of ``rest`` overrides the configuration's, e.g. the
        engine's ``max_num_seqs``)."""
        data = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        return cls(**{**data, **rest})

    @property
    def part(self) -> Part:
        """The part of the workload the group belongs to."""
        return "aggregated" if self.role == "aggregated" else "disaggregated"

    @property
    def key(self) -> str:
        """:func:`group_name` of the configuration."""
        return group_name(self.workload, self.pool, self.role, self.tp, self.pp, self.ep,
                          self.max_num_seqs, self.max_num_batched_tokens, self.prefix_caching,
                          self.spec_tokens, self.draft_model, self.attn_dp)

    @property
    def label(self) -> str:
        """:func:`group_label` of the shape (first occurrence)."""
        return group_label(self.role, self.pool, self.tp, self.pp, self.ep,
                           attn_dp=self.attn_dp)

    def describe(self) -> str:
        """``2x decode h200-sxm tp4 (max_num_seqs 178, max_num_batched_tokens 256)``."""
        par = f"tp{self.tp}" + (f"pp{self.pp}" if self.pp > 1 else "") + (
            f"ep{self.ep}" if self.ep > 1 else "") + (
            f"dp{self.attn_dp}" if self.attn_dp > 1 else "")
        return (f"{self.count}x {self.role} {self.hardware} {par} (max_num_seqs "
                f"{self.max_num_seqs}, max_num_batched_tokens {self.max_num_batched_tokens})")

    def engine_group(self) -> EngineGroup:
        """The plain :class:`EngineGroup` of this group (drops a subclass's own fields)."""
        names = EngineGroup.model_fields
        return EngineGroup(**{k: getattr(self, k) for k in names})
