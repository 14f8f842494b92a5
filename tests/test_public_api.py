"""The public API: ``servingcast.estimate`` stays the function, and importing servingcast changes
no process-wide state (matplotlib's backend, Optuna's verbosity, warning filters)."""

import subprocess
import sys
import textwrap

import servingcast as sc
from servingcast._estimate import Estimate


def test_estimate_is_the_function_after_the_cli_is_imported() -> None:
    import servingcast.cli  # noqa: F401  (imports the estimate implementation module)

    first = sc.estimate("llama-3.1-8b", "h100-sxm", seq_len=512, output_len=16)
    second = sc.estimate("llama-3.1-8b", "h100-sxm", seq_len=512, output_len=16)
    assert callable(sc.estimate) and isinstance(second, Estimate) and first == second
    assert sc.Estimate is Estimate


def test_api_defaults_match_the_cli() -> None:
    from click.testing import CliRunner

    from servingcast.cli import main

    result = CliRunner().invoke(main, ["estimate", "-m", "llama-3.1-70b", "-g", "h100-sxm",
                                       "--tp", "4", "-b", "64", "-i", "2048", "-o", "256",
                                       "--json"])
    assert result.exit_code == 0, result.output
    import json

    cli = json.loads(result.stdout)
    api = sc.estimate("llama-3.1-70b", "h100-sxm", seq_len=2048, batch_size=64, output_len=256,
                      tp=4)
    assert api.ttft_ms == cli["ttft_ms"] and api.tpot_ms == cli["tpot_ms"]


_CHECK = textwrap.dedent("""
    import importlib, pkgutil, warnings
    import matplotlib, optuna
    import servingcast

    def state():
        return (dict.__getitem__(matplotlib.rcParams, "backend"),
                optuna.logging.get_verbosity(), list(warnings.filters))

    before = state()
    names = [m.name for m in pkgutil.walk_packages(servingcast.__path__, "servingcast.")]
    for name in names:
        importlib.import_module(name)
    from servingcast.planner.pareto import ParetoPoint, pareto_png
    point = ParetoPoint(tpot_factor=1, tpot_limit_ms=50, tokens_per_s_per_user=20,
                        tokens_per_s_per_gpu=900, output_tokens_per_s=7200,
                        served_rate_per_s=20, gpus=8, mode="aggregated", on_frontier=True)
    assert pareto_png((point,), "t", point).startswith(b"\\x89PNG")
    after = state()
    assert len(names) > 40, names
    assert before == after, (before, after)
    print("ok", len(names))
""")


def test_importing_servingcast_changes_no_global_state() -> None:
    done = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")
