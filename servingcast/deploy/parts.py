"""What the launch files are written from: the exported scenarios, read back as data.

``servingcast-solve`` exports each part of the chosen plan (a workload's aggregated groups, or
its prefill and decode groups) as a simulator scenario; after the refinement those files
describe the refined plan. :func:`read_parts` reads them back from the output files, so the
launch files always carry exactly what was modelled and simulated: each instance group's
hardware, tp/pp/ep, role, count, ``max_num_seqs``, token budget, chunked prefill, block size,
memory fraction and prefix caching, and the part's model, precision and KV-cache dtype.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from servingcast.costmodel.memory import activation_reserve_bytes
from servingcast.costmodel.parallel import Parallelism
from servingcast.costmodel.step import CostModel
from servingcast.errors import ConfigError
from servingcast.sim.scenario import InstanceGroup, Scenario, Speculative, scenario_from_dict
from servingcast.specs.catalog import get_hardware, get_model
from servingcast.specs.hardware import HardwareSpec
from servingcast.specs.model import ModelSpec
from servingcast.specs.precision import Precision, get_precision


def mem_fraction_static(cm: CostModel, group: InstanceGroup) -> float:
    """SGLang's ``--mem-fraction-static`` that gives the KV pool the modelled KV bytes.

    servingcast sizes memory by vLLM's rule (:mod:`servingcast.costmodel.memory`): the KV cache
    gets ``HBM * u - W - A`` per GPU, ``u`` being ``gpu_memory_utilization``, ``W`` the weights
    and ``A`` the activation reserve. SGLang's fraction covers the weights and the KV pool only
    ("the fraction of the memory used for static allocation (model weights and KV cache memory
    pool)", SGLang server arguments); activations and CUDA graphs live outside it. The same KV
    pool therefore needs ``F * HBM = W + KV = HBM * u - A``::

        F = u - A / HBM

    floored to 0.001, so the pool never holds more than was modelled.
    """
    reserve = activation_reserve_bytes(cm, group.max_num_batched_tokens, group.max_num_seqs)
    value = group.gpu_memory_utilization - reserve / cm.hardware.hbm_bytes
    return math.floor(value * 1000.0) / 1000.0


@dataclass(frozen=True)
class LaunchGroup:
    """One instance group as launched: the scenario's group, its hardware and node size."""

    spec: InstanceGroup
    hardware: HardwareSpec
    node_gpus: int
    mem_fraction_static: float

    @property
    def name(self) -> str:
        """The group's name in the scenario (``decode-h200-tp4``)."""
        return self.spec.name

    @property
    def gpus_per_instance(self) -> int:
        """GPUs of one instance: ``attn_dp * tp * pp`` (``attn_dp`` attention ranks, DEP)."""
        return self.spec.attn_dp * self.spec.tp * self.spec.pp

    @property
    def nodes_per_instance(self) -> int:
        """Nodes one instance spans: the fewest (at least ``ceil(gpus / node size)``) that
        split its GPUs evenly."""
        gpus = self.gpus_per_instance
        nodes = -(-gpus // self.node_gpus)
        while gpus % nodes:
            nodes += 1
        return nodes

    @property
    def gpus_per_pod(self) -> int:
        """GPUs on each node (one pod a node) of an instance."""
        return self.gpus_per_instance // self.nodes_per_instance

    def summary(self) -> str:
        """``3 instances (the plan's count) of 4 GPUs each (tp 4 x pp 1) on h200-sxm``."""
        s = self.spec
        ep = f", ep {s.ep}" if s.ep > 1 else ""
        if s.attn_dp > 1:
            ep += f", {s.attn_dp} attention data-parallel ranks"
        nodes = (f", {self.nodes_per_instance} nodes of {self.gpus_per_pod} GPUs each"
                 if self.nodes_per_instance > 1 else "")
        return (f"{s.count} instance{'s' if s.count > 1 else ''} (the plan's count) of "
                f"{self.gpus_per_instance} GPU{'s' if self.gpus_per_instance > 1 else ''} each "
                f"(tp {s.tp} x pp {s.pp}{ep}{nodes}) on {s.hardware} "
                f"({self.hardware.display_name})")


@dataclass(frozen=True)
class Part:
    """One exported scenario: a workload's groups in one mode."""

    label: str | None
    source: str
    scenario: Scenario
    model: ModelSpec
    precision: Precision
    groups: tuple[LaunchGroup, ...]

    @property
    def disaggregated(self) -> bool:
        """Whether prefill and decode run on separate groups."""
        return self.scenario.disaggregated

    @property
    def rate_per_s(self) -> float:
        """The part's planned request rate."""
        return float(getattr(self.scenario.workload.arrival, "rate", 0.0) or 0.0)

    def speculative(self, group: LaunchGroup) -> Speculative | None:
        """``group``'s speculative decoding as simulated (its own, else the scenario's; never
        on a prefill group)."""
        if group.spec.role == "prefill":
            return None
        return group.spec.speculative or self.scenario.speculative

    @property
    def max_model_len(self) -> int:
        """The engines' context limit as modelled: the model's context unless a group sets it."""
        lens = [g.spec.max_model_len for g in self.groups if g.spec.max_model_len]
        return min(lens) if lens else self.model.max_position_embeddings

    def path(self, folder: str, stem: str, ext: str) -> str:
        """``deploy/<folder>/[<label>-]<stem>.<ext>``."""
        prefix = f"{self.label}-" if self.label else ""
        return f"deploy/{folder}/{prefix}{stem}.{ext}"

    def model_placeholder(self, checkpoint: str | None) -> str | None:
        """What the model argument must name when it cannot be the catalog's repository id
        (``None``: the repository id is the model to serve)."""
        repo = self.model.hf_id
        if checkpoint is not None:
            return checkpoint.format(repo=repo or self.model.display_name)
        if repo is None:
            return (f"the Hugging Face repository id or a local folder of "
                    f"{self.model.display_name} (the model {self.model.name!r} has no hf_id)")
        return None

    def header(self, engine: str, what: str = "engine flag") -> list[str]:
        """The first comment lines of every file of this part."""
        where = f" ({self.label})" if self.label else ""
        return [f"{engine} launch file written by servingcast-solve from {self.source}{where}: "
                f"{self.model.display_name} in {self.precision.name}, "
                f"{'disaggregated' if self.disaggregated else 'aggregated'}, "
                f"{self.rate_per_s:.4g} req/s planned.",
                f"Every {what} below is the value servingcast modelled; regenerate rather "
                "than edit."]


def dns_name(*parts: str) -> str:
    """A Kubernetes object name (RFC 1123: lower case, digits and ``-``, at most 63)."""
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(p for p in parts if p).lower()).strip("-")
    return text[:63].rstrip("-") or "servingcast"


