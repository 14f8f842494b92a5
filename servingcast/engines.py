"""Serving-engine profiles: ``engine: vllm | sglang | trtllm``, as data.

The engine an instance group runs changes how it admits requests, what it does when the KV
cache runs out, and its defaults. This module holds what the simulator and the planner share:
the engine configs (picked by ``kind``; a plain string such as ``engine: trtllm`` means its
defaults), each engine's defaults for the instance-group fields a user leaves unset, and the KV
tokens an engine holds or reserves for a running request. The simulator's policies are in
:mod:`servingcast.sim.engines`.

==========================  ==============  ======================  ===========================
engine                      ``vllm``        ``sglang``              ``trtllm``
==========================  ==============  ======================  ===========================
admits a request when       its prompt's    prompt + output, and    prompt + output blocks fit
                            blocks fit      the running requests'   beside the running ones'
                                            remaining output x      (``guaranteed_no_evict``)
                                            ``new_token_ratio``,
                                            fit
out of KV blocks            recompute the   retract the decode      never happens
                            newest request  with the fewest output  (``max_utilization``: pause
                                            tokens, to the back of  the newest, as vLLM)
                                            the queue
prefill and decode          one iteration   separate: prefill       one iteration
                                            first
``max_num_seqs``            256             2048                    2048
``max_num_batched_tokens``  8192            by GPU memory: 2048,    8192
                                            4096, 8192 or 16384
``enable_chunked_prefill``  true            true                    false
``block_size``              16              1                       32
==========================  ==============  ======================  ===========================

Sources (read 2025-2026):

* **vLLM** V1 scheduler (``vllm/v1/core/sched/scheduler.py``): running requests are scheduled
  first; when ``allocate_slots`` fails, ``preempted_req = self.running.pop()`` (the newest, under
  the default FCFS policy) is freed with ``num_computed_tokens = 0`` and prepended to the
  waiting queue — recompute preemption. Waiting requests are admitted while their (first
  chunk's) blocks fit. Chunked prefill is on by default. Defaults
  (``vllm/engine/arg_utils.py``, ``get_batch_defaults``): the API server's
  ``max_num_batched_tokens`` is 8192 on GPUs with >= 70 GiB (not A100), 2048 otherwise, and
  ``max_num_seqs`` 1024 there in recent releases, 256 otherwise. servingcast keeps 256 and 8192
  (its defaults before engine profiles); set them on a group to match a release.
* **SGLang** (``python/sglang/srt/managers/schedule_policy.py``, ``PrefillAdder``;
  ``scheduler_components/new_token_ratio_tracker.py``; ``schedule_batch.py``,
  ``retract_decode``; ``server_args.py``): a request is admitted when its prompt plus its
  ``max_new_tokens`` (clipped at ``SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION`` = 4096) fit in the
  free and evictable tokens less ``new_token_ratio`` times the running requests' remaining
  output. ``new_token_ratio`` starts at ``0.7 * schedule_conservativeness``, falls by
  ``(init - min) / 600`` per decode iteration down to ``min = 0.14 * init``, jumps to
  ``min(1, (decoded + 20 n) / (sum of max_new_tokens + 1))`` over the ``n`` survivors after a
  retraction, and resets on idle. When a decode step does not fit, the decode with the fewest
  output tokens (ties: the longest prompt) is retracted until it does, and re-queued at the
  back. A prefill batch runs before the decodes (``enable_mixed_chunk`` is off by default; with
  it, a chunk rides with the decodes and they count against its budget, as in vLLM).
  ``chunked_prefill_size`` is 2048 below 35 GiB of GPU memory, 4096 below 60, 8192 below 160,
  16384 above; ``max_running_requests`` is clamped to [2048, 4096] (2048 here); ``page_size``
  is 1.
* **TensorRT-LLM** (``cpp/tensorrt_llm/batch_manager/capacityScheduler.cpp``;
  ``tensorrt_llm/llmapi/llm_args.py``): the default capacity scheduler ``GUARANTEED_NO_EVICT``
  keeps the blocks every running request needs to completion reserved and admits a waiting
  request, in order, only while its blocks to completion (prompt + ``max_tokens``) fit in what
  is left; a started request is never paused. ``MAX_UTILIZATION`` schedules requests while
  their next step fits and pauses (frees) the last started one when not. The batch mixes
  context and generation requests within ``max_num_tokens``. Defaults: ``max_batch_size`` 2048,
  ``max_num_tokens`` 8192, ``enable_chunked_prefill`` false, ``tokens_per_block`` 32.

The simulator knows each request's true output length; real engines reserve ``max_tokens``,
which the output length stands for: serving benchmarks (``vllm bench serve``, ``genai-perf``,
``sglang.bench_serving``) set ``max_tokens`` to the output length with ``ignore_eos``.

**Efficiency.** No engine changes the hardware factors (``efficiency``, ``overheads``): we found
no published per-engine kernel or overhead factor that holds across models and devices, so the
engine selects the scheduling policy and defaults only. Per-engine efficiency comes from
``servingcast calibrate --engine ENGINE``, which fits a device's factors to your own benchmark
results of that engine and records the engine in the file. Memory follows vLLM's
``gpu_memory_utilization`` rule for every engine (TensorRT-LLM gives the KV cache
``free_gpu_memory_fraction`` = 0.9 of the memory left after weights and activations; set
``gpu_memory_utilization`` to match).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

_FROZEN = ConfigDict(extra="forbid", frozen=True)

#: The engines servingcast models.
ENGINES = ("vllm", "sglang", "trtllm")

#: SGLang's new-token-ratio constants (``python/sglang/srt/environ.py``).
SGLANG_INIT_NEW_TOKEN_RATIO = 0.7
SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR = 0.14
SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS = 600
SGLANG_RETRACT_DECODE_STEPS = 20
SGLANG_CLIP_MAX_NEW_TOKENS = 4096

#: SGLang's ``chunked_prefill_size`` by GPU memory (``server_args.py``): (below GiB, tokens).
SGLANG_CHUNK_BY_MEMORY = ((35.0, 2048), (60.0, 4096), (160.0, 8192))
SGLANG_CHUNK_LARGEST = 16384


def _error(message: str) -> PydanticCustomError:
    return PydanticCustomError("value_error", "{message}", {"message": message})


class VllmEngine(BaseModel):
    """vLLM's V1 scheduler (module docstring)."""

    model_config = _FROZEN
    kind: Literal["vllm"] = "vllm"

    def defaults(self, hbm_gib: float | None = None) -> dict[str, Any]:
        """Instance-group fields this engine sets when a group leaves them unset."""
        return {"max_num_seqs": 256, "max_num_batched_tokens": 8192,
                "enable_chunked_prefill": True, "block_size": 16}

    @property
    def label(self) -> str:
        """Short name for reports."""
        return self.kind


