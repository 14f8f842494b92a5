"""``servingcast-solve PROBLEM``: plan a cluster with the MILP (a thin layer over
:func:`servingcast.planner.solve`).

:mod:`servingcast.cli` wires :func:`solve_command` in as the ``servingcast-solve`` entry point
(:func:`main`) and as ``servingcast solve``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from servingcast._cli_common import debug_option, handle_errors
from servingcast.refine.cli_options import (
    REFINE_OUTPUT_FILES,
    STUDY_FILE,
    RefineCli,
    refine_options,
    refine_plan,
    run_worker_command,
)


@click.command(name="solve", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("problem", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), default=None,
              help="Folder for plan.json, alternatives.json, pareto.csv, pareto.png and "
                   "scenario.yaml, e.g. out/.")
@click.option("--force", is_flag=True, help="Overwrite those files if the folder has them.")
@click.option("-k", "--top", "top_k", type=click.IntRange(min=1), default=3, show_default=True,
              help="Plans to report: the best and the next best distinct alternatives.")
@click.option("-t", "--time-limit", "time_limit_s", type=click.FloatRange(min=0.01),
              default=60.0, show_default=True, help="Seconds per MILP solve, e.g. 10.")
@click.option("--mip-gap", type=click.FloatRange(min=0.0, max=1.0), default=1e-3,
              show_default=True,
              help="Relative MIP gap of the best plan, e.g. 0.01 (the alternatives, single-mode "
                   "optima and Pareto points stop at 1% or this, whichever is larger).")
@click.option("--no-pareto", is_flag=True, help="Skip the TPOT-limit sweep (faster).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the report.")
@refine_options
@debug_option
@handle_errors
def solve_command(problem: Path, output: Path | None, force: bool, top_k: int,
                  time_limit_s: float, mip_gap: float, no_pareto: bool, as_json: bool,
                  refine_cli: RefineCli) -> None:
    """Find the deployment that serves the most traffic within the SLOs (or the demand at
    least cost) for the GPU pools and workloads in PROBLEM.

    Then the Optuna refinement simulates plans around the MILP's best ones (every trial a
    simulation) and keeps the one that holds its SLOs at the highest load; rerunning the same
    command with the same --output resumes its study (DIR/study.db) and refreshes the files.

    Example: servingcast-solve problems/quickstart.yaml --output out/
    """
    from servingcast._output import check_output_dir, write_outputs
    from servingcast.planner.export import OUTPUT_FILES, render_outputs, result_dict
    from servingcast.planner.pareto import DEFAULT_FACTORS
    from servingcast.planner.planning import solve
    from servingcast.planner.problem import load_problem
    from servingcast.planner.report import format_result
    from servingcast.refine.report import apply_refinement, format_refinement, refined_section

    spec = load_problem(problem)
    if refine_cli.worker:
        click.echo(run_worker_command(spec, refine_cli))
        return
    refine_cli.options(None)  # check the refinement's options before any work
    # Rerunning the same command resumes the study kept in DIR, whose results it refreshes; the
    # study itself refuses a different problem (servingcast.refine.study).
    resuming = (output is not None and not refine_cli.no_refine
                and refine_cli.storage is None and (output / STUDY_FILE).exists())
    if output is not None:
        check_output_dir(output, (*OUTPUT_FILES, *REFINE_OUTPUT_FILES), force or resuming)
    factors = None if (no_pareto and output is None) else DEFAULT_FACTORS
    result = solve(spec, top_k=top_k, time_limit_s=time_limit_s, mip_gap=mip_gap,
                   pareto_factors=factors)
    refined = refine_plan(spec, result, refine_cli, output)
    written = []
    if output is not None:
        files = render_outputs(result)
        if refined is not None:
            files = apply_refinement(files, refined)
        written = write_outputs(files, output, force=force or resuming)
    if as_json:
        data = result_dict(result)
        if refined is not None:
            data["refined"] = refined_section(refined)
        click.echo(json.dumps(data, indent=2))
    else:
        if refined is not None:
            result = result.model_copy(update={
                "refined": True,
                "refinement": "Refinement: by simulation, below (the plan above is the MILP's)."})
        click.echo(format_result(result))
        if refined is not None:
            click.echo("")
            click.echo(format_refinement(refined))
        if written:
            click.echo(f"Wrote {', '.join(p.name for p in written)} to {output}/")


def main() -> None:
    """Entry point for ``servingcast-solve``."""
    solve_command()
