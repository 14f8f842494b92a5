"""Time the planner on every shipped problem and the quickstart command line.

    python scripts/bench_solve.py            # every problems/*.yaml
    python scripts/bench_solve.py --repeat 3 # best of 3 per problem

Columns (seconds): candidates (enumeration, cost-model profiles, dominance), MILP build, MILP
solve (the best plan: every lexicographic stage), plan = candidates + build + solve + extract and
re-check (the MILP stage, target <= 2 s), then the alternatives (--top 3), the single-mode optima,
the Pareto sweep, and the total. Finally the wall time of
``servingcast-solve problems/quickstart.yaml --no-refine`` in a fresh process (target <= 3 s).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = ROOT / "problems"


def _row(path: Path, repeat: int) -> list[str]:
    from servingcast.planner import load_problem, solve

    problem = load_problem(path)
    best = None
    for _ in range(repeat):
        result = solve(problem)
        if best is None or result.timings.total_s < best.timings.total_s:
            best = result
    assert best is not None
    t, c, plan = best.timings, best.candidates, best.plan
    stage = t.candidates_s + t.build_s + t.solve_s + t.extract_s
    return [path.stem, f"{sum(p.count for p in problem.pools):,}", str(c.enumerated),
            str(c.in_milp), f"{t.candidates_s:.2f}", f"{t.build_s:.2f}", f"{t.solve_s:.2f}",
            f"{stage:.2f}", f"{t.alternatives_s:.2f}", f"{t.compare_s:.2f}",
            f"{t.pareto_s:.2f}", f"{t.total_s:.2f}", plan.solver.status.value,
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
    args = parser.parse_args()

    from servingcast.planner import load_problem, solve

    solve(load_problem(PROBLEMS / "quickstart.yaml"), pareto_factors=None)  # warm up imports
    headers = ["problem", "GPUs", "configs", "in MILP", "candidates", "build", "solve",
               "plan (MILP stage)", "alternatives", "single-mode", "Pareto", "total", "status",
               "req/s", "GPUs used"]
    rows = [_row(p, args.repeat) for p in sorted(PROBLEMS.glob("*.yaml"))]
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


if __name__ == "__main__":
    main()
