"""Benchmark of the simulated Optuna refinement on the shipped problems.

For each problem: the MILP (best plan and two alternatives), then a fresh refinement study in
a temporary SQLite file with ``--jobs`` local worker processes. Prints trials per minute, the
time to reach the final plan (from the study's first trial), and the MILP plan's and the
refined plan's simulated objective. Target (issue 5): 50 simulated trials on
qwen3-32b-h200x32 in at most 3 minutes on 2 cores (``--jobs 2``). ``--trials`` counts simulated
trials; the "infeasible" column counts the extra, unsimulated trials outside the GPU budget.

    python scripts/bench_refine.py                       # every shipped problem
    python scripts/bench_refine.py --problems qwen3-32b-h200x32 --trials 50 --jobs 2

Each simulation holds at least 4x the requests the deployment holds at once (at most
``--max-sim-requests``); a run the cap cuts short is reported as too short to judge (see the
notes), never as a rate. The two large fleets (multi-model-1024, fleet-4096) take over a
minute per trial, so they run only their three MILP plans by default.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from servingcast.planner import load_problem, solve
from servingcast.refine import RefineOptions, StudySettings, refine

PROBLEMS = Path(__file__).resolve().parents[1] / "problems"
#: Trials per problem by default.
TRIALS = {"quickstart": 50, "qwen3-32b-h200x32": 50, "llama-3.1-70b-h100x64": 30,
          "heterogeneous-min-cost": 30, "multi-model-1024": 3, "fleet-4096": 3}
TARGET = ("qwen3-32b-h200x32", 50, 180.0)


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="*", default=list(TRIALS))
    parser.add_argument("--trials", type=int, default=None, help="trials for every problem")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-sim-requests", type=int, default=StudySettings.max_sim_requests,
                        help="cap on the requests per simulation")
    args = parser.parse_args()

    headers = ["problem", "objective", "simulated", "infeasible", "dups", "MILP s", "refine s",
               "sim trials/min", "final at s", "final trial", "MILP sim", "refined sim", "gain",
               "requests/sim"]
    widths = [24, 22, 9, 10, 4, 6, 8, 14, 10, 11, 10, 11, 7, 12]
    print(f"jobs={args.jobs}, seed={args.seed}; simulated objective: goodput in req/s within "
          "the SLOs (min_cost: $/h)")
    print(_row(headers, widths))
    timings: dict[str, tuple[int, float]] = {}  # simulated trials, seconds
    notes: list[str] = []
    for stem in args.problems:
        problem = load_problem(PROBLEMS / f"{stem}.yaml")
        t0 = time.perf_counter()
        planning = solve(problem, top_k=3, pareto_factors=None, compare_modes=False)
        milp_s = time.perf_counter() - t0
        trials = args.trials or TRIALS.get(stem, 30)
        with tempfile.TemporaryDirectory() as folder:
            options = RefineOptions(trials=trials, jobs=args.jobs,
                                    storage=f"sqlite:///{folder}/study.db",
                                    settings=StudySettings(
                                        seed=args.seed, max_sim_requests=args.max_sim_requests))
            t1 = time.perf_counter()
            r = refine(problem, planning, options)
            wall = time.perf_counter() - t1
        s = r.stats
        timings[stem] = (s.simulated, s.elapsed_s)
        notes += [f"{stem}: {n}" for n in r.notes]
        gain = "-" if r.gain is None else f"{r.gain:+.1%}"
        print(_row([stem, problem.objective, str(s.simulated), str(s.infeasible),
                    str(s.duplicates), f"{milp_s:.1f}", f"{wall:.1f}",
                    f"{s.new_trials / s.elapsed_s * 60:.1f}", f"{s.time_to_best_s or 0.0:.1f}",
                    str(s.best_trial), f"{r.milp_value:,.2f}", f"{r.value:,.2f}", gain,
                    f"{max(r.sim_requests.values()):,}"], widths),
              flush=True)
    stem, want, limit = TARGET
    if stem in timings:
        done, seconds = timings[stem]
        verdict = "met" if done >= want and seconds <= limit else "MISSED"
        print(f"\ntarget: {want} simulated trials on {stem} in <= {limit:.0f} s with "
              f"--jobs {args.jobs}: {done} simulated trials in {seconds:.1f} s — {verdict}")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
