"""Fitting one device's efficiency factors and overheads to measured serving runs.

Notation. ``θ = (c, m, n, o_it, o_ly)``: the compute, memory and network efficiencies and the
overheads per iteration (ms) and per layer and iteration (µs) of
:class:`~servingcast.specs.hardware.HardwareSpec`. Run ``k`` of the measurements is simulated
as it was measured — the same model, tp/pp, mean lengths (fixed), closed loop of the client's
concurrency or Poisson (gamma when bursty) arrivals at its rate, the same number of requests up
to ``max_requests``, seed fixed — giving predictions ``ŷ_i(θ)`` of its measured figures
``y_i`` (TTFT, TPOT: the mean when measured, else the median, else the p99; throughput: output
tokens/s, else requests/s).

Objective (weighted mean squared log-ratio, so a 10 % miss weighs the same on a 30 ms TTFT and
on a 3 s one)::

    min_θ  L(θ) = Σ_i w_i (ln ŷ_i(θ) − ln y_i)² / N,   w_i = ε² / (σ_i² + ε²)
    s.t.   θ_lo ≤ θ ≤ θ_hi                                   (BOUNDS)

0. **Noise.** ``σ_i`` is how far figure ``i``'s prediction moves with the random draw
   (:func:`simulation_noise`: other seeds); ``ε = MEASUREMENT_ERROR``. Closed loops of fixed
   lengths draw nothing (σ = 0); an open-loop run's TTFT and throughput depend on where its
   arrivals fall, which the measured client's seed decided and ours cannot reproduce.
1. **Identifiability.** Elasticities ``E_ip = ∂ ln ŷ_i / ∂ ln θ_p`` at the base device, by 5 %
   finite differences, on the smooth figures (σ_i ≤ ``SMOOTH_NOISE``) when there are any. A
   parameter that moves no figure by ``MIN_ELASTICITY`` is not identified by these runs
   (network efficiency without tp > 1 runs); going through :data:`PARAMETERS` in order, one
   whose unit-normalised column leaves the smallest singular value of the chosen columns below
   ``MIN_INDEPENDENCE`` is confounded with one already chosen (the per-layer overhead with the
   per-iteration one when every run has the same layer count; the overheads with memory
   efficiency when every run decodes one model). Those keep their base values; the report
   says which and why.
2. **Levenberg–Marquardt** (Marquardt 1963) on the identified parameters in box coordinates
   ``z = (θ − θ_lo) / (θ_hi − θ_lo)``: forward-difference Jacobian, step
   ``(JᵀJ + λ diag JᵀJ) δ = −Jᵀr`` over the parameters not pinned at a bound by the gradient,
   ``z`` clipped to [0, 1], λ ÷3 on success and ×4 on failure. First on the smooth figures
   alone (noisy ones dent the objective with local minima a descent stops in), then on all of
   them, weighted. Roofline times are linear in ``1/c``, ``1/m``, ``1/n`` and the overheads,
   so a handful of iterations converge. Deterministic: the same runs, base and seed give the
   same factors.
3. The factors are rounded to what the hardware file holds, and the runs simulated again with
   the rounded device: the "after" figures are those of the file written.

Bounds (:data:`BOUNDS`) are physical: serving GEMMs sustain 20–95 % of the dense tensor peak
(below 20 % the wrong precision or peak is more likely than slow kernels), streaming kernels
50–95 % of HBM bandwidth, collectives 10–95 % of the link; the host costs 0–10 ms per
iteration and kernel launches 0–200 µs per layer. A fit that ends on a bound is flagged: the
runs ask for something the model lacks (or they are not of this device).

What identifies what: compute efficiency, the TTFT of long prompts; memory efficiency, the
TPOT of small batches against larger ones (KV reads grow with the batch, weights do not);
the iteration overhead, the TPOT of small models; the per-layer overhead, TPOT of models with
different layer counts; network efficiency, the TTFT of long prompts at tp > 1.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from servingcast.calibrate.readers import Measurement
from servingcast.calibrate.runs import (
    DEFAULT_MAX_REQUESTS,
    PARAMETERS,
    Defaults,
    Evaluator,
    Observation,
    base_parameters,
    build_run,
    device,
    resolve,
    simulation_noise,
)
from servingcast.errors import ConfigError
from servingcast.specs.catalog import get_hardware
from servingcast.specs.hardware import HardwareSpec

FloatArray = npt.NDArray[np.float64]

#: Physical bounds of each parameter (module docstring).
BOUNDS: dict[str, tuple[float, float]] = {
    "compute": (0.2, 0.95),
    "memory": (0.5, 0.95),
    "network": (0.1, 0.95),
    "iteration_ms": (0.0, 10.0),
    "layer_us": (0.0, 200.0),
}
#: Decimals each parameter is written with.
DECIMALS = {"compute": 3, "memory": 3, "network": 3, "iteration_ms": 3, "layer_us": 2}
#: Smallest elasticity (|∂ ln ŷ / ∂ ln θ| on some prediction) of an identified parameter.
MIN_ELASTICITY = 0.01
#: Smallest singular value of the unit-normalised elasticity columns of the chosen parameters.
MIN_INDEPENDENCE = 0.1
#: Levenberg–Marquardt iterations at most.
MAX_ITERATIONS = 30
#: Relative step of the identifiability differences; box step of the fit's Jacobian.
_SENSITIVITY_STEP = 0.05
_JACOBIAN_STEP = 0.02
#: Relative error assumed of every measured figure (run-to-run variation of real benchmarks).
MEASUREMENT_ERROR = 0.02
#: Noise (relative, 1 σ) below which a figure counts as smooth in the fit's first stage.
SMOOTH_NOISE = 0.005

Status = Literal["fitted", "at_bound", "kept"]


@dataclass(frozen=True)
class MetricFit:
    """A measured figure with the predictions of the base and the fitted device, and its
    weight in the fit (1 for a figure the simulator reproduces regardless of the draw)."""

    observation: Observation
    before: float | None
    after: float | None
    weight: float = 1.0

    @property
    def error_before(self) -> float | None:
        """(predicted − measured) / measured with the base device."""
        return _error(self.before, self.observation.measured)

    @property
    def error_after(self) -> float | None:
        """(predicted − measured) / measured with the fitted device."""
        return _error(self.after, self.observation.measured)


@dataclass(frozen=True)
class RunFit:
    """One measured run: where it came from, what it was, and its figures."""

    source: str
    format: str
    label: str
    simulated_requests: int
    metrics: tuple[MetricFit, ...]


@dataclass(frozen=True)
class ParameterFit:
    """One parameter: base and fitted values, bounds, and whether the runs identified it."""

    name: str
    base: float
    fitted: float
    lower: float
    upper: float
    status: Status
    reason: str = ""


@dataclass(frozen=True)
class Calibration:
    """The result of :func:`calibrate`. Errors are fractions (0.05 = 5 %)."""

    base: HardwareSpec
    hardware: HardwareSpec
    parameters: tuple[ParameterFit, ...]
    runs: tuple[RunFit, ...]
    rms_log_error_before: float
    rms_log_error_after: float
    simulations: int
    runtime_s: float

    def _errors(self, after: bool) -> list[float]:
        out = []
        for run in self.runs:
            for m in run.metrics:
                e = m.error_after if after else m.error_before
                if e is not None:
                    out.append(abs(e))
        return out

    @property
    def median_abs_error_before(self) -> float:
        """Median |relative error| over every figure, base device."""
        errors = self._errors(False)
        return statistics.median(errors) if errors else math.nan

    @property
    def median_abs_error_after(self) -> float:
        """Median |relative error| over every figure, fitted device."""
        errors = self._errors(True)
        return statistics.median(errors) if errors else math.nan

    @property
    def fitted(self) -> dict[str, float]:
        """Fitted value of every parameter (base value where kept)."""
        return {p.name: p.fitted for p in self.parameters}


def _error(predicted: float | None, measured: float) -> float | None:
    return None if predicted is None else (predicted - measured) / measured


def _loss(r: FloatArray) -> float:
    return float(np.mean(r * r))


# -- 1. identifiability -------------------------------------------------------------------------


def elasticities(ev: Evaluator, theta: dict[str, float]) -> dict[str, FloatArray]:
    """Weighted ``∂ ln ŷ / ∂ ln θ_p`` of every figure, by 5 % differences (0 → 5 % of range)."""
    r0 = ev.weighted(theta)
    columns: dict[str, FloatArray] = {}
    for p in PARAMETERS:
        hi = BOUNDS[p][1]
        value = theta[p]
        if value > 0:
            step = value * (1 + _SENSITIVITY_STEP)
            if step > hi:
                step = value * (1 - _SENSITIVITY_STEP)
            scale = math.log(step / value)
        else:
            step, scale = _SENSITIVITY_STEP * hi, _SENSITIVITY_STEP
        columns[p] = (ev.weighted(theta | {p: step}) - r0) / scale
    return columns


def identify(columns: dict[str, FloatArray], rows: npt.NDArray[np.bool_] | None = None,
             tp_above_one: bool = True) -> dict[str, str]:
    """The parameters the figures ``rows`` (default: all) identify (→ ``""``) and those they
    do not (→ the reason), from their :func:`elasticities` (module docstring, step 1)."""
    reasons: dict[str, str] = {}
    chosen: list[str] = []
    unit: dict[str, FloatArray] = {}
    for p in PARAMETERS:
        col = columns[p] if rows is None else columns[p][rows]
        largest = float(np.max(np.abs(col))) if col.size else 0.0
        if largest < MIN_ELASTICITY:
            what = ("no run has tp > 1" if p == "network" and not tp_above_one
                    else "it changes no measured figure by a measurable amount")
            reasons[p] = f"not identified: {what}"
            continue
        unit[p] = col / np.linalg.norm(col)
        sigma = np.linalg.svd(np.column_stack([unit[q] for q in [*chosen, p]]),
                              compute_uv=False)
        if float(sigma[-1]) < MIN_INDEPENDENCE:
            cosines = {q: abs(float(np.dot(unit[p], unit[q]))) for q in chosen}
            partner = max(cosines, key=lambda q: cosines[q])
            reasons[p] = (f"not identified: confounded with {partner} on these runs "
                          f"(|cos| {cosines[partner]:.3f})")
            continue
        chosen.append(p)
        reasons[p] = ""
    return reasons


# -- 2. Levenberg–Marquardt ---------------------------------------------------------------------


def _theta(z: FloatArray, names: list[str], fixed: dict[str, float]) -> dict[str, float]:
    out = dict(fixed)
    for name, zi in zip(names, z.tolist(), strict=True):
        lo, hi = BOUNDS[name]
        out[name] = lo + zi * (hi - lo)
    return out


def _levenberg_marquardt(ev: Evaluator, names: list[str],
                         start: dict[str, float]) -> dict[str, float]:
    """Minimise the weighted loss over ``names`` from ``start`` (module docstring, step 2)."""
    z = np.array([(start[n] - BOUNDS[n][0]) / (BOUNDS[n][1] - BOUNDS[n][0]) for n in names])
    z = np.clip(z, 0.0, 1.0)
    r = ev.weighted(_theta(z, names, start))
    loss = _loss(r)
    lam = 1e-3
    for _ in range(MAX_ITERATIONS):
        jac = np.empty((r.size, len(names)))
        for j in range(len(names)):
            h = _JACOBIAN_STEP if z[j] + _JACOBIAN_STEP <= 1.0 else -_JACOBIAN_STEP
            zj = z.copy()
            zj[j] += h
            jac[:, j] = (ev.weighted(_theta(zj, names, start)) - r) / h
        grad = jac.T @ r
        # Parameters on a bound that the gradient pushes further out stay there this step.
        free = ~(((z <= 0.0) & (grad > 0)) | ((z >= 1.0) & (grad < 0)))
        if not free.any():
            break
        normal = jac[:, free].T @ jac[:, free]
        for _ in range(12):
            damped = normal + lam * np.diag(np.diag(normal) + 1e-12)
            trial = z.copy()
            trial[free] = np.clip(z[free] + np.linalg.lstsq(damped, -grad[free], rcond=None)[0],
                                  0.0, 1.0)
            r_trial = ev.weighted(_theta(trial, names, start))
            loss_trial = _loss(r_trial)
            if loss_trial < loss:
                break
            lam *= 4.0
        else:
            break  # no step along the damped directions lowers the loss: a minimum
        step, gain = float(np.max(np.abs(trial - z))), loss - loss_trial
        z, r, loss = trial, r_trial, loss_trial
        lam = max(lam / 3.0, 1e-9)
        if step < 1e-7 or gain <= 1e-12 * max(loss, 1e-300):
            break
    return _theta(z, names, start)


# -- 3. the whole fit ---------------------------------------------------------------------------


def calibrate(measurements: Sequence[Measurement], hardware: str, *,
              defaults: Defaults | None = None, seed: int = 0,
              max_requests: int = DEFAULT_MAX_REQUESTS) -> Calibration:
    """Fit ``hardware``'s factors to ``measurements`` (module docstring).

    ``hardware`` is the base device: a catalog name or a hardware YAML file; ``defaults`` fill
    in the model, tp and precision of runs whose files do not record them. Raises
    :class:`ConfigError` naming the run when one cannot be simulated (model or tp unknown, the
    model does not fit, ...).
    """
    if not measurements:
        raise ConfigError("no measured runs. To fix: pass at least one result file")
    if max_requests < 1:
        raise ConfigError(f"max_requests must be >= 1, got {max_requests}")
    started = time.perf_counter()
    base = get_hardware(hardware)
    defaults = defaults or Defaults()
    runs = [build_run(resolve(m, defaults), hardware, base, seed, max_requests)
            for m in measurements]
    ev = Evaluator(runs, base)
    start = base_parameters(base)
    clipped = {p: min(max(v, BOUNDS[p][0]), BOUNDS[p][1]) for p, v in start.items()}
    noise = simulation_noise(ev, clipped, seed)
    weights = MEASUREMENT_ERROR / np.sqrt(noise * noise + MEASUREMENT_ERROR**2)
    ev.sqrt_weights = weights
    columns = elasticities(ev, clipped)
    tp_above_one = any((run.measurement.tp or 1) > 1 for run in runs)
    # Figures that depend on the draw give noisy differences: when some figures do not, those
    # decide what is identified, and a first stage fits them alone (the others dent the
    # objective with local minima a descent would stop in; see simulation_noise).
    smooth = noise <= SMOOTH_NOISE
    staged = bool(smooth.any() and not smooth.all())
    reasons = identify(columns, smooth if staged else None, tp_above_one)
    names = [p for p in PARAMETERS if not reasons[p]]
    fitted = dict(clipped)
    if names and staged:
        ev.sqrt_weights = np.where(smooth, weights, 0.0)
        fitted = _levenberg_marquardt(ev, names, fitted)
        ev.sqrt_weights = weights
    if names:
        fitted = _levenberg_marquardt(ev, names, fitted)
    final = {p: round(fitted[p], DECIMALS[p]) if p in names else start[p] for p in PARAMETERS}
    hw = device(base, final)
    before, after = ev.predictions(start), ev.predictions(final)
    parameters = []
    for p in PARAMETERS:
        lo, hi = BOUNDS[p]
        status: Status = "kept"
        reason = reasons[p]
        if not reason:
            at_bound = min(final[p] - lo, hi - final[p]) <= 1e-3 * (hi - lo)
            status = "at_bound" if at_bound else "fitted"
            if at_bound:
                reason = ("at its physical bound: the runs ask for a value beyond it, so the "
                          "model lacks something they show (check precision, tp and that the "
                          "runs are of this device)")
        parameters.append(ParameterFit(p, start[p], final[p], lo, hi, status, reason))
    run_fits = []
    flat = iter((weights * weights).tolist())
    for run, pb, pa in zip(runs, before, after, strict=True):
        metrics = tuple(MetricFit(obs, b, a, next(flat))
                        for obs, b, a in zip(run.observations, pb, pa, strict=True))
        run_fits.append(RunFit(run.measurement.source, run.measurement.format, run.label,
                               len(run.requests), metrics))
    return Calibration(
        base=base, hardware=hw, parameters=tuple(parameters), runs=tuple(run_fits),
        rms_log_error_before=math.sqrt(_loss(ev.residuals(start))),
        rms_log_error_after=math.sqrt(_loss(ev.residuals(final))),
        simulations=ev.simulations, runtime_s=time.perf_counter() - started,
    )


__all__ = ["BOUNDS", "PARAMETERS", "Calibration", "Defaults", "MetricFit", "Observation",
           "ParameterFit", "RunFit", "calibrate", "elasticities", "identify"]
