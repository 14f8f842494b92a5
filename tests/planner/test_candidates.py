"""Candidate enumeration, drops by reason, and dominance pruning."""

import itertools
import math
from statistics import NormalDist

import pytest

from servingcast.planner.candidates import CandidateBuilder, prune_dominated
from servingcast.planner.queueing import erlang_c

from .conftest import make_problem


def test_enumeration_and_drop_reasons() -> None:
    problem = make_problem(
        pools=[{"name": "a100", "hardware": "a100-sxm4-80gb", "count": 8}],
        workloads=[{"name": "f", "model": "falcon-7b", "precision": "fp8", "input_len": 512,
                    "output_len": 64, "slo": {"ttft": "1 s", "tpot": "50 ms"}}],
        search={"tp": [1, 2], "pp": [1]})
    cset = CandidateBuilder(problem).candidates()
    # A100 has no fp8 tensor cores: every configuration is dropped for precision.
    assert cset.candidates == () and cset.drop_counts() == {"precision": cset.enumerated}
    fp16 = make_problem(
        pools=[{"name": "a100", "hardware": "a100-sxm4-80gb", "count": 8}],
        workloads=[{"name": "f", "model": "falcon-7b", "precision": "fp16", "input_len": 512,
                    "output_len": 64, "slo": {"ttft": "1 s", "tpot": "50 ms"}}],
        search={"tp": [1, 2, 4, 8], "pp": [1, 2]})
    counts = CandidateBuilder(fp16).candidates().drop_counts()
    # Falcon-7B has 71 heads: only tp=1 shards it; tp=8 with pp=2 needs 16 GPUs.
    assert counts["parallelism"] > 0 and counts["pool_size"] > 0


def test_memory_drops_name_the_weights() -> None:
    problem = make_problem(
        workloads=[{"name": "big", "model": "llama-3.1-405b", "precision": "bf16",
                    "input_len": 1000, "output_len": 100, "slo": {"ttft": "5 s", "tpot": "1 s"}}],
        search={"tp": [8], "pp": [1]})
    cset = CandidateBuilder(problem).candidates()
    assert cset.candidates == ()
    assert {d.reason for d in cset.dropped} == {"memory"}
    assert "GB of weights" in cset.dropped[0].detail


def test_dominance_keeps_a_front_per_pool_and_role(small) -> None:  # type: ignore[no-untyped-def]
    cset = CandidateBuilder(small).candidates()
    pruned = prune_dominated(cset)
    assert pruned.dominated == len(cset.candidates) - len(pruned.candidates)
    kept = {c.key for c in pruned.candidates}
    for c in cset.candidates:
        if c.key in kept:
            continue
        assert any(k.config.role == c.config.role and k.config.pool == c.config.pool
                   and k.gpus <= c.gpus and k.rate >= c.rate for k in pruned.candidates)
    for a in pruned.candidates:
        for b in pruned.candidates:
            same = (a.config.role, a.config.pool) == (b.config.role, b.config.pool)
            if same and a is not b:
                assert not (a.gpus <= b.gpus and a.rate >= b.rate)
    by_par = prune_dominated(cset, by_parallelism=True)
    keys = [(c.config.role, c.config.parallelism) for c in by_par.candidates]
    assert len(keys) == len(set(keys)) and kept <= {c.key for c in by_par.candidates}


def test_profiles_are_reused_across_limits(small) -> None:  # type: ignore[no-untyped-def]
    builder = CandidateBuilder(small)
    base = {c.key: c.rate for c in builder.candidates().candidates}
    tight = {c.key: c.rate for c in builder.candidates(tpot_scale=0.6).candidates}
    assert set(tight) <= set(base)
    for key, rate in tight.items():
        assert rate <= base[key] * (1 + 1e-12)
    assert any(tight[k] < base[k] for k in tight)