def _scenario_names(files: Mapping[str, bytes]) -> list[tuple[str, str | None]]:
    names = sorted(n for n in files
                   if "/" not in n and n.startswith("scenario") and n.endswith(".yaml"))
    parts = [n for n in names if n != "scenario.yaml"]
    if not parts:
        return [(n, None) for n in names]
    return [(n, n[len("scenario-"):-len(".yaml")]) for n in parts]


def read_parts(files: Mapping[str, bytes],
               node_gpus: Mapping[str, int] | None = None) -> list[Part]:
    """The plan's parts, read from its scenario files among ``files`` (``scenario.yaml`` when
    it is the only one, else every ``scenario-<part>.yaml``). ``node_gpus`` maps a hardware
    name to the GPUs of one of its nodes (a problem's pools may differ from the catalog)."""
    out = []
    for name, label in _scenario_names(files):
        data = yaml.safe_load(files[name])
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: expected a scenario mapping. To fix: regenerate it with "
                              "servingcast-solve --output")
        for group in data.get("instance_groups") or []:
            # A device copied next to the scenarios (export.hardware_files): by its name, which
            # this process knows from the problem's own file.
            ref = group.get("hardware") if isinstance(group, dict) else None
            if isinstance(ref, str) and ref.startswith("hardware-") and ref in files:
                group["hardware"] = ref[len("hardware-"):-len(".yaml")]
        scenario = scenario_from_dict(data, source=name)
        model = get_model(scenario.model)
        precision = get_precision(scenario.precision)
        if scenario.kv_cache_dtype is not None:
            precision = precision.with_kv_cache_dtype(scenario.kv_cache_dtype)
        groups = []
        for g in scenario.instance_groups:
            hardware = get_hardware(g.hardware)
            cm = CostModel(model, hardware, precision, Parallelism(tp=g.tp, pp=g.pp, ep=g.ep,
                                                                   attn_dp=g.attn_dp))
            size = (node_gpus or {}).get(g.hardware) or hardware.gpus_per_node
            groups.append(LaunchGroup(spec=g, hardware=hardware, node_gpus=size,
                                      mem_fraction_static=mem_fraction_static(cm, g)))
        out.append(Part(label=label, source=name, scenario=scenario, model=model,
                        precision=precision, groups=tuple(groups)))
    return out
