"""``python -m servingcast.refine._worker``: one local worker process of a refinement.

Reads :class:`servingcast.refine.study.WorkerArgs` as JSON on stdin and runs its trials. A
servingcast error is one line on stderr and exit code 2; anything else shows its traceback.
"""

from __future__ import annotations

import json
import sys

from servingcast.errors import ServingcastError


def main() -> int:
    """Run the worker; the process's exit code."""
    from servingcast.refine.study import WorkerArgs, run_worker

    args = WorkerArgs(**json.loads(sys.stdin.read()))
    try:
        run_worker(args)
    except ServingcastError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