class SglangEngine(BaseModel):
    """SGLang's scheduler with its new-token-ratio admission (module docstring)."""

    model_config = _FROZEN
    kind: Literal["sglang"] = "sglang"
    schedule_conservativeness: float = Field(
        1.0, gt=0, le=10, allow_inf_nan=False,
        description="SGLang's --schedule-conservativeness: scales the initial new_token_ratio")
    enable_mixed_chunk: bool = Field(
        False, description="SGLang's --enable-mixed-chunk: a prefill chunk shares its iteration "
        "with the running decodes (and counts them against the chunk budget), as vLLM's; off by "
        "default: prefill iterations run first, alone")

    def defaults(self, hbm_gib: float | None = None) -> dict[str, Any]:
        """Instance-group fields this engine sets when a group leaves them unset;
        ``hbm_gib`` (GPU memory) picks the chunk size (4096 when unknown, as SGLang)."""
        chunk = 4096
        if hbm_gib is not None:
            chunk = next((c for below, c in SGLANG_CHUNK_BY_MEMORY if hbm_gib < below),
                         SGLANG_CHUNK_LARGEST)
        return {"max_num_seqs": 2048, "max_num_batched_tokens": chunk,
                "enable_chunked_prefill": True, "block_size": 1}

    @property
    def init_ratio(self) -> float:
        """``new_token_ratio`` at start and after idle: ``min(0.7 c, 1)``."""
        return min(SGLANG_INIT_NEW_TOKEN_RATIO * self.schedule_conservativeness, 1.0)

    @property
    def min_ratio(self) -> float:
        """The floor ``new_token_ratio`` decays to: ``min(0.14 init, 1)``."""
        return min(self.init_ratio * SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR, 1.0)

    @property
    def ratio_decay(self) -> float:
        """Decrease of ``new_token_ratio`` per decode iteration: ``(init - min) / 600``."""
        return (self.init_ratio - self.min_ratio) / SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS

    @property
    def label(self) -> str:
        """Short name for reports."""
        return "sglang (mixed chunk)" if self.enable_mixed_chunk else self.kind


class TrtllmEngine(BaseModel):
    """TensorRT-LLM's in-flight batching with its capacity scheduler (module docstring)."""

    model_config = _FROZEN
    kind: Literal["trtllm"] = "trtllm"
    capacity_scheduler: Literal["guaranteed_no_evict", "max_utilization"] = Field(
        "guaranteed_no_evict", description="CapacitySchedulerPolicy")

    def defaults(self, hbm_gib: float | None = None) -> dict[str, Any]:
        """Instance-group fields this engine sets when a group leaves them unset."""
        return {"max_num_seqs": 2048, "max_num_batched_tokens": 8192,
                "enable_chunked_prefill": False, "block_size": 32}

    @property
    def label(self) -> str:
        """Short name for reports."""
        return ("trtllm" if self.capacity_scheduler == "guaranteed_no_evict"
                else f"trtllm ({self.capacity_scheduler})")


