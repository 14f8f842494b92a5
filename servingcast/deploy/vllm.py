"""``vllm serve`` for each instance group, and the proxy of a disaggregated part.

Flag for flag (vLLM's ``EngineArgs``): ``--tensor-parallel-size``/``--pipeline-parallel-size``
= tp/pp; ``--enable-expert-parallel`` when the plan's ep spans the tp group (vLLM's expert
parallelism always spans every tp rank, so an ep between 1 and tp has no vLLM flag and is
left out with a note); attention data-parallel ranks (``attn_dp`` = N > 1, DEP):
``--data-parallel-size N --enable-expert-parallel`` with ``--tensor-parallel-size tp`` (vLLM
docs, "Data Parallel Deployment", "Expert Parallel Deployment"; ``--data-parallel-backend ray``
across nodes), the limits per rank; ``--max-num-seqs``, ``--max-num-batched-tokens``,
``--[no-]enable-chunked-prefill``, ``--block-size``, ``--gpu-memory-utilization`` and
``--[no-]enable-prefix-caching`` as modelled; ``--dtype``/``--quantization``/``--kv-cache-dtype``
from :mod:`servingcast.deploy.precision`. Speculative decoding (the scenario's ``speculative``)
on decode and aggregated groups: ``--speculative-config`` with the draft's repository as
``model``, ``num_speculative_tokens`` and the modelled ``draft_tensor_parallel_size`` (vLLM's
``SpeculativeConfig``); the acceptance rate is the traffic's, not a flag. Attention is
tensor-parallel, as modelled (no ``--data-parallel-size``: each instance is its own engine). A
disaggregated part moves KV from prefill to decode through NIXL (``--kv-transfer-config`` with
``NixlConnector``).

One exception: vLLM refuses ``--no-enable-chunked-prefill`` when ``--max-num-batched-tokens``
is below the context length. Decode instances receive their prompts' KV from prefill and run
no prefill of their own, so chunking changes nothing there; they get ``--enable-chunked-prefill``
with a note saying why.
"""

from __future__ import annotations

import json

from servingcast.costmodel.spec import MTP, draft_parallelism
from servingcast.deploy._shell import Raw, Token, command, model_token, script
from servingcast.deploy.parts import LaunchGroup, Part
from servingcast.deploy.precision import vllm_flags
from servingcast.specs.catalog import get_model

#: KV roles of vLLM's ``--kv-transfer-config`` per servingcast role.
KV_ROLES = {"prefill": "kv_producer", "decode": "kv_consumer"}
#: Where vLLM keeps its P/D proxy (the repository's NIXL integration test).
PROXY = "tests/v1/kv_connector/nixl_integration/toy_proxy_server.py"
PROXY_PORT = 8192


def chunked_prefill(part: Part, group: LaunchGroup) -> tuple[bool, str | None]:
    """The ``--enable-chunked-prefill`` value for vLLM, and why it differs from the plan's
    (module docstring), if it does."""
    g = group.spec
    limit = part.max_model_len
    if not g.enable_chunked_prefill and g.max_num_batched_tokens < limit:
        if g.role == "decode":
            return True, (f"--enable-chunked-prefill although the plan's decode group has none: "
                          f"vLLM refuses it off with --max-num-batched-tokens "
                          f"{g.max_num_batched_tokens} below --max-model-len {limit}, and decode "
                          "instances run no prefill (the KV comes from prefill)")
        return False, (f"vLLM refuses --no-enable-chunked-prefill with --max-num-batched-tokens "
                       f"{g.max_num_batched_tokens} below the context length {limit}: add "
                       f"--max-model-len {g.max_num_batched_tokens} or less")
    return g.enable_chunked_prefill, None


