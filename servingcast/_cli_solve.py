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
@click.option("--no-refine", is_flag=True,
              help="Skip the Optuna refinement (not implemented yet: the MILP plan is final).")
@click.option("--no-pareto", is_flag=True, help="Skip the TPOT-limit sweep (faster).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the report.")
@debug_option
@handle_errors
def solve_command(problem: Path, output: Path | None, force: bool, top_k: int,
                  time_limit_s: float, mip_gap: float, no_refine: bool, no_pareto: bool,
                  as_json: bool) -> None:
    """Find the deployment that serves the most traffic within the SLOs (or the demand at
    least cost) for the GPU pools and workloads in PROBLEM.

    Example: servingcast-solve problems/quickstart.yaml --output out/
    """
    from servingcast._output import check_output_dir, write_outputs
    from servingcast.planner.export import OUTPUT_FILES, render_outputs, result_dict
    from servingcast.planner.pareto import DEFAULT_FACTORS
    from servingcast.planner.planning import solve
    from servingcast.planner.problem import load_problem
    from servingcast.planner.report import format_result

    del no_refine  # the refinement is its own issue; until it lands the MILP plan is final
    spec = load_problem(problem)
    if output is not None:
        check_output_dir(output, OUTPUT_FILES, force)
    factors = None if (no_pareto and output is None) else DEFAULT_FACTORS
    result = solve(spec, top_k=top_k, time_limit_s=time_limit_s, mip_gap=mip_gap,
                   pareto_factors=factors)
    written = []
    if output is not None:
        written = write_outputs(render_outputs(result), output, force=force)
    if as_json:
        click.echo(json.dumps(result_dict(result), indent=2))
    else:
        click.echo(format_result(result))
        if written:
            click.echo(f"Wrote {', '.join(p.name for p in written)} to {output}/")


def main() -> None:
    """Entry point for ``servingcast-solve``."""
    solve_command()
