"""Arrival processes, length distributions, prefixes and trace replay."""

from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from servingcast.errors import ConfigError
from servingcast.workload import (
    EmpiricalLength,
    LengthDistribution,
    Workload,
    generate_requests,
)

LENGTH: TypeAdapter[object] = TypeAdapter(LengthDistribution)


def workload(**fields: object) -> Workload:
    base: dict[str, object] = {"num_requests": 20_000, "arrival": {"kind": "poisson", "rate": 10},
                               "input_len": 100, "output_len": 10}
    return Workload.model_validate({**base, **fields})


def draw(w: Workload, seed: int = 0) -> object:
    return generate_requests(w, np.random.default_rng(seed))


@pytest.mark.parametrize(("arrival", "cv"), [
    ({"kind": "poisson", "rate": 10}, 1.0),
    ({"kind": "gamma", "rate": 10, "cv": 3}, 3.0),
    ({"kind": "gamma", "rate": 10, "cv": 0.5}, 0.5),
    ({"kind": "constant", "rate": 10}, 0.0),
])
def test_arrival_rate_and_burstiness(arrival: dict[str, object], cv: float) -> None:
    reqs = generate_requests(workload(arrival=arrival), np.random.default_rng(1))
    gaps = np.diff(np.concatenate(([0.0], reqs.arrival_s)))
    assert np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(0.1, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, abs=0.1 * max(cv, 0.1))


def test_duration_bounds_the_arrivals() -> None:
    w = Workload.model_validate({"duration": "2 min", "arrival": {"kind": "poisson", "rate": 5},
                                 "input_len": 10, "output_len": 10})
    reqs = generate_requests(w, np.random.default_rng(0))
    assert reqs.arrival_s.max() <= 120.0
    assert len(reqs) == pytest.approx(600, rel=0.15)


@pytest.mark.parametrize(("spec", "mean", "std"), [
    (7, 7.0, 0.0),
    ({"kind": "uniform", "low": 10, "high": 30}, 20.0, np.sqrt((21**2 - 1) / 12)),
    ({"kind": "normal", "mean": 500, "std": 50}, 500.0, 50.0),
    ({"kind": "lognormal", "mean": 1000, "std": 800}, 1000.0, 800.0),
    ({"kind": "empirical", "values": [1, 3], "weights": [3, 1]}, 1.5, np.sqrt(0.75)),
])
def test_length_distributions(spec: object, mean: float, std: float) -> None:
    dist = LENGTH.validate_python(spec)
    x = dist.sample(np.random.default_rng(0), 200_000)  # type: ignore[attr-defined]
    assert x.dtype == np.int64 and x.min() >= 1
    assert x.mean() == pytest.approx(mean, rel=0.02)
    assert x.std() == pytest.approx(std, rel=0.05, abs=0.02)


def test_lengths_are_clipped() -> None:
    dist = LENGTH.validate_python({"kind": "lognormal", "mean": 100, "std": 300, "min": 20,
                                   "max": 150})
    x = dist.sample(np.random.default_rng(0), 10_000)  # type: ignore[attr-defined]
    assert x.min() == 20 and x.max() == 150


def test_empirical_lengths_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "lens.csv").write_text("# ShareGPT sample\nprompt,answer\n12,40\n30,7\n")
    dist = EmpiricalLength.model_validate({"kind": "empirical", "path": "lens.csv",
                                           "column": "answer"},
                                          context={"base_dir": str(tmp_path)})
    assert dist.values == (40, 7)
    (tmp_path / "plain.txt").write_text("5\n6\n")
    plain = EmpiricalLength.model_validate({"kind": "empirical", "path": "plain.txt"},
                                           context={"base_dir": str(tmp_path)})
    assert plain.values == (5, 6)


def test_system_prompts_prepend_a_shared_prefix() -> None:
    reqs = generate_requests(workload(prefix={"kind": "system_prompt", "num_groups": 3,
                                              "length": 50}), np.random.default_rng(0))
    assert np.all(reqs.input_len == 150) and np.all(reqs.prefix_len == 50)
    assert set(reqs.prefix_group.tolist()) == {0, 1, 2}


def test_sessions_extend_the_conversation() -> None:
    w = workload(num_requests=12, prefix={"kind": "sessions", "turns": 3, "in_flight": 2},
                 output_len={"kind": "uniform", "low": 5, "high": 9})
    reqs = generate_requests(w, np.random.default_rng(0))
    # Requests 0 and 2 are turns 1 and 2 of session 0: turn 2 = turn 1's prompt + answer + 100.
    assert reqs.prefix_group[:6].tolist() == [0, 1, 0, 1, 0, 1]
    assert reqs.prefix_len[2] == reqs.input_len[0] + reqs.output_len[0]
    assert reqs.input_len[2] == reqs.prefix_len[2] + 100
    assert reqs.prefix_group[6] == 2 and reqs.prefix_len[6] == 0


