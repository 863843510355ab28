"""channel_stats and its backward on every available backend, against the float64 spec (ops/reference.py)."""

from __future__ import annotations

import pytest
import torch

import lattice_kernels as lk
from lattice_kernels.ops import reference as ref

from .conftest import (
    assert_close_to_reference,
    assert_format,
    expected_format,
    interpreted,
    make_input,
    skip_if_unsupported,
)

# H*W = 1, 2, 7x13; (1, 64, 1, 1); C = 19, 5 (not a multiple of the vector width); several chunks per channel
# (P > 4096 planar; C = 3 -> 1365-pixel chunks interleaved).
SHAPES = [(2, 5, 7, 13), (1, 64, 1, 1), (3, 4, 1, 1), (2, 3, 1, 2), (2, 19, 6, 5), (1, 8, 16, 16), (2, 3, 70, 70)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LAYOUTS = ["nchw", "nhwc", "strided"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape_i", range(len(SHAPES)))
def test_forward_matches_reference(backend_device, shape_i, dtype, layout):
    backend, device = backend_device
    skip_if_unsupported(backend, device, dtype)
    x = make_input(SHAPES[shape_i], dtype, device, layout)
    mean, std = lk.ops.channel_stats(x, backend=backend)
    st = torch.float64 if dtype == torch.float64 else torch.float32
    assert mean.dtype == st and std.dtype == st
    assert mean.shape == x.shape[:2] and std.shape == x.shape[:2]
    rm, rs = ref.channel_stats(x.double())
    # Statistics of half inputs are float32 sums of exactly representable values: float32 tolerance.
    assert_close_to_reference(mean, rm, st, what="mean")
    assert_close_to_reference(std, rs, st, what="std")
    if x.shape[2] * x.shape[3] == 1:
        assert torch.isnan(std).all(), "H*W = 1 must give NaN std, as torch.std"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_matches_reference(backend_device, dtype, layout):
    backend, device = backend_device
    skip_if_unsupported(backend, device, dtype)
    shapes = [(2, 5, 7, 13), (2, 19, 6, 5), (2, 3, 70, 70)]
    for shape in shapes:
        x = make_input(shape, dtype, device, layout).requires_grad_()
        g = torch.Generator().manual_seed(1)
        gm = torch.randn(shape[:2], generator=g, dtype=torch.float64)
        gs = torch.randn(shape[:2], generator=g, dtype=torch.float64)
        mean, std = lk.ops.channel_stats(x, backend=backend)
        ((mean * gm.to(mean)).sum() + (std * gs.to(std)).sum()).backward()
        x64 = x.detach().double().requires_grad_()
        rm, rs = ref.channel_stats(x64)
        ((rm * gm).sum() + (rs * gs).sum()).backward()
        eager = None
        if dtype in (torch.float16, torch.bfloat16):
            xe = x.detach().clone().requires_grad_()
            em, es = xe.mean(dim=(2, 3)), xe.std(dim=(2, 3))
            ((em * gm.to(em)).sum() + (es * gs.to(es)).sum()).backward()
            eager = xe.grad
        assert x.grad.dtype == dtype
        assert_format(x.grad, expected_format(x), "grad x")
        scale = x64.grad.abs().max().item()
        assert_close_to_reference(x.grad, x64.grad, dtype, scale=scale, eager=eager, what=f"grad x {shape}")


def test_backward_with_one_output_unused(backend_device):
    backend, device = backend_device
    x = make_input((2, 3, 1, 1), torch.float32, device, "nchw").requires_grad_()
    mean, _ = lk.ops.channel_stats(x, backend=backend)
    mean.sum().backward()
    # H*W = 1: std is NaN, but an unused std must not poison the gradient of the mean.
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_gradcheck_float64(backend_device):
    backend, device = backend_device
    skip_if_unsupported(backend, device, torch.float64)
    for layout in ("nchw", "nhwc"):
        x = make_input((2, 3, 4, 5), torch.float64, device, layout).requires_grad_()
        assert torch.autograd.gradcheck(lambda t: lk.ops.channel_stats(t, backend=backend), (x,))


def test_accuracy_large_mean(backend_device):
    """|mean| >> std: 1e4 + 1e-2 randn in float32. A raw sum of squares loses all digits here."""
    backend, device = backend_device
    for layout in ("nchw", "nhwc"):
        shape = (2, 3, 40, 40) if interpreted(backend, device) else (2, 8, 90, 90)
        g = torch.Generator().manual_seed(3)
        x = (1e4 + 1e-2 * torch.randn(shape, generator=g)).float().to(device)
        if layout == "nhwc":
            x = x.contiguous(memory_format=torch.channels_last)
        _, std = lk.ops.channel_stats(x, backend=backend)
        _, rs = ref.channel_stats(x.double())
        rel = ((std.double() - rs).abs() / rs).max().item()
        assert rel < 1e-3, f"relative std error {rel:.2e} at mean 1e4, std 1e-2"


def test_deterministic(backend_device, thread_count):
    backend, device = backend_device
    shape = (2, 5, 7, 13) if interpreted(backend, device) else (2, 16, 90, 90)
    for layout in ("nchw", "nhwc"):
        x = make_input(shape, torch.float32, device, layout).requires_grad_()
        runs = []
        for threads in (1, 2, 1):
            thread_count(threads)
            x.grad = None
            mean, std = lk.ops.channel_stats(x, backend=backend)
            (mean.sum() + (std * 3).sum()).backward()
            runs.append((mean.clone(), std.clone(), x.grad.clone()))
        for r in runs[1:]:
            for a, b in zip(runs[0], r):
                assert torch.equal(a, b), "two runs differ bitwise"
