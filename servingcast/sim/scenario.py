"""The scenario file: the model, the instance groups, routing, network, workload and SLOs.

Every model is frozen and forbids unknown keys; :func:`load_scenario` reads the YAML, validates
it, checks what pydantic cannot (names exist, the model fits each group's hardware, roles make a
cluster) and reports each problem as ``file:line: field: message. To fix: ...``.

Example (``configs/scenarios/single-instance.yaml``)::

    model: llama-3.1-8b
    instance_groups:
      - {name: main, count: 1, hardware: h100-sxm, max_num_seqs: 128}   # engine: vllm
    workload:
      num_requests: 500
      arrival: {kind: poisson, rate: 4}
      input_len: {kind: lognormal, mean: 1000, std: 800, max: 8000}
      output_len: {kind: lognormal, mean: 250, std: 200, max: 2000}
    slo: {ttft: 1 s, tpot: 50 ms, attainment: 0.9}
    seed: 0
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from servingcast._yaml import format_validation_error, read_yaml
from servingcast.engines import EngineConfig, VllmEngine, parse_engine
from servingcast.errors import ConfigError
from servingcast.groups import SingleRankOmitted
from servingcast.sim.routers import LeastOutstandingRouter, RouterConfig
from servingcast.specs.catalog import get_hardware, get_model
from servingcast.specs.precision import get_precision
from servingcast.units import Bandwidth, Duration
from servingcast.workload import Workload, field_error

_FROZEN = ConfigDict(extra="forbid", frozen=True)
#: Most instances one scenario may hold, over all groups (each is simulated one by one).
MAX_INSTANCES = 10_000


class Speculative(BaseModel):
    """Speculative decoding with ``draft_model`` (Leviathan et al. 2023), a catalog model or
    ``mtp``: the target's own multi-token-prediction layer (DeepSeek-V3)."""

    model_config = _FROZEN
    draft_model: str
    acceptance_rate: float = Field(ge=0, le=1, description="per-token acceptance rate")
    num_speculative_tokens: int = Field(4, ge=1, description="draft tokens per step (k)")

    @field_validator("draft_model")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        if value == "mtp":  # the target's own multi-token-prediction layer (costmodel.spec)
            return value
        return _resolve_model(value, info)


