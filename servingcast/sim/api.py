"""The simulator's Python API: scenario (object or file) in, :class:`SimResult` out.

::

    from servingcast.sim import load_scenario, simulate
    result = simulate("configs/scenarios/single-instance.yaml")
    print(result.summary.ttft_ms.p99, result.requests.e2e_s.mean())

The optimizer builds :class:`Scenario` objects and calls :func:`simulate` directly; the CLI is a
thin layer over it. Nothing here prints or writes files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from servingcast.sim.cluster import build_groups
from servingcast.sim.core import Options, Simulation
from servingcast.sim.metrics import SimResult, collect
from servingcast.sim.scenario import Scenario, load_scenario
from servingcast.workload import Requests, generate_requests


def simulate(
    scenario: Scenario | str | Path,
    *,
    seed: int | None = None,
    num_requests: int | None = None,
    requests: Requests | None = None,
    timeseries: bool = False,
    trace: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SimResult:
    """Simulate ``scenario`` (a :class:`Scenario` or a YAML file).

    ``seed`` overrides the scenario's; ``num_requests`` keeps only the first requests of the
    workload (quick checks); ``requests`` replaces the workload altogether. ``timeseries`` and
    ``trace`` record what the plots and the Chrome trace need; ``progress(done, total)`` is
    called as requests finish. The same scenario and seed give the same result.
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario, seed)
    elif seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    plans = build_groups(scenario)
    if requests is None:
        requests = generate_requests(scenario.workload, np.random.default_rng(scenario.seed))
    if num_requests is not None:
        requests = requests.head(num_requests)
    sim = Simulation(scenario, plans, requests, Options(timeseries, trace, progress))
    sim.run()
    return collect(sim)
