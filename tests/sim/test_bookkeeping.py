"""KV blocks are accounted exactly after every batch, whatever the feature mix.

After each batch the simulator's pools must hold exactly what the requests hold: the private
blocks of prefilling requests, of decoding requests (their context, plus the growth reserved for
the batch in flight) and of handed-off requests whose KV is still being transferred.
"""

from typing import Any

import numpy as np
import pytest

from servingcast.sim.cluster import build_groups
from servingcast.sim.core import Options, Simulation
from servingcast.sim.metrics import collect
from servingcast.workload import generate_requests
from tests.sim.conftest import group, make_scenario


def expected_used(sim: Simulation, new_events: list[Any]) -> dict[int, int]:
    used = {inst.index: 0 for inst in sim.instances}
    for inst in sim.instances:
        for req in inst.prefilling:
            used[inst.index] += req.held - req.shared
        batch = inst.batch
        step = inst.step + (batch.steps if batch is not None and batch.decodes else 0)
        dec = inst.dec
        for req in dec.members():
            used[inst.index] += -(-(req.phi + dec.e * step) // dec.unit) - req.shared
    pending = [(h, a) for *_, h, a in sim._heap] + [(h, a) for *_, h, a in new_events]
    for handler, arg in pending:
        if getattr(handler, "__name__", "") == "_transfer_done":
            req, src, _ = arg
            used[src.index] += req.held - req.shared
    return used


def checked_run(scenario: Any) -> Any:
    requests = generate_requests(scenario.workload, np.random.default_rng(scenario.seed))
    sim = Simulation(scenario, build_groups(scenario), requests, Options())
    original = sim._batch_end
    checks = {"n": 0}

    def batch_end(arg: Any) -> Any:
        events = original(arg)
        want = expected_used(sim, events)
        for inst in sim.instances:
            assert inst.pool.used == want[inst.index], (inst.name, sim.now)
            assert inst.pool.used + inst.pool.pinned <= inst.pool.total
            assert len(inst.running) <= inst.max_seqs
        checks["n"] += 1
        return events

    sim._batch_end = batch_end  # type: ignore[method-assign]
    sim.run()
    assert checks["n"] > 50
    for inst in sim.instances:
        assert inst.pool.used == 0 and inst.pool.pinned == 0
    return collect(sim)


WORKLOAD = {"num_requests": 250, "arrival": {"kind": "poisson", "rate": 40},
            "input_len": {"kind": "lognormal", "mean": 1500, "std": 1500, "max": 12000},
            "output_len": {"kind": "lognormal", "mean": 300, "std": 300, "max": 3000}}
TIGHT = {"gpu_memory_utilization": 0.26, "max_num_seqs": 48}
SPEC = {"draft_model": "llama-3.2-1b", "acceptance_rate": 0.6, "num_speculative_tokens": 3}
PREFIX = {"kind": "system_prompt", "num_groups": 3, "length": 700}
SESSIONS = {"kind": "sessions", "turns": 3, "in_flight": 8}

CASES = {
    "chunked": ({}, [group(**TIGHT)], {}),
    "whole-prompts": ({}, [group(enable_chunked_prefill=False, **TIGHT)], {}),
    "prefix-cache": ({"prefix": PREFIX}, [group(enable_prefix_caching=True, block_size=32,
                                                **TIGHT)], {}),
    "sessions": ({"prefix": SESSIONS}, [group(enable_prefix_caching=True, count=2, **TIGHT)],
                 {"router": {"kind": "least_kv_load"}}),
    "speculative": ({}, [group(**TIGHT)], {"speculative": SPEC}),
    "window": ({}, [group(hardware="a100-sxm4-80gb", gpu_memory_utilization=0.33,
                          max_num_seqs=48)], {"model": "mistral-7b"}),
    "window-spec": ({}, [group(hardware="a100-sxm4-80gb", gpu_memory_utilization=0.36,
                               max_num_seqs=48)], {"model": "mistral-7b", "speculative": SPEC}),
    "pipeline": ({}, [group(pp=2, gpu_memory_utilization=0.14, max_num_seqs=48)], {}),
    "disaggregated": ({"prefix": PREFIX}, [
        group("p", role="prefill", count=2, enable_prefix_caching=True, max_num_batched_tokens=4096,
              gpu_memory_utilization=0.23),
        group("d", role="decode", **TIGHT)],
        {"network": {"bandwidth": "20 GB/s"}, "speculative": SPEC}),
    "moe": ({}, [group(tp=2, ep=2, gpu_memory_utilization=0.64, max_num_seqs=48)],
            {"model": "mixtral-8x7b"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_blocks_balance_after_every_batch(name: str) -> None:
    workload, groups, fields = CASES[name]
    sc = make_scenario(groups, **{"workload": {**WORKLOAD, **workload}, **fields})
    result = checked_run(sc)
    s = result.summary
    assert s.completed + s.rejected == s.num_requests
    assert s.completed > 0.8 * s.num_requests
    if name not in {"window", "window-spec", "moe"}:
        assert s.preemptions > 0  # the tight KV cache made the scheduler preempt
