"""``servingcast-solve PROBLEM``: plan a cluster with the MILP (a thin layer over
:func:`servingcast.planner.solve`), then refine the plan by simulation.

Order of work with ``--output DIR``, so that nothing is lost and nothing is clobbered:

1. before any work: the folder's files (refused without ``--force`` unless this run resumes
   the folder's study), the problem recorded there (``plan.json``, ``study.log``: another
   problem is refused without ``--force``), an exclusive lock on the folder (a second run on
   it is refused at once), and the study the refinement would use (another problem's, or
   other settings, refused);
2. the MILP: its files (with the ``deploy/`` launch files, :mod:`servingcast.deploy`) are
   written and its report printed as soon as it is solved;
3. the refinement: its report is printed and the files are rewritten with it (``plan.json``
   gains its ``refined`` section, the scenarios and launch files describe the refined plan)
   — a refinement that fails or is interrupted leaves the MILP's files in place.

:mod:`servingcast.cli` wires :func:`solve_command` in as the ``servingcast-solve`` entry point
(:func:`main`) and as ``servingcast solve``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from servingcast._cli_common import debug_option, handle_errors
from servingcast.errors import ConfigError, ServingcastError
from servingcast.refine.cli_options import (
    REFINE_OUTPUT_FILES,
    RefineCli,
    local_studies,
    refine_options,
    refine_plan,
    run_worker_command,
)

if TYPE_CHECKING:
    from servingcast.planner.plan import Plan
    from servingcast.planner.problem import Problem

#: The key of ``plan.json`` that records which problem the folder's results are for.
FINGERPRINT_KEY = "problem_fingerprint"


def _recorded(output: Path) -> dict[str, tuple[str, str]]:
    """The problems the folder's results are for: fingerprint (or ``name:NAME`` when only a
    name is known) → (problem name, the file that says so)."""
    from servingcast.refine.study import recorded_problems

    out: dict[str, tuple[str, str]] = {}
    plan = output / "plan.json"
    if plan.is_file():
        try:
            data = json.loads(plan.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict) and data.get("problem"):
            key = data.get(FINGERPRINT_KEY) or f"name:{data['problem']}"
            out[str(key)] = (str(data["problem"]), "plan.json")
    for file, storage in local_studies(output).items():
        try:
            studies = recorded_problems(storage)
        except ServingcastError:
            studies = {}
        for key, name in studies.items():
            out.setdefault(key, (name, file))
    return out


def check_same_problem(output: Path, problem: Problem, force: bool) -> None:
    """Refuse (unless ``force``) a folder whose results or study are another problem's."""
    from servingcast.refine.study import fingerprint

    mine = fingerprint(problem)
    others = {k: v for k, v in _recorded(output).items()
              if k != mine and k != f"name:{problem.name}"}
    if others and not force:
        seen = "; ".join(f"{name!r} ({where})" for name, where in others.values())
        raise ConfigError(
            f"{output} holds the results or study of another problem: {seen}; this run is "
            f"problem {problem.name!r}. Nothing was done. To fix: choose another --output "
            "folder, or pass --force to replace its result files (the other problem's study "
            "stays in the folder's study file)")


def _with_fingerprint(files: dict[str, bytes], problem: Problem) -> dict[str, bytes]:
    from servingcast.refine.study import fingerprint

    if "plan.json" not in files:
        return files
    data = json.loads(files["plan.json"])
    data[FINGERPRINT_KEY] = fingerprint(problem)
    return {**files, "plan.json": json.dumps(data, indent=2).encode()}


def extra_sections(problem: Problem, plan: Plan, time_limit_s: float, mip_gap: float,
                   progress: Callable[[str], None] | None = None,
                   ) -> tuple[dict[str, Any], str]:
    """The optional sections of the report and of ``plan.json``: ``daily`` (the multi-period
    plan of the demand profiles, :mod:`servingcast.planner.periods`) and ``n_plus_one`` (the
    plan simulated with its worst node lost, :mod:`servingcast.planner.headroom`); ``({}, "")``
    for a problem with neither."""
    data: dict[str, Any] = {}
    texts = []
    from servingcast.planner.periods import format_daily, has_profiles, plan_daily

    if has_profiles(problem):
        daily = plan_daily(problem, time_limit_s=time_limit_s, mip_gap=mip_gap,
                           progress=progress)
        data["daily"] = daily.to_dict()
        texts.append(format_daily(daily))
    if problem.headroom == "n_plus_one":
        from servingcast.planner.headroom import (
            check_one_node_down,
            format_node_down,
            placement,
        )

        if progress is not None:
            progress("N+1 check: simulating the plan with its worst node lost")
        checks = check_one_node_down(problem, plan)
        places = placement(problem, plan)
        data["n_plus_one"] = {"meets_target": all(c.meets_target for c in checks),
                              "placement": [p.to_dict() for p in places.values()],
                              "parts": [c.to_dict() for c in checks]}
        texts.append(format_node_down(checks, places))
    return data, "\n\n".join(texts)


