"""Shared fixtures: the backends available on this machine, and the tolerance rules of the op contract."""

from __future__ import annotations

import os

import pytest
import torch

# Without a GPU the Triton backend runs in Triton's interpreter (set before lattice_kernels.triton is imported,
# which reads it when the kernels are defined).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import lattice_kernels as lk

from .triton_launch_limits import enforce_on_interpreter

# `make test` runs two pytest-xdist workers on a 2-core machine: each keeps one intra-op thread, since two workers
# of two OpenMP threads each wait on each other's cores (in the 2026-12-07 run on the 2-core EPYC, the tiny-image
# CLI tests took 90 s and 47 s under two workers against 6 s and 4 s alone). A test that needs more threads sets
# them (the thread_count fixture). The processes the tests start inherit one OpenMP thread too (a test's own env
# may say otherwise).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True, scope="session")
def _gpu_grid_limits_on_the_triton_interpreter():
    """A Triton launch in the interpreter fails the test when a GPU would refuse its grid (axis 1 or 2 > 65535)."""
    with enforce_on_interpreter():
        yield

# The backends each op test runs: every concrete backend that can run here, on the device it runs on.
# triton runs on CPU tensors only through its interpreter (TRITON_INTERPRET=1), with small shapes.


def _backend_devices() -> list[tuple[str, str]]:
    out = []
    avail = lk.available_backends()
    for b in avail:
        if b == "cuda":
            out.append((b, "cuda"))
        elif b == "triton":
            out.append((b, "cuda" if torch.cuda.is_available() else "cpu"))
        else:
            out.append((b, "cpu"))
    if torch.cuda.is_available() and "torch" in avail:
        out.append(("torch", "cuda"))
    return out


BACKEND_DEVICES = _backend_devices()
ON_GPU = torch.cuda.is_available()


@pytest.fixture(params=BACKEND_DEVICES, ids=[f"{b}-{d}" for b, d in BACKEND_DEVICES])
def backend_device(request) -> tuple[str, str]:
    return request.param


def interpreted(backend: str, device: str) -> bool:
    return backend == "triton" and device == "cpu"


def skip_if_unsupported(backend: str, device: str, dtype: torch.dtype) -> None:
    if interpreted(backend, device) and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter has no bfloat16 (numpy has no bf16 type)")
    if dtype == torch.float64 and backend == "triton":
        pytest.skip("the triton backend computes in float32 and refuses float64 (tested in test_errors.py); "
                    "float64 gradchecks run on the cpu and torch backends")


FP32_RTOL = 1e-5


def assert_close_to_reference(actual: torch.Tensor, expected64: torch.Tensor, dtype: torch.dtype, scale: float = 1.0,
                              eager: torch.Tensor | None = None, what: str = "") -> None:
    """actual vs the float64 reference, judged by the rules of `dtype` (the precision the values went through).
    float32: relative 1e-5 (absolute 1e-5 * scale near zero); float64: 1e-10.
    float16/bfloat16 results: within 2x the error that eager PyTorch makes in that dtype (`eager`), and never more
    than one unit in the last place of the half dtype at the result's scale."""
    a = actual.detach().double().cpu()
    e = expected64.detach().double().cpu()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    nan = torch.isnan(e)
    assert torch.equal(torch.isnan(a), nan), f"{what}: NaN pattern differs from the reference"
    assert torch.equal(a[torch.isinf(e)], e[torch.isinf(e)]) and torch.equal(torch.isinf(a), torch.isinf(e)), \
        f"{what}: the infinities differ from the reference's"
    finite = torch.isfinite(e)
    if eager is not None:
        eager = eager.detach().double().cpu()[finite]
    a, e = a[finite], e[finite]
    if a.numel() == 0:
        return
    if dtype == torch.float64:
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10 * scale, msg=what)
    elif dtype == torch.float32:
        torch.testing.assert_close(a, e, rtol=FP32_RTOL, atol=FP32_RTOL * scale, msg=what)
    else:
        err = (a - e).abs().max().item()
        ulp = torch.finfo(dtype).eps * max(scale, e.abs().max().item())
        bound = ulp
        if eager is not None:
            eager_err = (eager - e).abs().max().item()
            bound = max(2 * eager_err, 0.5 * ulp)
        assert err <= bound, f"{what}: max error {err:.3g} > bound {bound:.3g} ({dtype})"


def make_input(shape, dtype, device, layout: str, seed: int = 0, offset: float = 0.0) -> torch.Tensor:
    """A random (N, C, H, W) tensor in the given layout: 'nchw', 'nhwc' (channels_last) or 'strided' (a
    non-contiguous view whose strides fit neither)."""
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    if layout == "strided":
        base = torch.randn((n, c, h, 2 * w + 1), generator=g, dtype=torch.float64)[..., 1::2]
    else:
        base = torch.randn(shape, generator=g, dtype=torch.float64)
    x = (base + offset).to(dtype).to(device)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def expected_format(x: torch.Tensor) -> torch.memory_format:
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def assert_format(t: torch.Tensor, fmt: torch.memory_format, what: str) -> None:
    assert t.is_contiguous(memory_format=fmt), f"{what}: output lost the input's memory format ({fmt})"


def make_weights(c: int, r: int, dtype: torch.dtype = torch.float64, conv_layout: bool = True, seed: int = 7,
                 device: str = "cpu") -> list[torch.Tensor]:
    """The eight CC weights w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s; conv_layout gives the published Conv2d layout
    (R, C, 1, 1) / (C, R, 1, 1), else 2-D."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(r, c), (r,), (c, r), (c,)] * 2
    ws = [torch.randn(s, generator=g, dtype=torch.float64) * 0.5 for s in shapes]
    if conv_layout:
        ws = [w[:, :, None, None] if w.dim() == 2 else w for w in ws]
    return [w.to(dtype).to(device) for w in ws]


@pytest.fixture
def thread_count():
    """set(n) changes torch's intra-op thread count for the test; the count it had is restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def weights_dir() -> str | None:
    """The published checkpoints' folder (LATTICE_WEIGHTS_DIR, else ../shared/weights), None when absent: the tests
    that need them skip, except where LATTICE_REQUIRE_WEIGHTS=1 (the GPU runs), where their absence is an error."""
    d = os.environ.get("LATTICE_WEIGHTS_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                               "weights")
    if os.path.isdir(d):
        return d
    if os.environ.get("LATTICE_REQUIRE_WEIGHTS") == "1":
        raise RuntimeError(f"LATTICE_REQUIRE_WEIGHTS=1 but the published checkpoints are not in {d}: set "
                           "LATTICE_WEIGHTS_DIR to their folder")
    return None


def allow_tf32(on: bool) -> None:
    """TF32 for float32 cuDNN convolutions and CUDA matmuls, on or off. The older allow_tf32 flags, not torch 2.9's
    fp32_precision: after fp32_precision is set, torch 2.13 refuses to read torch.backends.cudnn.allow_tf32 ("a mix
    of the legacy and new APIs"), which torch.export reads (measured: the export tests failed that way)."""
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


# float32 in IEEE float32 for every test: with torch's defaults cuDNN runs float32 convolutions in TF32 on Ampere
# and later (about 1e-3 relative error), which the float32 rules (1e-5) cannot hold. The library leaves the setting
# to the user (docs/ops-and-backends.md, TF32); test_gpu_full_size.py::test_tf32_error_of_float32_convolutions
# states the error.
allow_tf32(False)
