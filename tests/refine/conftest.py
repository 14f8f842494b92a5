"""Tiny problems, fast settings and a throwaway PostgreSQL server for the refinement tests."""

from __future__ import annotations

import functools
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servingcast.planner import PlanningResult, solve
from servingcast.planner.problem import Problem, problem_from_dict
from servingcast.refine.options import RefineOptions, StudySettings

PROBLEMS = Path(__file__).resolve().parents[2] / "problems"

#: Small simulations: the tests check properties, not figures.
FAST = StudySettings(sim_requests=500, max_sim_requests=500, capacity_multiple=2.0)


def tiny_data(**overrides: Any) -> dict[str, Any]:
    """Llama-3.1-8B on 2 H100 (about 17 req/s): a second per trial."""
    data: dict[str, Any] = {
        "name": "tiny",
        "pools": [{"name": "h100", "hardware": "h100-sxm", "count": 2}],
        "workloads": [{"name": "chat", "model": "llama-3.1-8b", "precision": "bf16",
                       "input_len": 2048, "output_len": 256,
                       "slo": {"ttft": "1 s", "tpot": "30 ms", "attainment": 0.9}}],
        "search": {"tp": [1, 2], "pp": [1], "max_num_seqs": [256],
                   "max_num_batched_tokens": [1024, 4096]},
    }
    data.update(overrides)
    return data


def tiny_problem(**overrides: Any) -> Problem:
    return problem_from_dict(tiny_data(**overrides))


@functools.cache
def _planning(key: str) -> PlanningResult:
    import json

    return solve(problem_from_dict(json.loads(key)), top_k=3, pareto_factors=None,
                 compare_modes=False)


def planning_of(problem: Problem) -> PlanningResult:
    """The MILP's plans (best and two alternatives), solved once per problem."""
    import json

    return _planning(json.dumps(problem.model_dump(mode="json", by_alias=True), sort_keys=True))


def fast_options(**kw: Any) -> RefineOptions:
    kw.setdefault("trials", 6)
    kw.setdefault("settings", FAST)
    return RefineOptions(**kw)


def sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


# -- PostgreSQL ----------------------------------------------------------------------------------


def _missing_postgres() -> str | None:
    import importlib.util

    if not any(importlib.util.find_spec(m) for m in ("psycopg2", "psycopg")):
        return "no PostgreSQL driver is installed (pip install psycopg2-binary)"
    if not sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) and not shutil.which("initdb"):
        return "PostgreSQL's initdb/pg_ctl are not installed (apt-get install -y postgresql)"
    if os.geteuid() == 0 and not (shutil.which("runuser") or shutil.which("su")):
        return "running as root without runuser/su to start PostgreSQL as another user"
    return None


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else str(shutil.which(name))


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    import shlex

    return ["su", "postgres", "-c", shlex.join(cmd)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 with a fresh database; its URL. Skipped when
    PostgreSQL or psycopg2 is missing — a failure under CI=true, where both are installed."""
    missing = _missing_postgres()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {missing}")
        pytest.skip(missing)
    folder = Path(tempfile.mkdtemp(prefix="servingcast-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = _free_port()
    log = folder / "server.log"
    subprocess.run(_as_postgres([_bin("initdb"), "-D", str(data), "-A", "trust", "-U",
                                 "postgres", "--no-sync"]), check=True, capture_output=True)
    subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                                 f"-p {port} -k {folder} -h 127.0.0.1 -F", "start"]),
                   check=True, capture_output=True)
    try:
        import sqlalchemy

        from servingcast.refine.study import driver_url

        engine = sqlalchemy.create_engine(
            driver_url(f"postgresql://postgres@127.0.0.1:{port}/postgres"),
            isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("CREATE DATABASE servingcast"))
        engine.dispose()
        yield f"postgresql://postgres@127.0.0.1:{port}/servingcast"
    finally:
        subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-m", "immediate",
                                     "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
