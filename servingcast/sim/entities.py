"""The simulator's entities, in Vidur's vocabulary: a :class:`Request` and a :class:`Batch`.

(The third, :class:`~servingcast.sim.instance.Instance`, has its own module.) Both use
``__slots__``: a run creates one Request per request and one Batch per engine iteration (or run
of identical decode iterations), so attribute access is the hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from servingcast.sim.run import Run


class Request:
    """One request while it is in the system; results go to the simulation's arrays by ``id``.

    Token accounting: the prompt has ``input_len`` tokens; ``generated`` output tokens exist so
    far. A (re)computation prefills ``target = input_len + generated`` tokens, of which
    ``computed`` are in the KV cache (prefix-cache hits count as computed); it ends with one more
    output token. While decoding, the KV cache holds ``input_len + generated - 1`` tokens.
    """

    __slots__ = (
        "admitted", "arrival", "computed", "decode_instance", "decoding", "first_token", "gen0",
        "generated", "group", "held", "id", "inc", "input_len", "join_step", "kv_ready",
        "output_len", "phi", "pin", "preemptions", "prefill_instance", "prefix_len", "reserve",
        "shared", "target", "wstate",
    )

    def __init__(self, rid: int, arrival: float, input_len: int, output_len: int,
                 group: int = -1, prefix_len: int = 0) -> None:
        self.id = rid
        self.arrival = arrival
        self.input_len = input_len
        self.output_len = output_len
        self.group = group
        self.prefix_len = prefix_len
        self.target = input_len
        self.computed = 0
        self.generated = 0
        #: KV blocks held while prefilling or handed off (a decode member's come from its
        #: DecodeSet), how many of them are shared prefix-cache blocks, and the prefix-cache
        #: level it pins.
        self.held = 0
        self.shared = 0
        self.pin = 0
        #: KV blocks the engine keeps reserved for it while it runs (TensorRT-LLM's
        #: guaranteed_no_evict, :mod:`servingcast.sim.engines`).
        self.reserve = 0
        self.kv_ready = False
        self.decoding = False
        self.first_token = -1.0
        self.admitted = -1.0
        self.preemptions = 0
        self.prefill_instance = -1
        self.decode_instance = -1
        # DecodeSet membership: position offset, join step, tokens at join, incarnation, window.
        self.phi = 0
        self.join_step = 0
        self.gen0 = 0
        self.inc = 0
        self.wstate = 0

    def __repr__(self) -> str:
        return (f"Request(id={self.id}, in={self.input_len}, out={self.output_len}, "
                f"generated={self.generated}, computed={self.computed}/{self.target})")


class Batch:
    """What one instance runs from ``start`` to ``end``.

    ``chunks`` are ``(request, tokens)`` prefill pieces; ``decodes`` is the number of decoding
    sequences, which all advance ``steps`` iterations (a run of identical decode iterations when
    ``steps > 1``, timed by ``run``). ``growth`` is the KV blocks reserved for the decodes.
    """

    __slots__ = ("chunks", "decodes", "end", "growth", "run", "start", "step0", "steps")

    def __init__(self, start: float, chunks: list[tuple[Request, int]], decodes: int,
                 steps: int, run: Run, step0: int, growth: int) -> None:
        self.start = start
        self.chunks = chunks
        self.decodes = decodes
        self.steps = steps
        self.run = run
        self.step0 = step0
        self.growth = growth
        self.end = start + run.elapsed(steps)

    @property
    def kind(self) -> str:
        """``prefill``, ``mixed`` or ``decode``."""
        if not self.chunks:
            return "decode"
        return "mixed" if self.decodes else "prefill"
