"""The discrete-event simulation: one object owns the clock, the event heap and its counter.

Events are ``(time, priority, seq, handler, argument)`` on a heap; ``seq`` comes from the
simulation's own ``itertools.count()``, so equal times pop in a fixed order and two simulations
can run side by side. At equal times iterations end first (priority 0: they free slots and
blocks), then KV transfers (1), then arrivals (2), and last an idle engine wakes up (3) — so it
sees every request that arrived at that instant, as a real engine loop would. Each handler
applies one event and returns the events it causes. Open-loop arrivals are already sorted, so
they are read from their array in step with the heap instead of being pushed onto it. Agent
sessions (:class:`~servingcast.workload.AgenticPrefix`) read only their first turns so; each
later turn is pushed when the turn before it ends (completed or rejected), ``pause_s`` later,
and with ``affinity`` it goes to the front instance that served that turn while that instance's
group can take it (a gateway's session routing), else to the router's choice.

Request flow. An arrival is rejected if no instance could ever serve it (prompt and output
longer than an instance's KV capacity or ``max_model_len``, or — without chunked prefill — a
prompt longer than ``max_num_batched_tokens``); otherwise the router picks an instance and the
instance's scheduler takes over (:mod:`servingcast.sim.instance`). Disaggregated: when a prefill
instance has computed the prompt (and the first token) the decode router picks a decode instance
and the KV cache, ``kv_bytes_per_token * tokens`` bytes
(:func:`~servingcast.costmodel.memory.kv_bytes_per_token`), crosses the network in
:func:`~servingcast.costmodel.comm.kv_transfer_s`. Each prefill instance has one outgoing and
each decode instance one incoming link (its group's ``network_bandwidth``, else the network's);
a transfer waits until both are free (FIFO) and runs at the slower one's bandwidth, and each
link is busy for the bytes at its own bandwidth (a 400 GB/s decode link takes eight 50 GB/s
streams at once).

Pools and groups. The limits are per instance group, so the instances that can serve a request
are whole groups of its pool (front: aggregated or prefill; back: decode). Without weights the
router chooses among all of them. With weights (``InstanceGroup.weight``, a gateway's weighted
split like Kubernetes HTTPRoute ``backendRefs``), an arrival (front) or a hand-off (back) first
goes to one group by smooth weighted round-robin (nginx's ``ngx_http_upstream_get_peer``),
over the eligible groups ``E`` only, with ``c_g`` starting at 0:

1. ``c_g += w_g`` for every ``g ∈ E``;
2. pick ``g* = argmax_{g ∈ E} c_g`` (ties to the lowest group index);
3. ``c_{g*} -= Σ_{g ∈ E} w_g``.

Deterministic; while ``E`` stays the same the picks repeat with period ``Σ w`` (integer
weights), group ``g`` taking ``w_g`` of each period, spread out rather than in bursts (weights
5, 1, 1 give a a b a c a a). Then the router chooses within ``g*``.

Each group keeps its instances' outstanding counts in a lazy min-heap of ``(outstanding,
index)``: every change of a count pushes a fresh entry (:meth:`Group.touch`, called wherever a
handler changes one), and :meth:`Group.least` pops stale entries (whose count has changed since)
off the top. The least-outstanding router thus costs O(log n) amortized per request, plus O(G)
to compare the minima of G eligible groups.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from servingcast.costmodel.comm import kv_transfer_s
from servingcast.errors import SimulationError
from servingcast.groups import instance_name
from servingcast.sim.cluster import GroupPlan
from servingcast.sim.decodeset import DecodeSet
from servingcast.sim.engines import build_policy
from servingcast.sim.entities import Request
from servingcast.sim.instance import Instance
from servingcast.sim.kvcache import BlockPool
from servingcast.sim.run import StepCost
from servingcast.sim.scenario import Scenario
from servingcast.workload import Requests

PRI_BATCH, PRI_TRANSFER, PRI_ARRIVAL, PRI_WAKE = 0, 1, 2, 3
Handler = Callable[[Any], list[tuple[float, int, Callable[[Any], Any], Any]]]
Event = tuple[float, int, Handler, Any]

#: Why a request was rejected (``SimResult.requests.reject_reason`` codes).
REJECT_REASONS = ("", "kv_capacity", "max_model_len", "batched_tokens")


@dataclass
class Options:
    """What to record besides the per-request results."""

    timeseries: bool = False
    trace: bool = False
    progress: Callable[[int, int], None] | None = None


class Group:
    """One instance group's instances in a pool, with their limits and a heap of their loads.

    ``limits``: (``max_model_len``, KV capacity in tokens, largest prompt in one iteration).
    The heap holds ``(outstanding, instance index)`` entries, at least one current per instance
    (module docstring); it is rebuilt from the instances once it holds more than ``2n + 16``
    entries, O(n) every n or more pushes, so O(1) amortized.
    """

    def __init__(self, members: list[Instance], limits: tuple[float, float, float],
                 weight: float | None) -> None:
        self.members = members
        self.first = members[0].index
        self.limits = limits
        self.weight = weight
        self._cap = 2 * len(members) + 16
        self._heap: list[tuple[int, int]] = []
        self._rebuild()

    def _rebuild(self) -> None:
        self._heap = [(inst.outstanding, inst.index) for inst in self.members]
        heapq.heapify(self._heap)

    def touch(self, inst: Instance) -> None:
        """``inst``'s outstanding count may have changed: record its current value."""
        heapq.heappush(self._heap, (inst.outstanding, inst.index))
        if len(self._heap) > self._cap:
            self._rebuild()

    def least(self) -> tuple[int, int]:
        """``(outstanding, instance index)`` of the least loaded member, lowest index on ties."""
        heap, members, first = self._heap, self.members, self.first
        while True:
            load, index = heap[0]
            if members[index - first].outstanding == load:
                return load, index
            heapq.heappop(heap)


