"""One serving engine: a continuous-batching scheduler over paged KV blocks.

The scheduler is vLLM's; what differs between engines — whether prefill shares iterations with
the decodes, what a request must find free to be admitted, which request is preempted and where
it re-queues — is asked of the instance's engine policy (:mod:`servingcast.sim.engines`). Each
iteration (vLLM's ``Scheduler.schedule``):

1. *Running requests first.* Every decoding sequence gets its ``q`` tokens (1, or ``k + 1`` to
   verify speculative tokens). If the KV blocks they need are not free, the policy's victim
   (vLLM: the most recently admitted running request) is preempted — its blocks freed, to be
   recomputed later from its prompt and the tokens generated so far (vLLM's recompute
   preemption, SGLang's retraction) — until they are.
2. *Mixed iterations* (vLLM with ``enable_chunked_prefill``; Sarathi-Serve, Agrawal et al., OSDI
   2024; TensorRT-LLM): the rest of the ``max_num_batched_tokens`` budget goes to partly
   prefilled prompts, then to waiting requests in arrival order — each a chunk of at most the
   budget left (with chunking; else whole prompts that fit it) — while there are fewer than
   ``max_num_seqs`` running, blocks for the chunk are free and the policy admits the request.
   Decodes never wait for a prompt (stall-free batching).
   *Prefill first* (vLLM V0 without chunking, SGLang): if waiting prompts can be admitted (or
   partly prefilled prompts continued) within the budget, the iteration prefills them and
   nothing else — the decodes stall, the prefill–decode interference DistServe removes;
   otherwise it decodes.
3. Prefix caching (``enable_prefix_caching``): admitted prompts start after their cached blocks
   (:mod:`servingcast.sim.kvcache`).

When an iteration would only decode and nothing can be admitted until a request finishes, the
batch cannot change until then: the instance runs ``k`` iterations as one *run*, ``k`` =
iterations to the next completion (or window crossing, or until the free blocks run out), timed
in O(1) by :mod:`servingcast.sim.run`. An arrival that could be admitted cuts the run at the end
of the iteration in progress.

A prefill instance (disaggregated) hands each request off after its prompt; it keeps the
request's blocks until the KV transfer is done. A decode instance admits handed-off requests
straight into decoding once blocks for their cache are free.

An attention data-parallel engine (a group's ``attn_dp`` = N > 1, DEP) is one instance: its
limits are N times the group's per-rank ``max_num_seqs`` and ``max_num_batched_tokens``
(:attr:`~servingcast.sim.scenario.InstanceGroup.engine_max_num_seqs`), its block pool holds every
rank's KV, and its iterations cost the cost model's DEP step (the busiest rank of a balanced
split, :mod:`servingcast.costmodel.dep`). Requests are not pinned to a rank: the pool is shared,
which is the balanced split the step time assumes (per-rank pools are not modelled).
"""

from __future__ import annotations

from collections import deque

from servingcast.costmodel.batch import attention_pairs, kv_tokens_read
from servingcast.sim.decodeset import DecodeSet
from servingcast.sim.engines import EnginePolicy
from servingcast.sim.entities import Batch, Request
from servingcast.sim.kvcache import BlockPool
from servingcast.sim.run import NO_PREFILL, ArrayRun, StepCost


