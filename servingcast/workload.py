"""Workloads: arrival processes, token-length distributions, shared prefixes and trace replay.

A :class:`Workload` becomes :class:`Requests` — plain arrays, one element per request — with
:func:`generate_requests`. Every random draw comes from the ``numpy.random.Generator`` passed in,
so a seed fixes the workload.

Arrivals (``kind``), with ``rate`` in requests per second:

* ``poisson`` — exponential inter-arrival times of mean ``1/rate``.
* ``gamma`` — gamma inter-arrival times with mean ``1/rate`` and coefficient of variation ``cv``
  (shape ``1/cv^2``, scale ``cv^2/rate``): ``cv > 1`` is burstier than Poisson, ``cv = 1`` is
  Poisson, ``cv < 1`` smoother.
* ``constant`` — one request every ``1/rate`` seconds.
* ``concurrency`` — a closed loop: ``concurrency`` users each send a request, wait for its last
  token (or its rejection), think for ``think_time``, and send the next.

Lengths (``kind``): ``fixed`` (a bare whole number means the same), ``uniform`` on
``[low, high]``, ``normal`` and ``lognormal`` with the ``mean`` and ``std`` of the length,
rounded and clipped to ``[min, max]``, and ``empirical`` — drawn from ``values`` (optionally
``weights``) or from the lengths listed in a file. The planner accepts the same schema.

Shared prefixes (``prefix``), so that prefix caching has something to hit:

* ``system_prompt`` — ``num_groups`` system prompts of ``length`` tokens; each request starts with
  one of them, chosen uniformly, followed by ``input_len`` tokens of its own.
* ``sessions`` — multi-turn conversations of ``turns`` turns, ``in_flight`` sessions interleaved
  (request ``i`` is turn ``(i mod in_flight·turns) // in_flight`` of its session). Turn ``t``'s
  prompt is turn ``t-1``'s prompt and answer followed by ``input_len`` new tokens, and that
  history is its shared prefix.
* ``agentic`` — agent sessions: each session runs ``turns`` turns (a whole number or a length
  law), one after the other. Turn ``t``'s prompt is the whole history — every earlier prompt and
  answer — followed by ``input_len`` new tokens (the tool output or user message), and it is sent
  only when turn ``t-1``'s answer is complete (or rejected) plus a tool-call pause
  ``tool_time`` (a duration, or ``{kind: exponential, mean: '2 s'}``). The arrival process
  starts sessions; its ``rate`` stays the rate of *requests*: sessions start at
  ``rate / E[turns]`` (every gap of the law scaled by ``E[turns]``), which is also the long-run
  request rate of a stable system (each session brings ``E[turns]`` requests). With
  ``num_requests`` the last session is cut there; with ``duration`` every turn of the sessions
  started within it runs. ``affinity`` (default on) routes a session's later turns to the
  instance that served its previous turn (a gateway's session routing, as vLLM production-stack's
  ``--routing-logic session``), so the history is in that instance's prefix cache. The mean
  prompt of turn ``t`` (0-based) is ``t (E[in] + E[out]) + E[in]``.

A trace (``trace``) replays a CSV or JSONL file with ``arrival_time`` (s, non-decreasing),
``input_len``, ``output_len`` and optionally ``prefix_group`` and ``prefix_len``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from servingcast._workload_files import read_lengths_file, read_trace
from servingcast.errors import ConfigError
from servingcast.units import Duration

# Numbers must be finite: `.inf` and `.nan` are YAML floats, never a sensible rate or length.
_FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
#: Most requests one workload may generate (a simulation of more would not finish).
MAX_REQUESTS = 10_000_000
#: Longest prompt or output of one request, in tokens (above every model's context).
MAX_TOKENS = 10_000_000
#: Most users of a closed loop.
MAX_CONCURRENCY = 1_000_000
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def field_error(message: str, kind: str = "value_error") -> PydanticCustomError:
    """A validation error whose message is ``message``, verbatim (no "Value error, " prefix)."""
    return PydanticCustomError(kind, "{message}", {"message": message})


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context or {}
    return Path(context.get("base_dir", "."))


# -- lengths -----------------------------------------------------------------------------------


def _clip(x: FloatArray, low: int, high: int | None) -> IntArray:
    return np.clip(np.rint(x), low, high if high is not None else MAX_TOKENS).astype(np.int64)


class FixedLength(BaseModel):
    """Every request has ``value`` tokens."""

    model_config = _FROZEN
    kind: Literal["fixed"] = "fixed"
    value: int = Field(ge=1, le=MAX_TOKENS)

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` lengths."""
        return np.full(n, self.value, dtype=np.int64)


