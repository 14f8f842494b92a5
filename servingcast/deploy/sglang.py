"""``python -m sglang.launch_server`` for each instance group, and the PD router.

Flag for flag (SGLang's ``ServerArgs``): ``--tp-size``/``--pp-size``/``--ep-size`` = tp/pp/ep
(SGLang splits experts ``ep`` ways and each expert ``tp/ep`` ways, the plan's layout);
``--max-running-requests`` = ``max_num_seqs``; ``--chunked-prefill-size`` = the token budget
(``-1`` when the plan does not chunk), with ``--enable-mixed-chunk`` on aggregated groups so a
prefill chunk shares its iteration with the running decodes, as modelled; ``--page-size`` =
block size; ``--mem-fraction-static`` from :func:`servingcast.deploy.parts.mem_fraction_static`;
``--disable-radix-cache`` when prefix caching is off. Speculative decoding with a separate draft
model (the scenario's ``speculative``) on decode and aggregated groups: ``--speculative-algorithm
STANDALONE --speculative-draft-model-path <draft> --speculative-num-steps k
--speculative-eagle-topk 1 --speculative-num-draft-tokens k+1`` (a chain of ``k`` draft tokens,
as modelled; SGLang's speculative decoding docs). Prefill/decode disaggregation:
``--disaggregation-mode prefill|decode`` with NIXL (``--disaggregation-transfer-backend nixl``)
and the router's ``--pd-disaggregation``. Attention data-parallelism (a group's ``attn_dp``
= N > 1, DEP): ``--tp-size N*tp --dp-size N --enable-dp-attention --ep-size N*tp
--moe-a2a-backend deepep`` (SGLang docs, "DP, DPA and sgl-router" and "Expert Parallelism"),
``--max-running-requests`` the engine's total over its ranks.

SGLang's chunk budget counts prefill tokens only; vLLM's ``--max-num-batched-tokens`` (what was
modelled) also counts the decode tokens of the iteration, so a mixed SGLang iteration can be up
to ``max_num_seqs`` tokens larger. Decode instances run no prefill and get no chunk flag.
"""

from __future__ import annotations

from servingcast.costmodel.spec import MTP
from servingcast.deploy._shell import Raw, Token, command, model_token, script
from servingcast.deploy.parts import LaunchGroup, Part
from servingcast.deploy.precision import sglang_flags
from servingcast.deploy.vllm import speculative_note
from servingcast.specs.catalog import get_model

BOOTSTRAP_PORT = 8998
DIST_PORT = 5000
ROUTER_PORT = 8192


def engine_args(part: Part, group: LaunchGroup) -> tuple[list[str], list[str]]:
    """The engine flags of ``group`` (no model, host, port or node ranks) and notes."""
    g = group.spec
    notes: list[str] = []
    if g.attn_dp > 1:
        # DEP: SGLang's --tp-size is the whole engine, --dp-size the attention ranks in it.
        args = ["--tp-size", str(g.attn_dp * g.tp), "--dp-size", str(g.attn_dp),
                "--enable-dp-attention", "--pp-size", str(g.pp), "--ep-size", str(g.ep),
                "--moe-a2a-backend", "deepep",
                "--max-running-requests", str(g.engine_max_num_seqs)]
        notes.append(f"{g.attn_dp} attention data-parallel ranks of tp {g.tp}, experts "
                     f"expert-parallel over all {g.ep} GPUs (DeepEP all-to-all); "
                     f"--max-running-requests is the engine's total, {g.max_num_seqs} per rank")
    else:
        args = ["--tp-size", str(g.tp), "--pp-size", str(g.pp)]
        if g.ep > 1:
            args += ["--ep-size", str(g.ep)]
        args += ["--max-running-requests", str(g.max_num_seqs)]
    if g.role != "decode":
        args += ["--chunked-prefill-size",
                 str(g.max_num_batched_tokens) if g.enable_chunked_prefill else "-1"]
        if g.role == "aggregated" and g.enable_chunked_prefill:
            args.append("--enable-mixed-chunk")
            notes.append(f"--chunked-prefill-size counts prefill tokens only; the modelled "
                         f"budget ({g.max_num_batched_tokens}) also counts the iteration's "
                         "decode tokens")
    else:
        notes.append(f"decode instances run no prefill: the plan's token budget "
                     f"({g.max_num_batched_tokens} >= max_num_seqs) has no SGLang flag here")
    args += ["--page-size", str(g.block_size),
             "--mem-fraction-static", f"{group.mem_fraction_static:g}"]
    notes.append(f"--mem-fraction-static {group.mem_fraction_static:g} covers weights and KV "
                 f"only: it is gpu_memory_utilization {g.gpu_memory_utilization:g} less the "
                 "modelled activation reserve, so the KV pool is the modelled one")
    if not g.enable_prefix_caching:
        args.append("--disable-radix-cache")
    if g.max_model_len is not None:
        args += ["--context-length", str(g.max_model_len)]
    spec = part.speculative(group)
    if spec is not None:
        k = spec.num_speculative_tokens
        if spec.draft_model == MTP:  # the model's own MTP layers: SGLang's NEXTN (EAGLE)
            args += ["--speculative-algorithm", "NEXTN"]
        else:
            draft = get_model(spec.draft_model)
            args += ["--speculative-algorithm", "STANDALONE",
                     "--speculative-draft-model-path", draft.hf_id or draft.name]
        args += ["--speculative-num-steps", str(k), "--speculative-eagle-topk", "1",
                 "--speculative-num-draft-tokens", str(k + 1)]
        notes.append(speculative_note(part, group))
    flags = sglang_flags(part.precision)
    args += flags.args
    notes += flags.notes
    if g.role != "aggregated":
        args += ["--disaggregation-mode", g.role, "--disaggregation-transfer-backend", "nixl"]
        if g.role == "prefill":
            args += ["--disaggregation-bootstrap-port", str(BOOTSTRAP_PORT)]
    return args, notes


