"""The CUDA kernels of csrc/cuda, executed on the CPU by the project's harness (csrc/cuda_emu, tools/cuda_emu):
the real launchers of csrc/cuda/kernels.h on every dtype, layout and path-selecting shape, against the float64
spec (lattice_kernels/ops/reference.py) with the suite's tolerances; under AddressSanitizer + UBSan (memcheck)
and ThreadSanitizer with the GPU's barriers as its only synchronisation (racecheck); each checker caught on a
planted defect; the launch limits of a GPU, and the launch shapes at 4K and 8K without allocating.

Harness vs GPU arithmetic: the harness computes in the host's IEEE float32/float64 without fused multiply-add
(baseline x86-64 has no FMA instructions) and with glibc's correctly rounded expf, where nvcc contracts a*b + c
into one FMA (one rounding instead of two) and the device expf is within 2 ulp. Each difference is a few ulp of
float32 per operation, far inside the float32 tolerance (1e-5 relative, ~80 ulp) used here and on a GPU; the half
dtypes are judged by their own (much coarser) rounding. Bitwise equality with a GPU is not claimed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lattice_kernels.ops import reference as ref
from tools.cuda_emu import cases as C

from .conftest import assert_close_to_reference

ROOT = Path(__file__).resolve().parents[1]
TORCH_DTYPE = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16}


def _load(variant: str = "plain"):
    import tools.cuda_emu as emu

    try:
        return emu.load(variant)
    except emu.HarnessUnavailable as e:
        pytest.skip(f"CUDA harness not buildable here: {e}")


@pytest.fixture(scope="session")
def emu():
    m = _load("plain")
    m.set_seed(0)
    return m


class _Background:
    """A sanitizer variant built and run in a background process (it overlaps with the in-process tests)."""

    def __init__(self, variant: str, tmp: Path, *child_args: str):
        self.prefix = str(tmp / variant)
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.cuda_emu.sanitized_run", variant, self.prefix,
                                      *child_args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})

    def result(self) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout=1200)
        return rc, Path(self.prefix + ".stdout").read_text(), Path(self.prefix + ".stderr").read_text()


@pytest.fixture(scope="session")
def sanitized_cases(tmp_path_factory):
    """The asan and tsan children running their case subsets, started once per session."""
    _load("plain")  # skips when the harness cannot be built at all
    tmp = tmp_path_factory.mktemp("cuda_emu")
    runs = {v: (_Background(v, tmp, "cases", v, str(tmp / f"{v}.npz")), tmp / f"{v}.npz") for v in ("asan", "tsan")}
    yield runs
    for background, _ in runs.values():  # a session that did not wait for them (-k) leaves no process behind
        if background.proc.poll() is None:
            background.proc.kill()
            background.proc.wait()


# ---- the float64 spec of one case -----------------------------------------------------------------------------------
def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def _half(a: np.ndarray, dt: str) -> torch.Tensor:
    return _t(a).to(TORCH_DTYPE[dt])


def check_case(case: C.Case, out: dict[str, np.ndarray]) -> None:
    """out (the harness's results) against the float64 spec, with the rules of tests/conftest.py: float32
    results (statistics, sums; of every input dtype) 1e-5 relative; float64 1e-10; half-dtype tensors within 2x
    eager PyTorch's error in that dtype and one ulp at the result's scale."""
    inp = C.inputs(case)
    dt, st = TORCH_DTYPE[case.dtype], (torch.float64 if case.dtype == "f64" else torch.float32)
    half = case.dtype in ("f16", "bf16")
    n, c, p = case.shape

    def close(key, expected, dtype, scale=1.0, eager=None):
        assert_close_to_reference(_t(out[key]), expected, dtype, scale=scale, eager=eager, what=f"{case.id} {key}")

    if case.launcher in ("channel_stats", "combination_coefficients"):
        x = _t(inp["x"])[..., None]  # (N, C, P, 1)
        mean, std = ref.channel_stats(x)
        close("mean", mean, st)
        close("std", std, st)
        if case.launcher == "combination_coefficients":
            w = [_t(inp[k]) for k in ("w1m", "b1m", "w2m", "b2m", "w1s", "b1s", "w2s", "b2s")]
            close("cc", ref.combination_coefficients(x, *w), st)
    elif case.launcher == "channel_stats_backward":
        x = _t(inp["x"])[..., None].requires_grad_()
        mean, std = ref.channel_stats(x)
        gm, gs = _t(inp["grad_mean"]), _t(inp["grad_std"])
        ((mean * gm).sum() + (std * gs).sum()).backward()
        eager = None
        if half:
            xe = _half(inp["x"], case.dtype)[..., None].requires_grad_()
            em, es = xe.mean(dim=(2, 3)), xe.std(dim=(2, 3))
            ((em * gm.to(em)).sum() + (es * gs.to(es)).sum()).backward()
            eager = xe.grad[..., 0]
        expected = x.grad[..., 0]
        close("dx", expected, dt, scale=max(expected.abs().nan_to_num().max().item(), 1e-30), eager=eager)
    elif case.launcher == "butterfly":
        co = {k: (_t(inp[k]) if k in inp else None) for k in ("alpha1", "alpha2", "beta1", "beta2")}
        x1, x2 = _t(inp["x1"])[..., None], _t(inp["x2"])[..., None]
        rp, rq = ref.butterfly(x1, x2, **co)
        eager_p = eager_q = None
        if half:
            h1, h2 = _half(inp["x1"], case.dtype)[..., None], _half(inp["x2"], case.dtype)[..., None]

            def term(k, v):
                return v if co[k] is None else co[k].to(torch.float32).to(dt)[:, :, None, None] * v

            eager_p, eager_q = (term("alpha1", h1) + term("alpha2", h2))[..., 0], (term("beta1", h1) +
                                                                                    term("beta2", h2))[..., 0]
        scale = max(rp.abs().max().item(), rq.abs().max().item())
        close("p", rp[..., 0], dt, scale=scale, eager=eager_p)
        close("q", rq[..., 0], dt, scale=scale, eager=eager_q)
        if "mean_q" in out:  # the statistics of q as stored
            rmq, rsq = ref.channel_stats(_t(out["q"])[..., None])
            close("mean_q", rmq, st, scale=scale)
            close("std_q", rsq, st, scale=scale)
    elif case.launcher == "butterfly_backward":
        names = ("alpha1", "alpha2", "beta1", "beta2")
        co = {k: (_t(inp[k]) if k in inp else torch.ones(n, c, dtype=torch.float64)).requires_grad_() for k in names}
        x1, x2 = (_t(inp[k])[..., None].requires_grad_() for k in ("x1", "x2"))
        rp, rq = ref.butterfly(x1, x2, **co)
        dp, dq = _t(inp["dp"])[..., None], _t(inp["dq"])[..., None]
        loss = (rp * dp).sum() + (rq * dq).sum()
        if case.mode == "q_grad":
            mq, sq = ref.channel_stats(rq)
            loss = loss + (mq * _t(inp["grad_mean_q"])).sum() + (sq * _t(inp["grad_std_q"])).sum()
        loss.backward()
        scale = max(x1.grad.abs().nan_to_num().max().item(), x2.grad.abs().nan_to_num().max().item(), 1e-30)
        close("dx1", x1.grad[..., 0], dt, scale=scale)
        close("dx2", x2.grad[..., 0], dt, scale=scale)
        # The sums are float reductions over P: their error scales with the sum of |terms|, not with the result.
        gq = dq.clone()
        if case.mode == "q_grad":
            mq64, sq64 = ref.channel_stats(rq.detach())
            gq = gq + (_t(inp["grad_mean_q"]) / p)[:, :, None, None] + (
                _t(inp["grad_std_q"]) / (sq64 * (p - 1)))[:, :, None, None] * (rq.detach() - mq64[:, :, None, None])
        terms = (dp.abs() + gq.abs()) * (x1.detach().abs() + x2.detach().abs())
        sscale = terms.sum(dim=(2, 3)).nan_to_num().max().item()
        expected = torch.stack([co[k].grad for k in names])
        close("sums", expected, st, scale=sscale)
    else:
        raise AssertionError(case.launcher)


# ---- every launcher, dtype, layout and path in the plain build -------------------------------------------------------
@pytest.mark.parametrize("case", C.all_cases(), ids=lambda case: case.id)
def test_launcher_matches_reference(emu, sanitized_cases, case):
    check_case(case, C.run(emu, case))


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided", "strided_nhwc"])
def test_a_row_with_an_infinity_has_nan_statistics(emu, layout):
    """The op contract (ops/reference.py): a row holding a NaN or an infinity has NaN mean and std; the others are
    exact. Found in the Triton kernels (tests/test_fuzz_findings.py): the clamp of a negative M2 to 0 turned the NaN
    of inf - inf into 0. Every path here: 16-byte planar and channels_last (C = 16, H*W = 128) and scalar."""
    n, c, p = 1, 16, 128
    x = np.random.default_rng(3).standard_normal((n, c, p))
    x[0, 0, 5], x[0, 1, 70], x[0, 2, 0], x[0, 3, 9] = np.inf, -np.inf, np.inf, np.nan
    v = C.new_view((n, c, p), layout, "f32", x)
    mean, std = np.full(n * c, 7.0, np.float32), np.full(n * c, 7.0, np.float32)
    emu.channel_stats(C.DTYPE_CODE["f32"], (n, c, p, layout in C.INTERLEAVED), v.arg(), mean, std)
    assert np.isnan(mean[:4]).all() and np.isnan(std[:4]).all(), (mean[:4], std[:4])
    np.testing.assert_allclose(mean[4:], x[0, 4:].mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std[4:], x[0, 4:].std(axis=1, ddof=1), rtol=1e-5)


def test_bitwise_deterministic_under_shuffled_scheduling(emu):
    """The same bits whatever order the threads of a block and the blocks of a grid run in (a seeded shuffle of
    both): no result depends on scheduling, as on a GPU (fixed-order merges, no atomics)."""
    picked = [case for case in C.all_cases() if case.dtype in ("f32", "f16") and case.layout in ("nchw", "nhwc")
              and case.shape in (C.SHAPES[0], C.SHAPES[5], C.SHAPES[6])]
    try:
        base = {case.id: C.run(emu, case) for case in picked}
        for seed in (7, 123456789):
            emu.set_seed(seed)
            for case in picked:
                got = C.run(emu, case)
                for k, v in base[case.id].items():
                    assert np.array_equal(got[k], v, equal_nan=True), f"{case.id} {k} differs with seed {seed}"
    finally:
        emu.set_seed(0)


@pytest.mark.parametrize("variant", ["asan", "tsan"])
def test_sanitized_launchers(sanitized_cases, variant):
    """The sanitizer subset of the cases under ASan+UBSan (any out-of-bounds access of an exactly sized buffer,
    any undefined behaviour aborts) and TSan (any two threads of a block touching a word, one writing, with no
    barrier between, aborts); the results are checked against the spec as well."""
    proc, npz = sanitized_cases[variant]
    rc, _, stderr = proc.result()
    assert rc == 0, f"{variant} run failed (exit {rc}):\n{stderr[-8000:]}"
    assert "ERROR: AddressSanitizer" not in stderr and "WARNING: ThreadSanitizer" not in stderr, stderr[-8000:]
    with np.load(npz) as z:
        results = {k: z[k] for k in z.files}
    for case in C.sanitizer_cases(variant):
        out = {k.split("/", 1)[1]: v for k, v in results.items() if k.split("/", 1)[0] == case.id}
        assert out, f"{case.id}: no results from the {variant} run"
        check_case(case, out)


# ---- each checker catches a planted defect ---------------------------------------------------------------------
def _sample(tmp_path, variant: str, name: str) -> tuple[int, str, str]:
    return _Background(variant, tmp_path, "sample", name).result()


@pytest.mark.parametrize(("variant", "sample", "code", "report"), [
    ("asan", "off_by_one", 86, "AddressSanitizer: heap-buffer-overflow"),
    ("asan", "misaligned_vector", 87, "misaligned address"),
    ("tsan", "missing_barrier", 88, "ThreadSanitizer: data race"),
    ("tsan", "block_merge_twice_unfixed", 88, "ThreadSanitizer: data race"),
])
def test_checker_catches_planted_defect(tmp_path, variant, sample, code, report):
    _load("plain")
    rc, _, stderr = _sample(tmp_path, variant, sample)
    assert rc == code and report in stderr, f"{variant} did not catch {sample} (exit {rc}):\n{stderr[-4000:]}"
    assert "samples.cu" in stderr, "the report must point at the planted line"


@pytest.mark.parametrize("sample", ["with_barrier", "block_merge_twice", "rows_merge_twice"])
def test_race_check_passes_the_correct_twins(tmp_path, sample):
    """The twins of the planted races are clean under TSan, among them the block and row merges of common.cuh
    called twice in one kernel (the trailing barrier of issue #13 item 5), and they compute the right values."""
    _load("plain")
    rc, stdout, stderr = _sample(tmp_path, "tsan", sample)
    assert rc == 0, stderr[-4000:]
    got = np.array([float(v) for v in stdout.split()])
    x = np.arange(256, dtype=np.float64)
    if sample == "with_barrier":
        want = np.roll(x, -1)[:40]
    elif sample == "block_merge_twice":
        want = np.array([x.mean(), ((x - x.mean()) ** 2).sum(), 2 * x.mean(), ((2 * x - 2 * x.mean()) ** 2).sum()])
        got = got[:4]
    else:
        rows = x.reshape(8, 32)
        want = np.concatenate([rows.mean(axis=0), 2 * rows.mean(axis=0)])[:40]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_shuffle_waiting_for_exited_lanes_fails_naming_the_kernel(emu):
    x = np.arange(64, dtype=np.float32)
    with pytest.raises(RuntimeError, match=r"samples::shuffle_after_exit.*(exited|deadlock)"):
        emu.sample("shuffle_after_exit", x, np.zeros(64, dtype=np.float32), [])


# ---- launch limits and the launch shapes at real sizes -------------------------------------------------------------
@pytest.mark.parametrize(("cfg", "message"), [
    ((1, 1, 1, 1025, 1, 1, 0), "1025 > 1024 threads"),
    ((1, 1, 1, 64, 32, 1, 0), "2048 > 1024 threads"),
    ((1, 65536, 1, 32, 1, 1, 0), "gridDim.y = 65536 > 65535"),
    ((1, 1, 65536, 32, 1, 1, 0), "gridDim.z = 65536 > 65535"),
    ((0, 1, 1, 32, 1, 1, 0), "empty grid"),
    ((1, 1, 1, 32, 1, 1, 48 * 1024 + 1), "dynamic shared memory 49153 bytes > 48 KiB"),
])
def test_launch_limits_fail_naming_the_kernel(emu, cfg, message):
    one = np.zeros(1, dtype=np.float32)
    with pytest.raises(RuntimeError, match="samples::nothing") as e:
        emu.sample("launch", one, one.copy(), list(cfg))
    assert message in str(e.value)
    emu.set_dry(True)  # the largest valid launch passes the checks (recorded, not run)
    try:
        emu.sample("launch", one, one.copy(), [2147483647, 65535, 65535, 1024, 1, 1, 48 * 1024])
    finally:
        emu.set_dry(False)
    assert emu.launches()[-1][1:] == ((2147483647, 65535, 65535), (1024, 1, 1), 48 * 1024)


FRAMES = {"4K": (1, 64, 2160 * 3840), "8K": (1, 64, 4320 * 7680), "8K-batch4": (4, 64, 4320 * 7680)}
LAUNCHERS = ["channel_stats", "combination_coefficients", "channel_stats_backward", "butterfly",
             "butterfly_backward"]


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("interleaved", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", ["f32", "f16", "f64"])
def test_launch_shapes_at_4k_and_8k(emu, frame, interleaved, dtype):
    """Every launcher's launches at 4K and 8K frames (dry: checked and recorded, not run): within a GPU's limits
    (the harness raises otherwise) and with the split merges not serial (<= 256 splits per thread)."""
    n, c, p = FRAMES[frame]
    for launcher in LAUNCHERS:
        launches = emu.dry(launcher, C.DTYPE_CODE[dtype], (n, c, p, interleaved), True, c // 16)
        assert launches, launcher
        for kernel, grid, block, smem in launches:
            threads = block[0] * block[1] * block[2]
            assert threads <= 1024 and grid[1] <= 65535 and grid[2] <= 65535 and smem <= 48 * 1024, kernel
            assert min(grid) >= 1, kernel
        main = launches[0][1]
        splits = main[1]
        assert splits <= 65535
        for kernel, grid, block, _ in launches[1:]:
            if "merge_splits" in kernel or "sum_splits" in kernel:
                assert grid[0] >= n * c and block[0] == 256 and -(-splits // 256) <= 256, kernel


@pytest.mark.parametrize("code, st, dtype", [(0, np.float32, torch.float32), (1, np.float64, torch.float64)],
                         ids=["f32", "f64"])
@pytest.mark.parametrize("n, c", [(1, 64), (3, 33)])
def test_coefficients_from_stats_launcher(emu, code, st, dtype, n, c):
    """The CUDA coefficients_from_stats launcher (the coefficient MLP alone, one launch) against the float64 spec."""
    r = max(1, c // 16)
    rng = np.random.default_rng(c)
    mean = rng.standard_normal((n, c)).astype(st)
    std = (rng.random((n, c)) * 3 + 0.1).astype(st)
    w = [(rng.standard_normal(s) * 0.5).astype(st) for s in [(r, c), (r,), (c, r), (c,)] * 2]
    cc = np.full((n, c), np.nan, st)
    emu.coefficients_from_stats(code, mean, std, w, r, cc)
    want = ref.coefficients_from_stats(*(torch.from_numpy(t).double() for t in (mean, std, *w)))
    assert_close_to_reference(torch.from_numpy(cc), want, dtype, what=f"coefficients_from_stats {n}x{c}")
    launches = emu.dry("coefficients_from_stats", code, (n, c, 1, False), True, r)
    assert len(launches) == 1 and "coefficient_mlp" in launches[0][0] and launches[0][1][0] == n, launches
