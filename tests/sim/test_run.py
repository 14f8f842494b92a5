"""Iteration timing: runs equal the cost model evaluated iteration by iteration."""

import numpy as np
import pytest

from servingcast.costmodel import CostModel, Parallelism
from servingcast.costmodel.batch import BatchStats, attention_pairs, kv_tokens_read
from servingcast.costmodel.spec import draft_parallelism, pipelined_step_s
from servingcast.sim.decodeset import DecodeSet
from servingcast.sim.entities import Request
from servingcast.sim.run import ArrayRun, LineRun, StepCost
from servingcast.specs import get_hardware, get_model, get_precision


def cost_model(model: str, **par: int) -> CostModel:
    return CostModel(get_model(model), get_hardware("h100-sxm"), get_precision("bf16"),
                     Parallelism(**par))


def brute_step(cm: CostModel, draft: CostModel | None, k: int, ctx: list[float],
               prefill: list[tuple[int, int]]) -> float:
    """One iteration straight from the cost model, sequence by sequence."""
    q = k + 1 if draft is not None else 1
    w = cm.model.sliding_window
    b = len(ctx)
    m = min(cm.parallel.pp, b + len(prefill)) or 1
    stats = BatchStats(
        prefill_tokens=sum(t for t, _ in prefill) / m,
        prefill_pairs=sum(float(attention_pairs(t, p, w)) for t, p in prefill) / m,
        prefill_kv_tokens=sum(float(kv_tokens_read(t, p, w)) for t, p in prefill) / m,
        decode_seqs=b / m, decode_tokens=b * q / m,
        decode_pairs=sum(float(attention_pairs(q, c, w)) for c in ctx) / m,
        decode_kv_tokens=sum(float(kv_tokens_read(q, c, w)) for c in ctx) / m,
        logit_seqs=(b * q + len(prefill)) / m)
    latency, interval = cm.iteration_s(stats)
    draft_s = 0.0
    if draft is not None:
        for r in range(k):
            d = BatchStats(decode_seqs=b / m, decode_tokens=b / m, logit_seqs=b / m,
                           decode_pairs=sum(float(attention_pairs(1, c + r, w)) for c in ctx) / m,
                           decode_kv_tokens=sum(float(kv_tokens_read(1, c + r, w))
                                                for c in ctx) / m)
            draft_s += float(draft.iteration_s(d)[0])
    return float(pipelined_step_s(latency, interval, m, cm.parallel.pp, draft_s))


CASES = [("llama-3.1-8b", {}, False), ("mixtral-8x7b", {"tp": 2}, False),
         ("llama-3.1-70b", {"tp": 2, "pp": 3}, False), ("mistral-7b", {}, False),
         ("llama-3.1-70b", {"tp": 4}, True), ("llama-3.1-70b", {"tp": 2, "pp": 2}, True)]


