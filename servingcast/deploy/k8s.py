"""Kubernetes manifests: one workload object (and its Service) per instance group, running vLLM.

An instance that fits on one node is a ``Deployment`` whose pods each hold one instance
(``replicas`` = the plan's count, ``<vendor>/gpu`` = tp * pp). An instance larger than a node
is a ``LeaderWorkerSet`` (the Kubernetes LWS API, ``leaderworkerset.x-k8s.io/v1``): each
replica is one instance of ``size`` pods, one a node, that form a Ray cluster through vLLM's
``multi-node-serving.sh`` (as in vLLM's LWS guide); ``replicas`` = the plan's count and each pod
requests the GPUs of its node's share (``tp * pp / size``). The containers run the same engine
flags as ``deploy/vllm/`` (:func:`servingcast.deploy.vllm.engine_args`).
"""

from __future__ import annotations

import shlex
from typing import Any

from servingcast.deploy._shell import comments, yaml_text
from servingcast.deploy.parts import LaunchGroup, Part, dns_name
from servingcast.deploy.vllm import engine_args, model_arg

#: Device-plugin resource of each vendor's accelerators.
GPU_RESOURCE = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu",
                "huawei": "huawei.com/Ascend910", "intel": "gpu.intel.com/i915",
                "google": "google.com/tpu"}
#: vLLM's OpenAI-server images (pin a release in production).
IMAGES = {"nvidia": "vllm/vllm-openai:latest", "amd": "rocm/vllm:latest"}
PORT = 8000
RAY_HELPER = "/vllm-workspace/examples/online_serving/multi-node-serving.sh"


def gpu_resource(group: LaunchGroup) -> str:
    """The resource name a pod of ``group`` requests its accelerators by."""
    return GPU_RESOURCE.get(group.hardware.vendor, "nvidia.com/gpu")


def vllm_argv(part: Part, group: LaunchGroup) -> list[str]:
    """``vllm serve`` as a container runs it (model placeholders written as ``<...>``)."""
    repo, placeholder = model_arg(part)
    model = f"<{placeholder}>" if placeholder is not None or repo is None else repo
    args, _ = engine_args(part, group)
    return ["vllm", "serve", model, "--host", "0.0.0.0", "--port", str(PORT), *args]


def _container(name: str, group: LaunchGroup, command: list[str], args: list[str],
               serve: bool) -> dict[str, Any]:
    resource = gpu_resource(group)
    gpus = group.gpus_per_pod
    env: list[dict[str, Any]] = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "hf-token-secret", "key": "HF_TOKEN", "optional": True}}}]
    if group.spec.role != "aggregated":
        env.append({"name": "VLLM_NIXL_SIDE_CHANNEL_HOST",
                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    container: dict[str, Any] = {
        "name": name, "image": IMAGES.get(group.hardware.vendor, IMAGES["nvidia"]),
        "command": command, "args": args, "env": env,
        "resources": {"limits": {resource: gpus}, "requests": {resource: gpus}},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if serve:
        container["ports"] = [{"name": "http", "containerPort": PORT}]
        container["readinessProbe"] = {"httpGet": {"path": "/health", "port": PORT},
                                       "initialDelaySeconds": 60, "periodSeconds": 10}
    return container


def _pod(containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"containers": containers,
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]}


def manifests(part: Part, group: LaunchGroup) -> list[dict[str, Any]]:
    """The workload object and Service of ``group``."""
    name = dns_name(part.label or "", group.name)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "servingcast",
              "servingcast.io/role": group.spec.role,
              "servingcast.io/hardware": dns_name(group.hardware.name)}
    argv = vllm_argv(part, group)
    if group.nodes_per_instance == 1:
        serve = _container("vllm", group, argv[:2], argv[2:], serve=True)
        workload: dict[str, Any] = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": group.spec.count,
                     "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                     "template": {"metadata": {"labels": labels}, "spec": _pod([serve])}}}
        selector = {"app.kubernetes.io/name": name}
    else:
        leader = (f"bash {RAY_HELPER} leader --ray_cluster_size=$(LWS_GROUP_SIZE); "
                  f"exec {shlex.join(argv)}")
        worker = f"bash {RAY_HELPER} worker --ray_address=$(LWS_LEADER_ADDRESS)"
        workload = {
            "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": group.spec.count, "leaderWorkerTemplate": {
                "size": group.nodes_per_instance,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {"metadata": {"labels": {**labels, "role": "leader"}},
                                   "spec": _pod([_container("vllm-leader", group,
                                                            ["/bin/bash", "-c"], [leader],
                                                            serve=True)])},
                "workerTemplate": {"metadata": {"labels": {**labels, "role": "worker"}},
                                   "spec": _pod([_container("vllm-worker", group,
                                                            ["/bin/bash", "-c"], [worker],
                                                            serve=False)])}}}}
        selector = {"app.kubernetes.io/name": name, "role": "leader"}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "labels": labels},
               "spec": {"selector": selector,
                        "ports": [{"name": "http", "port": PORT, "targetPort": PORT}]}}
    return [workload, service]


def k8s_files(part: Part) -> dict[str, bytes]:
    """``deploy/k8s/<group>.yaml`` for each group."""
    files = {}
    for group in part.groups:
        g = group.spec
        kind = "Deployment" if group.nodes_per_instance == 1 else "LeaderWorkerSet"
        _, notes = engine_args(part, group)
        lines = part.header("Kubernetes") + [
            f"Group {g.name!r}, role {g.role}: {group.summary()}.",
            f"A {kind} of {g.count} replica{'s' if g.count > 1 else ''}, "
            f"{group.gpus_per_pod} {gpu_resource(group)} per pod"
            + (f", {group.nodes_per_instance} pods (nodes) per replica" if kind != "Deployment"
               else "") + ".",
            f"Pin it to {g.hardware} nodes with a nodeSelector for your cluster's node labels "
            "(e.g. nvidia.com/gpu.product).",
        ]
        if kind != "Deployment":
            lines.append("Needs the LeaderWorkerSet controller (kubernetes-sigs/lws).")
        if g.role != "aggregated":
            lines.append("Disaggregated: route each request to a prefill, then a decode pod "
                         "(vLLM's NIXL proxy, see deploy/vllm/), or use deploy/dynamo/.")
        if group.hardware.vendor not in IMAGES:
            lines.append(f"{group.hardware.vendor} hardware: use your platform's vLLM image "
                         "and device-plugin resource name.")
        lines += [f"Note: {n}" for n in notes]
        text = comments(lines) + yaml_text(manifests(part, group))
        files[part.path("k8s", group.name, "yaml")] = text.encode()
    return files