class InstanceGroup(SingleRankOmitted):
    """``count`` identical engines (data-parallel replicas) and their limits.

    ``engine`` (default ``vllm``; :mod:`servingcast.engines`) picks the scheduling policy and the
    defaults of ``max_num_seqs``, ``max_num_batched_tokens``, ``enable_chunked_prefill`` and
    ``block_size``: a field the group leaves unset takes its engine's default (the defaults
    below are vLLM's), a field it sets wins.
    """

    model_config = _FROZEN
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    count: int = Field(1, ge=1)
    hardware: str
    engine: EngineConfig = Field(
        VllmEngine(), description="vllm, sglang or trtllm, or {kind: trtllm, "
        "capacity_scheduler: max_utilization} / {kind: sglang, schedule_conservativeness: 1.3}")
    role: Literal["aggregated", "prefill", "decode"] = "aggregated"
    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    ep: int = Field(1, ge=1)
    max_num_seqs: int = Field(256, ge=1)
    max_num_batched_tokens: int = Field(8192, ge=1, description="token budget per iteration "
                                        "(the chunk budget with chunked prefill)")
    attn_dp: int = Field(
        1, ge=1, description="attention data-parallel ranks per engine, experts expert-parallel "
        "over all attn_dp x tp GPUs (MoE models; SGLang --enable-dp-attention, vLLM "
        "--data-parallel-size with --enable-expert-parallel); max_num_seqs and "
        "max_num_batched_tokens are then per rank, as each rank runs its own scheduler")
    enable_chunked_prefill: bool = True
    block_size: int = Field(16, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    enable_prefix_caching: bool = False
    speculative: Speculative | None = Field(
        None, description="this group's speculative decoding (default: the scenario's)")
    max_model_len: int | None = Field(None, ge=1, description="default: the model's context")
    weight: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="share of its role's traffic this group receives (a gateway's weighted "
        "split, like Kubernetes HTTPRoute backendRefs weights): arrivals (aggregated or prefill "
        "groups) or hand-offs (decode groups) go to a group by smooth weighted round-robin over "
        "the groups that can serve the request, then the router picks an instance within it; "
        "set it on every group of a role or on none (default: the router chooses among all "
        "instances)")
    network_bandwidth: Bandwidth | None = Field(
        None, description="each instance's KV-transfer link, each way, e.g. '400 GB/s' for 8 "
        "GPUs of 400 Gb/s (default: network.bandwidth); a transfer runs at the slower end's")

    @model_validator(mode="before")
    @classmethod
    def _engine_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        """Fill the fields the group leaves unset with its engine's defaults."""
        if not isinstance(data, dict):
            return data
        try:
            engine = parse_engine(data.get("engine", "vllm"))
        except (ValidationError, ValueError):
            return data  # the engine field reports it
        hbm_gib = None
        hardware = data.get("hardware")
        if isinstance(hardware, str):
            with contextlib.suppress(ConfigError):  # the hardware field reports it
                hbm_gib = get_hardware(_relative(hardware, info)).hbm_gib
        defaults = engine.defaults(hbm_gib)
        missing = {k: v for k, v in defaults.items() if data.get(k) is None}
        return {**data, **missing} if missing else data

    @field_validator("hardware")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        value = _relative(value, info)
        _lookup(get_hardware, value)
        return value

    @property
    def engine_max_num_seqs(self) -> int:
        """Sequences one engine runs at once: ``max_num_seqs`` on each of ``attn_dp`` ranks."""
        return self.max_num_seqs * self.attn_dp

    @property
    def engine_max_num_batched_tokens(self) -> int:
        """Tokens of one engine iteration: the per-rank budget on each of ``attn_dp`` ranks."""
        return self.max_num_batched_tokens * self.attn_dp

    @model_validator(mode="after")
    def _budget(self) -> InstanceGroup:
        # SGLang's chunk budget counts prefill tokens only; vLLM requires the rule, and
        # TensorRT-LLM counts every decode against max_num_tokens too.
        if self.engine.kind != "sglang" and self.max_num_batched_tokens < self.max_num_seqs:
            engine = "vLLM requires" if self.engine.kind == "vllm" else (
                "TensorRT-LLM counts each decode against max_num_tokens")
            raise field_error(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs}), as {engine}. To fix: raise max_num_batched_tokens "
                "or lower max_num_seqs")
        return self


class Network(BaseModel):
    """The prefill→decode KV-transfer links: one per instance, each way (transfers queue)."""

    model_config = _FROZEN
    bandwidth: Bandwidth
    latency: Duration = 0.0


class SLO(BaseModel):
    """Latency limits and the fraction of requests that must meet all of them."""

    model_config = _FROZEN
    ttft: Duration | None = None
    tpot: Duration | None = None
    attainment: float = Field(0.9, gt=0, le=1)