class UniformLength(BaseModel):
    """Whole numbers uniform on ``[low, high]``."""

    model_config = _FROZEN
    kind: Literal["uniform"]
    low: int = Field(ge=1, le=MAX_TOKENS)
    high: int = Field(ge=1, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _ordered(self) -> UniformLength:
        if self.high < self.low:
            raise field_error(f"high ({self.high}) must be >= low ({self.low})")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` lengths."""
        return rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)


class NormalLength(BaseModel):
    """Normal with ``mean`` and ``std``, rounded and clipped to ``[min, max]``."""

    model_config = _FROZEN
    kind: Literal["normal"]
    mean: float = Field(gt=0, le=MAX_TOKENS)
    std: float = Field(ge=0, le=MAX_TOKENS)
    min: int = Field(1, ge=1, le=MAX_TOKENS)
    max: int | None = Field(None, ge=1, le=MAX_TOKENS)

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` lengths."""
        return _clip(rng.normal(self.mean, self.std, size=n), self.min, self.max)


class LognormalLength(BaseModel):
    """Log-normal with the given ``mean`` and ``std`` of the length, clipped to ``[min, max]``.

    The underlying normal has ``sigma^2 = ln(1 + (std/mean)^2)`` and
    ``mu = ln(mean) - sigma^2 / 2`` (so the unclipped mean and std are the ones given).
    """

    model_config = _FROZEN
    kind: Literal["lognormal"]
    mean: float = Field(gt=0, le=MAX_TOKENS)
    std: float = Field(gt=0, le=MAX_TOKENS)
    min: int = Field(1, ge=1, le=MAX_TOKENS)
    max: int | None = Field(None, ge=1, le=MAX_TOKENS)

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` lengths."""
        sigma2 = math.log(1.0 + (self.std / self.mean) ** 2)
        mu = math.log(self.mean) - sigma2 / 2.0
        return _clip(rng.lognormal(mu, math.sqrt(sigma2), size=n), self.min, self.max)


class EmpiricalLength(BaseModel):
    """Lengths drawn from ``values`` (optionally ``weights``), or from the lengths in ``path``.

    ``path`` (relative to the scenario file) holds one length per line, or a CSV whose
    ``column`` (default: the first) holds them; its values are read when the model is built.
    """

    model_config = _FROZEN
    kind: Literal["empirical"]
    values: tuple[int, ...] | None = Field(None, min_length=1)
    weights: tuple[float, ...] | None = None
    path: Path | None = None
    column: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_file(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and data.get("path") is not None and data.get("values") is None:
            path = _base_dir(info) / str(data["path"])
            try:
                values = read_lengths_file(path, data.get("column"))
            except ConfigError as exc:
                raise field_error(str(exc)) from None
            data = {**data, "path": path, "values": values}
        return data

    @model_validator(mode="after")
    def _check(self) -> EmpiricalLength:
        if self.values is None:
            raise field_error("give values (a list of lengths) or path (a file of lengths)")
        if min(self.values) < 1 or max(self.values) > MAX_TOKENS:
            raise field_error(f"every value must be >= 1 and <= {MAX_TOKENS:,} tokens, got "
                              f"{min(self.values)} to {max(self.values)}")
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise field_error(f"{len(self.weights)} weights for {len(self.values)} values")
            if min(self.weights) < 0 or sum(self.weights) <= 0:
                raise field_error("weights must be >= 0 with a positive sum")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` lengths."""
        assert self.values is not None
        p = None
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            p = w / w.sum()
        return rng.choice(np.asarray(self.values, dtype=np.int64), size=n, p=p)


def _fixed_from_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return {"kind": "fixed", "value": value}
    if isinstance(value, (str, float, bool, list, tuple)):
        raise field_error(f"cannot read {value!r} as a token length. To fix: write a whole "
                          "number (512) or a distribution, e.g. {kind: lognormal, mean: 1000, "
                          "std: 800}")
    return value


#: A token-length distribution, picked by ``kind``; a bare whole number means ``fixed``.
LengthDistribution = Annotated[
    Annotated[FixedLength | UniformLength | NormalLength | LognormalLength | EmpiricalLength,
              Field(discriminator="kind")],
    BeforeValidator(_fixed_from_int),
]


# -- arrivals ----------------------------------------------------------------------------------


class PoissonArrivals(BaseModel):
    """Exponential inter-arrival times, ``rate`` requests per second."""

    model_config = _FROZEN
    kind: Literal["poisson"]
    rate: float = Field(gt=0, description="requests per second")

    def gaps(self, rng: np.random.Generator, n: int) -> FloatArray:
        """``n`` inter-arrival times (s)."""
        return rng.exponential(1.0 / self.rate, size=n)


class GammaArrivals(BaseModel):
    """Gamma inter-arrival times of mean ``1/rate`` and coefficient of variation ``cv``."""

    model_config = _FROZEN
    kind: Literal["gamma"]
    rate: float = Field(gt=0, description="requests per second")
    cv: float = Field(gt=0, description="coefficient of variation of the gaps (1 = Poisson)")

    def gaps(self, rng: np.random.Generator, n: int) -> FloatArray:
        """``n`` inter-arrival times (s)."""
        shape = 1.0 / self.cv**2
        return rng.gamma(shape, 1.0 / (self.rate * shape), size=n)


class ConstantArrivals(BaseModel):
    """One request every ``1/rate`` seconds."""

    model_config = _FROZEN
    kind: Literal["constant"]
    rate: float = Field(gt=0, description="requests per second")

    def gaps(self, rng: np.random.Generator, n: int) -> FloatArray:
        """``n`` inter-arrival times (s)."""
        return np.full(n, 1.0 / self.rate)


class ConcurrencyArrivals(BaseModel):
    """A closed loop of ``concurrency`` users, each thinking ``think_time`` between requests."""

    model_config = _FROZEN
    kind: Literal["concurrency"]
    concurrency: int = Field(ge=1, le=MAX_CONCURRENCY)
    think_time: Duration = 0.0


OpenArrivals = PoissonArrivals | GammaArrivals | ConstantArrivals
#: An arrival process, picked by ``kind``.
Arrival = Annotated[OpenArrivals | ConcurrencyArrivals, Field(discriminator="kind")]


# -- prefixes and traces -------------------------------------------------------------------------


class SystemPromptPrefix(BaseModel):
    """``num_groups`` shared system prompts of ``length`` tokens, prepended to each prompt."""

    model_config = _FROZEN
    kind: Literal["system_prompt"]
    num_groups: int = Field(ge=1)
    length: int = Field(ge=1, description="tokens of each system prompt")


class SessionPrefix(BaseModel):
    """Multi-turn sessions: each turn's prompt extends the previous turn's prompt and answer."""

    model_config = _FROZEN
    kind: Literal["sessions"]
    turns: int = Field(ge=2)
    in_flight: int = Field(1, ge=1, description="sessions whose turns are interleaved")


class FixedPause(BaseModel):
    """Every pause lasts ``value``."""

    model_config = _FROZEN
    kind: Literal["fixed"] = "fixed"
    value: Duration

    @property
    def mean_s(self) -> float:
        """Mean pause (s)."""
        return self.value

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """``n`` pauses (s)."""
        return np.full(n, self.value)


class ExponentialPause(BaseModel):
    """Exponential pauses of mean ``mean``."""

    model_config = _FROZEN
    kind: Literal["exponential"]
    mean: Duration

    @property
    def mean_s(self) -> float:
        """Mean pause (s)."""
        return self.mean

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """``n`` pauses (s)."""
        return rng.exponential(self.mean, size=n) if self.mean > 0 else np.zeros(n)


def _fixed_pause(value: Any) -> Any:
    if isinstance(value, str):
        return {"kind": "fixed", "value": value}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise field_error(f"{value!r} has no unit. To fix: write the unit, e.g. '{value} s', "
                          "or a law, e.g. {kind: exponential, mean: '2 s'}")
    return value


#: A tool-call pause: a duration (``'2 s'``) or ``{kind: exponential, mean: '2 s'}``.
Pause = Annotated[Annotated[FixedPause | ExponentialPause, Field(discriminator="kind")],
                  BeforeValidator(_fixed_pause)]


class AgenticPrefix(BaseModel):
    """Agent sessions: turns sent one after the other, each prompt the whole history so far plus
    ``input_len`` new tokens, a ``tool_time`` pause between an answer and the next turn
    (module docstring)."""

    model_config = _FROZEN
    kind: Literal["agentic"]
    turns: LengthDistribution = Field(description="turns per session (a whole number or a law)")
    tool_time: Pause = FixedPause(value="0 s")
    affinity: bool = Field(True, description="later turns go to the previous turn's instance")

    @property
    def turns_mean(self) -> float:
        """``E[turns]`` (:func:`mean_length`)."""
        return mean_length(self.turns)


Prefix = Annotated[SystemPromptPrefix | SessionPrefix | AgenticPrefix,
                   Field(discriminator="kind")]


def mean_length(dist: Any) -> float:
    """The mean of a length law: the value when fixed, else the mean of a fixed-seed sample of
    20 000 draws (the same every call; clipping makes closed forms inexact)."""
    if isinstance(dist, FixedLength):
        return float(dist.value)
    return float(np.mean(dist.sample(np.random.default_rng(0), 20_000)))


class TraceReplay(BaseModel):
    """Replay ``path`` (CSV or JSONL; relative to the scenario file); read when built.

    ``time_scale`` multiplies the arrival times (0.5 replays twice as fast); ``prefix_len`` is the
    shared prefix of rows that name a ``prefix_group`` but have no ``prefix_len`` column.
    """

    model_config = _FROZEN
    path: Path
    time_scale: float = Field(1.0, gt=0)
    prefix_len: int | None = Field(None, ge=1)
    _columns: dict[str, npt.NDArray[Any]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _read(self, info: ValidationInfo) -> TraceReplay:
        path = self.path if self.path.is_absolute() else _base_dir(info) / self.path
        try:
            self._columns.update(read_trace(path, self.prefix_len))
        except ConfigError as exc:
            raise field_error(str(exc)) from None
        return self

    @property
    def columns(self) -> dict[str, npt.NDArray[Any]]:
        """The trace as arrays: ``arrival_time``, ``input_len``, ``output_len``,
        ``prefix_group`` (-1: none) and ``prefix_len``."""
        return self._columns


# -- the workload --------------------------------------------------------------------------------


class Workload(BaseModel):
    """What the cluster is asked to serve: synthetic arrivals and lengths, or a trace."""

    model_config = _FROZEN
    num_requests: int | None = Field(None, ge=1, le=MAX_REQUESTS)
    duration: Duration | None = None
    arrival: Arrival | None = None
    input_len: LengthDistribution | None = None
    output_len: LengthDistribution | None = None
    prefix: Prefix | None = None
    trace: TraceReplay | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Workload:
        synthetic = (self.arrival, self.input_len, self.output_len)
        if self.trace is not None:
            if any(x is not None for x in (*synthetic, self.prefix)):
                raise field_error("a trace replay takes its arrivals, lengths and prefixes from "
                                 "the file. To fix: remove arrival, input_len, output_len and "
                                 "prefix, or remove trace")
            return self
        missing = [n for n, x in zip(("arrival", "input_len", "output_len"), synthetic,
                                     strict=True) if x is None]
        if missing:
            raise field_error(f"missing {', '.join(missing)}. To fix: add them, or replay a "
                             "file with trace: {path: ...}")
        closed = isinstance(self.arrival, ConcurrencyArrivals)
        if closed and isinstance(self.prefix, AgenticPrefix):
            raise field_error("agentic sessions are closed loops already (each turn waits for "
                              "the previous answer and the tool time); their arrival process "
                              "starts sessions. To fix: use an open arrival, e.g. arrival: "
                              "{kind: poisson, rate: 2}")
        if closed and self.num_requests is None:
            raise field_error("a closed loop (arrival kind concurrency) needs num_requests. "
                             "To fix: add num_requests: N")
        if not closed and (self.num_requests is None) == (self.duration is None):
            raise field_error("give exactly one of num_requests and duration (e.g. "
                             "num_requests: 1000 or duration: '10 min')")
        rate = getattr(self.arrival, "rate", None)
        if self.duration is not None and rate is not None and rate * self.duration > MAX_REQUESTS:
            raise field_error(
                f"duration {self.duration:g} s at {rate:g} req/s is about "
                f"{rate * self.duration:,.0f} requests, more than the {MAX_REQUESTS:,} a "
                "simulation takes. To fix: shorten duration or lower the rate")
        return self


@dataclass(frozen=True)
class Requests:
    """Requests as arrays. ``arrival_s`` is NaN in a closed loop (the simulator sets it) and for
    a session's later turns: request ``i`` with ``after[i] >= 0`` is sent ``pause_s[i]`` seconds
    after request ``after[i]`` (an earlier index) finishes or is rejected; with ``affinity`` it
    goes to the instance that served ``after[i]`` when that instance can take it."""

    arrival_s: FloatArray
    input_len: IntArray
    output_len: IntArray
    prefix_group: IntArray
    prefix_len: IntArray
    concurrency: int | None = None
    think_time_s: float = 0.0
    after: IntArray | None = None
    pause_s: FloatArray | None = None
    affinity: bool = False

    def __len__(self) -> int:
        return int(self.input_len.size)

    def head(self, n: int) -> Requests:
        """The first ``n`` requests."""
        return Requests(self.arrival_s[:n], self.input_len[:n], self.output_len[:n],
                        self.prefix_group[:n], self.prefix_len[:n], self.concurrency,
                        self.think_time_s, None if self.after is None else self.after[:n],
                        None if self.pause_s is None else self.pause_s[:n], self.affinity)


def _arrival_times(arrival: OpenArrivals, rng: np.random.Generator, count: int | None,
                   duration: float | None) -> FloatArray:
    if count is not None:
        times = np.cumsum(arrival.gaps(rng, count))
        return times if duration is None else times[times <= duration]
    assert duration is not None
    chunks: list[FloatArray] = []
    start, expected = 0.0, max(16, int(duration * getattr(arrival, "rate", 1.0) * 1.1) + 16)
    while True:
        times = start + np.cumsum(arrival.gaps(rng, expected))
        chunks.append(times)
        if times[-1] > duration:
            break
        start = float(times[-1])
    times = np.concatenate(chunks)
    return times[times <= duration]


def _with_prefixes(prefix: SystemPromptPrefix | SessionPrefix | None, rng: np.random.Generator,
                   inputs: IntArray, outputs: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """``(prompt lengths, prefix group, prefix length)`` (module docstring)."""
    n = inputs.size
    if prefix is None:
        return inputs, np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    if isinstance(prefix, SystemPromptPrefix):
        groups = rng.integers(0, prefix.num_groups, size=n, dtype=np.int64)
        return inputs + prefix.length, groups, np.full(n, prefix.length, dtype=np.int64)
    block = prefix.in_flight * prefix.turns
    i = np.arange(n)
    session = (i // block) * prefix.in_flight + (i % block) % prefix.in_flight
    turn = (i % block) // prefix.in_flight
    prompts = inputs.copy()
    shared = np.zeros(n, dtype=np.int64)
    previous: dict[int, int] = {}
    for k in range(n):  # turn t extends turn t-1 of the same session
        s = int(session[k])
        if turn[k] > 0 and s in previous:
            j = previous[s]
            shared[k] = prompts[j] + outputs[j]
            prompts[k] = shared[k] + inputs[k]
        previous[s] = k
    return prompts, session.astype(np.int64), shared


def _session_turns(prefix: AgenticPrefix, rng: np.random.Generator, count: int) -> IntArray:
    """Turns of sessions drawn until they hold ``count`` requests, the last one cut there."""
    turns: list[IntArray] = []
    total = 0
    batch = max(16, int(count / prefix.turns_mean) + 16)
    while total < count:
        drawn = prefix.turns.sample(rng, batch)
        turns.append(drawn)
        total += int(drawn.sum())
    out: IntArray = np.concatenate(turns)
    ends = np.cumsum(out)
    keep = int(np.searchsorted(ends, count)) + 1
    out = np.array(out[:keep], dtype=np.int64)
    out[-1] -= int(ends[keep - 1]) - count
    return out


def session_history(turns: IntArray, inputs: IntArray,
                    outputs: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """``(session, turn, history)`` of requests stored session after session, turn after turn
    (``turns[s]`` requests for session ``s``): ``history`` is every earlier prompt and answer of
    the session, ``Σ_{j<t} (in_j + out_j)`` for turn ``t`` (a turn's prompt is its history plus
    its own ``in``)."""
    session = np.repeat(np.arange(turns.size, dtype=np.int64), turns)
    first = np.cumsum(turns) - turns
    turn = np.arange(session.size, dtype=np.int64) - np.repeat(first, turns)
    step = inputs + outputs
    before = np.cumsum(step) - step  # exclusive running sum over every request
    history = before - np.repeat(before[first], turns) if session.size else before
    return session, turn, history.astype(np.int64)


def _agentic(workload: Workload, arrival: OpenArrivals, prefix: AgenticPrefix,
             rng: np.random.Generator) -> Requests:
    """The requests of agent sessions (module docstring)."""
    assert workload.input_len is not None and workload.output_len is not None
    # Sessions start at rate / E[turns]: every inter-arrival law here scales with 1 / rate.
    starts_law = arrival.model_copy(update={"rate": arrival.rate / prefix.turns_mean})
    if workload.num_requests is not None:
        turns = _session_turns(prefix, rng, workload.num_requests)
        starts = _arrival_times(starts_law, rng, turns.size, None)
    else:
        starts = _arrival_times(starts_law, rng, None, workload.duration)
        turns = prefix.turns.sample(rng, starts.size)
        if int(turns.sum()) > MAX_REQUESTS:
            raise ConfigError(f"the sessions started within the duration hold {turns.sum():,} "
                              f"requests, more than the {MAX_REQUESTS:,} a simulation takes. "
                              "To fix: shorten duration, lower the rate or the turns")
    n = int(turns.sum())
    inputs = workload.input_len.sample(rng, n)
    outputs = workload.output_len.sample(rng, n)
    pauses = prefix.tool_time.sample(rng, n)
    session, turn, history = session_history(turns, inputs, outputs)
    later = turn > 0
    arrival_s = np.where(later, np.nan, np.repeat(starts, turns))
    after = np.where(later, np.arange(n, dtype=np.int64) - 1, -1)
    return Requests(arrival_s, history + inputs, outputs, session, history,
                    after=after, pause_s=np.where(later, pauses, 0.0),
                    affinity=prefix.affinity)


def prompt_samples(prefix: SystemPromptPrefix | SessionPrefix | AgenticPrefix | None,
                   input_len: Any, output_len: Any, rng: np.random.Generator,
                   n: int) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """``(prompt, shared prefix, previous answer, output)`` tokens of ``n`` requests drawn as
    :func:`generate_requests` draws them (sessions run whole, one after the other; the previous
    answer is 0 on a session's first turn and without sessions)."""
    inputs = input_len.sample(rng, n)
    outputs = output_len.sample(rng, n)
    if isinstance(prefix, AgenticPrefix):
        turns = _session_turns(prefix, rng, n)
        _, turn, history = session_history(turns, inputs, outputs)
        previous = np.where(turn > 0, np.roll(outputs, 1), 0)
        return history + inputs, history, previous, outputs
    if isinstance(prefix, SessionPrefix):
        prefix = prefix.model_copy(update={"in_flight": 1})
    prompts, _, shared = _with_prefixes(prefix, rng, inputs, outputs)
    previous = np.zeros(n, dtype=np.int64)
    if isinstance(prefix, SessionPrefix):
        previous = np.where(shared > 0, np.roll(outputs, 1), 0)
    return prompts, shared, previous, outputs


def expected_cached_prefix_tokens(prefix: SystemPromptPrefix | SessionPrefix | AgenticPrefix
                                  | None, input_len_mean: float, output_len_mean: float,
                                  block_size: int = 1) -> float:
    """The mean prompt tokens per request a prefix cache serves, the cache being warm (a system
    prompt's blocks resident; a session's history on the instance that serves its next turn).

    Engines reuse whole blocks of ``block_size`` tokens (vLLM, SGLang's radix tree with page
    size 1: ``block_size = 1``); a prefix of ``h`` tokens serves ``b ⌊h / b⌋``, on average
    ``h - (b - 1) / 2`` when ``h`` is spread evenly modulo ``b`` (the ``- (b-1)/2`` is that
    approximation; with ``b = 1`` the result is exact). With ``I = input_len_mean``,
    ``O = output_len_mean``:

    * ``system_prompt`` of ``length`` ``S``: every request reads its group's prompt, ``b ⌊S/b⌋``
      (exact: ``S`` is fixed).
    * ``sessions`` / ``agentic``: turn ``t`` (0-based) of a session has history
      ``H_t = t (I + O)`` in mean (every earlier prompt's new tokens and answer; the earlier
      history is itself inside the previous prompt). Over the requests, a session of ``T`` turns
      contributes turns ``0 … T-1``, so a request is turn ``t`` with weight ``P(T > t) / E[T]``
      and ``E[t] = E[T (T - 1) / 2] / E[T] = (E[T²] - E[T]) / (2 E[T])``: the cache serves
      ``(I + O) E[t]``, less ``(b - 1) / 2`` on each turn after the first (fraction
      ``(E[T] - 1) / E[T]`` of the requests). ``sessions`` has ``T`` fixed: ``E[t] = (T-1)/2``.

    ``E[T]``, ``E[T²]`` of a turns law come from the same fixed-seed sample as
    :func:`mean_length`. Without a prefix: 0.
    """
    if prefix is None:
        return 0.0
    if isinstance(prefix, SystemPromptPrefix):
        return float(prefix.length // block_size * block_size)
    if isinstance(prefix, SessionPrefix):
        t1, t2 = float(prefix.turns), float(prefix.turns) ** 2
    else:
        if isinstance(prefix.turns, FixedLength):
            t1 = float(prefix.turns.value)
            t2 = t1 * t1
        else:
            draws = prefix.turns.sample(np.random.default_rng(0), 20_000).astype(np.float64)
            t1, t2 = float(draws.mean()), float((draws**2).mean())
    mean_turn = (t2 - t1) / (2.0 * t1)
    later = (t1 - 1.0) / t1
    return max(0.0, (input_len_mean + output_len_mean) * mean_turn
               - later * (block_size - 1) / 2.0)


def generate_requests(workload: Workload, rng: np.random.Generator) -> Requests:
    """Draw the requests of ``workload`` (arrival times sorted, lengths >= 1)."""
    if workload.trace is not None:
        cols = workload.trace.columns
        arrivals = cols["arrival_time"] * workload.trace.time_scale
        keep = np.ones(arrivals.size, dtype=bool)
        if workload.duration is not None:
            keep &= arrivals <= workload.duration
        if workload.num_requests is not None:
            keep &= np.arange(arrivals.size) < workload.num_requests
        return Requests(arrivals[keep].astype(np.float64), cols["input_len"][keep],
                        cols["output_len"][keep], cols["prefix_group"][keep],
                        cols["prefix_len"][keep])
    assert workload.arrival is not None and workload.input_len is not None
    assert workload.output_len is not None
    arrival = workload.arrival
    if isinstance(workload.prefix, AgenticPrefix):
        assert not isinstance(arrival, ConcurrencyArrivals)
        return _agentic(workload, arrival, workload.prefix, rng)
    if isinstance(arrival, ConcurrencyArrivals):
        assert workload.num_requests is not None
        times = np.full(workload.num_requests, np.nan)
    else:
        times = _arrival_times(arrival, rng, workload.num_requests, workload.duration)
    n = times.size
    inputs = workload.input_len.sample(rng, n)
    outputs = workload.output_len.sample(rng, n)
    prompts, groups, shared = _with_prefixes(workload.prefix, rng, inputs, outputs)
    if isinstance(arrival, ConcurrencyArrivals):
        return Requests(times, prompts, outputs, groups, shared,
                        concurrency=arrival.concurrency, think_time_s=arrival.think_time)
    return Requests(times, prompts, outputs, groups, shared)


__all__ = [
    "AgenticPrefix",
    "Arrival",
    "ConcurrencyArrivals",
    "ConstantArrivals",
    "Duration",
    "EmpiricalLength",
    "FixedLength",
    "GammaArrivals",
    "LengthDistribution",
    "LognormalLength",
    "NormalLength",
    "PoissonArrivals",
    "Prefix",
    "Requests",
    "SessionPrefix",
    "SystemPromptPrefix",
    "TraceReplay",
    "UniformLength",
    "Workload",
    "expected_cached_prefix_tokens",
    "generate_requests",
    "mean_length",
    "prompt_samples",
]