class Eligible(list[Instance]):
    """The members of some groups of a pool, in index order (what a router chooses among)."""

    def __init__(self, groups: list[Group]) -> None:
        super().__init__(inst for group in groups for inst in group.members)
        self._groups = groups
        # position in this list = instance index - shift of its group
        shifts, offset = [], 0
        for group in groups:
            shifts.append(group.first - offset)
            offset += len(group.members)
        self._shifts = shifts

    def fewest_outstanding(self) -> int:
        """Index of the member with the fewest outstanding requests (lowest on ties)."""
        groups = self._groups
        if len(groups) == 1:
            return groups[0].least()[1] - self._shifts[0]
        best_load, best = math.inf, 0
        for group, shift in zip(groups, self._shifts, strict=True):
            load, index = group.least()
            if load < best_load:
                best_load, best = load, index - shift
        return best


class _Pool:
    """The instances one router chooses among, by group, with the limits of their groups.

    ``whole``: the instance holds prompt and output (aggregated, decode), else the prompt only
    (prefill). ``budget``: a prompt must fit one iteration (no chunked prefill; not checked on
    decode instances, which only recompute preempted requests).
    """

    def __init__(self, instances: list[Instance], plans: list[GroupPlan], whole: bool,
                 budget: bool) -> None:
        self.whole = whole
        members: dict[int, list[Instance]] = {}
        for inst in instances:
            members.setdefault(inst.group, []).append(inst)
        self.groups: list[Group] = []
        for index, insts in members.items():
            plan = plans[index]
            spec = plan.spec
            chunked = spec.enable_chunked_prefill or not budget
            limits = (plan.max_model_len, plan.capacity_tokens,
                      math.inf if chunked else spec.max_num_batched_tokens)
            self.groups.append(Group(insts, limits, spec.weight))
        self.uniform = len({g.limits for g in self.groups}) == 1
        self._every = tuple(range(len(self.groups)))
        self._weights = [g.weight or 0.0 for g in self.groups]
        self.weighted = all(g.weight is not None for g in self.groups)
        self._current = [0.0] * len(self.groups)
        self._views: dict[tuple[int, ...], Eligible] = {}

    def eligible(self, prompt: int, total: int) -> tuple[tuple[int, ...], int]:
        """Positions in :attr:`groups` of the groups that can serve the request, or
        ``((), reason code)``."""
        held = total if self.whole else prompt
        if self.uniform:
            reason = _check(self.groups[0].limits, held, total, prompt)
            return (self._every, 0) if reason == 0 else ((), reason)
        reasons = [_check(g.limits, held, total, prompt) for g in self.groups]
        fits = tuple(k for k, r in enumerate(reasons) if r == 0)
        return (fits, 0) if fits else ((), min(reasons))

    def candidates(self, fits: tuple[int, ...]) -> Eligible:
        """What the router chooses among: the members of every group in ``fits`` or, with
        weights, of the one group smooth weighted round-robin picks (module docstring)."""
        if self.weighted:
            fits = (self._pick(fits),)
        view = self._views.get(fits)
        if view is None:
            view = self._views[fits] = Eligible([self.groups[k] for k in fits])
        return view

    def _pick(self, fits: tuple[int, ...]) -> int:
        """Smooth weighted round-robin over the groups ``fits`` (steps 1-3 of the docstring)."""
        current, weights = self._current, self._weights
        best, total = fits[0], 0.0
        for k in fits:
            current[k] += weights[k]  # 1.
            total += weights[k]
            if current[k] > current[best]:  # 2. (strictly: ties stay with the lowest)
                best = k
        current[best] -= total  # 3.
        return best