class Scenario(BaseModel):
    """A deployment to simulate."""

    model_config = _FROZEN
    model: str = Field(description="catalog name, or a path to a config.json")
    precision: str = "fp16"
    kv_cache_dtype: str | None = None
    efficiency: float | Literal["calibrated"] = "calibrated"
    speculative: Speculative | None = None
    engine: EngineConfig | None = Field(
        None, description="the engine of every group that names none (default: vllm)")
    instance_groups: list[InstanceGroup] = Field(min_length=1)
    router: RouterConfig = LeastOutstandingRouter(kind="least_outstanding")
    decode_router: RouterConfig | None = None
    network: Network | None = None
    workload: Workload
    slo: SLO = SLO()
    seed: int = Field(0, ge=0, description="seeds the workload's random draws (>= 0)")

    @model_validator(mode="before")
    @classmethod
    def _default_engine(cls, data: Any) -> Any:
        """The scenario's ``engine`` goes to every group that names none."""
        if not isinstance(data, dict) or data.get("engine") is None:
            return data
        groups = data.get("instance_groups")
        if not isinstance(groups, list):
            return data
        engine = data["engine"]
        try:
            parse_engine(engine)
        except ValidationError:
            return data  # the scenario's engine field reports it, once
        return {**data, "instance_groups": [
            {**g, "engine": engine} if isinstance(g, dict) and "engine" not in g else g
            for g in groups]}

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str, info: ValidationInfo) -> str:
        return _resolve_model(value, info)

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        _lookup(get_precision, value)
        return value

    @field_validator("efficiency")
    @classmethod
    def _efficiency(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise field_error(f"must be in (0, 1] or 'calibrated', got {value}. To fix: e.g. "
                              "0.5, or 'calibrated' for the device's measured factors")
        return value

    @field_validator("instance_groups")
    @classmethod
    def _instances_limit(cls, groups: list[InstanceGroup]) -> list[InstanceGroup]:
        total = sum(g.count for g in groups)
        if total > MAX_INSTANCES:
            counts = ", ".join(f"{g.name} count {g.count:,}" for g in groups)
            raise field_error(
                f"{total:,} instances ({counts}), more than the {MAX_INSTANCES:,} a scenario may "
                "simulate. To fix: lower count (simulate a slice of the cluster with its share "
                "of the traffic)")
        return groups

    @model_validator(mode="after")
    def _names_unique(self) -> Scenario:
        names = [g.name for g in self.instance_groups]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise field_error(f"instance group names must be unique; repeated: "
                             f"{', '.join(repeated)}")
        return self

    @property
    def disaggregated(self) -> bool:
        """Whether prefill and decode run on separate groups."""
        return any(g.role != "aggregated" for g in self.instance_groups)


def _relative(value: str, info: ValidationInfo) -> str:
    """``value`` as a path relative to the scenario's folder, when it names a file there."""
    base = (info.context or {}).get("base_dir")
    if base is not None and ("/" in value or value.endswith((".json", ".yaml", ".yml"))):
        candidate = Path(base) / value
        if candidate.exists():
            return str(candidate)
    return value


def _lookup(find: Callable[[str], object], value: str) -> None:
    try:
        find(value)
    except ConfigError as exc:
        raise field_error(str(exc)) from None


def _resolve_model(value: str, info: ValidationInfo) -> str:
    value = _relative(value, info)
    _lookup(get_model, value)
    return value


def scenario_from_dict(data: dict[str, Any], base_dir: Path | None = None,
                       source: str = "scenario",
                       lines: dict[tuple[Any, ...], int] | None = None) -> Scenario:
    """Validate ``data`` (paths relative to ``base_dir``) and check the cluster it describes.

    Errors become one :class:`ConfigError` listing ``source:line: field: message`` per problem.
    """
    from servingcast.sim.cluster import check_cluster

    context = {"base_dir": str(base_dir)} if base_dir is not None else None
    try:
        scenario = Scenario.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, lines)) from None
    except ConfigError as exc:  # raised by a catalog lookup inside a validator
        raise ConfigError(f"{source}: {exc}") from None
    problems = check_cluster(scenario)
    if problems:
        out = []
        for loc, message in problems:
            line = None
            for cut in range(len(loc), -1, -1):
                line = (lines or {}).get(tuple(loc[:cut]))
                if line is not None:
                    break
            where = f"{source}:{line}" if line is not None else source
            out.append(f"{where}: {'.'.join(str(p) for p in loc)}: {message}")
        raise ConfigError("\n".join(out))
    return scenario


def load_scenario(path: str | Path, seed: int | None = None) -> Scenario:
    """Read, validate and check a scenario file (``seed`` overrides the file's)."""
    path = Path(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level (model, "
                          "instance_groups, workload, ...)")
    if seed is not None:
        data = {**data, "seed": seed}
    return scenario_from_dict(data, path.resolve().parent, str(path), lines)
