"""Benchmark: simulated requests per wall-clock second of the serving simulator.

100 000 requests with ShareGPT-like lengths (log-normal, mean 1000 input and 250 output tokens)
arrive as a Poisson process at 80% of the cluster's capacity: 16 aggregated Llama-3.1-8B engines
on H100 (vLLM defaults: chunked prefill, 8192-token budget, 256 sequences). The capacity is
measured first with the simulator itself — one engine kept saturated by a closed loop — so
"80% load" means 80% of what the same engines sustain.

Prints the simulated requests per second (one core, wall clock of ``simulate`` alone; the best
and the median of ``--repeat`` runs, since other processes on the machine add noise) and the
peak memory (tracemalloc of one run, and the process's max RSS). Target: >= 10 000 req/s.

``--scale 16,1024`` measures instead how the cost per request grows with the cluster: for each
instance count, ``--per-instance`` requests per engine at the same load per engine, and the
wall-clock microseconds per simulated request (best of ``--repeat``), with the
least-outstanding router (a heap, O(log n) per request) and round-robin (O(1), the reference:
what the rest of the simulator costs at that size). Target: 1024 engines cost at most ~1.3x
what 16 cost per request, and least-outstanding no more than round-robin.

    python scripts/bench_simulator.py [--requests N] [--load F] [--instances N] [--repeat N]
    python scripts/bench_simulator.py --scale 16,1024 [--per-instance N] [--load F] [--repeat N]
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


def scenario(instances: int, workload: dict[str, object],
             router: str = "least_outstanding") -> object:
    return scenario_from_dict({
        "model": "llama-3.1-8b", "precision": "bf16",
        "instance_groups": [{"name": "h100", "count": instances, **ENGINE}],
        "router": {"kind": router},
        "workload": {**workload, **LENGTHS},
        "slo": {"ttft": "1 s", "tpot": "50 ms"},
        "seed": 0,
    })


def capacity_per_instance() -> float:
    """Requests per second one engine sustains when never idle (closed loop of 512 users)."""
    result = simulate(scenario(1, {"num_requests": 6000,
                                   "arrival": {"kind": "concurrency", "concurrency": 512}}))
    return result.summary.request_throughput_per_s


def scaling(counts: list[int], per_instance: int, load: float, repeat: int) -> None:
    """Wall-clock cost per simulated request for each instance count, same load per engine."""
    capacity = capacity_per_instance()
    print(f"capacity of one engine: {capacity:.2f} req/s; {per_instance} requests per engine "
          f"at {load:.0%} of its capacity")
    print(f"{'router':<18} {'engines':>8} {'requests':>9} {'wall (s)':>9} {'us/request':>11} "
          f"{'vs first':>9}")
    for router in ("least_outstanding", "round_robin"):
        first = None
        for count in counts:
            sc = scenario(count, {"num_requests": per_instance * count,
                                  "arrival": {"kind": "poisson", "rate": load * capacity * count}},
                          router)
            simulate(sc, num_requests=min(2000, per_instance * count))  # warm-up
            walls = []
            for _ in range(max(1, repeat)):
                start = time.perf_counter()
                result = simulate(sc)
                walls.append(time.perf_counter() - start)
            per_request = min(walls) / result.summary.num_requests * 1e6
            first = first or per_request
            print(f"{router:<18} {count:>8} {result.summary.num_requests:>9,} {min(walls):>9.2f} "
                  f"{per_request:>11.1f} {per_request / first:>8.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--load", type=float, default=0.8)
    parser.add_argument("--instances", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=str, default=None,
                        help="instance counts to compare per request, e.g. 16,1024")
    parser.add_argument("--per-instance", type=int, default=200,
                        help="requests per engine with --scale")
    args = parser.parse_args()

    if args.scale:
        scaling([int(c) for c in args.scale.split(",")], args.per_instance, args.load,
                args.repeat)
        return 0
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
