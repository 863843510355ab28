"""tools/gpu_efficiency, the efficiency model of the GPU kernels computed on the CPU: each of its checks fails on a
planted defect (a strided index breaks the sector check, a scalar load the width check, in CUDA and in Triton),
its arithmetic is what it says, and the committed record and README table are what the tool computes today, with
every kernel that misses a target named below and why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tools import gpu_efficiency as ge
from tools.gpu_resources import _nvcc

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "bench" / "results" / "gpu-efficiency-predicted-h100.json"
NVCC = _nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None or not os.path.exists(NVCC), reason="nvcc not found")


def _harness():
    import tools.cuda_emu as emu

    try:
        return emu.load("plain")
    except emu.HarnessUnavailable as e:
        pytest.skip(f"CUDA harness not buildable here: {e}")


def _without_interpreter(code: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=str(ROOT), TRITON_DEFAULT_FP_FUSION="1")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


# ---- planted defects ----------------------------------------------------------------------------------------------
def test_sector_check_catches_a_strided_index():
    m = _harness()
    x = np.arange(8192, dtype=np.float32)
    eff = {}
    for name in ("coalesced_copy", "strided_copy"):
        y = np.zeros_like(x)
        (t,) = ge.trace_traffic(m, lambda name=name, y=y: m.sample(name, x, y, [])).values()
        np.testing.assert_array_equal(y, x if name == "coalesced_copy" else x.reshape(32, -1).T.ravel())
        eff[name] = t.efficiency
    assert eff["coalesced_copy"] == 1.0
    # Loads: 32 lanes in 32 sectors, 4 of 32 bytes used; stores coalesced: (4 + 4) / (32 + 4).
    assert eff["strided_copy"] == pytest.approx(8 / 36)
    assert eff["strided_copy"] < ge.TARGET_SECTOR_EFFICIENCY <= eff["coalesced_copy"]


def test_traffic_counts_sectors_of_one_request():
    # 32 lanes x 4 bytes from a 16-byte-offset base: 128 bytes over 5 sectors; a broadcast (every lane one address)
    # uses 4 bytes of one sector; a 16-byte access straddling two sectors moves both.
    lanes = np.arange(32)
    t = ge.traffic(np.zeros(32, int), 16 + 4 * lanes, np.full(32, 4), np.zeros(32, int))
    assert (t.sectors, t.used, t.requests) == (5, 128, 1)
    t = ge.traffic(np.zeros(32, int), np.full(32, 64), np.full(32, 4), np.zeros(32, int))
    assert (t.sectors, t.used) == (1, 4)
    t = ge.traffic(np.zeros(1, int), np.array([24]), np.array([16]), np.ones(1, int))
    assert (t.sectors, t.used, t.store_used, t.load_requests) == (2, 16, 16, 0)


@needs_nvcc
def test_width_check_catches_a_scalar_load_in_cuda(tmp_path):
    cubin = ge.nvcc_cubin(ROOT / "tests" / "cuda_emu" / "samples.cu", tmp_path / "samples.cubin")
    funcs = ge.sass_functions(cubin)
    names = ge.demangle(funcs)
    loops = {names[k]: ge.main_loop(v) for k, v in funcs.items()}
    assert set(loops["samples::vector_copy"].loads) == {16} and set(loops["samples::vector_copy"].stores) == {16}
    assert set(loops["samples::scalar_copy"].loads) == {4}
    rec = dict(sector_efficiency=1.0, shape=(1,), predicted_fraction=1.0)
    ok = ge.Record(**_blank(), loop_load_widths=loops["samples::vector_copy"].loads,
                   loop_store_widths=loops["samples::vector_copy"].stores, **rec)
    bad = ge.Record(**_blank(), loop_load_widths=loops["samples::scalar_copy"].loads,
                    loop_store_widths=loops["samples::scalar_copy"].stores, **rec)
    assert ge.misses(ok) == []
    assert ge.misses(bad) == ["4-byte accesses in the main loop (target 16)"]


def test_width_and_reduction_checks_catch_planted_defects_in_triton():
    pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[triton]')")
    code = """
import json, tempfile
from pathlib import Path
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from tools import gpu_efficiency as ge
from tools.gpu_resources import _nvcc
from tests.triton_aot_samples import (contiguous_copy_kernel, scattered_copy_kernel, sum_after_loop_kernel,
                                      sum_in_loop_kernel)
out = {}
for fn in (contiguous_copy_kernel, scattered_copy_kernel, sum_in_loop_kernel, sum_after_loop_kernel):
    src = ASTSource(fn, {"x_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"},
                    constexprs={"BLOCK": 1024}, attrs={(0,): [["tt.divisibility", 16]], (1,): [["tt.divisibility", 16]],
                                                      (2,): [["tt.divisibility", 16]]})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32))
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(k.asm["cubin"])
        (instrs,) = ge.sass_functions(cubin).values()
    loop = ge.main_loop(instrs)
    out[fn.__name__] = [loop.loads, loop.stores, ge.ttgir_loop_reductions(k.asm["ttgir"])]
