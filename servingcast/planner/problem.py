"""The planning problem: GPU pools, the network, workloads with SLOs, the search space, the goal.

A problem is plain, frozen data (``problems/*.yaml``, or built in code)::

    pools:
      - {hardware: h100-sxm, count: 64}            # gpus_per_node and the price from the catalog
    network: {bandwidth_per_gpu: 400 Gb/s}         # prefill->decode KV transfer, per GPU
    workloads:
      - name: chat
        model: llama-3.1-70b                       # catalog name or a config.json path
        precision: fp8
        input_len: 2000                            # a whole number or a distribution
        output_len: {kind: normal, mean: 300, std: 100}
        demand: maximize                           # or a rate: 12.5 (req/s), '750 req/min'
        slo: {ttft: 2000 ms, tpot: 50 ms, attainment: 0.9}
    search: {modes: [aggregated, disaggregated], tp: [2, 4, 8], pp: [1]}
    objective: max_goodput                         # min_cost, max_goodput_per_dollar
    compare: {hardware: [h100-sxm, mi300x], price_per_gpu_hour: {mi300x: 2.5}}  # optional
    engine: vllm                                   # sglang, trtllm (servingcast.engines)

A workload may carry a ``prefix:`` as a scenario's does (:data:`servingcast.workload.Prefix`:
``system_prompt``, ``sessions``, ``agentic``): its prompts then include the shared prefix or the
conversation so far, its ``demand`` counts requests (turns), and ``search.prefix_caching:
[false, true]`` lets the planner turn prefix caching on where it pays
(:mod:`servingcast.planner.prefix_caching`).

A workload's ``demand_profile: {period: 1 h, rates: [...]}`` (or ``trace: file.csv``) gives its
demand per period (its ``demand`` defaults to the peak); with ``objective: min_cost`` the day is
planned by :mod:`servingcast.planner.periods` under ``fleet: fixed`` (default) or ``buy_once``.
``headroom: n_plus_one`` keeps every demand met with any one node lost
(:mod:`servingcast.planner.headroom`).

Durations and bandwidths need units (``'1000 ms'``, ``'1 s'``, ``'400 Gb/s'``): a bare number is
rejected. Names of hardware, models and precisions are checked against the catalogs when the
problem is validated; cross-field rules (unique names, whole nodes, a search space the pools can
hold, prices for cost objectives) are checked by :func:`problem_issues`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from servingcast.costmodel.comm import link_bytes_per_s
from servingcast.engines import EngineConfig, VllmEngine
from servingcast.errors import ConfigError
from servingcast.planner.lengths import Length
from servingcast.specs.catalog import get_hardware, get_model
from servingcast.specs.hardware import HardwareSpec
from servingcast.specs.precision import get_precision
from servingcast.units import Bandwidth as UnitBandwidth
from servingcast.units import Limit
from servingcast.units import limit_s as _duration_s
from servingcast.workload import Prefix

_FROZEN = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

#: Most GPUs one pool may hold (beyond any real fleet; keeps the MILP's sizes sane).
MAX_POOL_GPUS = 1_000_000
#: Highest demand of one workload, requests per second (beyond any real service).
MAX_DEMAND_PER_S = 1e6

Mode = Literal["aggregated", "disaggregated"]
Objective = Literal["max_goodput", "min_cost", "max_goodput_per_dollar"]
#: With demand profiles: the pools are owned (``fixed``) or bought once for the day (``buy_once``).
Fleet = Literal["fixed", "buy_once"]
#: ``n_plus_one``: the plan still meets every demand with any one node of any pool lost.
Headroom = Literal["none", "n_plus_one"]


@functools.lru_cache(maxsize=128)
def _hardware(name: str) -> HardwareSpec:
    return get_hardware(name)


def _custom(message: str) -> PydanticCustomError:
    return PydanticCustomError("servingcast", message)


def _rate_per_s(value: Any) -> float | None:
    """``maximize`` (None), a number of req/s, or ``'12 req/s'`` / ``'600 req/min'``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "maximize":
            return None
        match = re.fullmatch(r"([-+0-9.eE]+)\s*req\s*/\s*(s|min|h)", text)
        if match is None:
            raise _custom(
                f"cannot read {value!r} as a demand. To fix: write 'maximize', a rate in req/s "
                "(12.5) or a rate with its unit ('12.5 req/s', '750 req/min')")
        per = {"s": 1.0, "min": 60.0, "h": 3600.0}[match.group(2)]
        number = float(match.group(1)) / per
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise _custom(f"cannot read {value!r} as a demand. To fix: 'maximize' or e.g. 12.5")
    if not number > 0:
        raise _custom(
            f"a demand must be a rate > 0 req/s, got {value!r}. To fix: use a positive rate, "
            "or 'maximize'")
    if not number <= MAX_DEMAND_PER_S:  # also catches inf and nan
        raise _custom(
            f"a demand must be at most {MAX_DEMAND_PER_S:,.0f} req/s, got {value!r}. To fix: "
            "give the real peak rate, e.g. '12.5 req/s', or 'maximize' to serve as much as "
            "the pools can")
    return number


