"""combination_coefficients (and coefficients_from_stats) and their backward on every available backend, against
the float64 spec (ops/reference.py)."""

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
    make_weights,
    skip_if_unsupported,
)

SHAPES = [(2, 16, 7, 13), (1, 64, 1, 2), (3, 19, 5, 6), (1, 64, 16, 16), (2, 4, 70, 70)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _reduced(c):
    return max(1, c // 16)


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape_i", range(len(SHAPES)))
def test_forward_matches_reference(backend_device, shape_i, dtype, layout):
    backend, device = backend_device
    skip_if_unsupported(backend, device, dtype)
    shape = SHAPES[shape_i]
    st = torch.float64 if dtype == torch.float64 else torch.float32
    x = make_input(shape, dtype, device, layout)
    w = make_weights(shape[1], _reduced(shape[1]), st, device=device)
    cc = lk.ops.combination_coefficients(x, *w, backend=backend)
    assert cc.dtype == st and cc.shape == shape[:2]
    w2d = [t.flatten(1) if t.dim() == 4 else t for t in w]
    want = ref.combination_coefficients(x.double(), *[t.double() for t in w2d])
    assert_close_to_reference(cc, want, st, what="cc")
    # The 2-D weight layout gives the same result.
    torch.testing.assert_close(lk.ops.combination_coefficients(x, *w2d, backend=backend), cc, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_matches_reference(backend_device, dtype, layout):
    backend, device = backend_device
    skip_if_unsupported(backend, device, dtype)
    st = torch.float64 if dtype == torch.float64 else torch.float32
    shapes = [*SHAPES[:3], (2, 4, 70, 70)]
    for shape in shapes:
        x = make_input(shape, dtype, device, layout).requires_grad_()
        w = [t.requires_grad_() for t in make_weights(shape[1], _reduced(shape[1]), st, device=device)]
        g = torch.randn(shape[:2], generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(device)
        (lk.ops.combination_coefficients(x, *w, backend=backend).double() * g).sum().backward()
        xr = x.detach().double().requires_grad_()
        wr = [t.detach().double().flatten(1).requires_grad_() if t.dim() == 4 else t.detach().double().requires_grad_()
              for t in w]
        (ref.combination_coefficients(xr, *wr) * g).sum().backward()
        eager = None
        if dtype in (torch.float16, torch.bfloat16):
            xe = x.detach().clone().requires_grad_()
            (ref.combination_coefficients(xe, *[t.detach().flatten(1) if t.dim() == 4 else t.detach() for t in w])
             .double() * g).sum().backward()
            eager = xe.grad
        assert_format(x.grad, expected_format(x), "grad x")
        assert_close_to_reference(x.grad, xr.grad, dtype, scale=xr.grad.abs().max().item(), eager=eager,
                                  what=f"grad x {shape}")
        for i, (a, b) in enumerate(zip(w, wr)):
            assert a.grad.shape == a.shape, "weight grads keep the weight's layout"
            assert_close_to_reference(a.grad.reshape(b.shape), b.grad, st, scale=b.grad.abs().max().item() + 1e-30,
                                      what=f"grad w[{i}] {shape}")


def test_gradcheck_float64(backend_device):
    backend, device = backend_device
    skip_if_unsupported(backend, device, torch.float64)
    for layout in ("nchw", "nhwc"):
        x = make_input((2, 16, 3, 4), torch.float64, device, layout).requires_grad_()
        w = [t.requires_grad_() for t in make_weights(16, 2, device=device, conv_layout=False)]
        assert torch.autograd.gradcheck(lambda *a: lk.ops.combination_coefficients(*a, backend=backend), (x, *w))


def test_coefficients_from_stats_matches_op(backend_device):
    backend, device = backend_device
    x = make_input((2, 16, 7, 13), torch.float32, device, "nchw")
    w = make_weights(16, 1, torch.float32, device=device)
    mean, std = lk.ops.channel_stats(x, backend=backend)
    a = lk.ops.coefficients_from_stats(mean, std, *w, backend=backend)
    b = lk.ops.combination_coefficients(x, *w, backend=backend)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def _stats(n: int, c: int, dtype: torch.dtype, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean = (torch.randn(n, c, generator=g, dtype=torch.float64) * 2).to(device, dtype)
    std = (torch.rand(n, c, generator=g, dtype=torch.float64) * 3 + 0.1).to(device, dtype)
    return mean, std


@pytest.mark.parametrize("n, c", [(1, 64), (3, 19), (2, 33)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_coefficients_from_stats_forward_and_backward_match_the_spec(backend_device, n, c, dtype):
    """The MLP on given statistics, as an op of each backend (one kernel on the GPU backends), against the float64
    spec: the coefficients and the gradients of the statistics and of every weight."""
    backend, device = backend_device
    skip_if_unsupported(backend, device, dtype)
    mean, std = _stats(n, c, dtype, device)
    w = make_weights(c, _reduced(c), dtype, device=device, conv_layout=False)
    args = [t.clone().requires_grad_() for t in (mean, std, *w)]
    cc = lk.ops.coefficients_from_stats(*args, backend=backend)
    assert cc.dtype == dtype and cc.shape == (n, c)
    ref_args = [t.detach().double().cpu().requires_grad_() for t in (mean, std, *w)]
    want = ref.coefficients_from_stats(*ref_args)
    assert_close_to_reference(cc, want, dtype, what=f"cc {n}x{c}")
    g = torch.randn(n, c, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (cc * g.to(device, dtype)).sum().backward()
    (want * g).sum().backward()
    for i, (a, b) in enumerate(zip(args, ref_args)):
        assert_close_to_reference(a.grad, b.grad, dtype, scale=b.grad.abs().max().item() + 1e-30,
                                  what=f"grad {i} {n}x{c}")


def test_coefficients_from_stats_gradcheck_float64(backend_device):
    backend, device = backend_device
    skip_if_unsupported(backend, device, torch.float64)
    mean, std = _stats(2, 16, torch.float64, device)
    w = make_weights(16, 2, torch.float64, device=device, conv_layout=False)
    args = [t.clone().requires_grad_() for t in (mean, std, *w)]
    assert torch.autograd.gradcheck(lambda *a: lk.ops.coefficients_from_stats(*a, backend=backend), args)


def test_coefficients_from_stats_refuses_bad_statistics():
    w = make_weights(16, 1, torch.float32, conv_layout=False)
    mean, std = _stats(2, 16, torch.float32, "cpu")
    with pytest.raises(ValueError, match="non-empty \\(N, C\\)"):
        lk.ops.coefficients_from_stats(mean[:, :, None], std, *w)
    with pytest.raises(ValueError, match="non-empty \\(N, C\\)"):
        lk.ops.coefficients_from_stats(mean[:0], std[:0], *w)
    with pytest.raises(ValueError, match="one shape"):
        lk.ops.coefficients_from_stats(mean, std[:1], *w)
    with pytest.raises(ValueError, match="floating point"):
        lk.ops.coefficients_from_stats(mean.long(), std.long(), *w)
    with pytest.raises(ValueError, match="w1m must have shape"):
        lk.ops.coefficients_from_stats(mean[:, :8], std[:, :8], *w)


def test_autocast_does_not_lower_the_mlp():
    x = make_input((2, 16, 7, 13), torch.bfloat16, "cpu", "nchw")
    w = make_weights(16, 1, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mean, std = lk.ops.channel_stats(x)
        cc = lk.ops.coefficients_from_stats(mean, std, *w)
    assert cc.dtype == torch.float32


def test_deterministic(backend_device):
    backend, device = backend_device
    shape = (2, 16, 7, 13) if interpreted(backend, device) else (4, 64, 48, 48)
    x = make_input(shape, torch.float32, device, "nhwc").requires_grad_()
    w = [t.requires_grad_() for t in make_weights(shape[1], shape[1] // 16, torch.float32, device=device)]
    runs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for t in (x, *w):
            t.grad = None
        cc = lk.ops.combination_coefficients(x, *w, backend=backend)
        (cc * torch.arange(cc.numel(), device=device).reshape(cc.shape)).sum().backward()
        runs.append([cc.detach().clone()] + [t.grad.clone() for t in (x, *w)])
    torch.set_num_threads(2)
    for a, b in zip(*runs):
        assert torch.equal(a, b), "two runs differ bitwise"


def test_single_pixel_gives_nan_like_the_spec(backend_device):
    """H*W = 1: std is NaN (torch.std), and the MLP's relu keeps the NaN, so the coefficients are NaN as in the spec
    (a relu written `h > 0 ? h : 0` turns NaN into 0: found by the CUDA harness in the CUDA and Triton kernels)."""
    backend, device = backend_device
    x = make_input((2, 16, 1, 1), torch.float32, device, "nchw")
    w = make_weights(16, 1, torch.float32, device=device)
    cc = lk.ops.combination_coefficients(x, *w, backend=backend)
    want = ref.combination_coefficients(x.double(), *[t.flatten(1).double() if t.dim() == 4 else t.double()
                                                      for t in w])
    assert torch.isnan(want).all()
    assert_close_to_reference(cc, want, torch.float32, what="cc at H*W = 1")


def test_coefficients_from_stats_is_once_differentiable_and_says_so(backend_device):
    backend, device = backend_device
    if backend == "torch":
        pytest.skip("the spec is plain PyTorch: differentiable to any order")
    mean, std = _stats(2, 16, torch.float32, device)
    w = [t.requires_grad_() for t in make_weights(16, 1, torch.float32, device=device)]  # Conv2d layout, as modules
    mean.requires_grad_()
    cc = lk.ops.coefficients_from_stats(mean, std, *w, backend=backend)
    (g,) = torch.autograd.grad(cc.sum(), [w[0]], retain_graph=True)
    assert g.shape == w[0].shape  # the (R, C, 1, 1) parameter gets a gradient of its own shape
    with pytest.raises(RuntimeError, match="once differentiable.*backend='torch'"):
        torch.autograd.grad(cc.sum(), [mean], create_graph=True)


def test_coefficients_from_stats_takes_half_statistics(backend_device):
    backend, device = backend_device
    skip_if_unsupported(backend, device, torch.bfloat16)
    mean, std = _stats(2, 16, torch.float32, device)
    w = make_weights(16, 1, torch.float32, device=device)
    half = lk.ops.coefficients_from_stats(mean.bfloat16(), std.bfloat16(), *w, backend=backend)
    full = lk.ops.coefficients_from_stats(mean.bfloat16().float(), std.bfloat16().float(), *w, backend=backend)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=1e-6, atol=1e-6)
