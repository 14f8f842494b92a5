"""``vllm bench serve`` reproducing a part's planned workload, to check the plan on real GPUs.

Requests: ``--dataset-name random`` at the planned ``--request-rate`` (Poisson,
``--burstiness 1``; gamma arrivals of variation ``cv`` are ``--burstiness 1/cv^2``), as many
as the scenario simulated (``--num-prompts``), ``--ignore-eos`` so every request generates its
planned output length. Metrics: TTFT, TPOT, ITL and E2E at the SLO's percentile (plus p50 and
p99), and ``--goodput`` with the SLO limits in ms — the same definitions as the planner's.

Lengths: vLLM's random dataset draws each length uniformly from
``[L * (1 - r), L * (1 + r)]`` (``--random-input-len`` ``L``, ``--random-range-ratio`` ``r``).
A fixed length is ``L`` with ``r = 0``; a uniform ``[low, high]`` is exact with
``L = (low + high) / 2`` and ``r = (high - low) / (high + low)``. Normal, log-normal and
empirical lengths are approximated by the uniform of the same mean and standard deviation,
``L = mean`` and ``r = sqrt(3) * std / mean`` (at most 0.99): the right load, a thinner tail.
The mean and standard deviation are those of the planner's quantile points
(:func:`servingcast.planner.lengths.length_points`). vLLM takes one ratio for both lengths
(``vllm/benchmarks/datasets/arg_utils.py``); when they differ the larger is used, which keeps
both means (the load) and widens the other length's spread.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from servingcast.deploy._shell import Raw, Token, command, model_token, script
from servingcast.deploy.parts import Part
from servingcast.deploy.vllm import PROXY_PORT, model_arg
from servingcast.planner.lengths import length_points
from servingcast.workload import FixedLength, UniformLength

#: Largest range ratio vLLM accepts is below 1.
MAX_RANGE_RATIO = 0.99


def random_length(dist: Any) -> tuple[int, float, bool]:
    """``(L, r, exact)``: vLLM's random-dataset length and range ratio for ``dist`` (module
    docstring); ``exact`` is False when the distribution is approximated."""
    if isinstance(dist, FixedLength):
        return dist.value, 0.0, True
    if isinstance(dist, UniformLength):
        center = (dist.low + dist.high) / 2.0
        return round(center), round((dist.high - dist.low) / (dist.high + dist.low), 4), True
    points = length_points(dist)
    mean, std = float(np.mean(points)), float(np.std(points))
    ratio = min(MAX_RANGE_RATIO, math.sqrt(3.0) * std / mean) if mean > 0 else 0.0
    return max(1, round(mean)), round(ratio, 4), False


def percentiles(attainment: float) -> str:
    """``--metric-percentiles``: the SLO's percentile, p50 and p99 (``50,90,99``)."""
    target = round(attainment * 100.0, 6)
    values = sorted({50.0, 99.0, target})
    return ",".join(f"{v:g}" for v in values)


def bench_argv(part: Part) -> tuple[list[Token], list[str]]:
    """The ``vllm bench serve`` command of ``part`` and the notes on it."""
    s = part.scenario
    w = s.workload
    notes = []
    repo, placeholder = model_arg(part)
    in_len, in_ratio, in_exact = random_length(w.input_len)
    out_len, out_ratio, out_exact = random_length(w.output_len)
    argv: list[Token] = ["vllm", "bench", "serve", "--backend", "openai",
                         "--base-url", Raw('"$BASE_URL"'), "--endpoint", "/v1/completions",
                         "--model", model_token(repo, placeholder),
                         "--dataset-name", "random",
                         "--random-input-len", str(in_len), "--random-output-len", str(out_len)]
    ratio = max(in_ratio, out_ratio)
    if ratio:
        argv += ["--random-range-ratio", f"{ratio:g}"]
        if in_ratio != out_ratio:
            notes.append(f"vLLM takes one --random-range-ratio for both lengths; the input's "
                         f"({in_ratio:g}) and the output's ({out_ratio:g}) differ, so this uses "
                         "the larger: both means stay, the other length spreads wider")
    if not (in_exact and out_exact):
        notes.append("the workload's normal/log-normal/empirical lengths are approximated by "
                     "uniform ones of the same mean and standard deviation (vLLM's random "
                     "dataset is uniform): the right load, a thinner tail")
    arrival = w.arrival
    burstiness = 1.0
    if arrival is not None and getattr(arrival, "kind", "") == "gamma":
        burstiness = 1.0 / float(getattr(arrival, "cv", 1.0)) ** 2
    elif arrival is not None and getattr(arrival, "kind", "") != "poisson":
        notes.append(f"{arrival.kind} arrivals: vLLM sends Poisson (or gamma) arrivals at "
                     "the same rate")
    argv += ["--ignore-eos", "--request-rate", repr(round(part.rate_per_s, 6)),
             "--burstiness", f"{burstiness:g}", "--num-prompts", str(w.num_requests or 1000),
             "--seed", str(s.seed), "--percentile-metrics", "ttft,tpot,itl,e2el",
             "--metric-percentiles", percentiles(s.slo.attainment)]
    goodput = [f"{name}:{value * 1e3:g}" for name, value in
               (("ttft", s.slo.ttft), ("tpot", s.slo.tpot)) if value is not None]
    if goodput:
        argv += ["--goodput", *goodput]
    name = f"{part.label}.json" if part.label else "bench.json"
    argv += ["--save-result", "--result-dir", "bench-results", "--result-filename", name]
    return argv, notes


def bench_files(part: Part) -> dict[str, bytes]:
    """``deploy/bench.sh`` (``deploy/bench-<part>.sh`` for a plan of several parts); nothing
    for a scenario without synthetic lengths or a request rate (a trace, a closed loop), which
    the planner never exports."""
    w = part.scenario.workload
    if w.input_len is None or w.output_len is None or part.rate_per_s <= 0:
        return {}
    argv, notes = bench_argv(part)
    s = part.scenario
    url = f"http://localhost:{PROXY_PORT if part.disaggregated else 8000}"
    entry = ("the proxy or router of deploy/vllm/ or deploy/sglang/" if part.disaggregated
             else "a load balancer over the instances")
    slo = " and ".join(f"{k} <= {v * 1e3:g} ms" for k, v in
                       (("TTFT", s.slo.ttft), ("TPOT", s.slo.tpot)) if v is not None)
    header = part.header("Benchmark", "rate, length and SLO") + [
        f"Sends the planned workload to BASE_URL ({entry}; default {url}) and saves "
        "bench-results/ with TTFT, TPOT, ITL and E2E percentiles.",
        f"The plan holds when {s.slo.attainment:.4g} of the requests meet {slo}: a goodput "
        f"of at least {s.slo.attainment * part.rate_per_s:.4g} req/s.",
    ] + [f"Note: {n}" for n in notes]
    body = f'BASE_URL="${{BASE_URL:-{url}}}"\n' + command(argv, prefix="exec ")
    stem = f"bench-{part.label}" if part.label else "bench"
    return {f"deploy/{stem}.sh": script(header, body)}
