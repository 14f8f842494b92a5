"""Compare the cost model with published real-hardware measurements.

    python scripts/validate.py [CSV] [--worst N] [--json]
    python scripts/validate.py --serving [CSV] [--json]

CSV defaults to ``../shared/validation/published_measurements.csv`` beside the checkout, else the
copy in ``tests/data``. Prints, per validation use (a: small-batch decode, b: prefill/TTFT,
c: max throughput), the median and mean absolute percentage error and the worst rows, using
each device's calibrated default efficiency factors (no per-row fitting).

``--serving`` reproduces the MLPerf Inference Server summaries of ``serving_measurements.csv``
through the simulator (:mod:`servingcast.validation_serving`): each run with the stated load,
SLO and dataset lengths, what the summaries leave open stated as assumed; predicted vs measured
throughput, TTFT, TPOT (at the same load relative to capacity) and max QPS under the SLO, with
the median absolute error and median signed bias per class. It takes one to two minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from servingcast.validation import compare, format_report, read_rows

ROOT = Path(__file__).resolve().parents[1]


def _default(name: str) -> Path:
    shared = ROOT.parent / "shared" / "validation" / name
    return shared if shared.is_file() else ROOT / "tests" / "data" / name


def main() -> int:
    parser = argparse.ArgumentParser(description="Validate the cost model against measurements.")
    parser.add_argument("csv", nargs="?", type=Path, default=None)
    parser.add_argument("--worst", type=int, default=5, help="worst rows listed per use")
    parser.add_argument("--serving", action="store_true",
                        help="reproduce the MLPerf serving summaries through the simulator")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    if args.serving:
        from servingcast._validation_serving_format import (
            format_serving_report,
            serving_report_dict,
        )
        from servingcast.validation_serving import validate_serving

        path = args.csv or _default("serving_measurements.csv")
        print(f"measurements: {path}", file=sys.stderr)
        report = validate_serving(
            read_rows(path),
            progress=lambda run: print(f"simulating {run.run_id} {run.label}", file=sys.stderr))
        print(json.dumps(serving_report_dict(report), indent=2) if args.json
              else format_serving_report(report))
        return 0
    path = args.csv or _default("published_measurements.csv")
    comparisons = compare(read_rows(path))
    if args.json:
        print(json.dumps([{**dataclasses.asdict(c), "error": c.error} for c in comparisons],
                         indent=2))
        return 0
    print(f"measurements: {path}")
    print(format_report(comparisons, args.worst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
