"""The benchmarks under a time budget (python -m bench --max-minutes, as a GPU lease runs them): the model cases
come before the op groups, a case's rounds stop at the deadline (after three, every callable alike), the JSON report
is rewritten after every case (a run stopped from outside keeps what it measured), and max-autotune is a second
pass of the op groups. The measurements themselves are replaced by fakes here."""

from __future__ import annotations

import json
import time

import pytest

import bench.__main__ as bench_main
from bench import models_bench, ops_bench, rounds


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _calls(clock: Clock, cost_s: float = 1.0):
    def make():
        def call(i):
            clock.now += cost_s
        return call
    return {"a": make(), "b": make()}


@pytest.mark.parametrize(("deadline", "taken"), [(None, 10), (0.5, 3), (8.5, 4), (100.0, 10)])
def test_rounds_stop_at_the_deadline_after_three(deadline, taken):
    clock = Clock()
    # warm-up: 2 calls (2 s); each round: 2 calls (2 s); round r ends at 2 + 2 (r + 1) s, and the round that
    # crosses the deadline is the last
    samples = rounds.run_rounds(_calls(clock), 10, warmup=1, clock=clock, monotonic=clock, deadline=deadline)
    assert [len(v) for v in samples.values()] == [taken, taken]


@pytest.fixture
def fake_measurements(monkeypatch, tmp_path):
    """models_bench.run and ops_bench.bench_op replaced by fakes that log their calls and what the JSON report held
    when they were called."""
    log: list[tuple] = []
    path = tmp_path / "gpu.json"

    def report_rows():
        return json.loads(path.read_text())["rows"] if path.exists() else []

    def fake_models(device, names, quick, repeats, lib=None, deadline=None, skipped=None, on_rows=None):
        rows = []
        for k in range(2):
            rows.append({"kind": "model", "case": f"m{k}", "backend": "eager", "median_ms": 1.0})
            on_rows(rows)
            log.append(("model", k, len(report_rows())))
        return rows

    def fake_bench_op(case, backends, shape, dtype, device, with_backward, rounds_, warmup, layout, deadline):
        log.append(("op", case.name, tuple(backends), len(report_rows())))
        return [{"op": case.name, "backend": b, "median_ms": 1.0, "dtype": "float32", "GBps": 1.0} for b in backends]

    monkeypatch.setattr(models_bench, "run", fake_models)
    monkeypatch.setattr(ops_bench, "bench_op", fake_bench_op)
    monkeypatch.setattr(bench_main, "copy_bandwidth_gbps", lambda device: 10.0)
    monkeypatch.setattr(bench_main, "library_backends", lambda device, wanted: ["cpu"])
    monkeypatch.setenv("LATTICE_BENCH_MALLOC", "tuned")  # no re-exec
    args = ["--device", "cpu", "--out", str(tmp_path), "--name", "gpu", "--no-plots", "--ops", "channel_stats",
            "--shapes", "1x8x4x4", "--layouts", "nchw", "--passes", "fwd"]
    return log, path, args


def test_models_come_first_and_the_report_is_written_after_every_case(fake_measurements):
    log, path, args = fake_measurements
    assert bench_main.main(args) == 0
    assert [e[0] for e in log] == ["model", "model", "op"]
    assert [e[-1] for e in log] == [1, 2, 2]  # rows in the JSON when each case ended / the op group started
    payload = json.loads(path.read_text())
    assert payload["complete"] is True and [r["kind"] for r in payload["rows"]] == ["model", "model", "op", "op", "op"]


def test_max_autotune_is_a_second_pass_of_the_op_groups(fake_measurements):
    log, _, args = fake_measurements
    bench_main.main([*args, "--compile-max", "yes"])
    ops = [e[2] for e in log if e[0] == "op"]
    assert ops == [("eager", "compile", "cpu"), ("eager", "compile-max", "cpu")]


def test_past_the_deadline_op_groups_are_listed_as_skipped(fake_measurements, monkeypatch):
    log, path, args = fake_measurements
    t = iter(range(0, 10**6, 1000))  # every look at the clock is 1000 s later: the budget ends at once
    monkeypatch.setattr(time, "monotonic", lambda: float(next(t)))
    bench_main.main([*args, "--max-minutes", "1"])
    assert [e[0] for e in log] == ["model", "model"]
    payload = json.loads(path.read_text())
    assert payload["complete"] is True and any("channel_stats fwd" in s for s in payload["skipped"])