def _with_extra(files: dict[str, bytes], extra: dict[str, Any]) -> dict[str, bytes]:
    """``plan.json`` with the optional sections of :func:`extra_sections`."""
    if "plan.json" not in files or not extra:
        return files
    data = json.loads(files["plan.json"])
    data.update(extra)
    return {**files, "plan.json": json.dumps(data, indent=2).encode()}


def _engines(emit: str | None, output: Path | None) -> tuple[str, ...]:
    """The launch files ``--emit`` asks for (none without ``--output``)."""
    from servingcast.deploy import parse_emit

    engines = parse_emit(emit)
    if emit is not None and output is None:
        raise ConfigError(f"--emit {emit} chooses the launch files written to --output DIR, "
                          "and no --output was given. To fix: add --output DIR, or drop --emit")
    return engines if output is not None else ()


def _with_deploy(files: dict[str, bytes], engines: tuple[str, ...],
                 problem: Problem) -> dict[str, bytes]:
    """``files`` with their ``deploy/`` launch files (re)rendered from their scenarios."""
    from servingcast.deploy import DEPLOY_DIR, node_sizes, render_deploy

    kept = {k: v for k, v in files.items() if not k.startswith(f"{DEPLOY_DIR}/")}
    return {**kept, **render_deploy(kept, engines, node_sizes(problem))}


def _write(files: dict[str, bytes], output: Path, force: bool) -> list[str]:
    """Write ``files`` (names may hold a folder: ``deploy/vllm/x.sh``) through
    :func:`~servingcast._output.write_outputs`, one folder at a time; return what to report
    (the ``deploy/`` files as one entry)."""
    from servingcast._output import write_outputs

    folders: dict[str, dict[str, bytes]] = {}
    for name, data in files.items():
        folder, _, base = name.rpartition("/")
        folders.setdefault(folder, {})[base] = data
    shown = []
    for folder, members in folders.items():
        written = write_outputs(members, output / folder if folder else output, force=force)
        for path in written:
            if path.suffix == ".sh":
                path.chmod(0o755)  # the launch scripts run as they are
        if not folder:
            shown += [p.name for p in written]
    nested = sum(len(m) for f, m in folders.items() if f)
    if nested:
        shown.append(f"{nested} launch files in deploy/")
    return shown


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
@click.option("--no-pareto", is_flag=True,
              help="Skip the Pareto sweeps of the TPOT and TTFT limits.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the report.")
@click.option("--emit", "emit", default=None, metavar="KINDS",
              help="Launch files written to DIR/deploy/ with --output: a comma-separated list "
                   "of vllm, sglang, dynamo, k8s (default: all; none: no launch files), e.g. "
                   "--emit vllm,k8s. deploy/bench.sh comes with any of them.")