def test_engine_limits_follow_the_capacity(small) -> None:  # type: ignore[no-untyped-def]
    for c in CandidateBuilder(small).candidates().candidates:
        if c.config.role == "prefill":
            assert c.engine_max_num_seqs == c.config.max_num_seqs
            continue
        cap = c.engine_max_num_seqs
        assert c.capacity.max_batch <= cap <= c.config.max_num_seqs
        extra = c.config.pp if c.config.role == "aggregated" else 0
        slots = cap - extra
        # Never more slots than the KV cache holds sequences (past it: preemption).
        kv = int(c.profile.b_kv)
        assert slots <= max(kv, math.ceil(c.capacity.max_batch))
        # Within that: a request waits for a free slot at most a quarter of the tail budget
        # (or the cap is the searched one) ...
        wait = float(erlang_c(slots, c.capacity.batch))
        assert wait <= (1 - 0.9) / 4 + 1e-12 or cap == c.config.max_num_seqs or slots == kv
        # ... and the cap holds the batch law's 1 - (1 - q) / 4 quantile,
        # b + (b_q - b) z' / z_q: the smallest cap doing both.
        q = c.profile.quantile
        z_q, z_cap = NormalDist().inv_cdf(q), NormalDist().inv_cdf(1 - (1 - q) / 4)
        wide = math.ceil(c.capacity.batch + (c.capacity.max_batch - c.capacity.batch)
                         * z_cap / z_q)
        assert slots >= min(wide, c.config.max_num_seqs - extra, kv)
        if slots > max(1, math.ceil(c.capacity.max_batch), wide):
            assert float(erlang_c(slots - 1, c.capacity.batch)) > (1 - q) / 4


@pytest.mark.parametrize("mode", ["aggregated", "disaggregated"])
def test_modes_limit_roles(mode: str) -> None:
    problem = make_problem(search={"modes": [mode], "tp": [1], "pp": [1]})
    roles = {c.config.role for c in CandidateBuilder(problem).candidates().candidates}
    assert roles == ({"aggregated"} if mode == "aggregated" else {"prefill", "decode"})


def test_decode_and_aggregated_groups_are_pooled(small) -> None:  # type: ignore[no-untyped-def]
    """Decode and aggregated candidates carry ``f(n)`` (queueing item 10): n times the
    per-instance rate of the largest computed group size at most n, never below n μ, and the
    engine cap of a group is sized at that group's capacity."""
    cands = CandidateBuilder(small).candidates().candidates
    assert all(not c.pooled for c in cands if c.config.role != "prefill")  # until asked
    pooled = [g for c in cands if c.config.role != "prefill" and (g := c.with_groups(64)).pooled]
    assert pooled
    for c in pooled:
        sizes = [n for n, _ in c.group_caps]
        assert sizes[0] == 1 and len(c.pooled) == sizes[-1]
        assert c.group_caps[0][1] == c.capacity
        per = [f / n for n, f in enumerate(c.pooled, 1)]
        assert per[0] == pytest.approx(c.rate)
        assert all(b >= a - 1e-12 for a, b in itertools.pairwise(per))
        for n, cap in c.group_caps:
            assert c.group_rate(n) == pytest.approx(n * cap.rate_per_s)
            assert c.group_capacity(n) == cap
        big = len(c.pooled) + 5
        assert c.group_rate(big) == pytest.approx(big * per[-1])
        last = c.group_caps[-1]
        assert c.engine_max_num_seqs_for(last[0]) >= math.ceil(last[1].max_batch)


def test_round_robin_rule_is_the_exported_one() -> None:
    from servingcast.planner.candidates import round_robin_router
    from servingcast.planner.export import default_router

    for inp, out in ((512, 64), (512, {"kind": "lognormal", "mean": 64, "std": 30}),
                     ({"kind": "uniform", "low": 100, "high": 900}, 64)):
        w = make_problem(workloads=[{"name": "w", "model": "llama-3.1-8b", "input_len": inp,
                                     "output_len": out,
                                     "slo": {"ttft": "1 s", "tpot": "50 ms"}}]).workloads[0]
        assert round_robin_router(w) == (default_router(w, "aggregated") == "round_robin")
