"""Helpers shared by the simulator tests: small scenarios built in Python."""

from typing import Any

import numpy as np

from servingcast.sim.scenario import Scenario, scenario_from_dict
from servingcast.workload import Requests


def group(name: str = "g", **fields: Any) -> dict[str, Any]:
    """An instance group of one H100 unless overridden."""
    return {"name": name, "hardware": "h100-sxm", **fields}


def make_scenario(groups: list[dict[str, Any]] | None = None, model: str = "llama-3.1-8b",
                  **fields: Any) -> Scenario:
    """A scenario with a small Poisson workload unless overridden."""
    data: dict[str, Any] = {
        "model": model,
        "instance_groups": groups or [group()],
        "workload": {"num_requests": 10, "arrival": {"kind": "poisson", "rate": 1},
                     "input_len": 100, "output_len": 10},
    }
    data.update(fields)
    return scenario_from_dict(data)


def batch_requests(n: int, prompt: int, output: int, at: float = 0.0) -> Requests:
    """``n`` identical requests arriving together."""
    return Requests(np.full(n, at), np.full(n, prompt), np.full(n, output),
                    np.full(n, -1), np.zeros(n, dtype=np.int64))


def fixed_requests(arrivals: list[float], prompts: list[int], outputs: list[int],
                   groups: list[int] | None = None,
                   prefix: list[int] | None = None) -> Requests:
    """Requests spelled out one by one."""
    n = len(arrivals)
    return Requests(np.asarray(arrivals, dtype=np.float64), np.asarray(prompts),
                    np.asarray(outputs), np.asarray(groups or [-1] * n),
                    np.asarray(prefix or [0] * n))


def run(scenario: Scenario, requests: Requests | None = None, **options: Any) -> Any:
    """Simulate and check the bookkeeping: every block back, every queue empty."""
    from servingcast.sim.cluster import build_groups
    from servingcast.sim.core import Options, Simulation
    from servingcast.sim.metrics import collect
    from servingcast.workload import generate_requests

    if requests is None:
        requests = generate_requests(scenario.workload, np.random.default_rng(scenario.seed))
    sim = Simulation(scenario, build_groups(scenario), requests, Options(**options))
    sim.run()
    for inst in sim.instances:
        assert inst.pool.used == 0 and inst.pool.pinned == 0, inst.name
        assert not inst.running and not inst.waiting and inst.dec.count == 0
        assert inst.outstanding == 0 and inst.queued_blocks == 0
        assert inst.pool.cached <= inst.pool.total
    return collect(sim)