@pytest.mark.parametrize(("model", "par", "speculative"), CASES)
def test_runs_equal_the_cost_model_step_by_step(model: str, par: dict[str, int],
                                                speculative: bool) -> None:
    cm = cost_model(model, **par)
    draft = None
    k = 0
    tokens_per_step = 1.0
    if speculative:
        d = get_model("llama-3.2-1b")
        draft = CostModel(d, cm.hardware, cm.precision, draft_parallelism(d, cm.parallel.tp))
        k, tokens_per_step = 3, 2.2
    cost = StepCost(cm, draft, k, max_tokens=600)
    dec = DecodeSet(16, tokens_per_step, k + 1, cm.model.sliding_window)
    rng = np.random.default_rng(1)
    members = []
    for i in range(int(rng.integers(5, 40))):
        req = Request(i, 0.0, int(rng.integers(3900, 4200)), 400)
        req.generated = 1
        dec.join(req, 0, req.input_len, int(rng.integers(150, 399)))
        members.append(req)
    step = 0

    def ctx_at(s: int) -> list[float]:
        return [(r.phi + dec.e * s) / dec.scale for r in members]

    prefill = [(300, 0), (200, 1000)]
    pre = (500.0, float(attention_pairs(300, 0) + attention_pairs(200, 1000)),
           float(kv_tokens_read(300, 0) + kv_tokens_read(200, 1000)), 2.0, 2)
    if cm.model.sliding_window:
        pre = (500.0, float(sum(attention_pairs(t, p, 4096) for t, p in prefill)),
               float(sum(kv_tokens_read(t, p, 4096) for t, p in prefill)), 2.0, 2)
    assert cost.step_s(pre, dec, step) == pytest.approx(
        brute_step(cm, draft, k, ctx_at(step), prefill), rel=1e-9)
    steps = dec.steps_to_event(step)
    run = cost.run((0.0, 0.0, 0.0, 0.0, 0), dec, step, steps)
    times = [brute_step(cm, draft, k, ctx_at(step + j), []) for j in range(steps)]
    cum = np.cumsum(times)
    for j in (1, 2, steps // 2, steps):
        assert run.elapsed(j) == pytest.approx(cum[j - 1], rel=1e-9)
    middle = cum[steps // 2 - 1] + 0.5 * times[steps // 2]
    assert run.steps_done(middle) == steps // 2
    assert run.steps_done(run.elapsed(steps // 2)) == steps // 2


def test_envelope_of_several_lines() -> None:
    # Three candidate lines: the max switches from the first to the second to the third.
    first, second = [10.0, 8.0, 1.0], [10.0, 8.5, 2.0]
    run = LineRun(first, second)
    times = [max(10.0, 8.0 + 0.5 * j, 1.0 + j) for j in range(40)]
    cum = np.concatenate(([0.0], np.cumsum(times)))
    for k in range(40):
        assert run.elapsed(k) == pytest.approx(cum[k])
        assert run.steps_done(cum[k] + 1e-9) == k
        assert run.steps_done(cum[k] + 0.3 * times[k] if k < 39 else cum[k]) == k


def test_array_run_is_the_fallback() -> None:
    run = ArrayRun(np.array([1.0, 2.0, 3.0]))
    assert run.max_steps == 3 and run.elapsed(2) == 3.0
    assert run.steps_done(2.9) == 1 and run.steps_done(3.0) == 2 and run.steps_done(99) == 3


def test_exact_path_equals_the_fast_path() -> None:
    cm = cost_model("mixtral-8x7b", tp=2, pp=2)
    fast = StepCost(cm, max_tokens=64)
    exact = StepCost(cm)
    exact.fast = None  # what ROOFLINE_P != 1 would do
    dec = DecodeSet(16)
    for i in range(12):
        req = Request(i, 0.0, 500 + 37 * i, 300)
        req.generated = 1
        dec.join(req, 0, req.input_len, 299)
    a = fast.run((0.0, 0.0, 0.0, 0.0, 0), dec, 0, 50)
    b = exact.run((0.0, 0.0, 0.0, 0.0, 0), dec, 0, 50)
    for j in (1, 7, 50):
        assert a.elapsed(j) == pytest.approx(b.elapsed(j), rel=1e-9)


def test_whole_simulation_on_the_exact_path() -> None:
    """With the fast evaluator switched off (as ROOFLINE_P != 1 would), the engine times runs
    with array evaluations of the cost model and must give the same simulation."""
    from servingcast.sim.cluster import build_groups
    from servingcast.sim.core import Simulation
    from servingcast.sim.metrics import collect
    from servingcast.workload import generate_requests
    from tests.sim.conftest import group, make_scenario

    sc = make_scenario([group(pp=2, max_num_batched_tokens=1024)], workload={
        "num_requests": 80, "arrival": {"kind": "poisson", "rate": 6},
        "input_len": {"kind": "uniform", "low": 100, "high": 3000}, "output_len": 700})
    results = []
    for exact in (False, True):
        reqs = generate_requests(sc.workload, np.random.default_rng(0))
        sim = Simulation(sc, build_groups(sc), reqs)
        if exact:
            for inst in sim.instances:
                inst.cost.fast = None
        sim.run()
        results.append(collect(sim).requests)
    np.testing.assert_allclose(results[0].finish_s, results[1].finish_s, rtol=1e-9)
    np.testing.assert_allclose(results[0].first_token_s, results[1].first_token_s, rtol=1e-9)