class Instance:
    """One engine (module docstring). ``group`` indexes the scenario's instance groups."""

    def __init__(self, index: int, name: str, group: int, role: str, cost: StepCost,
                 pool: BlockPool, decodes: DecodeSet, max_num_seqs: int,
                 max_num_batched_tokens: int, chunked: bool, engine: EnginePolicy) -> None:
        self.index = index
        self.name = name
        self.group = group
        self.role = role
        self.cost = cost
        self.pool = pool
        self.dec = decodes
        self.max_seqs = max_num_seqs
        self.max_tokens = max_num_batched_tokens
        self.chunked = chunked
        self.engine = engine
        self.mixed = engine.mixed
        self.adaptive = engine.adaptive
        self.gates = engine.gates
        self.window = cost.cm.model.sliding_window
        #: Blocks kept free at admission (vLLM V0: 1 %).
        self.watermark = engine.watermark
        self.waiting: deque[Request] = deque()
        self.prefilling: list[Request] = []
        self.running: dict[Request, None] = {}
        self.step = 0
        self.batch: Batch | None = None
        self.epoch = 0
        self.waking = False
        self.outstanding = 0
        self.queued_blocks = 0
        self._reserved = 0
        # statistics
        self.busy_s = 0.0
        self.kv_area = 0.0
        self.kv_peak = 0
        self.preemptions = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self._mark_t = 0.0
        self._mark_used = 0

    # -- what routers and metrics read -------------------------------------------------------

    @property
    def kv_load(self) -> float:
        """(blocks in use + blocks the queue will need) / capacity."""
        return (self.pool.in_use() + self.queued_blocks) / self.pool.total

    def mark(self, now: float) -> None:
        """Accumulate the time-weighted KV usage up to ``now``, then sample it."""
        self.kv_area += self._mark_used * (now - self._mark_t)
        used = self.pool.in_use()
        self._mark_t, self._mark_used = now, used
        if used > self.kv_peak:
            self.kv_peak = used

    # -- events ------------------------------------------------------------------------------

    def enqueue(self, req: Request, now: float) -> bool:
        """Queue ``req``; True when a running batch was cut short and its end event must be
        rescheduled. An idle engine is woken by the caller (:meth:`start`)."""
        could_admit = not self.waiting and len(self.running) < self.max_seqs
        self.waiting.append(req)
        self.outstanding += 1
        self.queued_blocks += self.pool.blocks(req.target)
        batch = self.batch
        if batch is None:
            return False  # the simulation wakes the idle engine after same-time arrivals
        if batch.steps > 1 and could_admit:  # cut the run after the iteration in progress
            elapsed = now - batch.start
            done = batch.run.steps_done(elapsed)
            keep = max(1, done if batch.run.elapsed(done) == elapsed else done + 1)
            if keep < batch.steps:
                growth = self.dec.growth(batch.step0, keep)
                self.pool.free(batch.growth - growth)
                batch.growth, batch.steps = growth, keep
                batch.end = batch.start + batch.run.elapsed(keep)
                self.epoch += 1
                return True
        return False

    def start(self, now: float) -> bool:
        """Schedule the next iteration at ``now``; False when there is nothing to run."""
        self.batch = batch = self._schedule(now)
        self.mark(now)
        if batch is None:
            return False
        self.epoch += 1
        return True

    def finish_batch(self, now: float) -> tuple[list[Request], list[Request]]:
        """Apply the batch that ends at ``now``: ``(finished requests, handed-off requests)``."""
        batch = self.batch
        assert batch is not None
        self.batch = None
        self.busy_s += batch.end - batch.start
        finished: list[Request] = []
        handoffs: list[Request] = []
        dec = self.dec
        if batch.decodes:
            self.step += batch.steps
            if self.adaptive:
                self.engine.decoded(batch.steps)
            for req in dec.pop_finished(self.step):
                self._leave(req)
                finished.append(req)
            dec.cross(self.step)
        for req, take in batch.chunks:
            req.computed += take
            if req.computed < req.target:
                continue
            if req.first_token < 0:
                req.first_token = now
            req.generated += 1
            self.prefilling.remove(req)
            self._publish_prompt(req)
            if req.generated >= req.output_len:
                self._release(req, req.held, req.target)
                del self.running[req]
                if self.gates:
                    self.engine.release(req)
                self.outstanding -= 1
                finished.append(req)
            elif self.role == "prefill":
                del self.running[req]
                if self.gates:
                    self.engine.release(req)
                self.outstanding -= 1
                handoffs.append(req)
            else:
                req.decoding = True
                dec.join(req, self.step, req.target, req.output_len - req.generated)
        return finished, handoffs

    def release(self, req: Request, now: float) -> None:
        """A handed-off request's KV has left (transfer done): free its blocks."""
        self._release(req, req.held, req.target)
        self.mark(now)

    # -- scheduling --------------------------------------------------------------------------

    def _schedule(self, now: float) -> Batch | None:
        step, dec, pool = self.step, self.dec, self.pool
        self._reserved = 0
        chunks: list[tuple[Request, int]] = []
        if not self.mixed and (self.waiting or self.prefilling):  # prefill first, decodes stall
            self._prefill(chunks, self.max_tokens, now)
            if chunks:
                self.pool.free(self._reserved)  # handed-off joins wait for the next decode
                return self._batch(now, chunks, 0, 1, 0)
        if dec.count:  # running requests first: room for every decode's next token
            base = dec.blocks(step)
            growth = dec.growth(step, 1, base)
            if growth > pool.available() + self._reserved:
                while growth > pool.available() + self._reserved:
                    self._preempt(self.engine.victim(self))
                    base = dec.blocks(step)
                    growth = dec.growth(step, 1, base)
                self.engine.retracted(self)
            pool.allocate(growth - self._reserved)
            self._reserved = growth
        if self.mixed and (self.waiting or self.prefilling):
            self._prefill(chunks, self.max_tokens - dec.count * self.cost.q, now)
        if not chunks and not dec.count:
            pool.free(self._reserved)
            if self.adaptive:
                self.engine.idle()
            return None
        steps, growth = 1, self._reserved
        if not chunks:  # a run: the batch cannot change before its next event
            limit = dec.steps_to_event(step)
            if self.adaptive and self.waiting:  # the engine's admission rule drifts
                limit = min(limit, self.engine.run_limit(self, pool.available() + growth))
            steps = dec.max_steps(step, pool.available() + growth, limit)
            if steps > 1:
                growth = dec.growth(step, steps)  # members may have changed since
                pool.allocate(growth - self._reserved)
        return self._batch(now, chunks, dec.count, steps, growth)

    def _prefill(self, chunks: list[tuple[Request, int]], budget: int, now: float) -> None:
        """Continue partly prefilled prompts, then admit waiting requests, within ``budget``
        tokens."""
        for req in list(self.prefilling):
            if budget <= 0:
                break
            if req in self.running:
                take = min(req.target - req.computed, budget)
                if self._grow(req, take):
                    chunks.append((req, take))
                    budget -= take
        if self.waiting:
            self._admit(chunks, budget, now)

    def _admit(self, chunks: list[tuple[Request, int]], budget: int, now: float) -> None:
        """Admit waiting requests in arrival order while they fit (module docstring)."""
        pool, dec, block, engine = self.pool, self.dec, self.pool.block_size, self.engine
        while self.waiting and len(self.running) < self.max_seqs:
            req = self.waiting[0]
            if req.kv_ready:  # handed off: join the decodes if its cache and next step fit
                need = pool.blocks(req.target)
                dec.join(req, self.step, req.target, req.output_len - req.generated)
                growth = dec.growth(self.step, 1)
                if (need + growth - self._reserved > pool.available()
                        or (self.gates and not engine.admits(self, req, req.target))):
                    dec.leave(req, self.step)
                    break
                pool.allocate(need + growth - self._reserved)
                self._reserved = growth
                req.held, req.decoding = need, True
                self._admitted(req, now)
                continue
            if budget <= 0:
                break
            hit = pool.lookup(req.group, req.prefix_len, req.target)
            computed = hit * block
            take = req.target - computed
            if self.chunked:
                take = min(take, budget)
            elif take > budget and (chunks or budget < self.max_tokens):
                break  # whole prompts; the first of an idle iteration may exceed the budget
            need = pool.blocks(computed + take) - hit
            pool.pin(req.group, hit)  # first: pinned cached blocks are no longer evictable
            if (need + self.watermark > pool.available()
                    or (self.gates and not engine.admits(self, req, take))):
                pool.unpin(req.group, hit)
                break
            pool.allocate(need)
            req.pin = req.shared = hit
            req.held = hit + need
            req.computed = computed
            self.prompt_tokens += req.target
            self.cached_tokens += computed
            self._admitted(req, now)
            self.prefilling.append(req)
            chunks.append((req, take))
            budget -= take

    def _admitted(self, req: Request, now: float) -> None:
        self.waiting.popleft()
        self.queued_blocks -= self.pool.blocks(req.target)
        self.running[req] = None
        if req.admitted < 0:
            req.admitted = now

    def _grow(self, req: Request, take: int) -> bool:
        """Blocks for ``take`` more prompt tokens of ``req``, preempting the newest running
        requests if needed; False when ``req`` itself was preempted."""
        need = self.pool.blocks(req.computed + take) - req.held
        while need > self.pool.available():
            victim = self.engine.victim(self)
            self._preempt(victim)
            if victim is req:
                return False
        self.pool.allocate(need)
        req.held += need
        return True

    def _preempt(self, req: Request) -> None:
        """Recompute preemption: free ``req``'s blocks and queue it first (SGLang: last)."""
        del self.running[req]
        if self.gates:
            self.engine.release(req)
        if req.decoding:
            held = self.dec.leave(req, self.step)
            req.decoding = False
            tokens = req.input_len + req.generated - 1
            if self._reserved:
                growth = self.dec.growth(self.step, 1)
                self.pool.free(self._reserved - growth)
                self._reserved = growth
        else:
            self.prefilling.remove(req)
            held, tokens = req.held, req.computed
        self._release(req, held, tokens)
        req.target = req.input_len + req.generated
        req.computed = 0
        req.kv_ready = False
        req.preemptions += 1
        self.preemptions += 1
        if self.engine.to_front:
            self.waiting.appendleft(req)
        else:
            self.waiting.append(req)
        self.queued_blocks += self.pool.blocks(req.target)

    def _leave(self, req: Request) -> None:
        """A decoding request finished."""
        held = self.dec.leave(req, self.step)
        req.decoding = False
        self._release(req, held, req.input_len + req.generated - 1)
        del self.running[req]
        if self.gates:
            self.engine.release(req)
        self.outstanding -= 1

    def _release(self, req: Request, held: int, tokens: int) -> None:
        """Free ``req``'s private blocks; with prefix caching its full blocks stay cached."""
        pool = self.pool
        private = held - req.shared
        if pool.prefix_caching and req.group >= 0:
            private -= pool.publish(req.group, tokens // pool.block_size, private)
            pool.unpin(req.group, req.pin)
        pool.free(private)
        req.held = req.shared = req.pin = 0

    def _publish_prompt(self, req: Request) -> None:
        """The prompt is computed: its shared prefix blocks join the prefix cache."""
        pool = self.pool
        if not pool.prefix_caching or req.group < 0:
            return
        full = min(req.prefix_len, req.target) // pool.block_size
        moved = pool.publish(req.group, full, req.held - req.shared)
        if moved:
            req.shared += moved
            pool.pin(req.group, full)
            pool.unpin(req.group, req.pin)
            req.pin = full

    def _batch(self, now: float, chunks: list[tuple[Request, int]], decodes: int, steps: int,
               growth: int) -> Batch:
        pre = NO_PREFILL
        if chunks:
            tokens = pairs = kv = logits = 0.0
            for req, take in chunks:
                tokens += take
                pairs += float(attention_pairs(take, req.computed, self.window))
                kv += float(kv_tokens_read(take, req.computed, self.window))
                logits += req.computed + take >= req.target
            pre = (tokens, pairs, kv, logits, len(chunks))
        run = self.cost.run(pre, self.dec, self.step, steps)
        if isinstance(run, ArrayRun) and run.max_steps < steps:
            steps = run.max_steps
            total = self.dec.growth(self.step, steps)
            self.pool.free(growth - total)
            growth = total
        self._reserved = 0
        return Batch(now, chunks, decodes, steps, run, self.step, growth)
