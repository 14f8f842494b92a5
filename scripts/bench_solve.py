"""Time the planner on every shipped problem, a generated large one and the quickstart command.

    python scripts/bench_solve.py            # every problems/*.yaml, then scale-20x8
    python scripts/bench_solve.py --repeat 2 # best of 2 per problem
    python scripts/bench_solve.py --no-scale # the shipped problems only
    python scripts/bench_solve.py --wide     # also the candidates' peak memory on a wide search

Columns (seconds): candidates (enumeration, cost-model profiles, dominance), MILP build, MILP
solve (the best plan: every lexicographic stage), plan = candidates + build + solve + extract and
re-check (the MILP stage, target <= 2 s on the shipped problems), then the alternatives (--top
3), the single-mode optima, the Pareto sweep, and the total (target <= 30 s for scale-20x8); the
best plan's MILP status and gap. Finally the wall time of
``servingcast-solve problems/quickstart.yaml --no-refine`` in a fresh process (target <= 3 s).

``scale-20x8`` (:func:`scale_problem`: 20 workloads of 8 models on 8 pools of 8 GPU kinds,
generated here rather than shipped, since every file in problems/ runs in the tests) is solved
with the defaults of ``servingcast-solve``: its best plan stops within 0.5 % after a tenth of the
time limit (``planning.PATIENCE_SHARE``), so its status is usually ``feasible``.
``--wide`` enumerates the candidates of ``wide-65536`` (:func:`wide_problem`: 65 536 GPUs,
tp 1-16, pp 1-8, six max_num_seqs and six token budgets) in a fresh process and prints its peak
resident memory (target <= 2 GB).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = ROOT / "problems"

if TYPE_CHECKING:
    from servingcast.planner.problem import Problem

#: scale-20x8's pools: (name, hardware, GPUs, $ per GPU-hour).
SCALE_POOLS = (("h100", "h100-sxm", 256, 2.99), ("h200", "h200-sxm", 128, 3.79),
               ("b200", "b200", 64, 4.99), ("a100", "a100-sxm4-80gb", 256, 1.79),
               ("a100-40", "a100-sxm4-40gb", 128, 1.29), ("l40s", "l40s", 128, 1.20),
               ("h100-pcie", "h100-pcie", 64, 2.49), ("mi300x", "mi300x", 64, 2.50))
SCALE_MODELS = ("llama-3.1-8b", "qwen3-8b", "mistral-7b", "llama-3.2-1b", "mistral-7b",
                "qwen3-32b", "llama-3.1-70b", "mixtral-8x7b", "qwen3-32b", "llama-3.1-8b")


def scale_problem() -> Problem:
    """20 workloads (every fifth maximized, the others with demands of 5-40 req/s) on 8 pools."""
    from servingcast.planner.problem import problem_from_dict

    workloads = []
    for i in range(20):
        prompt = (512, 1024, 2000, 4000)[i % 4]
        workloads.append({
            "name": f"w{i + 1:02d}", "model": SCALE_MODELS[i % len(SCALE_MODELS)],
            "precision": "bf16",
            "input_len": {"kind": "lognormal", "mean": prompt, "std": prompt // 2,
                          "max": prompt * 4},
            "output_len": (128, 256, 400)[i % 3],
            "demand": "maximize" if i % 5 == 4 else f"{(5, 10, 20, 40)[i % 4]} req/s",
            "slo": {"ttft": ("1 s", "2 s")[i % 2], "tpot": ("40 ms", "60 ms", "80 ms")[i % 3],
                    "attainment": 0.9}})
    return problem_from_dict({
        "name": "scale-20x8",
        "pools": [{"name": n, "hardware": h, "count": c, "price_per_gpu_hour": p}
                  for n, h, c, p in SCALE_POOLS],
        "network": {"bandwidth_per_gpu": "400 Gb/s"}, "workloads": workloads,
        "search": {"tp": [1, 2, 4, 8], "pp": [1], "max_num_seqs": [512],
                   "max_num_batched_tokens": [2048, 8192]},
        "objective": "max_goodput"})


def wide_problem() -> Problem:
    """Two workloads on 65 536 GPUs with a wide search: 5 760 configurations."""
    from servingcast.planner.problem import problem_from_dict

    slo = {"attainment": 0.9}
    return problem_from_dict({
        "name": "wide-65536",
        "pools": [{"name": "h100", "hardware": "h100-sxm", "count": 32768},
                  {"name": "h200", "hardware": "h200-sxm", "count": 16384},
                  {"name": "b200", "hardware": "b200", "count": 16384}],
        "network": {"bandwidth_per_gpu": "400 Gb/s"},
        "workloads": [
            {"name": "chat", "model": "llama-3.1-70b", "precision": "fp8",
             "input_len": {"kind": "lognormal", "mean": 1500, "std": 1000, "max": 8000},
             "output_len": {"kind": "lognormal", "mean": 300, "std": 200, "max": 1500},
             "slo": {"ttft": "2 s", "tpot": "50 ms", **slo}},
            {"name": "small", "model": "llama-3.1-8b", "precision": "bf16",
             "input_len": 2000, "output_len": 300,
             "slo": {"ttft": "1 s", "tpot": "30 ms", **slo}}],
        "search": {"tp": [1, 2, 4, 8, 16], "pp": [1, 2, 4, 8],
                   "max_num_seqs": [64, 128, 256, 512, 1024, 2048],
                   "max_num_batched_tokens": [512, 1024, 2048, 4096, 8192, 16384]}})


def _wide_child() -> None:
    """In a fresh process: the wide problem's candidates, and this process's peak RSS."""
    import resource

    from servingcast.planner.candidates import CandidateBuilder, prune_dominated

    start = time.perf_counter()
    cset = CandidateBuilder(wide_problem()).candidates()
    pruned = prune_dominated(cset)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"enumerated": cset.enumerated, "in_milp": len(pruned.candidates),
                      "seconds": time.perf_counter() - start, "peak_bytes": peak}))


def _wide() -> None:
    out = subprocess.run([sys.executable, __file__, "--wide-child"], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    data = json.loads(out.stdout)
    print(f"\nwide-65536 candidates: {data['enumerated']:,} configurations, "
          f"{data['in_milp']} in the MILP, {data['seconds']:.1f} s, peak memory "
          f"{data['peak_bytes'] / 2**30:.2f} GiB (target <= 2 GB)")


def _row(problem: Problem, repeat: int) -> list[str]:
    from servingcast.planner import solve

    best = None
    for _ in range(repeat):
        result = solve(problem)
        if best is None or result.timings.total_s < best.timings.total_s:
            best = result
    assert best is not None
    t, c, plan = best.timings, best.candidates, best.plan
    stage = t.candidates_s + t.build_s + t.solve_s + t.extract_s
    return [problem.name, f"{sum(p.count for p in problem.pools):,}", str(c.enumerated),
            str(c.in_milp), f"{t.candidates_s:.2f}", f"{t.build_s:.2f}", f"{t.solve_s:.2f}",
            f"{stage:.2f}", f"{t.alternatives_s:.2f}", f"{t.compare_s:.2f}",
            f"{t.pareto_s:.2f}", f"{t.total_s:.2f}", plan.solver.status.value,
            "-" if plan.solver.gap is None else f"{plan.solver.gap:.2%}",
            f"{plan.served_rate_per_s:,.1f}", f"{plan.total_gpus:,}"]


def _cli_wall(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from servingcast._cli_solve import main; main()",
                        str(PROBLEMS / "quickstart.yaml"), "--no-refine"], check=True,
                       capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per problem (best kept)")
    parser.add_argument("--cli-runs", type=int, default=3, help="quickstart CLI runs")
    parser.add_argument("--no-scale", action="store_true", help="leave out scale-20x8")
    parser.add_argument("--wide", action="store_true", help="wide-65536's peak memory")
    parser.add_argument("--wide-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.wide_child:
        _wide_child()
        return

    from servingcast.planner import load_problem, solve

    solve(load_problem(PROBLEMS / "quickstart.yaml"), pareto_factors=None)  # warm up imports
    headers = ["problem", "GPUs", "configs", "in MILP", "candidates", "build", "solve",
               "plan (MILP stage)", "alternatives", "single-mode", "Pareto", "total", "status",
               "gap", "req/s", "GPUs used"]
    problems = [load_problem(p) for p in sorted(PROBLEMS.glob("*.yaml"))]
    if not args.no_scale:
        problems.append(scale_problem())
    rows = [_row(p, args.repeat) for p in problems]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("seconds per stage; plan = candidates + build + solve + extract/re-check")
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(
        zip(headers, widths, strict=True))))
    for r in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(
            zip(r, widths, strict=True))))
    wall = _cli_wall(args.cli_runs)
    print(f"\nservingcast-solve problems/quickstart.yaml --no-refine (fresh process): "
          f"median {statistics.median(wall):.2f} s, min {min(wall):.2f} s over {len(wall)} runs")
    if args.wide:
        _wide()


if __name__ == "__main__":
    main()
