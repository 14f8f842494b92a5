"""The discrete-event serving simulator (``servingcast-simulate``).

``simulate(scenario)`` runs a :class:`Scenario` — instance groups of continuous-batching engines
with paged KV caches, routers, prefill→decode transfers — on a workload, timing every iteration
with the cost model, and returns a :class:`SimResult`. See :mod:`servingcast.sim.core` for the
event loop, :mod:`servingcast.sim.instance` for the scheduler and
:mod:`servingcast.sim.engines` for what vLLM, SGLang and TensorRT-LLM do differently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servingcast._lazy import lazy_getattr

_LAZY = {
    "Scenario": "servingcast.sim.scenario",
    "load_scenario": "servingcast.sim.scenario",
    "scenario_from_dict": "servingcast.sim.scenario",
    "simulate": "servingcast.sim.api",
    "SimResult": "servingcast.sim.metrics",
    "Summary": "servingcast.sim.metrics",
    "RequestArrays": "servingcast.sim.metrics",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from servingcast.sim.api import simulate as simulate
    from servingcast.sim.metrics import RequestArrays as RequestArrays
    from servingcast.sim.metrics import SimResult as SimResult
    from servingcast.sim.metrics import Summary as Summary
    from servingcast.sim.scenario import Scenario as Scenario
    from servingcast.sim.scenario import load_scenario as load_scenario
    from servingcast.sim.scenario import scenario_from_dict as scenario_from_dict


__getattr__ = lazy_getattr(__name__, _LAZY)
