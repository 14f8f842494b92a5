"""``servingcast-solve --output DIR`` writes DIR/deploy/ (``--emit`` chooses what), through the
same no-overwrite rules as its other files; a bad ``--emit`` is a clean exit 2."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from servingcast._cli_solve import solve_command

from .conftest import PROBLEMS, exec_argv, vllm_parser

QUICKSTART = str(PROBLEMS / "quickstart.yaml")
FAST = ("--no-refine", "--no-pareto", "--top", "1", "--time-limit", "10")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(solve_command, list(args))
    return result.exit_code, result.stdout, result.stderr


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_output_writes_deploy_and_refuses_to_overwrite_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = invoke(QUICKSTART, "--output", str(out), *FAST)
    assert code == 0, err
    deploy = [name for name in _tree(out) if name.startswith("deploy/")]
    assert deploy == ["deploy/README.md", "deploy/bench.sh", "deploy/dynamo/graph.yaml",
                      "deploy/k8s/aggregated-h100-tp1.yaml",
                      "deploy/sglang/aggregated-h100-tp1.sh",
                      "deploy/vllm/aggregated-h100-tp1.sh"]
    assert f"6 launch files in deploy/ to {out}/" in stdout
    assert os.access(out / "deploy/bench.sh", os.X_OK)  # the scripts run as they are
    assert not any(p.name.startswith(".servingcast-") for p in out.rglob("*"))  # no staging left
    args = vllm_parser().parse_args(exec_argv((out / deploy[-1]).read_text())[2:])
    assert args.tensor_parallel_size == 1 and args.max_num_seqs > 0
    # A second run refuses the folder (deploy/ included) and changes nothing.
    for name in _tree(out):
        if "/" not in name:
            (out / name).unlink()  # only deploy/ is in the way now
    before = {name: (out / name).read_bytes() for name in _tree(out)}
    code, _, err = invoke(QUICKSTART, "--output", str(out), *FAST)
    assert code == 2 and f"{out} already holds deploy; nothing was written" in err
    assert "--force" in err
    assert {name: (out / name).read_bytes() for name in _tree(out)} == before
    mine = out / "deploy" / "notes.txt"  # a user's file beside ours survives --force
    mine.write_text("keep")
    code, _, err = invoke(QUICKSTART, "--output", str(out), "--force", "--emit", "vllm", *FAST)
    assert code == 0, err
    assert mine.read_text() == "keep" and (out / "plan.json").is_file()


def test_emit_chooses_the_launch_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = invoke(QUICKSTART, "--output", str(out), "--emit", "k8s,vllm", *FAST)
    assert code == 0, err
    assert [n for n in _tree(out) if n.startswith("deploy/")] == [
        "deploy/README.md", "deploy/bench.sh", "deploy/k8s/aggregated-h100-tp1.yaml",
        "deploy/vllm/aggregated-h100-tp1.sh"]
    none = tmp_path / "none"
    code, stdout, err = invoke(QUICKSTART, "--output", str(none), "--emit", "none", *FAST)
    assert code == 0, err
    assert not (none / "deploy").exists() and "launch files" not in stdout


def test_a_bad_emit_exits_2_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = invoke(QUICKSTART, "--output", str(out), "--emit", "vllm,tensorrt")
    assert code == 2 and stdout == ""
    assert err == ("error: --emit 'vllm,tensorrt': unknown launch-file kind 'tensorrt'. To fix: "
                   "give a comma-separated list of vllm, sglang, dynamo, k8s (e.g. --emit "
                   "vllm,k8s), or all, or none\n")
    assert not out.exists()
    code, stdout, err = invoke(QUICKSTART, "--emit", "vllm")
    assert code == 2 and stdout == ""
    assert err.startswith("error: --emit vllm chooses the launch files written to --output DIR")