Engine = VllmEngine | SglangEngine | TrtllmEngine


def _shorthand(value: Any) -> Any:
    """``'trtllm'`` → ``{kind: trtllm}``; an unknown engine name is refused with the known
    ones."""
    kind = value
    if isinstance(value, dict):
        kind = value.get("kind")
        if kind is None:
            raise _error(f"an engine mapping needs kind:, one of {', '.join(ENGINES)}. To fix: "
                         "e.g. engine: {kind: trtllm, capacity_scheduler: max_utilization}")
    elif isinstance(value, BaseModel):
        return value
    if not isinstance(kind, str) or kind not in ENGINES:
        raise _error(f"unknown engine {kind!r}; servingcast models {', '.join(ENGINES)}. To "
                     "fix: use one of those (e.g. engine: sglang)")
    return {"kind": kind} if isinstance(value, str) else value


#: An engine, written ``engine: sglang`` or ``engine: {kind: trtllm, capacity_scheduler: ...}``.
EngineConfig = Annotated[Engine, Field(discriminator="kind"), BeforeValidator(_shorthand)]


def parse_engine(value: Any) -> Engine:
    """An engine from its YAML form (raises pydantic's ``ValidationError`` if invalid)."""
    from pydantic import TypeAdapter

    return TypeAdapter(EngineConfig).validate_python(value)


def reserved_kv_tokens(engine: Engine, prompt_tokens: float, output_tokens: float,
                       generated_tokens: float = 0.0,
                       new_token_ratio: float | None = None) -> float:
    """KV tokens ``engine`` holds or sets aside for one running request that has generated
    ``generated_tokens`` of its ``output_tokens``, after a prompt of ``prompt_tokens``.

    With ``L`` the prompt, ``O`` the output, ``g`` the tokens generated so far::

        vllm, trtllm max_utilization:   L + g                    (what the cache holds)
        trtllm guaranteed_no_evict:     L + O                    (reserved at admission)
        sglang:                         L + g + r · min(O - g, 4096)

    ``r`` is SGLang's ``new_token_ratio`` (default: its floor, ``min_ratio``, where it settles
    under steady load without retractions). Sources in the module docstring.
    """
    held = prompt_tokens + generated_tokens
    if isinstance(engine, TrtllmEngine):
        if engine.capacity_scheduler == "guaranteed_no_evict":
            return prompt_tokens + output_tokens
        return held
    if isinstance(engine, SglangEngine):
        ratio = engine.min_ratio if new_token_ratio is None else new_token_ratio
        remaining = min(max(output_tokens - generated_tokens, 0.0), SGLANG_CLIP_MAX_NEW_TOKENS)
        return held + ratio * remaining
    return held


def mean_reserved_kv_tokens(engine: Engine, input_mean: float, output_mean: float,
                            output_sq_mean: float | None = None) -> float:
    """Time-average KV tokens per running request (held or reserved): what the planner divides
    the KV capacity by to get the batch an instance holds.

    A running request is seen in proportion to its decode time, so with prompts ``L`` and
    outputs ``O`` independent, the decoding requests' mean context is
    ``C = E[L] + E[O²] / (2 E[O])`` (``E[O²] = E[O]²`` when not given). Per engine
    (:func:`reserved_kv_tokens` averaged over a request's decode)::

        vllm, trtllm max_utilization:   C
        trtllm guaranteed_no_evict:     E[L] + E[O²] / E[O]      (L + O for fixed lengths)
        sglang:                         C + r_min E[O²] / (2 E[O])

    TensorRT-LLM's reservation is the whole ``L + O`` for the request's whole life: its batch
    is ``capacity / (E[L] + E[O²]/E[O])``, against ``capacity / C`` for vLLM — for ``L = 1000``
    and ``O = 250``, 1250 against 1125 tokens a request, 10 % fewer requests in the cache.
    """
    sq = output_mean**2 if output_sq_mean is None else output_sq_mean
    tail = sq / output_mean if output_mean > 0 else 0.0
    if isinstance(engine, TrtllmEngine) and engine.capacity_scheduler == "guaranteed_no_evict":
        return input_mean + tail
    context = input_mean + tail / 2.0
    if isinstance(engine, SglangEngine):
        return context + engine.min_ratio * tail / 2.0
    return context
