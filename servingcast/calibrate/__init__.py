"""Calibration of a device to a user's own serving benchmarks (``servingcast calibrate``).

::

    from servingcast.calibrate import calibrate, read_all, hardware_yaml
    runs = read_all(["vllm-c1.json", "sglang.jsonl"])
    cal = calibrate(runs, "h100-sxm", defaults=Defaults(model="llama-3.1-8b", tp=1))
    print(cal.fitted, cal.median_abs_error_after)

:mod:`~servingcast.calibrate.readers` turns result files (vLLM, SGLang, genai-perf, AIPerf, CSV)
into :class:`Measurement` records, :mod:`~servingcast.calibrate.fit` fits the efficiency
factors and overheads by simulating those runs, :mod:`~servingcast.calibrate.report` writes
the report and the hardware YAML as strings. Nothing here prints or writes files.
"""

from servingcast.calibrate.fit import (
    BOUNDS,
    PARAMETERS,
    Calibration,
    Defaults,
    MetricFit,
    ParameterFit,
    RunFit,
    calibrate,
)
from servingcast.calibrate.readers import Measurement, Stat, read_all, read_results
from servingcast.calibrate.report import (
    calibration_dict,
    format_report,
    hardware_yaml,
)
from servingcast.engines import ENGINES

__all__ = [
    "BOUNDS",
    "ENGINES",
    "PARAMETERS",
    "Calibration",
    "Defaults",
    "Measurement",
    "MetricFit",
    "ParameterFit",
    "RunFit",
    "Stat",
    "calibrate",
    "calibration_dict",
    "format_report",
    "hardware_yaml",
    "read_all",
    "read_results",
]