def model_arg(part: Part) -> tuple[str | None, str | None]:
    """(repository id, placeholder text) of the model SGLang serves."""
    return part.model.hf_id, part.model_placeholder(sglang_flags(part.precision).checkpoint)


def sglang_files(part: Part) -> dict[str, bytes]:
    """``deploy/sglang/<group>.sh`` for each group, and ``router.sh`` for a disaggregated
    part."""
    repo, placeholder = model_arg(part)
    files = {}
    for group in part.groups:
        g = group.spec
        args, notes = engine_args(part, group)
        argv: list[Token] = ["python", "-m", "sglang.launch_server",
                             "--model-path", model_token(repo, placeholder),
                             "--host", "0.0.0.0", "--port", Raw('"$PORT"'), *args]
        lines = [f"Group {g.name!r}, role {g.role}: {group.summary()}."]
        if group.nodes_per_instance > 1:
            argv += ["--nnodes", str(group.nodes_per_instance), "--node-rank",
                     Raw('"$NODE_RANK"'), "--dist-init-addr", Raw(f'"$LEADER_ADDR:{DIST_PORT}"')]
            lines.append(f"One instance spans {group.nodes_per_instance} nodes: run this on each "
                         "with NODE_RANK=0.. and LEADER_ADDR set to node 0's address.")
        else:
            lines.append("Run it once per instance, each on its own GPUs (CUDA_VISIBLE_DEVICES) "
                         "and PORT.")
        header = part.header("SGLang") + lines + [f"Note: {n}" for n in notes]
        body = 'PORT="${PORT:-8000}"\n'
        if group.nodes_per_instance > 1:
            body += 'NODE_RANK="${NODE_RANK:?set NODE_RANK}"\n'
            body += 'LEADER_ADDR="${LEADER_ADDR:?set LEADER_ADDR}"\n'
        files[part.path("sglang", group.name, "sh")] = script(
            header, body + command(argv, prefix="exec "))
    if part.disaggregated:
        files[part.path("sglang", "router", "sh")] = _router(part)
    return files


def _router(part: Part) -> bytes:
    argv: list[Token] = ["python", "-m", "sglang_router.launch_router", "--pd-disaggregation"]
    for group in part.groups:
        for i in range(group.spec.count):
            url = f"http://{group.name}-{i}:8000"
            if group.spec.role == "prefill":
                argv += ["--prefill", url, str(BOOTSTRAP_PORT)]
            else:
                argv += ["--decode", url]
    argv += ["--host", "0.0.0.0", "--port", str(ROUTER_PORT)]
    header = part.header("SGLang") + [
        "Requests enter here: the SGLang router pairs a prefill and a decode instance for each "
        "request (the KV goes over NIXL). Replace the host names with your instances' "
        "addresses (one per instance, as the plan counts them; prefill ones with their "
        "bootstrap port)."]
    return script(header, command(argv, prefix="exec "))
