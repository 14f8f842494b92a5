"""NVIDIA Dynamo: one ``DynamoGraphDeployment`` per part of the plan, with vLLM workers.

The graph has a ``Frontend`` (the OpenAI endpoint and router) and one worker service per
instance group: ``replicas`` = the plan's count, ``resources.limits.gpu`` = the GPUs of one
node's share of an instance (``multinode.nodeCount`` nodes when an instance spans several),
and ``python3 -m dynamo.vllm`` with the group's engine flags
(:func:`servingcast.deploy.vllm.engine_args`; Dynamo sets up the NIXL KV transfer itself, so
no ``--kv-transfer-config``). Prefill and decode workers carry ``subComponentType`` and
``--disaggregation-mode`` (Dynamo's ``examples/backends/vllm/deploy/disagg.yaml``).
"""

from __future__ import annotations

from typing import Any

from servingcast.deploy._shell import comments, yaml_text
from servingcast.deploy.parts import Part, dns_name
from servingcast.deploy.vllm import engine_args, model_arg

#: Dynamo's vLLM runtime image: pick the release tag you deploy.
IMAGE = "nvcr.io/nvidia/ai-dynamo/vllm-runtime:REPLACE-WITH-RELEASE-TAG"


def graph(part: Part) -> dict[str, Any]:
    """The ``DynamoGraphDeployment`` of ``part``."""
    repo, placeholder = model_arg(part)
    model = f"<{placeholder}>" if placeholder is not None or repo is None else repo
    services: dict[str, Any] = {"Frontend": {
        "componentType": "frontend", "replicas": 1,
        "extraPodSpec": {"mainContainer": {"image": IMAGE}}}}
    for group in part.groups:
        g = group.spec
        args, _ = engine_args(part, group, connector=False, ray=False)
        mode = ["--disaggregation-mode", g.role] if g.role != "aggregated" else []
        service: dict[str, Any] = {"envFromSecret": "hf-token-secret",
                                   "componentType": "worker"}
        if g.role != "aggregated":
            service["subComponentType"] = g.role
        service["replicas"] = g.count
        service["resources"] = {"limits": {"gpu": str(group.gpus_per_pod)}}
        if group.nodes_per_instance > 1:
            service["multinode"] = {"nodeCount": group.nodes_per_instance}
        service["extraPodSpec"] = {"mainContainer": {
            "image": IMAGE, "workingDir": "/workspace/examples/backends/vllm",
            "command": ["python3", "-m", "dynamo.vllm"],
            "args": ["--model", model, *mode, *args]}}
        services[dns_name(group.name)] = service
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
            "metadata": {"name": dns_name(part.label or part.model.name, "vllm")},
            "spec": {"services": services}}


def dynamo_files(part: Part) -> dict[str, bytes]:
    """``deploy/dynamo/graph.yaml`` (``<part>-graph.yaml`` for a plan of several parts)."""
    lines = part.header("NVIDIA Dynamo") + [
        "kubectl apply -f this file in a namespace with the Dynamo platform (operator) "
        "installed and a secret hf-token-secret holding HF_TOKEN.",
        f"Set the image tag ({IMAGE.rsplit(':', 1)[0]}). Older Dynamo releases take "
        "--is-prefill-worker instead of --disaggregation-mode prefill.",
    ] + [f"{g.name}: {g.summary()}." for g in part.groups]
    text = comments(lines) + yaml_text([graph(part)])
    return {part.path("dynamo", "graph", "yaml"): text.encode()}
