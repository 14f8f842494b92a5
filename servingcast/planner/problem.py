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

Durations and bandwidths need units (``'1000 ms'``, ``'1 s'``, ``'400 Gb/s'``): a bare number is
rejected. Names of hardware, models and precisions are checked against the catalogs when the
problem is validated; cross-field rules (unique names, whole nodes, a search space the pools can
hold, prices for cost objectives) are checked by :func:`problem_issues`.
"""

from __future__ import annotations

import functools
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
from servingcast.units import parse_bandwidth, parse_duration

_FROZEN = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)
_HAS_UNIT = re.compile(r"[A-Za-zµ]\s*(/\s*[A-Za-z]+)?\s*$")

#: Most GPUs one pool may hold (beyond any real fleet; keeps the MILP's sizes sane).
MAX_POOL_GPUS = 1_000_000
#: Highest demand of one workload, requests per second (beyond any real service).
MAX_DEMAND_PER_S = 1e6

Mode = Literal["aggregated", "disaggregated"]
Objective = Literal["max_goodput", "min_cost", "max_goodput_per_dollar"]


@functools.lru_cache(maxsize=128)
def _hardware(name: str) -> HardwareSpec:
    return get_hardware(name)


def _custom(message: str) -> PydanticCustomError:
    return PydanticCustomError("servingcast", message)


def _duration_s(value: Any) -> float:
    """A duration with a unit (``'500 ms'``, ``'1 s'``) in seconds, > 0."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise _custom(
            f"{value!r} has no unit. To fix: write the limit with a unit, e.g. '500 ms' or '1 s'")
    if not _HAS_UNIT.search(value):
        raise _custom(f"{value!r} has no unit. To fix: write e.g. '{value.strip()} ms'")
    try:
        seconds = parse_duration(value)
    except ConfigError as exc:
        raise _custom(str(exc)) from None
    if seconds <= 0:
        raise _custom(f"a limit must be > 0, got {value!r}. To fix: e.g. '500 ms'")
    return seconds


def _bandwidth_bytes_s(value: Any) -> float | None:
    """A bandwidth with a unit (``'400 Gb/s'``, ``'50 GB/s'``) in bytes/s."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str):
        raise _custom(f"{value!r} has no unit. To fix: write e.g. '400 Gb/s' or '50 GB/s'")
    try:
        return parse_bandwidth(value, require_unit=True)
    except ConfigError as exc:
        raise _custom(str(exc)) from None


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


#: Seconds, written with a unit (``'500 ms'``); dumped back with one, so problems round-trip.
Duration = Annotated[float, BeforeValidator(_duration_s),
                     PlainSerializer(lambda s: f"{s * 1e3:.12g} ms", return_type=str)]
#: Bytes/s, written with a unit (``'400 Gb/s'``).
Bandwidth = Annotated[float | None, BeforeValidator(_bandwidth_bytes_s),
                      PlainSerializer(lambda b: None if b is None else f"{b / 1e9:.12g} GB/s",
                                      return_type=str | None)]
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

    @field_validator("tp", "pp", "ep", "max_num_seqs", "max_num_batched_tokens")
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
