"""Benchmark: simulated requests per wall-clock second of the serving simulator.

100 000 requests with ShareGPT-like lengths (log-normal, mean 1000 input and 250 output tokens)
arrive as a Poisson process at 80% of the cluster's capacity: 16 aggregated Llama-3.1-8B engines
on H100 (vLLM defaults: chunked prefill, 8192-token budget, 256 sequences). The capacity is
measured first with the simulator itself — one engine kept saturated by a closed loop — so
"80% load" means 80% of what the same engines sustain.

Prints the simulated requests per second (one core, wall clock of ``simulate`` alone; the best
and the median of ``--repeat`` runs, since other processes on the machine add noise) and the
peak memory (tracemalloc of one run, and the process's max RSS). Target: >= 10 000 req/s.

    python scripts/bench_simulator.py [--requests N] [--load F] [--instances N] [--repeat N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import tracemalloc

from servingcast.sim import scenario_from_dict, simulate

ENGINE = {"hardware": "h100-sxm", "max_num_seqs": 256, "max_num_batched_tokens": 8192,
          "enable_chunked_prefill": True}
LENGTHS = {"input_len": {"kind": "lognormal", "mean": 1000, "std": 1000, "max": 16000},
           "output_len": {"kind": "lognormal", "mean": 250, "std": 250, "max": 4000}}


def scenario(instances: int, workload: dict[str, object]) -> object:
    return scenario_from_dict({
        "model": "llama-3.1-8b", "precision": "bf16",
        "instance_groups": [{"name": "h100", "count": instances, **ENGINE}],
        "router": {"kind": "least_outstanding"},
        "workload": {**workload, **LENGTHS},
        "slo": {"ttft": "1 s", "tpot": "50 ms"},
        "seed": 0,
    })


def capacity_per_instance() -> float:
    """Requests per second one engine sustains when never idle (closed loop of 512 users)."""
    result = simulate(scenario(1, {"num_requests": 6000,
                                   "arrival": {"kind": "concurrency", "concurrency": 512}}))
    return result.summary.request_throughput_per_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--load", type=float, default=0.8)
    parser.add_argument("--instances", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    capacity = capacity_per_instance()
    rate = args.load * capacity * args.instances
    sc = scenario(args.instances, {"num_requests": args.requests,
                                   "arrival": {"kind": "poisson", "rate": rate}})
    print(f"capacity of one engine: {capacity:.2f} req/s (saturated closed loop); "
          f"arrival rate {rate:.1f} req/s = {args.load:.0%} of {args.instances} engines")

    simulate(sc, num_requests=2000)  # warm-up: imports, catalogs, cost-model probing
    walls = []
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        result = simulate(sc)
        walls.append(time.perf_counter() - start)
    wall, median = min(walls), statistics.median(walls)
    tracemalloc.start()
    simulate(sc)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    s = result.summary
    print(f"simulated {s.num_requests:,} requests ({s.completed:,} completed, {s.rejected} "
          f"rejected) over {s.duration_s:,.0f} s of serving in {wall:.2f} s wall (best of "
          f"{len(walls)}; runs: {', '.join(f'{w:.2f}' for w in walls)} s)")
    print(f"  TTFT p50/p99 {s.ttft_ms.p50:.0f}/{s.ttft_ms.p99:.0f} ms, TPOT p50/p99 "
          f"{s.tpot_ms.p50:.1f}/{s.tpot_ms.p99:.1f} ms, utilization "
          f"{s.groups[0].utilization:.0%}, preemptions {s.preemptions}")
    print(f"simulated requests per second: {s.num_requests / wall:,.0f} (best), "
          f"{s.num_requests / median:,.0f} (median)")
    print(f"peak memory: {peak / 2**20:.1f} MiB traced during the run, {rss:.0f} MiB max RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
