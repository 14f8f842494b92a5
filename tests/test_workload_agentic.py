"""Agentic sessions in the workload: history growth, tool pauses, session rate, validation, and
the prefix cache's expected hit (servingcast.workload)."""

import numpy as np
import pytest
from pydantic import ValidationError

from servingcast.workload import (
    AgenticPrefix,
    FixedLength,
    Prefix,
    SessionPrefix,
    SystemPromptPrefix,
    Workload,
    expected_cached_prefix_tokens,
    generate_requests,
    prompt_samples,
)


def _workload(**prefix: object) -> Workload:
    return Workload.model_validate({
        "num_requests": 40_000, "arrival": {"kind": "poisson", "rate": 10},
        "input_len": {"kind": "uniform", "low": 100, "high": 300},
        "output_len": {"kind": "uniform", "low": 20, "high": 80},
        "prefix": {"kind": "agentic", "turns": 6, "tool_time": "2 s", **prefix}})


def test_turn_t_prompt_is_the_history_plus_new_tokens() -> None:
    req = generate_requests(_workload(), np.random.default_rng(0))
    turn = np.arange(len(req)) % 6  # sessions stored whole, six turns each
    for t in range(6):
        mean = req.input_len[turn == t].mean()
        assert mean == pytest.approx(t * (200 + 50) + 200, rel=0.01)  # t (in + out) + in
    # Each later turn's prompt is exactly the previous prompt and answer plus its new tokens.
    later = np.flatnonzero(turn > 0)
    prev = later - 1
    new = req.input_len[later] - req.input_len[prev] - req.output_len[prev]
    assert np.all((new >= 100) & (new <= 300))
    assert np.array_equal(req.prefix_len[later], req.input_len[prev] + req.output_len[prev])
    assert np.all(req.prefix_len[turn == 0] == 0)


def test_later_turns_wait_for_the_previous_one() -> None:
    req = generate_requests(_workload(), np.random.default_rng(0))
    assert req.after is not None and req.pause_s is not None
    first = req.after < 0
    assert first.sum() == 40_000 // 6 + 1  # the last session is cut at num_requests
    assert np.all(np.isnan(req.arrival_s[~first]))
    assert np.all(req.after[~first] == np.flatnonzero(~first) - 1)
    assert np.all(req.pause_s[~first] == 2.0) and np.all(req.pause_s[first] == 0.0)
    starts = req.arrival_s[first]
    assert np.all(np.diff(starts) > 0)
    # Sessions start at rate / E[turns] = 10 / 6 per second (requests at 10 req/s).
    assert (starts.size - 1) / (starts[-1] - starts[0]) == pytest.approx(10 / 6, rel=0.03)
    assert len(set(req.prefix_group[first].tolist())) == first.sum()  # a group per session


def test_turns_law_and_exponential_tool_time() -> None:
    w = _workload(turns={"kind": "uniform", "low": 1, "high": 9},
                  tool_time={"kind": "exponential", "mean": "500 ms"})
    req = generate_requests(w, np.random.default_rng(1))
    later = req.after >= 0
    assert req.pause_s[later].mean() == pytest.approx(0.5, rel=0.03)
    sessions = np.bincount(req.prefix_group)
    assert sessions.mean() == pytest.approx(5.0, rel=0.03)
    assert sessions.min() >= 1 and sessions[:-1].max() <= 9


def test_duration_runs_every_turn_of_the_sessions_started() -> None:
    w = Workload.model_validate({
        "duration": "60 s", "arrival": {"kind": "constant", "rate": 4}, "input_len": 50,
        "output_len": 10, "prefix": {"kind": "agentic", "turns": 4}})
    req = generate_requests(w, np.random.default_rng(0))
    assert len(req) == 240  # a session every second for 60 s, four turns each
    assert np.all(req.input_len[3::4] == 3 * 60 + 50)


def test_a_seed_fixes_the_sessions() -> None:
    a = generate_requests(_workload(), np.random.default_rng(7))
    b = generate_requests(_workload(), np.random.default_rng(7))
    assert np.array_equal(a.input_len, b.input_len)
    assert np.array_equal(a.arrival_s, b.arrival_s, equal_nan=True)


@pytest.mark.parametrize(("fields", "message"), [
    ({"arrival": {"kind": "concurrency", "concurrency": 4}},
     "agentic sessions are closed loops already"),
    ({"prefix": {"kind": "agentic", "turns": 4, "tool_time": 2}}, "2 has no unit"),
    ({"prefix": {"kind": "agentic", "turns": 0}}, "greater than or equal to 1"),
    ({"prefix": {"kind": "agentic", "turns": 4, "tool_time": "-1 s"}}, "must be >= 0"),
])
def test_bad_agentic_workloads(fields: dict[str, object], message: str) -> None:
    data = {"num_requests": 10, "arrival": {"kind": "poisson", "rate": 1}, "input_len": 10,
            "output_len": 10, "prefix": {"kind": "agentic", "turns": 4}, **fields}
    with pytest.raises(ValidationError, match=message):
        Workload.model_validate(data)


@pytest.mark.parametrize("prefix", [
    SystemPromptPrefix(kind="system_prompt", num_groups=4, length=1000),
    SessionPrefix(kind="sessions", turns=5),
    AgenticPrefix(kind="agentic", turns=6),
    AgenticPrefix.model_validate({"kind": "agentic", "turns": {"kind": "uniform", "low": 1,
                                                               "high": 11}}),
])
def test_expected_cached_tokens_match_the_drawn_requests(prefix: Prefix) -> None:
    _, shared, _, _ = prompt_samples(prefix, FixedLength(value=300), FixedLength(value=100),
                                     np.random.default_rng(0), 200_000)
    assert expected_cached_prefix_tokens(prefix, 300, 100) == pytest.approx(shared.mean(),
                                                                             rel=0.01)


def test_expected_cached_tokens_by_hand() -> None:
    agentic = AgenticPrefix(kind="agentic", turns=8)
    # E[t] = (T - 1) / 2 = 3.5 turns of history, 400 + 100 tokens each.
    assert expected_cached_prefix_tokens(agentic, 400, 100) == pytest.approx(1750.0)
    # Whole 16-token blocks: (b - 1) / 2 = 7.5 tokens lost on the 7 later turns of 8.
    assert expected_cached_prefix_tokens(agentic, 400, 100, 16) == pytest.approx(
        1750.0 - 7.5 * 7 / 8)
    system = SystemPromptPrefix(kind="system_prompt", num_groups=2, length=1000)
    assert expected_cached_prefix_tokens(system, 1, 1, 16) == 992.0
    assert expected_cached_prefix_tokens(None, 400, 100) == 0.0