#: Seconds > 0, written with a unit (``'500 ms'``); dumped back with one, so problems
#: round-trip (:data:`servingcast.units.Limit`).
Duration = Limit
#: Bytes/s, written with a unit (``'400 Gb/s'``), or None (:data:`servingcast.units.Bandwidth`).
Bandwidth = UnitBandwidth | None
#: Requests/s, or None for ``maximize``.
Demand = Annotated[float | None, BeforeValidator(_rate_per_s),
                   PlainSerializer(lambda r: "maximize" if r is None else r,
                                   return_type=float | str)]


class Pool(BaseModel):
    """``count`` GPUs of one ``hardware`` kind, ``gpus_per_node`` to a node."""

    model_config = _FROZEN

    name: str = Field("", description="defaults to the hardware name")
    hardware: str
    count: int = Field(description="GPUs in the pool")
    gpus_per_node: int | None = Field(None, ge=1, description="default: the catalog's")
    price_per_gpu_hour: float | None = Field(None, gt=0, description="USD; default: catalog")

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name") and isinstance(
                data.get("hardware"), str):
            return {**data, "name": data["hardware"]}
        return data

    @field_validator("count")
    @classmethod
    def _some_gpus(cls, value: int) -> int:
        if value < 1:
            raise _custom(f"a pool needs at least one GPU, got {value}. To fix: set count to the "
                          "GPUs the pool has, or remove the pool")
        if value > MAX_POOL_GPUS:
            raise _custom(f"{value:,} GPUs, more than the {MAX_POOL_GPUS:,} a pool may hold. "
                          "To fix: set count to the GPUs the pool has")
        return value

    @field_validator("hardware")
    @classmethod
    def _known_hardware(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        if base is not None and value.endswith((".yaml", ".yml")):
            value = str((Path(base) / value).resolve())
        try:
            get_hardware(value)
        except ConfigError as exc:
            raise _custom(str(exc)) from None
        return value

    @property
    def spec(self) -> HardwareSpec:
        """The hardware spec (catalog or file)."""
        return _hardware(self.hardware)

    @property
    def node_size(self) -> int:
        """GPUs per node; a pool smaller than one node is one partial node."""
        return min(self.count, self.gpus_per_node or self.spec.gpus_per_node)

    @property
    def nodes(self) -> int:
        """Whole nodes in the pool."""
        return self.count // self.node_size

    @property
    def price(self) -> float | None:
        """USD per GPU-hour, from the pool or the catalog; None when neither has one."""
        return self.price_per_gpu_hour or self.spec.price_per_hour_usd


class Network(BaseModel):
    """The network that carries prefill->decode KV transfers.

    ``bandwidth_per_gpu``: each GPU's share of the inter-node network (default: the pool
    hardware's inter-node link from the catalog). ``fabric_bandwidth``: the most KV traffic the
    whole fabric carries at once (default: no limit beyond the GPUs' own links).
    """

    model_config = _FROZEN

    bandwidth_per_gpu_bytes_s: Bandwidth = Field(None, alias="bandwidth_per_gpu")
    fabric_bandwidth_bytes_s: Bandwidth = Field(None, alias="fabric_bandwidth")

    def per_gpu_bytes_s(self, hardware: HardwareSpec) -> float:
        """Effective KV-transfer bandwidth of one GPU of ``hardware``: ``bandwidth_per_gpu`` if
        given, else the device's inter-node link at its network efficiency (the cost model's)."""
        if self.bandwidth_per_gpu_bytes_s is not None:
            return float(self.bandwidth_per_gpu_bytes_s)
        return link_bytes_per_s(hardware.inter_node, hardware.efficiency)


class SLO(BaseModel):
    """Limits every request must meet, for at least ``attainment`` of the requests."""

    model_config = _FROZEN

    ttft_s: Duration = Field(alias="ttft")
    tpot_s: Duration = Field(alias="tpot")
    attainment: float = Field(0.9, gt=0.0, lt=1.0)


#: Most periods a demand profile may have (a week of minutes is 10,080; beyond that the MILP of
#: :mod:`servingcast.planner.periods` grows past what HiGHS solves in seconds).
MAX_PERIODS = 1000
#: How ``demand_profile.period`` may be set at most: a day (the reports are per day).
MAX_PERIOD_S = 86_400.0


def _profile_rate(value: Any) -> float:
    """One rate of a demand profile: like a demand (``'12 req/s'``, ``12.5``), but 0 is allowed
    (a quiet hour) and ``maximize`` is not."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return 0.0
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([-+0-9.eE]+)\s*(req\s*/\s*(s|min|h))?\s*", value.lower())
        with contextlib.suppress(ValueError):
            if match is not None and float(match.group(1)) == 0:
                return 0.0
    rate = _rate_per_s(value)
    if rate is None:
        raise _custom("'maximize' is not a rate: every period of a profile needs a rate. "
                      "To fix: write e.g. '12 req/s' (or 0 for an idle period)")
    return rate


def _trace_rates(path: Path, period_s: float) -> tuple[float, ...]:
    """The mean arrival rate (req/s) of each ``period_s`` window of a trace file (the replay
    format, :func:`servingcast._workload_files.read_trace`), windows counted from t = 0 up to
    the window holding the last arrival."""
    resolved = path.resolve()
    try:
        stamp = resolved.stat().st_mtime_ns
    except OSError:
        stamp = 0  # read_trace says the file is missing
    return _trace_rates_cached(str(resolved), stamp, period_s)


@functools.lru_cache(maxsize=16)
def _trace_rates_cached(path_text: str, stamp: int, period_s: float) -> tuple[float, ...]:
    from servingcast._workload_files import read_trace

    path = Path(path_text)
    arrivals = read_trace(path)["arrival_time"]
    periods = int(arrivals[-1] // period_s) + 1
    if periods > MAX_PERIODS:
        raise ConfigError(f"{path}: the trace spans {periods:,} periods of {period_s:g} s, more "
                          f"than the {MAX_PERIODS:,} a profile may have. To fix: use a longer "
                          "period")
    counts = [0] * periods
    for t in arrivals:
        counts[int(t // period_s)] += 1
    return tuple(n / period_s for n in counts)


class DemandProfile(BaseModel):
    """A workload's demand over time: ``rates`` (req/s, one per ``period``) or a ``trace``
    (the replay CSV/JSONL format; its arrivals counted per period). Planned by
    :mod:`servingcast.planner.periods`."""

    model_config = _FROZEN

    period_s: Duration = Field(3600.0, alias="period")
    rates_per_s: tuple[Annotated[float, BeforeValidator(_profile_rate)], ...] = Field(
        (), alias="rates")
    trace: str | None = Field(None, description="a trace file; its arrivals give the rates")

    @model_validator(mode="before")
    @classmethod
    def _rates_from_trace(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("trace"), str):
            return data
        base = (info.context or {}).get("base_dir")
        path = Path(base) / data["trace"] if base is not None else Path(data["trace"])
        try:
            period_s = _duration_s(data.get("period", "1 h"))
        except PydanticCustomError:
            return data  # the period's own error is reported
        try:
            rates = _trace_rates(path, period_s)
        except ConfigError as exc:
            raise _custom(str(exc).replace("the scenario file's folder",
                                           "the problem file's folder")) from None
        given = data.get("rates")
        if given is not None:
            try:
                same = (len(given) == len(rates) and all(
                    math.isclose(_profile_rate(a), b, rel_tol=1e-9, abs_tol=1e-12)
                    for a, b in zip(given, rates, strict=True)))
            except (PydanticCustomError, TypeError):
                same = False
            if not same:
                raise _custom("both rates and a trace are given, and they differ. To fix: "
                              "remove rates (the trace's arrivals per period give them)")
        return {**data, "trace": str(path.resolve()), "rates": list(rates)}

    @model_validator(mode="after")
    def _some_periods(self) -> DemandProfile:
        if not self.rates_per_s:
            raise _custom("a demand profile needs rates or a trace. To fix: e.g. rates: "
                          "['4 req/s', '12 req/s', ...] (one per period), or trace: file.csv")
        if len(self.rates_per_s) > MAX_PERIODS:
            raise _custom(f"{len(self.rates_per_s):,} periods, more than the {MAX_PERIODS:,} a "
                          "profile may have. To fix: use a longer period")
        if self.period_s > MAX_PERIOD_S:
            raise _custom(f"a period of {self.period_s:g} s is longer than a day. To fix: e.g. "
                          "period: 1 h")
        if max(self.rates_per_s) <= 0:
            raise _custom("every rate of the profile is 0. To fix: give the rates of the busy "
                          "periods")
        return self

    @property
    def peak_per_s(self) -> float:
        """The highest rate of the profile, req/s."""
        return max(self.rates_per_s)

    @property
    def period_h(self) -> float:
        """One period in hours."""
        return self.period_s / 3600.0


class Workload(BaseModel):
    """One model served to one stream of requests."""

    model_config = _FROZEN

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    model: str
    precision: str = "bf16"
    kv_cache_dtype: str | None = None
    input_len: Length
    output_len: Length
    demand_per_s: Demand = Field(None, alias="demand")
    weight: float = Field(1.0, gt=0, description="weight of this workload's req/s in goodput")
    slo: SLO
    demand_profile: DemandProfile | None = Field(
        None, description="the demand per period (servingcast.planner.periods); the demand "
        "defaults to its peak")
    prefix: Prefix | None = Field(
        None, description="shared prefixes, as in a scenario's workload: {kind: system_prompt, "
        "num_groups: 4, length: 1000}, {kind: sessions, turns: 4} or {kind: agentic, turns: 8, "
        "tool_time: '2 s'}; demand stays in requests (turns) per second")

    @model_validator(mode="before")
    @classmethod
    def _demand_is_profile_peak(cls, data: Any, info: ValidationInfo) -> Any:
        # A workload with a profile and no demand has the profile's peak as its demand (the
        # single-period plan is the peak-provisioned one); a demand given with a profile must
        # be that peak. Rates that do not parse are left to the profile's own errors.
        if not isinstance(data, dict) or not isinstance(data.get("demand_profile"), dict):
            return data
        profile = data["demand_profile"]
        rates = profile.get("rates")
        if isinstance(profile.get("trace"), str) and rates is None:
            base = (info.context or {}).get("base_dir")
            path = Path(base) / profile["trace"] if base is not None else Path(profile["trace"])
            try:
                rates = _trace_rates(path, _duration_s(profile.get("period", "1 h")))
            except (ConfigError, PydanticCustomError):
                return data  # reported by the profile's own validation
        if not isinstance(rates, (list, tuple)) or not rates:
            return data
        try:
            peak = max(_profile_rate(r) for r in rates)
        except (PydanticCustomError, TypeError):
            return data
        if peak <= 0:
            return data
        given = data.get("demand")
        if given is None:
            return {**data, "demand": peak}
        try:
            rate = _rate_per_s(given)
        except PydanticCustomError:
            return data
        if rate is None or not math.isclose(rate, peak, rel_tol=1e-9):
            raise _custom(f"demand {given!r} is not the peak of demand_profile ({peak:g} req/s). "
                          "To fix: remove demand (it defaults to the profile's peak)")
        return data

    @model_serializer(mode="wrap")
    def _without_profile(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A workload without a profile dumps (and fingerprints) as it did before profiles.
        data = handler(self)
        if isinstance(data, dict) and self.demand_profile is None:
            data.pop("demand_profile", None)
        if isinstance(data, dict) and self.prefix is None:  # likewise without a prefix
            data.pop("prefix", None)
        return data

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        if base is not None and (value.endswith((".json", ".yaml", ".yml")) or "/" in value):
            candidate = Path(base) / value
            if candidate.exists():
                value = str(candidate.resolve())
        try:
            get_model(value)
        except ConfigError as exc:
            raise _custom(str(exc)) from None
        return value

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        try:
            return get_precision(value).name
        except ConfigError as exc:
            raise _custom(str(exc)) from None

    @field_validator("kv_cache_dtype")
    @classmethod
    def _known_kv_dtype(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                get_precision("bf16").with_kv_cache_dtype(value)
            except ConfigError as exc:
                raise _custom(str(exc)) from None
        return value

    @property
    def maximize(self) -> bool:
        """Serve as much as possible (no demand cap)."""
        return self.demand_per_s is None


class SpeculativeSearch(BaseModel):
    """Speculative decoding as a planner decision (``search.speculative``): decode and
    aggregated instances are tried with each ``num_speculative_tokens`` ``k`` (0: off) of
    ``draft_model`` — a catalog model sharing the target's vocabulary (``llama-3.2-1b`` for
    Llama-3 targets), or ``mtp`` for the target's own multi-token-prediction layers
    (DeepSeek-V3) — each speculative token accepted with probability ``acceptance_rate`` (what
    you measured for your traffic; :mod:`servingcast.costmodel.spec` has the maths)."""

    model_config = _FROZEN

    draft_model: str
    acceptance_rate: float = Field(gt=0.0, le=1.0,
                                   description="per-token acceptance rate, e.g. 0.7")
    num_speculative_tokens: tuple[int, ...] = Field((0, 2, 4), min_length=1)

    @field_validator("draft_model")
    @classmethod
    def _known_draft(cls, value: str) -> str:
        if value.strip().lower() == "mtp":
            return "mtp"
        try:
            return get_model(value).name
        except ConfigError as exc:
            raise _custom(f"{exc} To fix: name a catalog model as the draft, or 'mtp' for the "
                          "target's own MTP layers") from None

    @field_validator("num_speculative_tokens")
    @classmethod
    def _tokens(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if min(value) < 0 or max(value) > 16:
            raise _custom(f"every value must be in 0..16 (0: off), got {list(value)}. To fix: "
                          "e.g. [0, 2, 4]")
        return tuple(sorted(set(value)))


class SearchSpace(BaseModel):
    """Which deployments the planner may consider. Every list is a set of allowed values.

    ``tp`` defaults to 1, 2, 4, 8 (what fits a node); ``ep`` to 1 for dense models and every
    degree dividing ``tp`` for mixture-of-experts models. ``max_num_seqs`` are caps on an
    instance's batch (the planner sets each instance's cap to its planned batch, at most these);
    ``max_num_batched_tokens`` are the chunked-prefill token budgets per iteration.
    """

    model_config = _FROZEN

    modes: tuple[Mode, ...] = Field(("aggregated", "disaggregated"), min_length=1)
    tp: tuple[int, ...] | None = None
    pp: tuple[int, ...] = (1, 2, 4)
    ep: tuple[int, ...] | None = None
    max_num_seqs: tuple[int, ...] = (256, 1024)
    max_num_batched_tokens: tuple[int, ...] = (512, 2048, 8192)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    block_size: int = Field(16, ge=1)
    speculative: SpeculativeSearch | None = Field(
        None, description="try speculative decoding: {draft_model: llama-3.2-1b | mtp, "
        "acceptance_rate: 0.7, num_speculative_tokens: [0, 2, 4]}")
    prefix_caching: tuple[bool, ...] = Field(
        (False,), min_length=1, description="automatic prefix caching off and/or on: [false, "
        "true] lets the planner choose (only workloads with a prefix gain from it)")
    attention_dp: tuple[int, ...] = Field(
        (1,), description="attention data-parallel ranks per decode engine, experts "
        "expert-parallel over all attention_dp x tp GPUs (DEP; MoE models only): [1, 8, 16] "
        "lets the planner choose; 1 is the plain layout. max_num_seqs values are per rank")

    @model_serializer(mode="wrap")
    def _without_speculative(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A search without speculative decoding dumps (and fingerprints) as it did before it.
        data = handler(self)
        if isinstance(data, dict) and self.speculative is None:
            data.pop("speculative", None)
        if isinstance(data, dict) and self.prefix_caching == (False,):  # likewise, caching off
            data.pop("prefix_caching", None)
        if isinstance(data, dict) and self.attention_dp == (1,):  # likewise, no DEP
            data.pop("attention_dp", None)
        return data

    @field_validator("prefix_caching")
    @classmethod
    def _unique_caching(cls, value: tuple[bool, ...]) -> tuple[bool, ...]:
        return tuple(v for v in (False, True) if v in value)

    @property
    def spec_tokens(self) -> tuple[int, ...]:
        """The speculative token counts to try (``(0,)``: speculative decoding off)."""
        return (0,) if self.speculative is None else self.speculative.num_speculative_tokens

    @field_validator("tp", "pp", "ep", "max_num_seqs", "max_num_batched_tokens", "attention_dp")
    @classmethod
    def _positive_unique(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        if not value:
            raise _custom("the list is empty. To fix: give at least one value, or remove it")
        if min(value) < 1:
            raise _custom(f"every value must be >= 1, got {list(value)}")
        return tuple(sorted(set(value)))

    @field_validator("modes")
    @classmethod
    def _unique_modes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(m for m in ("aggregated", "disaggregated") if m in value)


def hardware_key(value: str, base_dir: str | Path | None = None) -> str:
    """A GPU type as the ``compare:`` section and ``servingcast compare`` key it: the catalog
    name (``H100`` → ``h100-sxm``), or the resolved path of a YAML file. Raises
    :class:`ConfigError` naming every known type."""
    from servingcast.specs.catalog import hardware_catalog

    if value.endswith((".yaml", ".yml")):
        path = Path(base_dir) / value if base_dir is not None else Path(value)
        get_hardware(str(path.resolve()))
        return str(path.resolve())
    try:
        return get_hardware(value).name
    except ConfigError:
        known = ", ".join(sorted(hardware_catalog()))
        raise ConfigError(f"unknown GPU type {value!r}; the catalog has {known}. To fix: use one "
                          "of those names, or a hardware YAML file of your own") from None


class Compare(BaseModel):
    """The ``compare:`` section, read by ``servingcast compare``: plan the same workloads on
    each GPU type in ``hardware`` in turn. ``price_per_gpu_hour`` (USD, by type) comes before a
    pool's price for that type and the catalog's; ``gpus`` is each type's budget (default: the
    problem's GPUs, and for ``min_cost`` at least enough for the demands)."""

    model_config = _FROZEN

    hardware: tuple[str, ...] = Field(min_length=1)
    price_per_gpu_hour: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    gpus: int | None = Field(None, ge=1, le=MAX_POOL_GPUS)

    @field_validator("hardware")
    @classmethod
    def _known_types(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        base = (info.context or {}).get("base_dir")
        try:
            keys = tuple(hardware_key(v, base) for v in value)
        except ConfigError as exc:
            raise _custom(str(exc)) from None
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise _custom(f"{', '.join(twice)} listed twice. To fix: list each GPU type once")
        return keys

    @field_validator("price_per_gpu_hour")
    @classmethod
    def _known_price_types(cls, value: dict[str, float],
                           info: ValidationInfo) -> dict[str, float]:
        base = (info.context or {}).get("base_dir")
        try:
            return {hardware_key(k, base): v for k, v in value.items()}
        except ConfigError as exc:
            raise _custom(str(exc)) from None

    @model_validator(mode="after")
    def _prices_of_listed_types(self) -> Compare:
        extra = sorted(set(self.price_per_gpu_hour) - set(self.hardware))
        if extra:
            raise _custom(f"a price for {', '.join(extra)}, which compare.hardware does not list "
                          f"({', '.join(self.hardware)}). To fix: add it to hardware, or remove "
                          "its price")
        return self


class Problem(BaseModel):
    """A whole planning problem (see the module docstring)."""

    model_config = _FROZEN

    name: str = "problem"
    description: str = ""
    pools: tuple[Pool, ...]
    network: Network = Network()
    workloads: tuple[Workload, ...]
    search: SearchSpace = SearchSpace()
    objective: Objective = "max_goodput"
    compare: Compare | None = None
    engine: EngineConfig = Field(
        VllmEngine(), description="the serving engine every instance runs: vllm, sglang or "
        "trtllm (or {kind: trtllm, capacity_scheduler: max_utilization}); exported scenarios "
        "carry it")
    fleet: Fleet = Field(
        "fixed", description="with demand profiles: fixed (the pools are owned; each period uses "
        "what it needs) or buy_once (buy the GPUs once for the day, fewest dollars per day)")
    headroom: Headroom = Field(
        "none", description="n_plus_one: every demand still met with any one node lost")

    @model_serializer(mode="wrap")
    def _without_empty_compare(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A problem without a compare section, or on the default engine, dumps (and
        # fingerprints) as it did before them.
        data = handler(self)
        if isinstance(data, dict):
            if self.compare is None:
                data.pop("compare", None)
            if self.engine == VllmEngine():
                data.pop("engine", None)
            if self.fleet == "fixed":
                data.pop("fleet", None)
            if self.headroom == "none":
                data.pop("headroom", None)
        return data

    def pool(self, name: str) -> Pool:
        """The pool called ``name``."""
        return next(p for p in self.pools if p.name == name)

    def workload(self, name: str) -> Workload:
        """The workload called ``name``."""
        return next(w for w in self.workloads if w.name == name)


def _tp_choices(problem: Problem) -> tuple[int, ...]:
    if problem.search.tp is not None:
        return problem.search.tp
    largest = max(p.node_size for p in problem.pools)
    return tuple(t for t in (1, 2, 4, 8) if t <= largest) or (1,)


def problem_issues(problem: Problem) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-field rules pydantic cannot see field by field: ``(field path, message)`` pairs."""
    issues: list[tuple[tuple[str | int, ...], str]] = []
    for field in ("pools", "workloads"):
        if not getattr(problem, field):
            issues.append(((field,), f"no {field}. To fix: list at least one"))
    if issues:
        return issues
    seen: dict[str, int] = {}
    for i, pool in enumerate(problem.pools):
        if pool.name in seen:
            issues.append((("pools", i, "name"),
                           f"duplicate pool name {pool.name!r} (also pools[{seen[pool.name]}]). "
                           "To fix: give each pool a distinct name"))
        seen[pool.name] = i
        gpn = pool.gpus_per_node or pool.spec.gpus_per_node
        if pool.count > gpn and pool.count % gpn:
            issues.append((("pools", i, "count"),
                           f"{pool.count} GPUs are not a whole number of {gpn}-GPU nodes. To fix: "
                           f"use a multiple of {gpn} (e.g. {pool.count // gpn * gpn} or "
                           f"{(pool.count // gpn + 1) * gpn}), or set gpus_per_node"))
        if problem.objective != "max_goodput" and pool.price is None:
            issues.append((("pools", i, "price_per_gpu_hour"),
                           f"objective {problem.objective} needs a price, and the catalog has "
                           f"none for {pool.hardware}. To fix: set price_per_gpu_hour (USD)"))
    names: dict[str, int] = {}
    for i, w in enumerate(problem.workloads):
        if w.name in names:
            issues.append((("workloads", i, "name"),
                           f"duplicate workload name {w.name!r}. To fix: rename one"))
        names[w.name] = i
        if problem.objective == "min_cost" and w.maximize:
            issues.append((("workloads", i, "demand"),
                           "objective min_cost serves every demand at least cost, so each "
                           "workload needs a rate. To fix: set demand to a rate (e.g. 10 req/s), "
                           "or use objective max_goodput"))
        out_max = getattr(w.output_len, "value", None)
        if out_max == 1:
            issues.append((("workloads", i, "output_len"),
                           "one output token has no TPOT (the first token comes from prefill). "
                           "To fix: use output_len >= 2"))
    issues += _profile_issues(problem)
    if problem.headroom == "n_plus_one" and problem.objective != "min_cost":
        issues.append((("headroom",), f"headroom n_plus_one keeps every demand met with one node "
                       f"lost, and the objective is {problem.objective}. To fix: set objective: "
                       "min_cost and give every workload a demand"))
    largest = max(p.count for p in problem.pools)
    biggest = max(problem.pools, key=lambda p: p.count)
    search = problem.search
    min_pp = min(search.pp)
    for t in _tp_choices(problem):
        if t * min_pp > largest:
            issues.append((("search", "tp"),
                           f"tp={t} (with pp={min_pp}) needs {t * min_pp} GPUs but the largest "
                           f"pool ({biggest.name}) has {largest}. To fix: remove tp={t} or add "
                           "GPUs"))
            break
    if search.ep is not None:
        tps = _tp_choices(problem)
        for e in search.ep:
            if not any(t % e == 0 for t in tps):
                issues.append((("search", "ep"),
                               f"ep={e} divides no allowed tp ({list(tps)}): experts are split ep "
                               "ways inside a tp group. To fix: allow a tp that ep divides"))
                break
    issues += _speculative_issues(problem)
    issues += _attention_dp_issues(problem)
    return issues


def _attention_dp_issues(problem: Problem) -> list[tuple[tuple[str | int, ...], str]]:
    """``search.attention_dp`` (DEP): decode engines of MoE models, on disaggregated plans."""
    search = problem.search
    ranks = [n for n in search.attention_dp if n > 1]
    if not ranks:
        return []
    loc: tuple[str | int, ...] = ("search", "attention_dp")
    for w in problem.workloads:
        if get_model(w.model).moe is None:
            return [(loc, f"attention_dp {ranks} spreads experts over the ranks, and "
                     f"{w.model} (workload {w.name!r}) is dense. To fix: remove attention_dp "
                     "(or set it to [1]), or plan a mixture-of-experts model")]
    if "disaggregated" not in search.modes:
        return [(loc, f"attention_dp {ranks} applies to decode engines, and search.modes is "
                 f"{list(search.modes)}. To fix: add disaggregated to search.modes")]
    largest = max(p.count for p in problem.pools)
    smallest = min(ranks) * min(_tp_choices(problem))
    if smallest > largest:
        return [(loc, f"attention_dp={min(ranks)} x tp={min(_tp_choices(problem))} needs "
                 f"{smallest} GPUs per engine, the largest pool has {largest}. To fix: lower "
                 "attention_dp or add GPUs")]
    return []


def _speculative_issues(problem: Problem) -> list[tuple[tuple[str | int, ...], str]]:
    """``search.speculative``: the draft shares each workload model's vocabulary (it proposes
    the target's tokens), or the models have MTP layers for ``draft_model: mtp``."""
    spec = problem.search.speculative
    if spec is None:
        return []
    loc: tuple[str | int, ...] = ("search", "speculative", "draft_model")
    for w in problem.workloads:
        target = get_model(w.model)
        if spec.draft_model == "mtp":
            if target.mtp_layers < 1:
                return [(loc, f"draft_model mtp needs multi-token-prediction layers, and "
                         f"{target.name} (workload {w.name!r}) has none. To fix: use a separate "
                         "draft model of the same vocabulary, or a model with MTP (deepseek-v3)")]
            continue
        draft = get_model(spec.draft_model)
        if draft.vocab_size != target.vocab_size:
            return [(loc, f"the draft {draft.name} has a vocabulary of {draft.vocab_size:,} "
                     f"tokens, {target.name} (workload {w.name!r}) of {target.vocab_size:,}: a "
                     "draft must propose the target's tokens. To fix: use a draft of the same "
                     "family (llama-3.2-1b for Llama-3.1 targets), or 'mtp' for MTP models")]
        if draft.name == target.name:
            return [(loc, f"the draft is the target itself ({target.name}, workload {w.name!r}); "
                     "it would save nothing. To fix: use a smaller model of the same family")]
    return []


def _profile_issues(problem: Problem) -> list[tuple[tuple[str | int, ...], str]]:
    """Demand profiles: ``min_cost`` only, every profile with the same periods, and ``fleet:
    buy_once`` only with a profile."""
    issues: list[tuple[tuple[str | int, ...], str]] = []
    profiled = [(i, w) for i, w in enumerate(problem.workloads) if w.demand_profile is not None]
    if not profiled:
        if problem.fleet != "fixed":
            issues.append((("fleet",), f"fleet {problem.fleet} plans a day of demand profiles, "
                           "and no workload has a demand_profile. To fix: give a workload a "
                           "demand_profile, or remove fleet"))
        return issues
    if problem.objective != "min_cost":
        i, _ = profiled[0]
        issues.append((("workloads", i, "demand_profile"),
                       f"a demand profile is planned at least cost per day, and the objective "
                       f"is {problem.objective}. To fix: set objective: min_cost"))
    i0, w0 = profiled[0]
    first = w0.demand_profile
    assert first is not None
    for i, w in profiled[1:]:
        profile = w.demand_profile
        assert profile is not None
        if (len(profile.rates_per_s) != len(first.rates_per_s)
                or not math.isclose(profile.period_s, first.period_s)):
            issues.append((("workloads", i, "demand_profile"),
                           f"{len(profile.rates_per_s)} periods of {profile.period_s:g} s, but "
                           f"workloads[{i0}] ({w0.name}) has {len(first.rates_per_s)} of "
                           f"{first.period_s:g} s. To fix: give every profile the same period "
                           "and number of rates"))
    return issues


def _raise_issues(issues: list[tuple[tuple[str | int, ...], str]], source: str,
                  index: dict[tuple[Any, ...], int] | None) -> None:
    from servingcast._yaml import _line_for

    lines = []
    for loc, message in issues:
        line = _line_for(loc, index) if index else None
        where = f"{source}:{line}" if line is not None else source
        lines.append(f"{where}: {'.'.join(str(p) for p in loc)}: {message}")
    raise ConfigError("\n".join(lines))


def problem_from_dict(data: dict[str, Any], source: str = "<problem>",
                      base_dir: Path | None = None,
                      index: dict[tuple[Any, ...], int] | None = None) -> Problem:
    """Validate ``data`` as a :class:`Problem`; errors become one :class:`ConfigError` naming
    ``source``, the line (when ``index`` maps field paths to lines) and the field."""
    from pydantic import ValidationError

    from servingcast._yaml import format_validation_error

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of fields at the top level")
    context = {"base_dir": str(base_dir)} if base_dir is not None else None
    try:
        problem = Problem.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, index)) from None
    issues = problem_issues(problem)
    if issues:
        _raise_issues(issues, source, index)
    return problem


def load_problem(path: str | Path) -> Problem:
    """Read and validate a problem file (YAML). Relative model/hardware paths are read from
    the file's folder."""
    from servingcast._yaml import read_yaml

    path = Path(path)
    data, index = read_yaml(path)
    return problem_from_dict(data, str(path), path.parent, index)


def check_problem(problem: Problem) -> Problem:
    """Apply :func:`problem_issues` to a problem built in code; raise :class:`ConfigError`."""
    issues = problem_issues(problem)
    if issues:
        _raise_issues(issues, "<problem>", None)
    return problem


def tp_choices(problem: Problem) -> tuple[int, ...]:
    """The tensor-parallel degrees to try."""
    return _tp_choices(problem)
