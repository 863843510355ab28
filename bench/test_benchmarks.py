"""pytest-benchmark versions of the op micro-benchmarks, for regression tracking (not part of `make test`):

    pytest bench/test_benchmarks.py --benchmark-autosave          # then --benchmark-compare

and the tests of the benchmarks' own machinery (the interleaved rounds of bench/rounds.py, the op cases' rows,
the README headline with spreads), fast: pytest bench/test_benchmarks.py -k "not test_op"
"""

from __future__ import annotations

import statistics

import pytest
import torch

import lattice_kernels as lk
from bench import rounds
from bench.ops_bench import bench_op, make_cases

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SHAPE = (1, 64, 180, 320)
BACKENDS = [b for b in lk.available_backends() if (b == "cpu") == (DEVICE.type == "cpu") or b == "torch"]
CASES = {c.name: c for c in make_cases(SHAPE, torch.float32, DEVICE)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(CASES))
@pytest.mark.parametrize("with_backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_op(benchmark, op, backend, with_backward):
    case = CASES[op]
    inputs = tuple(t.requires_grad_(with_backward and t.is_floating_point()) for t in case.make_inputs(0))

    def call():
        if with_backward:
            outs = [o for o in case.run(backend, *inputs) if o.requires_grad]
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
        else:
            with torch.no_grad():
                case.run(backend, *inputs)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"{op} {'fwd+bwd' if with_backward else 'fwd'}"
    benchmark(call)


def test_rotated_order_starts_one_later_each_round():
    names = ["a", "b", "c"]
    assert [rounds.rotated(names, r) for r in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                            ["a", "b", "c"]]


class FakeClock:
    """A clock that each call advances by the call's known cost (ms), so that samples are exact."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_run_rounds_calls_in_rotated_order_with_a_global_call_index():
    clock, log = FakeClock(), []
    cost = {"a": 1.0, "b": 2.0, "c": 4.0}

    def make(name):
        def call(i):
            log.append((name, i))
            clock.now += cost[name] * 1e-3
        return call

    samples = rounds.run_rounds({n: make(n) for n in cost}, 3, warmup=1, clock=clock)
    # warm-up: each once in order; then round r in rotated(names, r); i counts every call
    assert log == [("a", 0), ("b", 1), ("c", 2), ("a", 3), ("b", 4), ("c", 5), ("b", 6), ("c", 7), ("a", 8),
                   ("c", 9), ("a", 10), ("b", 11)]
    assert samples == {n: pytest.approx([c] * 3) for n, c in cost.items()}


def test_run_rounds_reps_give_ms_per_call_and_sync_brackets_each_sample():
    clock, events = FakeClock(), []

    def call(i):
        events.append("call")
        clock.now += 3e-3

    samples = rounds.run_rounds({"x": call}, 2, warmup=0, reps=4, clock=clock, sync=lambda: events.append("sync"))
    assert samples == {"x": pytest.approx([3.0, 3.0])}
    assert events == ["sync", *(["sync", *["call"] * 4, "sync"] * 2)]


def test_run_rounds_primes_each_sample_with_untimed_calls_of_the_same_callable():
    clock, log = FakeClock(), []

    def make(name, ms):
        def call(i):
            log.append((name, i, clock.now))
            clock.now += ms * 1e-3
        return call

    samples = rounds.run_rounds({"a": make("a", 1.0), "b": make("b", 5.0)}, 2, warmup=0, prime=1, clock=clock)
    assert [(n, i) for n, i, _ in log] == [("a", 0), ("a", 1), ("b", 2), ("b", 3), ("b", 4), ("b", 5), ("a", 6),
                                           ("a", 7)]
    assert samples == {"a": pytest.approx([1.0, 1.0]), "b": pytest.approx([5.0, 5.0])}


def test_run_rounds_rejects_no_rounds_and_no_callables():
    with pytest.raises(ValueError, match="at least one round"):
        rounds.run_rounds({"a": lambda i: None}, 0)
    with pytest.raises(ValueError, match="at least one round"):
        rounds.run_rounds({}, 3)


def test_paired_ratios_are_per_round_and_cancel_a_slow_phase():
    # round 2 is a slow phase for everything (x3); the per-round ratio is unaffected, the ratio of medians is not
    samples = {"eager": [10.0, 10.0, 30.0, 10.0, 12.0], "cpu": [5.0, 4.0, 15.0, 5.0, 4.0]}
    assert rounds.per_round_ratios(samples, "eager", "cpu") == [2.0, 2.5, 2.0, 2.0, 3.0]
    assert rounds.ratio_summary([2.0, 2.5, 2.0, 2.0, 3.0]) == (2.0, [2.0, 3.0])
    fields = rounds.speedup_fields(samples, "cpu", {"vs_eager": "eager", "vs_compile": "compile"})
    assert fields == {"vs_eager": 2.0, "vs_eager_range": [2.0, 3.0]}  # no compile samples: no vs_compile
    assert rounds.speedup_fields(samples, "eager", {"vs_eager": "eager"}) == {"vs_eager": 1.0,
                                                                                "vs_eager_range": [1.0, 1.0]}
    with pytest.raises(ValueError, match="same rounds"):
        rounds.per_round_ratios({"a": [1.0, 2.0], "b": [1.0]}, "a", "b")


def test_time_fields_median_and_deciles():
    t = rounds.time_fields([float(v) for v in range(1, 12)])  # 1..11
    assert t["median_ms"] == 6.0 and t["runs"] == 11
    assert t["p10_ms"] == pytest.approx(1.2) and t["p90_ms"] == pytest.approx(10.8)  # quantiles, 'exclusive'


def test_bench_op_rows_are_paired_over_the_same_rounds():
    shape = (1, 8, 6, 10)
    case = next(c for c in make_cases(shape, torch.float32, torch.device("cpu")) if c.name == "butterfly")
    rows = bench_op(case, ["eager", "cpu"], shape, torch.float32, torch.device("cpu"), True, rounds=4, warmup=1)
    assert [r["backend"] for r in rows] == ["eager", "cpu"]
    eager, lib = rows
    assert len(eager["samples_ms"]) == len(lib["samples_ms"]) == 4 and eager["runs"] == 4
    per_round = [e / t for e, t in zip(eager["samples_ms"], lib["samples_ms"])]
    assert lib["vs_eager"] == pytest.approx(statistics.median(per_round))
    assert lib["vs_eager_range"] == [min(per_round), max(per_round)]
    assert eager["vs_eager"] == 1.0 and "vs_compile" not in lib
    assert lib["median_ms"] == pytest.approx(statistics.median(lib["samples_ms"]))


def test_deploy_case_labels_name_batch_and_tiling():
    from bench.models_bench import deploy_case_label

    base = {"dtype": "float32"}
    assert deploy_case_label({**base, "shape": [1, 3, 180, 320]}, "cpu") == \
        "LatticeNet x4 infer LR 320x180 float32 cpu, deployment runtimes"  # the recorded runs' label
    assert deploy_case_label({**base, "shape": [8, 3, 128, 128]}, "cpu") == \
        "LatticeNet x4 infer batch 8 of LR 128x128 float32 cpu, deployment runtimes"
    assert deploy_case_label({**base, "shape": [1, 3, 720, 1280], "tile": 512}, "cpu") == \
        "LatticeNet x4 infer LR 1280x720 tiled 512 float32 cpu, deployment runtimes"
    assert deploy_case_label({**base, "shape": [1, 3, 720, 1280], "tile": 512, "stats": "tile"}, "cpu") == \
        "LatticeNet x4 infer LR 1280x720 tiled 512 (stats tile) float32 cpu, deployment runtimes"


def test_model_case_rows_are_paired_over_one_process_rounds():
    from bench.models_bench import Case, case_rows_interleaved

    case = Case("block 1x32x12x16 fwd", "block", "infer", (1, 32, 12, 16))
    rows = case_rows_interleaved(case, ["eager", "cpu"], torch.device("cpu"), rounds=3)
    eager, lib = rows
    assert (eager["backend"], lib["backend"]) == ("eager", "cpu") and lib["runs"] == 3
    per_round = [e / t for e, t in zip(eager["samples_ms"], lib["samples_ms"])]
    assert lib["vs_eager"] == pytest.approx(statistics.median(per_round))
    assert lib["vs_eager_range"] == pytest.approx([min(per_round), max(per_round)])
    assert "vs_compile" not in lib  # no compiled plain model in this run


def test_deploy_tiled_case_is_exact_and_its_ratios_paired(tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from bench.deploy import run_one

    res = run_one("cpu", {"shape": [1, 3, 20, 24], "rounds": 2, "warmup": 1, "tile": 12, "plain": []}, torch.float32,
                  tmp_path)
    assert "eager" not in res["samples_ms"] and "compile" not in res["samples_ms"]
    assert res["baseline"] == "cpu" and res["tile"] == 12 and "stats='global'" in res["library"]
    # tiles with the whole-image statistics reproduce the untiled plain model up to float rounding (0..255 scale;
    # this case measured 1.1e-4, the untiled fused model the same order: Winograd)
    assert res["max_abs_diff_vs_eager"]["cpu"] < 1e-3  # the suite's rule for the fused model against the plain
    ort = [a / b for a, b in zip(res["samples_ms"]["onnxruntime"], res["samples_ms"]["cpu"])]
    assert res["ratio_to_library"]["onnxruntime"] == pytest.approx(statistics.median(ort))
    assert res["ratio_range"]["onnxruntime"] == pytest.approx([min(ort), max(ort)])
    assert res["ratio_to_library"]["cpu"] == 1.0