print(json.dumps(out))
"""
    r = _without_interpreter(code)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["sum_in_loop_kernel"][2] == 1 and out["sum_after_loop_kernel"][2] == 0, out
    loads, stores, _ = out["contiguous_copy_kernel"]
    assert set(loads) == {16} and set(stores) == {16}, out
    loads, stores, _ = out["scattered_copy_kernel"]
    assert set(loads) == {4} and set(stores) == {16}, out


def test_triton_checks_of_programs_and_registers():
    base = dict(_blank(), backend="triton", loop_load_widths=[16], loop_store_widths=[16], sector_efficiency=1.0,
                predicted_fraction=1.0)
    assert ge.misses(ge.Record(**{**base, "shape": ge.SMALL_SHAPE}, programs_per_sm=7.8)) == []
    assert ge.misses(ge.Record(**{**base, "shape": ge.SMALL_SHAPE}, programs_per_sm=1.9)) == [
        "1.9 programs per SM < 4"]
    bwd = {**base, "kernel": "butterfly_backward_kernel[BLOCK_C=4]", "registers": 188, "shape": (1,)}
    assert ge.misses(ge.Record(**bwd, reductions_in_loop=4)) == [
        "4 reductions inside the loop (target: once after it)", "188 registers > 128"]


def _blank() -> dict:
    return dict(backend="cuda", kernel="k", layout="nchw", dtype="f32", traced_at="", requests=1,
                load_bytes_per_request=512.0, read_share=0.5, registers=32, shared_bytes=0, threads_per_block=256,
                blocks=1000, resident_warps_per_sm=64, warps_per_sm=64.0, bytes_in_flight_per_sm=1.0,
                bytes_needed_per_sm=1.0, card="H100 SXM5")


# ---- the model's arithmetic ---------------------------------------------------------------------------------------
def test_occupancy_and_littles_law():
    h100 = ge.CARDS["h100"]
    assert ge.resident_blocks(h100, 32, 256, 0) == 8  # 64 warps: the thread limit
    assert ge.resident_blocks(h100, 128, 256, 0) == 2  # 128 x 32 x 8 = 32768 registers per block
    assert ge.resident_blocks(h100, 40, 256, 100 * 1024) == 2  # shared memory, 1 KiB reserved per block
    # 3.35 TB/s x 90% x 700 ns / 132 SMs of reads alone: ~16 KB per SM.
    assert h100.bytes_needed_per_sm(1.0) == pytest.approx(0.9 * 3.35e12 * 700e-9 / 132)
    t = ge.Traffic(requests=2, sectors=32, used=1024, load_requests=1, load_used=512, store_used=512)
    loop = ge.MainLoop(loads=[16], stores=[16], waits=1)
    # 8 blocks x 8 warps x one 512-byte load in flight = 32 KiB >= 8 KB needed: the sector efficiency bounds it.
    assert ge.predict(h100, t, loop, 32, 0, 256, 10_000)["predicted_fraction"] == 1.0
    # A grid of 132 blocks leaves 8 warps per SM: 4 KiB in flight, about half of what is needed.
    p = ge.predict(h100, t, loop, 32, 0, 256, 132)
    assert p["warps_per_sm"] == 8 and p["predicted_fraction"] == pytest.approx(4096 / h100.bytes_needed_per_sm(0.5),
                                                                                abs=1e-3)


def test_waits_count_the_stalls_on_loads():
    # Two loads consumed together: one stall per iteration, two loads in flight; consumed one by one: two stalls.
    together = ["LDG.E R4, desc[UR4][R2.64]", "LDG.E R5, desc[UR4][R6.64]", "FADD R8, R4, R5",
                "STG.E desc[UR4][R10.64], R8", "BRA 0x0"]
    apart = ["LDG.E R4, desc[UR4][R2.64]", "FADD R8, R4, R8", "LDG.E R5, desc[UR4][R6.64]", "FADD R8, R5, R8",
             "BRA 0x0"]
    assert ge.count_waits(together) == 1 and ge.count_waits(apart) == 2
    # A 128-bit load writes 4 registers; reading the last one waits for it.
    assert ge.count_waits(["LDG.E.128 R4, desc[UR4][R2.64]", "FADD R9, R7, R9"]) == 1
    # An accumulator that a load never wrote does not wait.
    assert ge.count_waits(["LDG.E R4, desc[UR4][R2.64]", "FADD R9, R9, R9"]) == 0
    assert ge.access_width("LDG.E.128.CONSTANT") == 16 and ge.access_width("STG.E.U16") == 2
    assert ge.access_width("LDG.E") == 4 and ge.access_width("LDG.E.64") == 8


def test_triton_tile_requests():
    # channels_last tile [64 channels, 32 pixels], 4 channels per lane, 16 lanes along C: two 256-byte runs.
    lay = ge.Blocked((4, 1), (16, 2), (0, 1))
    a, b = ge.warp_request((64, 32), lay, (1, 64), 4)
    t = ge.traffic(np.zeros(32, int), a + 4096, b, np.zeros(32, int))
    assert t.efficiency == 1.0 and t.used == 512
    # The same layout over planar strides (pixels contiguous): no vector along C, 32 rows of P apart.
    a, b = ge.warp_request((64, 32), lay, (4096, 1), 4)
    t = ge.traffic(np.zeros(32, int), a + 4096, b, np.zeros(32, int))
    assert t.efficiency < 0.3


# ---- the committed record -----------------------------------------------------------------------------------------
# Every kernel that misses a target in the model, and why; the tool's run below must list exactly these.
KNOWN_MISSES: dict[tuple[str, str, str, str, str], str] = {
    ("triton", "butterfly_backward_kernel[BLOCK_C=64,BLOCK_P=32]", "nhwc", "bf16", "1x64x540x960"):
        "157 registers: a thread's 16-byte vectors span 8 channels, with 7 per-channel coefficients each (56 "
        "registers); half tiles give 95 registers but 8-byte accesses (BACKWARD_WARPS, triton/butterfly.py)",
    ("triton", "butterfly_backward_kernel[BLOCK_C=64,BLOCK_P=32]", "nhwc", "bf16", "16x64x64x64"):
        "the same",
}


def _key(r: dict) -> tuple:
    return (r["backend"], r["kernel"], r["layout"], r["dtype"], "x".join(map(str, r["shape"])))


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict:
    if NVCC is None or not os.path.exists(NVCC):
        pytest.skip("nvcc not found: the CUDA half of the model needs nvcc's cubins")
    pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[triton]')")
    _harness()
    out = tmp_path_factory.mktemp("ge") / "ge.json"
    r = _without_interpreter(f"import sys; from tools import gpu_efficiency as g; "
                             f"sys.exit(g.main(['--json', {str(out)!r}]))", timeout=1200)
    assert out.exists(), f"{r.stdout[-3000:]}\n{r.stderr[-4000:]}"
    return json.loads(out.read_text())


def test_every_streaming_kernel_has_a_record(fresh):
    keys = {(r["backend"], r["kernel"].split("<")[0].split("[")[0], r["layout"], r["dtype"],
             "x".join(map(str, r["shape"]))) for r in fresh["records"]}
    cuda = {"stats_partial", "stats_backward", "butterfly", "butterfly_backward"}
    for layout, suffix in (("nchw", "_planar"), ("nhwc", "_interleaved_vec")):  # C = 64: the 16-byte paths
        for dt in ge.DTYPES:
            for shape in ge.BENCH_SHAPES:
                s = "x".join(map(str, shape))
                for k in cuda:
                    assert ("cuda", k + suffix, layout, dt, s) in keys
                for k in ge.TRITON_STREAMING:
                    assert ("triton", k, layout, dt, s) in keys
    assert all(r["registers"] > 0 and r["threads_per_block"] > 0 for r in fresh["records"])


def test_misses_are_the_known_ones(fresh):
    if (fresh["triton"], fresh["nvcc"]) != ("3.9.0", "13.0"):
        pytest.skip(f"the known misses are those of Triton 3.9.0 and CUDA 13.0 (this machine: {fresh['triton']}, "
                    f"{fresh['nvcc']})")
    found = {_key(r): "; ".join(r["misses"]) for r in fresh["records"] if r["misses"]}
    known = {k: v for k, v in KNOWN_MISSES.items()}
    assert found.keys() == known.keys(), (
        f"new misses: {sorted(set(found) - set(known))}; fixed: {sorted(set(known) - set(found))}")


def test_readme_table_is_the_committed_record():
    committed = json.loads(RECORD.read_text())
    readme = (ROOT / "README.md").read_text()
    begin = ge.README_BEGIN.format(RECORD.relative_to(ROOT).as_posix())
    assert begin in readme, "README.md has no predicted-efficiency block"
    block = readme.split(begin, 1)[1].split(ge.README_END, 1)[0].strip()
    assert block == ge.markdown(committed), "README.md's table is stale: python -m tools.gpu_efficiency --readme " \
                                            f"{RECORD.relative_to(ROOT)}"
    assert "Predicted, not measured" in block


def test_committed_record_is_current(fresh):
    committed = json.loads(RECORD.read_text())
    tools_now = (fresh["triton"], fresh["nvcc"])
    if tools_now != (committed["triton"], committed["nvcc"]):
        pytest.skip(f"the record was made with Triton {committed['triton']} and CUDA {committed['nvcc']}; this "
                    f"machine has {tools_now[0]} and {tools_now[1]} (registers and SASS differ between versions)")
    now = {_key(r): r for r in fresh["records"]}
    then = {_key(r): r for r in committed["records"]}
    assert now.keys() == then.keys()
    for k, r in now.items():
        assert r["misses"] == then[k]["misses"], k
        assert r["predicted_fraction"] == pytest.approx(then[k]["predicted_fraction"], abs=0.02), k
        assert r["sector_efficiency"] == pytest.approx(then[k]["sector_efficiency"], abs=0.01), k
        assert r["registers"] == then[k]["registers"], k