def _check(limits: tuple[float, float, float], held: int, total: int, prompt: int) -> int:
    max_len, capacity, budget = limits
    if total > max_len:
        return 2
    if held > capacity:
        return 1
    return 3 if prompt > budget else 0


class Simulation:
    """One run of a scenario over a list of requests; :meth:`run` then read the arrays."""

    def __init__(self, scenario: Scenario, plans: list[GroupPlan], requests: Requests,
                 options: Options | None = None) -> None:
        self.scenario = scenario
        self.plans = plans
        self.requests = requests
        self.options = options or Options()
        self._trace, self._timeseries = self.options.trace, self.options.timeseries
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Handler, Any]] = []
        self._seq = itertools.count()
        rng = random.Random(scenario.seed)
        self.instances = self._build_instances()
        front = [i for i in self.instances if i.role != "decode"]
        back = [i for i in self.instances if i.role == "decode"]
        self._front = _Pool(front, plans, whole=not back, budget=True)
        self._back = _Pool(back, plans, whole=True, budget=False) if back else None
        #: each instance's :class:`Group`, by scenario group index (to record load changes)
        self._group_of: dict[int, Group] = {}
        for pool in (self._front, self._back):
            for g in pool.groups if pool is not None else ():
                self._group_of[g.members[0].group] = g
        self._router = scenario.router.build(rng)
        self._decode_router = (scenario.decode_router or scenario.router).build(rng)
        network = scenario.network
        self._bandwidth = network.bandwidth if network is not None else math.inf
        # Each instance's own link (its group's network_bandwidth, else the network's).
        self._link_bw = [plans[inst.group].spec.network_bandwidth or self._bandwidth
                         for inst in self.instances]
        self._latency = network.latency if network is not None else 0.0
        self._link_out = [0.0] * len(self.instances)
        self._link_in = [0.0] * len(self.instances)
        n = len(requests)
        self.arrival = requests.arrival_s.tolist()
        self.first_token = [math.nan] * n
        self.finish = [math.nan] * n
        self.admitted = [math.nan] * n
        self.preemptions = [0] * n
        self.prefill_instance = [-1] * n
        self.decode_instance = [-1] * n
        self.reject_reason = [0] * n
        self.completed = 0
        self.rejected = 0
        self.in_system = 0
        self.in_system_area = 0.0
        self._area_t = 0.0
        self._issued = self._planned = 0
        # Agent sessions (workload ``prefix: {kind: agentic}``): a later turn is sent when the
        # turn it follows ends, after its pause; with affinity, to the instance that served it.
        self._next_turn: dict[int, int] = {}
        if requests.after is not None:
            self._next_turn = {int(a): k for k, a in enumerate(requests.after.tolist()) if a >= 0}
        self._served_by: dict[int, Instance] = {}
        self.batches: list[tuple[int, float, float, str, int, int, int]] = []
        self.series_t: list[float] = []
        self.series_in_system: list[int] = []
        self.series_waiting: list[int] = []
        self.kv_series: list[list[tuple[float, int]]] = [[] for _ in self.instances]
        self._progress_every = max(1, n // 200)

    def _build_instances(self) -> list[Instance]:
        instances: list[Instance] = []
        for plan in self.plans:
            spec = plan.spec
            q = plan.num_speculative_tokens + 1
            cost = StepCost(plan.cost_model, plan.draft, plan.num_speculative_tokens,
                            max_tokens=spec.engine_max_num_batched_tokens
                            + spec.engine_max_num_seqs * q)
            for k in range(spec.count):
                pool = BlockPool(plan.num_blocks, spec.block_size,
                                 spec.enable_prefix_caching and spec.role != "decode")
                decodes = DecodeSet(spec.block_size, plan.tokens_per_step, q,
                                    plan.cost_model.model.sliding_window)
                engine = build_policy(spec.engine, spec.enable_chunked_prefill, spec.role,
                                      plan.num_blocks, spec.block_size, q)
                instances.append(Instance(
                    len(instances), instance_name(spec.name, k), plan.index, spec.role, cost, pool,
                    decodes, spec.engine_max_num_seqs, spec.engine_max_num_batched_tokens,
                    spec.enable_chunked_prefill, engine))
        return instances

    # -- the loop ----------------------------------------------------------------------------

    def _push(self, events: list[Event]) -> None:
        for time, priority, handler, arg in events:
            heapq.heappush(self._heap, (time, priority, next(self._seq), handler, arg))

    def run(self) -> None:
        """Simulate until every request has finished or been rejected."""
        reqs = self.requests
        if reqs.concurrency is not None:
            first = self._planned = min(reqs.concurrency, len(reqs))
            self._push([(0.0, PRI_ARRIVAL, self._arrive, None) for _ in range(first)])
            arrivals: list[float] = []
        else:
            arrivals = self.arrival
        rids: range | list[int] = range(len(arrivals))
        if reqs.after is not None:  # sessions' first turns (sorted); later ones follow them
            rids = [k for k, a in enumerate(reqs.after.tolist()) if a < 0]
            arrivals = [self.arrival[k] for k in rids]
        heap, pop, push = self._heap, heapq.heappop, self._push
        i, n_arr = 0, len(arrivals)
        while True:
            if i < n_arr and (not heap or arrivals[i] < heap[0][0]
                              or (arrivals[i] == heap[0][0] and heap[0][1] > PRI_ARRIVAL)):
                self.now = arrivals[i]
                push(self._arrive(rids[i]))
                i += 1
            elif heap:
                time, _, _, handler, arg = pop(heap)
                self.now = time
                push(handler(arg))
            else:
                break
        self._account(self.now)
        missing = len(reqs) - self.completed - self.rejected
        if missing:
            raise SimulationError(f"{missing} requests never finished (a simulator bug): "
                                  "please report the scenario")

    # -- handlers ----------------------------------------------------------------------------

    def _account(self, now: float) -> None:
        self.in_system_area += self.in_system * (now - self._area_t)
        self._area_t = now

    def _sample(self) -> None:
        self.series_t.append(self.now)
        self.series_in_system.append(self.in_system)
        self.series_waiting.append(sum(len(inst.waiting) for inst in self.instances))

    def _arrive(self, rid: int | None) -> list[Event]:
        now = self.now
        reqs = self.requests
        if rid is None:  # closed loop: the next request of the list
            rid = self._issued
            self.arrival[rid] = now
        self._issued += 1
        prompt, output = int(reqs.input_len[rid]), int(reqs.output_len[rid])
        fits, reason = self._front.eligible(prompt, prompt + output)
        if not reason and self._back is not None:
            reason = self._back.eligible(prompt, prompt + output)[1]
        if reason:
            self.reject_reason[rid] = reason
            self.rejected += 1
            return self._next_user() + self._follow(rid, None)
        self._account(now)
        self.in_system += 1
        req = Request(rid, now, prompt, output, int(reqs.prefix_group[rid]),
                      int(reqs.prefix_len[rid]))
        sticky = self._served_by.pop(rid, None)
        if sticky is not None and sticky.group in fits:
            inst = sticky
        else:
            candidates = self._front.candidates(fits)
            inst = candidates[self._router.choose(candidates)]
        req.prefill_instance = inst.index
        if self.options.timeseries:
            self._sample()
        return self._queued(inst, req)

    def _queued(self, inst: Instance, req: Request) -> list[Event]:
        """``req`` joins ``inst``'s queue: wake the engine if idle, or reschedule a cut run."""
        scheduled = inst.enqueue(req, self.now)
        self._group_of[inst.group].touch(inst)
        if scheduled:
            return self._started(inst, True)
        return self._wake_up(inst)

    def _wake_up(self, inst: Instance) -> list[Event]:
        if inst.batch is not None or inst.waking:
            return []
        inst.waking = True
        return [(self.now, PRI_WAKE, self._wake, inst)]

    def _wake(self, inst: Instance) -> list[Event]:
        inst.waking = False
        return self._started(inst, inst.batch is None and inst.start(self.now))

    def _started(self, inst: Instance, scheduled: bool) -> list[Event]:
        if not scheduled:
            return []
        batch = inst.batch
        assert batch is not None
        return [(batch.end, PRI_BATCH, self._batch_end, (inst, inst.epoch))]

    def _batch_end(self, arg: tuple[Instance, int]) -> list[Event]:
        inst, epoch = arg
        if epoch != inst.epoch:  # superseded: the run was cut short
            return []
        now = self.now
        batch = inst.batch
        assert batch is not None
        if self._trace:
            self.batches.append((inst.index, batch.start, batch.end, batch.kind, batch.steps,
                                 batch.decodes, sum(t for _, t in batch.chunks)))
        finished, handoffs = inst.finish_batch(now)
        if finished or handoffs:
            self._group_of[inst.group].touch(inst)
        events: list[Event] = []
        for req in finished:
            events += self._complete(req, inst)
        for req in handoffs:
            events += self._handoff(req, inst)
        if inst.start(now):
            events.append((inst.batch.end, PRI_BATCH, self._batch_end,  # type: ignore[union-attr]
                           (inst, inst.epoch)))
        if self._timeseries:
            self.kv_series[inst.index].append((now, inst.pool.in_use()))
        return events

    def _complete(self, req: Request, inst: Instance) -> list[Event]:
        rid = req.id
        self.first_token[rid] = req.first_token
        self.finish[rid] = self.now
        self.admitted[rid] = req.admitted
        self.preemptions[rid] = req.preemptions
        self.prefill_instance[rid] = req.prefill_instance
        self.decode_instance[rid] = inst.index
        self._account(self.now)
        self.in_system -= 1
        self.completed += 1
        if self.options.timeseries:
            self._sample()
        progress = self.options.progress
        if progress is not None and self.completed % self._progress_every == 0:
            progress(self.completed + self.rejected, len(self.requests))
        front = self.instances[req.prefill_instance] if req.prefill_instance >= 0 else inst
        return self._next_user() + self._follow(rid, front)

    def _follow(self, rid: int, served: Instance | None) -> list[Event]:
        """The session turn after ``rid`` (if any), sent after its pause; with affinity it will
        go to ``served``, the front instance that served ``rid``."""
        nxt = self._next_turn.pop(rid, None)
        if nxt is None:
            return []
        reqs = self.requests
        if reqs.affinity and served is not None:
            self._served_by[nxt] = served
        assert reqs.pause_s is not None
        return [(self.now + float(reqs.pause_s[nxt]), PRI_ARRIVAL, self._arrive_turn, nxt)]

    def _arrive_turn(self, rid: int) -> list[Event]:
        self.arrival[rid] = self.now
        return self._arrive(rid)

    def _next_user(self) -> list[Event]:
        reqs = self.requests
        if reqs.concurrency is None or self._planned >= len(reqs):
            return []
        self._planned += 1
        return [(self.now + reqs.think_time_s, PRI_ARRIVAL, self._arrive, None)]

    def _handoff(self, req: Request, src: Instance) -> list[Event]:
        assert self._back is not None
        fits, _ = self._back.eligible(req.input_len, req.input_len + req.output_len)
        pool = self._back.candidates(fits)
        dst = pool[self._decode_router.choose(pool)]
        req.decode_instance = dst.index
        # Counted from the hand-off, so that routers see the transfers in flight.
        dst.outstanding += 1
        self._group_of[dst.group].touch(dst)
        dst.queued_blocks += dst.pool.blocks(req.target)
        nbytes = self.plans[src.group].kv_bytes_per_token * req.target
        start = max(self.now, self._link_out[src.index], self._link_in[dst.index])
        out_bw, in_bw = self._link_bw[src.index], self._link_bw[dst.index]
        end = start + kv_transfer_s(nbytes, min(out_bw, in_bw), self._latency)
        # Each link is busy for the bytes at its own bandwidth: a fast link can take the next
        # transfer while a slower peer still sends (equal links: busy until the end).
        self._link_out[src.index] = start + kv_transfer_s(nbytes, out_bw, self._latency)
        self._link_in[dst.index] = start + kv_transfer_s(nbytes, in_bw, self._latency)
        return [(end, PRI_TRANSFER, self._transfer_done, (req, src, dst))]

    def _transfer_done(self, arg: tuple[Request, Instance, Instance]) -> list[Event]:
        req, src, dst = arg
        src.release(req, self.now)
        req.kv_ready = True
        req.computed = req.target
        dst.outstanding -= 1  # and + 1 as it joins the queue (recorded by _queued)
        dst.queued_blocks -= dst.pool.blocks(req.target)
        return self._wake_up(src) + self._queued(dst, req)
