"""Launch files for a plan: the engine commands, manifests and benchmark that run it for real.

:func:`render_deploy` reads the plan's exported scenarios (``scenario*.yaml`` among the output
files, so after a refinement it describes the refined plan) and returns the ``deploy/`` files
as bytes, nothing written:

- ``deploy/vllm/<group>.sh``: ``vllm serve`` per instance group (``proxy.sh`` for P/D);
- ``deploy/sglang/<group>.sh``: ``python -m sglang.launch_server`` (``router.sh`` for P/D);
- ``deploy/dynamo/graph.yaml``: an NVIDIA Dynamo ``DynamoGraphDeployment``;
- ``deploy/k8s/<group>.yaml``: a Deployment (or LeaderWorkerSet) and Service per group;
- ``deploy/bench.sh``: ``vllm bench serve`` at the planned rate, lengths and SLO percentiles.

A plan of several parts (workloads, or a workload served both ways) prefixes each file with
its part (``chat-…``), as its scenario files are named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from servingcast.errors import ConfigError

if TYPE_CHECKING:
    from servingcast.deploy.parts import Part
    from servingcast.planner.problem import Problem

#: What ``--emit`` may choose (every one by default).
ENGINES = ("vllm", "sglang", "dynamo", "k8s")
#: The folder of the launch files inside ``--output``.
DEPLOY_DIR = "deploy"

__all__ = ["DEPLOY_DIR", "ENGINES", "node_sizes", "parse_emit", "render_deploy"]


def parse_emit(text: str | None) -> tuple[str, ...]:
    """The engines of ``--emit`` (``vllm,k8s``; ``all``, or None, for every one; ``none`` for
    no launch files), in :data:`ENGINES` order; :class:`ConfigError` on an unknown name."""
    if text is None or text.strip().lower() == "all":
        return ENGINES
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return ()
    unknown = [n for n in names if n not in ENGINES]
    if unknown or not names:
        raise ConfigError(
            f"--emit {text!r}: unknown launch-file kind {', '.join(map(repr, unknown)) or '(none)'}"
            f". To fix: give a comma-separated list of {', '.join(ENGINES)} (e.g. --emit "
            "vllm,k8s), or all, or none")
    return tuple(e for e in ENGINES if e in names)


def node_sizes(problem: Problem) -> dict[str, int]:
    """GPUs per node of each hardware kind in ``problem``'s pools (by the pool's hardware
    string and by the catalog name; the smallest when pools differ)."""
    out: dict[str, int] = {}
    for pool in problem.pools:
        for key in (pool.hardware, pool.spec.name):
            out[key] = min(out.get(key, pool.node_size), pool.node_size)
    return out


def render_deploy(files: Mapping[str, bytes], emit: Iterable[str] = ENGINES,
                  node_gpus: Mapping[str, int] | None = None) -> dict[str, bytes]:
    """The ``deploy/`` files (relative path -> bytes) of the plan whose output ``files`` are
    given, for the engines in ``emit``; ``deploy/bench.sh`` whenever anything is emitted. Empty
    for an empty ``emit`` or a plan without scenarios."""
    from servingcast.deploy.bench import bench_files
    from servingcast.deploy.dynamo import dynamo_files
    from servingcast.deploy.k8s import k8s_files
    from servingcast.deploy.parts import read_parts
    from servingcast.deploy.sglang import sglang_files
    from servingcast.deploy.vllm import vllm_files

    chosen = [e for e in ENGINES if e in set(emit)]
    if not chosen:
        return {}
    renderers: dict[str, Callable[[Part], dict[str, bytes]]] = {
        "vllm": vllm_files, "sglang": sglang_files, "dynamo": dynamo_files, "k8s": k8s_files}
    out: dict[str, bytes] = {}
    parts = read_parts(files, node_gpus)
    for part in parts:
        for engine in chosen:
            out.update(renderers[engine](part))
        out.update(bench_files(part))
    if parts:
        out[f"{DEPLOY_DIR}/README.md"] = _readme(parts, chosen, sorted(out))
    return out


def _readme(parts: list[Part], engines: list[str], names: list[str]) -> bytes:
    lines = ["# Launch files for this plan", "",
             "Written by `servingcast-solve` from the plan's scenario files; every engine flag "
             "is the value the planner modelled (tp/pp/ep, max_num_seqs, token budget, chunked "
             "prefill, block size, memory, precision). Regenerate them rather than edit them.",
             ""]
    for part in parts:
        where = f" `{part.label}`" if part.label else ""
        lines.append(f"## Part{where}: {part.model.display_name}, "
                     f"{'disaggregated' if part.disaggregated else 'aggregated'}, "
                     f"{part.rate_per_s:.4g} req/s")
        lines += [f"- `{g.name}` ({g.spec.role}): {g.summary()}" for g in part.groups]
        lines.append("")
    lines += ["## Files", ""] + [f"- `{n.removeprefix(DEPLOY_DIR + '/')}`" for n in names] + [
        "", "1. Start every instance (`vllm/` or `sglang/` scripts, or apply `k8s/` or "
        "`dynamo/`); a disaggregated part also needs its `proxy.sh` / `router.sh`.",
        "2. Run `bench*.sh` against the entry point and compare its percentiles and goodput "
        "with the plan.", ""]
    if engines != list(ENGINES):
        lines.insert(4, f"Emitted: {', '.join(engines)} (see --emit).")
        lines.insert(5, "")
    return "\n".join(lines).encode()
