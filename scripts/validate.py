"""Compare the cost model with published real-hardware measurements.

    python scripts/validate.py [CSV] [--worst N]

CSV defaults to ``../shared/validation/published_measurements.csv`` beside the checkout, else the
copy in ``tests/data``. Prints, per validation use (a: small-batch decode, b: prefill/TTFT,
c: max throughput), the median and mean absolute percentage error and the worst rows, using
each device's calibrated default efficiency factors (no per-row fitting).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from servingcast.validation import compare, format_report, read_rows

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description="Validate the cost model against measurements.")
    shared = ROOT.parent / "shared" / "validation" / "published_measurements.csv"
    default = shared if shared.is_file() else ROOT / "tests" / "data" / "published_measurements.csv"
    parser.add_argument("csv", nargs="?", type=Path, default=default)
    parser.add_argument("--worst", type=int, default=5, help="worst rows listed per use")
    args = parser.parse_args()
    print(f"measurements: {args.csv}")
    print(format_report(compare(read_rows(args.csv)), args.worst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