def test_closed_loop_has_no_arrival_times() -> None:
    w = workload(arrival={"kind": "concurrency", "concurrency": 8, "think_time": "1 s"})
    reqs = generate_requests(w, np.random.default_rng(0))
    assert np.all(np.isnan(reqs.arrival_s))
    assert reqs.concurrency == 8 and reqs.think_time_s == 1.0


def test_same_seed_same_requests() -> None:
    w = workload(input_len={"kind": "lognormal", "mean": 100, "std": 50})
    a, b = draw(w, 3), draw(w, 3)
    assert np.array_equal(a.arrival_s, b.arrival_s)  # type: ignore[attr-defined]
    assert np.array_equal(a.input_len, b.input_len)  # type: ignore[attr-defined]


def write_trace(tmp_path: Path, text: str, name: str = "t.csv") -> dict[str, object]:
    (tmp_path / name).write_text(text)
    return {"trace": {"path": name}}


def test_trace_replay(tmp_path: Path) -> None:
    fields = write_trace(tmp_path, "arrival_time,input_len,output_len,prefix_group,prefix_len\n"
                                   "0.5,100,10,,\n1.0,200,20,3,64\n1.0,50,5,-1,\n")
    w = Workload.model_validate(fields, context={"base_dir": str(tmp_path)})
    reqs = generate_requests(w, np.random.default_rng(0))
    assert reqs.arrival_s.tolist() == [0.5, 1.0, 1.0]
    assert reqs.prefix_group.tolist() == [-1, 3, -1]
    assert reqs.prefix_len.tolist() == [0, 64, 0]
    fast = Workload.model_validate({"trace": {"path": "t.csv", "time_scale": 0.5},
                                    "num_requests": 2}, context={"base_dir": str(tmp_path)})
    assert generate_requests(fast, np.random.default_rng(0)).arrival_s.tolist() == [0.25, 0.5]


def test_trace_jsonl(tmp_path: Path) -> None:
    fields = write_trace(tmp_path, '{"arrival_time": 0, "input_len": 5, "output_len": 2}\n'
                                   '{"arrival_time": 2, "input_len": 7, "output_len": 1}\n',
                         "t.jsonl")
    w = Workload.model_validate(fields, context={"base_dir": str(tmp_path)})
    assert generate_requests(w, np.random.default_rng(0)).input_len.tolist() == [5, 7]


@pytest.mark.parametrize(("text", "message"), [
    ("arrival_time,input_len\n0,5\n", r"t.csv:2: column 'output_len' is missing"),
    ("arrival_time,input_len,output_len\n2,5,5\n1,5,5\n",
     r"t.csv:3: arrival_time 1 comes after 2: arrival times must not decrease. To fix: sort"),
    ("arrival_time,input_len,output_len\n0,5.5,5\n", r"t.csv:2: input_len = '5.5' is not a whole"),
    ("arrival_time,input_len,output_len\n0,0,5\n", r"t.csv:2: input_len and output_len must be"),
    ("arrival_time,input_len,output_len,prefix_group\n0,5,5,1\n",
     r"t.csv:2: prefix_group '1' has no prefix_len. To fix"),
    ("arrival_time,input_len,output_len\n", r"the trace has no rows"),
])
def test_bad_traces(tmp_path: Path, text: str, message: str) -> None:
    fields = write_trace(tmp_path, text)
    with pytest.raises(ValidationError, match=message):
        Workload.model_validate(fields, context={"base_dir": str(tmp_path)})


def test_missing_trace_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"nope.csv: cannot read"):
        Workload.model_validate({"trace": {"path": "nope.csv"}},
                                context={"base_dir": str(tmp_path)})


@pytest.mark.parametrize(("fields", "message"), [
    ({"arrival": {"kind": "poisson", "rate": -1}}, "greater than 0"),
    ({"arrival": {"kind": "zipf", "rate": 1}}, "does not match any of the expected tags"),
    ({"arrival": {"kind": "concurrency", "concurrency": 4, "think_time": 5}},
     r"5 has no unit. To fix: write the unit, e.g. '5 ms' or '5 s'"),
    ({"duration": "1 min"}, "give exactly one of num_requests and duration"),
    ({"input_len": {"kind": "uniform", "low": 9, "high": 3}}, r"high \(3\) must be >= low"),
    ({"input_len": 0}, "greater than or equal to 1"),
    ({"output_len": None}, "missing output_len"),
    ({"bogus": 1}, "Extra inputs are not permitted"),
])
def test_bad_workloads(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        workload(**fields)


def test_lengths_file_errors(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("a,b\n1,x\n")
    with pytest.raises(ValidationError, match=r"l.csv:2: .* has no whole-number length"):
        EmpiricalLength.model_validate({"kind": "empirical", "path": "l.csv", "column": "b"},
                                       context={"base_dir": str(tmp_path)})
    with pytest.raises(ValidationError, match=r"no column 'c'"):
        EmpiricalLength.model_validate({"kind": "empirical", "path": "l.csv", "column": "c"},
                                       context={"base_dir": str(tmp_path)})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)  # so validators may raise it