def speculative_config(part: Part, group: LaunchGroup) -> dict[str, object] | None:
    """vLLM's ``--speculative-config`` for ``group`` (None: no speculative decoding, or a
    prefill group): the draft's Hugging Face repository (its catalog name when it has none),
    ``num_speculative_tokens`` and the draft's tensor parallelism as modelled
    (:func:`~servingcast.costmodel.spec.draft_parallelism`); the model's own MTP layers are
    vLLM's ``"method": "mtp"`` (vLLM docs, "MTP (Multi-Token Prediction)")."""
    spec = part.speculative(group)
    if spec is None:
        return None
    if spec.draft_model == MTP:
        return {"method": "mtp", "num_speculative_tokens": spec.num_speculative_tokens}
    draft = get_model(spec.draft_model)
    return {"model": draft.hf_id or draft.name,
            "num_speculative_tokens": spec.num_speculative_tokens,
            "draft_tensor_parallel_size": draft_parallelism(draft, group.spec.tp).tp}


def speculative_note(part: Part, group: LaunchGroup) -> str:
    """What a launch file says about the acceptance rate the plan assumed."""
    spec = part.speculative(group)
    rate = "?" if spec is None else f"{spec.acceptance_rate:g}"
    return (f"speculative decoding was planned at an acceptance rate of {rate} per draft "
            "token; measure yours on your traffic (the engine's metrics report it) and "
            "re-plan if it differs")


def engine_args(part: Part, group: LaunchGroup, *, connector: bool = True,
                ray: bool = True) -> tuple[list[str], list[str]]:
    """The engine flags of ``group`` (no model, host or port) and the notes on them.
    ``connector``: add the NIXL ``--kv-transfer-config`` of a prefill or decode group;
    ``ray``: add ``--distributed-executor-backend ray`` when an instance spans nodes."""
    g = group.spec
    notes: list[str] = []
    args = ["--tensor-parallel-size", str(g.tp), "--pipeline-parallel-size", str(g.pp)]
    if g.attn_dp > 1:
        # DEP: attention data-parallel ranks, experts over all of them (vLLM docs, "Data
        # Parallel Deployment" / "Expert Parallel Deployment"); limits are per DP rank.
        args += ["--data-parallel-size", str(g.attn_dp), "--enable-expert-parallel"]
        notes.append(f"{g.attn_dp} attention data-parallel ranks of tp {g.tp}, experts "
                     f"expert-parallel over all {g.attn_dp * g.tp} GPUs; --max-num-seqs and "
                     "--max-num-batched-tokens are each rank's")
    elif g.ep > 1 and g.ep == g.tp:
        args.append("--enable-expert-parallel")
    elif g.ep > 1:
        notes.append(f"ep {g.ep} inside tp {g.tp}: vLLM's expert parallelism spans all tp ranks "
                     "(ep = tp), so this command shards every expert over tp instead (SGLang's "
                     "--ep-size matches the plan)")
    if part.model.moe is not None and g.attn_dp == 1:
        notes.append("attention is tensor-parallel over the tp GPUs, as modelled (no "
                     "--data-parallel-size)")
    chunked, why = chunked_prefill(part, group)
    if why:
        notes.append(why)
    args += ["--max-num-seqs", str(g.max_num_seqs),
             "--max-num-batched-tokens", str(g.max_num_batched_tokens),
             "--enable-chunked-prefill" if chunked else "--no-enable-chunked-prefill",
             "--block-size", str(g.block_size),
             "--gpu-memory-utilization", f"{g.gpu_memory_utilization:g}",
             "--enable-prefix-caching" if g.enable_prefix_caching
             else "--no-enable-prefix-caching"]
    if g.max_model_len is not None:
        args += ["--max-model-len", str(g.max_model_len)]
    config = speculative_config(part, group)
    if config is not None:
        args += ["--speculative-config", json.dumps(config, separators=(",", ":"))]
        notes.append(speculative_note(part, group))
    flags = vllm_flags(part.precision)
    args += flags.args
    notes += flags.notes
    if ray and group.nodes_per_instance > 1:
        args += (["--data-parallel-backend", "ray"] if g.attn_dp > 1
                 else ["--distributed-executor-backend", "ray"])
    if connector and g.role in KV_ROLES:
        config = {"kv_connector": "NixlConnector", "kv_role": KV_ROLES[g.role]}
        args += ["--kv-transfer-config", json.dumps(config, separators=(",", ":"))]
    return args, notes