@refine_options
@debug_option
@handle_errors
def solve_command(problem: Path, output: Path | None, force: bool, top_k: int,
                  time_limit_s: float, mip_gap: float, no_pareto: bool, as_json: bool,
                  emit: str | None, refine_cli: RefineCli) -> None:
    """Find the deployment that serves the most traffic within the SLOs (or the demand at
    least cost) for the GPU pools and workloads in PROBLEM.

    Then the Optuna refinement simulates plans around the MILP's best ones (every trial a
    simulation) and keeps the one that holds its SLOs at the highest load; rerunning the same
    command with the same --output resumes its study (DIR/study.log) and refreshes the files.

    Example: servingcast-solve problems/quickstart.yaml --output out/
    """
    from servingcast._output import check_output_dir, folder_lock
    from servingcast.deploy import DEPLOY_DIR
    from servingcast.planner.export import OUTPUT_FILES, render_outputs, result_dict
    from servingcast.planner.pareto import DEFAULT_FACTORS
    from servingcast.planner.planning import solve
    from servingcast.planner.problem import load_problem
    from servingcast.planner.report import format_result
    from servingcast.refine.report import apply_refinement, format_refinement, refined_section
    from servingcast.refine.run import default_study_name
    from servingcast.refine.study import check_existing

    engines = _engines(emit, output)
    spec = load_problem(problem)
    if refine_cli.worker:
        click.echo(run_worker_command(spec, refine_cli))
        return
    refine_cli.options(None)  # check the refinement's options before any work
    # Rerunning the same command resumes the study kept in DIR, whose results it refreshes.
    resuming = (output is not None and not refine_cli.no_refine
                and refine_cli.storage is None and bool(local_studies(output)))
    with contextlib.ExitStack() as stack:
        if output is not None:  # 1. before any work
            check_output_dir(output, (*OUTPUT_FILES, *REFINE_OUTPUT_FILES,
                                      *((DEPLOY_DIR,) if engines else ())), force or resuming)
            stack.enter_context(folder_lock(output))
            check_same_problem(output, spec, force)
        if not refine_cli.no_refine:
            options = refine_cli.options(output)
            if options.storage is not None and (refine_cli.storage is not None or resuming):
                check_existing(options.storage, default_study_name(spec, options), spec,
                               options.settings)
        factors = None if (no_pareto and output is None) else DEFAULT_FACTORS
        progress = _Progress()
        try:
            result = solve(spec, top_k=top_k, time_limit_s=time_limit_s, mip_gap=mip_gap,
                           pareto_factors=factors, progress=progress)
            extra, extra_text = extra_sections(spec, result.plan, time_limit_s, mip_gap,
                                               progress)
            if spec.headroom == "n_plus_one" and not refine_cli.no_refine:
                extra_text += ("\nNote: the refinement below searches without the N+1 "
                               "headroom; the MILP plan above keeps it.")
        finally:
            progress.close()
        files: dict[str, bytes] = {}
        written = []
        if output is not None:  # 2. the MILP's files, at once
            files = _with_deploy(_with_extra(_with_fingerprint(render_outputs(result), spec),
                                             extra), engines, spec)
            written = _write(files, output, force=force or resuming)
        if not as_json:
            shown = result if refine_cli.no_refine else result.model_copy(update={
                "refined": True,
                "refinement": "Refinement: by simulation, below (the plan above is the MILP's)."})
            click.echo(format_result(shown))
            if extra_text:
                click.echo("")
                click.echo(extra_text)
            if written:
                click.echo(f"Wrote {', '.join(written)} to {output}/")
        try:  # 3. the refinement
            refined = refine_plan(spec, result, refine_cli, output)
        except (ServingcastError, KeyboardInterrupt):
            if written:
                click.echo(f"The refinement stopped; the MILP plan's files are in {output}/.",
                           err=True)
            raise
        updated = []
        if output is not None and refined is not None:
            final = _with_deploy(apply_refinement(files, refined), engines, spec)
            updated = _write(final, output, force=True)
            for name in set(files) - set(final):  # e.g. the MILP plan's scenario files
                (output / name).unlink(missing_ok=True)
        if as_json:
            data = result_dict(result)
            data.update(extra)
            if refined is not None:
                data["refined"] = refined_section(refined)
            click.echo(json.dumps(data, indent=2))
        elif refined is not None:
            click.echo("")
            click.echo(format_refinement(refined))
            if updated:
                click.echo(f"Updated {', '.join(updated)} in {output}/ with "
                           "the refinement")


class _Progress:
    """The planner's steps as lines on stderr (the report or JSON stays alone on stdout), e.g.
    ``servingcast-solve: Pareto 5/7 (TPOT limits x1.6), 41 s``. A solve done within ``quiet_s``
    prints none; a longer one prints the step it is in at ``quiet_s``, then every step."""

    quiet_s = 2.0

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.last = ""
        self.loud = False
        self.timer = threading.Timer(self.quiet_s, self._wake)
        self.timer.daemon = True
        self.timer.start()

    def _echo(self, line: str) -> None:
        click.echo(f"servingcast-solve: {line}, {time.monotonic() - self.t0:.0f} s", err=True)

    def _wake(self) -> None:
        with self.lock:
            self.loud = True
            if self.last:
                self._echo(self.last)

    def __call__(self, line: str) -> None:
        with self.lock:
            self.last = line
            if self.loud:
                self._echo(line)

    def close(self) -> None:
        self.timer.cancel()


def main() -> None:
    """Entry point for ``servingcast-solve``."""
    solve_command()
