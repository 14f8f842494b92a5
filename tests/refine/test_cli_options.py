"""The refinement's click options, wired into a command the way servingcast-solve wires them:
bad input is one line and exit code 2, the default study lives in --output DIR."""

from __future__ import annotations

import json
from pathlib import Path

import click
import optuna
import pytest
from click.testing import CliRunner

from servingcast._cli_common import debug_option, handle_errors
from servingcast.planner.problem import problem_from_dict
from servingcast.refine import format_refinement
from servingcast.refine.cli_options import (
    RefineCli,
    progress_bar,
    refine_options,
    refine_plan,
    run_worker_command,
)
from servingcast.refine.objective import is_simulated
from servingcast.refine.study import open_storage

from .conftest import planning_of, tiny_data


@click.command()
@click.argument("problem", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None)
@refine_options
@debug_option
@handle_errors
def solve_like(problem: Path, output: Path | None, refine_cli: RefineCli) -> None:
    spec = problem_from_dict(json.loads(problem.read_text()))
    if refine_cli.worker:
        click.echo(run_worker_command(spec, refine_cli))
        return
    refined = refine_plan(spec, planning_of(spec), refine_cli, output)
    click.echo(format_refinement(refined) if refined is not None else "MILP plan is final")


def _run(tmp_path: Path, *args: str) -> tuple[int, str]:
    problem = tmp_path / "tiny.json"
    problem.write_text(json.dumps(tiny_data()))
    result = CliRunner().invoke(solve_like, [str(problem), "--sim-requests", "300", *args])
    return result.exit_code, result.output


def test_output_folder_holds_the_study(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "-o", str(tmp_path / "out"), "--trials", "3")
    assert code == 0, out
    log = tmp_path / "out" / "study.log"
    assert log.exists() and not (tmp_path / "out" / "study.db").exists()
    assert f"optuna-dashboard {log}" in out
    trials = optuna.load_study(study_name="tiny", storage=open_storage(str(log))).trials
    assert sum(is_simulated(t) for t in trials) == 3
    code, again = _run(tmp_path, "-o", str(tmp_path / "out"), "--trials", "3")
    assert code == 0 and "(0 new" in again


def test_no_refine(tmp_path: Path) -> None:
    assert _run(tmp_path, "--no-refine") == (0, "MILP plan is final\n")


def test_worker_joins_and_tops_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    assert _run(tmp_path, "--storage", url, "--trials", "2")[0] == 0
    code, out = _run(tmp_path, "--storage", url, "--worker", "--trials", "4")
    assert code == 0, out
    assert "\nWorker: 2 trials added to study 'tiny'" in out
    assert out.startswith("Worker trials: trial 2/2: best ")  # progress lines (not a terminal)
    assert "it holds 4 of 4 simulated trials" in out


def test_bad_input_is_exit_code_2(tmp_path: Path) -> None:
    cases = {
        ("--trials", "0"): "error: --trials must be >= 1, got 0.",
        ("--timeout", "0"): "error: --timeout must be a number of seconds > 0, got 0.0.",
        ("--timeout", "-5"): "error: --timeout must be a number of seconds > 0, got -5.0.",
        ("--storage", "postgresql://u:pw@127.0.0.1:1/db"): "error: cannot open the Optuna "
                                                          "storage postgresql://u:***@",
        ("--worker",): "error: --worker joins a study in a shared database, so it needs "
                       "--storage.",
        ("--worker", "--storage", f"sqlite:///{tmp_path / 'none.db'}"):
            "error: no study 'tiny' in sqlite:///",
    }
    for args, message in cases.items():
        code, out = _run(tmp_path, *args)
        assert code == 2, (args, out)
        assert out.startswith(message), (args, out)
        assert len(out.strip().splitlines()) == 1


def test_progress_lines_without_a_terminal(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal: a line every few trials and at the end, and a 'running' line when a
    trial keeps it silent too long."""
    import time

    from servingcast.refine import cli_options

    monkeypatch.setattr(cli_options._Lines, "quiet_s", 0.2)
    with progress_bar("Refining") as update:
        update(1, 12, "best 3.1 req/s (trial 0)")
        time.sleep(0.5)
        for done in range(2, 13):
            update(done, 12, "")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("Refining: trial 1/12 (running): best 3.1 req/s (trial 0), ")
    assert [line.split(":")[1] for line in lines if "running" not in line] == [
        " trial 5/12", " trial 10/12", " trial 12/12"]
    assert lines[-1].endswith(" s")