def model_arg(part: Part) -> tuple[str | None, str | None]:
    """(repository id, placeholder text) of the model vLLM serves (see
    :meth:`Part.model_placeholder`)."""
    return part.model.hf_id, part.model_placeholder(vllm_flags(part.precision).checkpoint)


def _launch_lines(part: Part, group: LaunchGroup) -> list[str]:
    g = group.spec
    lines = [f"Group {g.name!r}, role {g.role}: {group.summary()}."]
    name = f"{part.label}-{g.name}" if part.label else g.name
    if group.nodes_per_instance > 1:
        lines += [f"One instance spans {group.nodes_per_instance} nodes: start a Ray cluster "
                  "over them first (ray start --head on this node, ray start "
                  "--address=<this node>:6379 on the others), then run this on the head node."]
    elif group.gpus_per_instance < group.node_gpus:
        first = ",".join(str(i) for i in range(group.gpus_per_instance))
        second = ",".join(str(i) for i in range(group.gpus_per_instance,
                                                2 * group.gpus_per_instance))
        lines += ["Run it once per instance, each on its own GPUs and port, e.g.:",
                  f"  CUDA_VISIBLE_DEVICES={first} PORT=8000 ./{name}.sh",
                  f"  CUDA_VISIBLE_DEVICES={second} PORT=8001 ./{name}.sh"]
    else:
        lines.append("Run it once per instance, one instance a node.")
    if g.role in KV_ROLES:
        lines.append("Prefill and decode on different hosts: set VLLM_NIXL_SIDE_CHANNEL_HOST to "
                     "this host's address and UCX_NET_DEVICES to its RDMA NICs "
                     "(vLLM NixlConnector guide).")
    return lines


def vllm_files(part: Part) -> dict[str, bytes]:
    """``deploy/vllm/<group>.sh`` for each group, and ``proxy.sh`` for a disaggregated part."""
    repo, placeholder = model_arg(part)
    files = {}
    for group in part.groups:
        args, notes = engine_args(part, group)
        argv: list[Token] = ["vllm", "serve", model_token(repo, placeholder),
                             "--host", "0.0.0.0", "--port", Raw('"$PORT"'), *args]
        header = part.header("vLLM") + _launch_lines(part, group)
        header += [f"Note: {n}" for n in notes]
        header.append(f"If vLLM refuses to start because one request of the model's full "
                      f"context ({part.max_model_len} tokens) does not fit the KV cache, add "
                      "--max-model-len with the longest request of this workload.")
        body = 'PORT="${PORT:-8000}"\n' + command(argv, prefix="exec ")
        files[part.path("vllm", group.name, "sh")] = script(header, body)
    if part.disaggregated:
        files[part.path("vllm", "proxy", "sh")] = _proxy(part)
    return files


def _hosts(part: Part, role: str) -> tuple[list[str], list[str]]:
    hosts = [f"{g.name}-{i}" for g in part.groups if g.spec.role == role
             for i in range(g.spec.count)]
    return hosts, ["8000"] * len(hosts)


def _proxy(part: Part) -> bytes:
    p_hosts, p_ports = _hosts(part, "prefill")
    d_hosts, d_ports = _hosts(part, "decode")
    header = part.header("vLLM") + [
        "Requests enter here: vLLM's proxy sends each to a prefill instance, then to a decode "
        "instance that pulls the prompt's KV over NIXL.",
        f"The proxy is {PROXY} in the vLLM repository. Replace the host names below with your "
        "instances' addresses (one per instance, as the plan counts them).",
    ]
    weighted = [g for g in part.groups if g.spec.weight is not None]
    if weighted:
        shares = ", ".join(f"{g.name} {g.spec.weight:g}" for g in weighted)
        header.append(f"The plan splits each role's traffic by weight ({shares}); this proxy "
                      "round-robins, so put a weighted gateway in front for the planned split.")
    argv: list[Token] = ["python", PROXY, "--host", "0.0.0.0", "--port", str(PROXY_PORT),
                         "--prefiller-hosts", *p_hosts, "--prefiller-ports", *p_ports,
                         "--decoder-hosts", *d_hosts, "--decoder-ports", *d_ports]
    return script(header, command(argv, prefix="exec "))
