"""The simulator's engine policies: admission, preemption and iteration shape per engine.

Each policy is a short class, built per instance from its group's engine config
(:mod:`servingcast.engines`, which cites the engines' sources), that holds the instance's
policy state and returns decisions as data. The instance (:mod:`servingcast.sim.instance`)
asks it:

* ``mixed`` — whether prefill chunks share iterations with the decodes (vLLM with chunked
  prefill, TensorRT-LLM, SGLang with ``enable_mixed_chunk``); otherwise an iteration prefills
  whatever prompts it can admit or continue, before and without the decodes (vLLM without
  chunked prefill, SGLang by default).
* ``admits(inst, req, take)`` — whether ``req`` may start now with a chunk of ``take`` tokens,
  beyond its blocks fitting (which the instance checks); when it may, the policy records what it
  reserves for it. An engine with nothing running admits any request whose blocks fit (the
  simulator rejects at arrival what no instance could ever hold), so no rule can stall it.
  ``release(req)`` — ``req`` left the running set.
* ``victim(inst)`` — the running request to preempt when blocks run out; ``to_front``: whether
  it re-queues first (vLLM) or last (SGLang).
* ``decoded(steps)``, ``retracted(inst)``, ``idle()`` — state updates (SGLang's
  ``new_token_ratio``).
* ``run_limit(inst, free_blocks)`` — how many decode-only iterations may run as one before a
  waiting request might become admissible with no request finishing (only SGLang's decaying
  ratio does that); the instance re-checks admission at the end of the run. The instance asks
  ``decoded``, ``idle`` and ``run_limit`` only of ``adaptive`` policies (their admission rule
  changes while decodes run), and ``admits`` and ``release`` only of ``gates`` policies (they
  have an admission rule beyond the blocks), to keep vLLM's iterations cheap.

Policies (sources in :mod:`servingcast.engines`):

* :class:`VllmPolicy` — admission when the prompt's (or first chunk's) blocks fit; the newest
  running request is preempted and recomputed from the front of the queue. Without chunked
  prefill (vLLM V0) 1 % of the blocks stay free at admission (V0's watermark). TensorRT-LLM's
  ``max_utilization`` capacity scheduler is the same rule (schedule while the next step fits,
  pause the last started request), with mixed iterations and no watermark.
* :class:`NoEvictPolicy` — TensorRT-LLM ``guaranteed_no_evict``: each running request keeps its
  blocks to completion, ``B_i = ceil((target_i + remaining output_i + q - 1) / block)``
  (``q - 1`` speculative slots), reserved: a request is admitted only if
  ``sum_running B + B_new <= total blocks``. Held blocks never exceed a request's reservation, so
  a decode step always fits and nothing is ever preempted. A prefill instance reserves the
  prompt only.
* :class:`SglangPolicy` — admission when, in tokens (``free`` = free and evictable blocks x
  block size, ``r`` = ``new_token_ratio``, ``D`` the decoding requests, ``P`` the prefilling
  ones, ``c(x) = min(x, 4096)``)::

      take + c(O_new - g_new) < free - r sum_D (O_d - g_d) - sum_P c(O_p - g_p)

  (SGLang charges a request admitted in the current pass its whole ``max_new_tokens``, and the
  running ones ``r`` times their remaining output; the 4096 clip is applied to the requests
  being admitted, not to the decoding ones' sum.) ``r`` decays by ``(init - min) / 600`` per
  decode iteration to ``min``, is set to ``min(1, (sum g + 20 n) / (sum O + 1))`` over the
  ``n`` surviving decodes after a retraction, and resets to ``init`` when the instance idles.
  When a decode step does not fit, the decode with the fewest output tokens (ties: the longest
  prompt, then the newest) is retracted and re-queued last.

  ``run_limit``: during a run of ``k`` decode iterations (``n`` decodes adding ``a = n E``
  tokens per iteration, ``R`` their remaining output), admitting the waiting head (``h`` tokens
  of prompt and output) needs ``f(k) >= 0`` with

      f(k) = free - a k - P - h - (r - d k)(R - a k)
           = (free - P - h - r R) + (a (r - 1) + d R) k - d a k²       (k <= (r - min) / d)

  — a concave quadratic; the run stops at its first root, where the head may fit (beyond
  ``(r - min) / d`` the ratio is constant and ``f`` only falls).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

from servingcast.engines import (
    SGLANG_CLIP_MAX_NEW_TOKENS,
    SGLANG_RETRACT_DECODE_STEPS,
    Engine,
    SglangEngine,
    TrtllmEngine,
)

if TYPE_CHECKING:
    from servingcast.sim.entities import Request
    from servingcast.sim.instance import Instance

#: ``run_limit`` when nothing but a finishing request can change the batch.
UNBOUNDED = 1 << 62


class EnginePolicy(Protocol):
    """What an instance asks its engine (module docstring)."""

    mixed: bool
    to_front: bool
    adaptive: bool
    gates: bool
    watermark: int

    def admits(self, inst: Instance, req: Request, take: int) -> bool:
        """Whether ``req`` may start with ``take`` tokens (its blocks fit already)."""

    def release(self, req: Request) -> None:
        """``req`` left the running set."""

    def victim(self, inst: Instance) -> Request:
        """The running request to preempt."""

    def decoded(self, steps: int) -> None:
        """``steps`` decode iterations ran."""

    def retracted(self, inst: Instance) -> None:
        """Decodes were preempted to make a step fit."""

    def idle(self) -> None:
        """The instance has nothing to run."""

    def run_limit(self, inst: Instance, free_blocks: int) -> int:
        """Most decode-only iterations before admission must be re-checked (>= 1)."""


class VllmPolicy:
    """vLLM (and TensorRT-LLM ``max_utilization``): prompt blocks, recompute the newest."""

    to_front = True
    adaptive = False
    gates = False

    def __init__(self, mixed: bool, watermark: int = 0) -> None:
        self.mixed = mixed
        self.watermark = watermark

    def admits(self, inst: Instance, req: Request, take: int) -> bool:
        return True

    def release(self, req: Request) -> None:
        return None

    def victim(self, inst: Instance) -> Request:
        return next(reversed(inst.running))

    def decoded(self, steps: int) -> None:
        return None

    def retracted(self, inst: Instance) -> None:
        return None

    def idle(self) -> None:
        return None

    def run_limit(self, inst: Instance, free_blocks: int) -> int:
        return UNBOUNDED


class NoEvictPolicy(VllmPolicy):
    """TensorRT-LLM ``guaranteed_no_evict``: blocks to completion reserved at admission."""

    gates = True

    def __init__(self, total_blocks: int, block_size: int, spare_tokens: int,
                 prompt_only: bool) -> None:
        super().__init__(mixed=True)
        self.total = total_blocks
        self.block = block_size
        self.spare = spare_tokens
        self.prompt_only = prompt_only
        #: Blocks reserved to completion by the running requests.
        self.reserved = 0

    def footprint(self, req: Request) -> int:
        """Blocks ``req`` needs to run to completion here (``B`` in the module docstring)."""
        tokens = req.target
        if not self.prompt_only:
            tokens += req.output_len - req.generated + self.spare
        return -(-tokens // self.block)

    def admits(self, inst: Instance, req: Request, take: int) -> bool:
        need = self.footprint(req)
        if self.reserved + need > self.total and inst.running:
            return False
        self.reserved += need
        req.reserve = need
        return True

    def release(self, req: Request) -> None:
        self.reserved -= req.reserve
        req.reserve = 0


class SglangPolicy(VllmPolicy):
    """SGLang: output reserve by ``new_token_ratio``, retract the least-advanced decode."""

    to_front = False
    adaptive = True
    gates = True

    def __init__(self, engine: SglangEngine, block_size: int, chunked: bool = True) -> None:
        super().__init__(mixed=engine.enable_mixed_chunk and chunked)
        self.block = block_size
        self.init = engine.init_ratio
        self.floor = engine.min_ratio
        self.decay = engine.ratio_decay
        self.ratio = self.init

    @staticmethod
    def _output(req: Request) -> int:
        return min(req.output_len - req.generated, SGLANG_CLIP_MAX_NEW_TOKENS)

    def _reserve(self, inst: Instance) -> float:
        """Tokens set aside for the running requests' output."""
        pending = sum(self._output(p) for p in inst.prefilling)
        return self.ratio * inst.dec.remaining_tokens(inst.step) + pending

    def admits(self, inst: Instance, req: Request, take: int) -> bool:
        if not inst.running:
            return True
        free = inst.pool.available() * self.block
        return take + self._output(req) < free - self._reserve(inst)

    def victim(self, inst: Instance) -> Request:
        dec, step = inst.dec, inst.step
        best: Request | None = None
        best_key = (0, 0)
        for req in inst.running:
            if req.decoding:
                key = (dec.generated(req, step), -req.input_len)
                if best is None or key <= best_key:
                    best, best_key = req, key
        return best if best is not None else next(reversed(inst.running))

    def decoded(self, steps: int) -> None:
        self.ratio = max(self.ratio - steps * self.decay, self.floor)

    def retracted(self, inst: Instance) -> None:
        dec, step = inst.dec, inst.step
        decoded = outputs = count = 0
        for req in inst.running:
            if req.decoding:
                decoded += dec.generated(req, step)
                outputs += req.output_len
                count += 1
        self.ratio = min(1.0, (decoded + SGLANG_RETRACT_DECODE_STEPS * count) / (outputs + 1))

    def idle(self) -> None:
        self.ratio = self.init

    def run_limit(self, inst: Instance, free_blocks: int) -> int:
        head = inst.waiting[0]
        if head.kv_ready or len(inst.running) >= inst.max_seqs or self.decay <= 0:
            return UNBOUNDED
        dec = inst.dec
        rate = dec.count * dec.e / dec.scale
        remaining = dec.remaining_tokens(inst.step)
        pending = sum(self._output(p) for p in inst.prefilling)
        a = (free_blocks * self.block - pending - head.target - self._output(head)
             - self.ratio * remaining)
        if a >= 0:
            return 1
        b = rate * (self.ratio - 1.0) + self.decay * remaining
        c = self.decay * rate
        if b <= 0:
            return UNBOUNDED
        if c == 0:
            k = -a / b
        else:
            disc = b * b + 4.0 * a * c
            if disc < 0:
                return UNBOUNDED
            k = (b - math.sqrt(disc)) / (2.0 * c)
        if k > (self.ratio - self.floor) / self.decay:
            return UNBOUNDED
        return max(1, math.ceil(k))


def build_policy(engine: Engine, chunked: bool, role: str, total_blocks: int, block_size: int,
                 query_tokens: int) -> EnginePolicy:
    """The policy of one instance of a group running ``engine`` (``query_tokens``: tokens a
    decode step verifies, ``k + 1`` with speculative decoding)."""
    if isinstance(engine, SglangEngine):
        return SglangPolicy(engine, block_size, chunked)
    if isinstance(engine, TrtllmEngine):
        if engine.capacity_scheduler == "guaranteed_no_evict":
            return NoEvictPolicy(total_blocks, block_size, query_tokens - 1,
                                 prompt_only=role == "prefill")
        return VllmPolicy(mixed=True)
    return VllmPolicy(mixed=chunked, watermark=0 if chunked else -(-total_blocks // 100))
