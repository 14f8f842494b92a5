"""Agent sessions in the simulator: turns wait for the previous answer and the tool pause, keep
to their instance (affinity), and hit the prefix cache with their history."""

import numpy as np

from servingcast.workload import generate_requests

from .conftest import group, make_scenario, run


def _agentic(rate: float = 2.0, n: int = 120, tool: str = "500 ms", affinity: bool = True,
             caching: bool = True, count: int = 2) -> tuple:
    scenario = make_scenario(
        [group(count=count, enable_prefix_caching=caching)],
        workload={"num_requests": n, "arrival": {"kind": "poisson", "rate": rate},
                  "input_len": 200, "output_len": 40,
                  "prefix": {"kind": "agentic", "turns": 4, "tool_time": tool,
                             "affinity": affinity}},
        seed=3)
    requests = generate_requests(scenario.workload, np.random.default_rng(scenario.seed))
    return scenario, requests, run(scenario, requests)


def test_turns_wait_for_the_answer_and_the_tool_pause() -> None:
    _, requests, result = _agentic()
    req = result.requests
    after = requests.after
    later = np.flatnonzero(after >= 0)
    assert later.size == 90  # 30 sessions of 4 turns, 3 later turns each
    gaps = req.arrival_s[later] - req.finish_s[after[later]]
    assert np.allclose(gaps, 0.5)  # sent exactly the tool time after the previous answer
    # Requests of one session never overlap.
    assert np.all(req.arrival_s[later] >= req.finish_s[after[later]] + 0.5 - 1e-12)
    assert np.all(np.isfinite(req.arrival_s)) and np.all(np.isfinite(req.finish_s))


def test_affinity_keeps_a_session_on_its_instance_and_hits_the_history() -> None:
    _, requests, sticky = _agentic(affinity=True)
    later = np.flatnonzero(requests.after >= 0)
    inst = sticky.requests.prefill_instance
    assert np.all(inst[later] == inst[requests.after[later]])
    _, _, loose = _agentic(affinity=False)
    # With affinity every later turn finds its history cached: less prefill, a shorter TTFT.
    assert sticky.requests.ttft_s[later].mean() < loose.requests.ttft_s[later].mean()


def test_prefix_caching_shortens_the_later_turns() -> None:
    _, requests, cached = _agentic(caching=True, count=1)
    _, _, plain = _agentic(caching=False, count=1)
    last = np.flatnonzero(requests.prefix_len >= 3 * 240)  # fourth turns: 720 tokens of history
    assert last.size == 30
    assert cached.requests.ttft_s[last].mean() < 0.8 * plain.requests.ttft_s[last].mean()


def test_a_seed_fixes_the_sessions() -> None:
    _, _, a = _agentic()
    _, _, b = _agentic()
    assert np.array_equal(a.requests.arrival_s, b.requests.arrival_s)
    assert np.array_equal(a.requests.finish_s, b.requests.finish_s)


def test_a_rejected_turn_still_releases_the_next_one() -> None:
    # Turn t needs t * 240 + 200 prompt tokens and 40 more: turns 4 and 5 pass max_model_len.
    scenario = make_scenario(
        [group(max_model_len=1000, enable_prefix_caching=True)],
        workload={"num_requests": 60, "arrival": {"kind": "poisson", "rate": 1},
                  "input_len": 200, "output_len": 40,
                  "prefix": {"kind": "agentic", "turns": 6, "tool_time": "100 ms"}})
    result = run(scenario)
    turn = np.arange(60) % 6
    rejected = result.requests.reject_reason > 0
    assert np.array_equal(rejected, turn >= 4)
    arrival = result.requests.arrival_s
    # Turn 5 is sent 100 ms after turn 4's rejection (at its own arrival).
    assert np.allclose(arrival[turn == 5] - arrival[turn == 4], 0.1)
