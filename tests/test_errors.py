"""Every bad input raises an error that names the argument and says what was expected, on every backend."""

from __future__ import annotations

import pytest
import torch

import lattice_kernels as lk

from .conftest import make_weights


@pytest.fixture
def be(backend_device):
    return backend_device


def _x(device, shape=(2, 16, 4, 4), dtype=torch.float32):
    return torch.randn(shape, dtype=dtype).to(device)


def test_wrong_rank(be):
    backend, device = be
    with pytest.raises(ValueError, match=r"x must be 4-D \(N, C, H, W\), got shape \(16, 4, 4\)"):
        lk.ops.channel_stats(_x(device)[0], backend=backend)
    with pytest.raises(ValueError, match="x1 must be 4-D"):
        lk.ops.butterfly(_x(device)[0], _x(device)[0], backend=backend)


def test_wrong_dtype(be):
    backend, device = be
    with pytest.raises(TypeError, match="x must be float32, float16, bfloat16 or float64, got torch.int64"):
        lk.ops.channel_stats(torch.ones(1, 2, 3, 3, dtype=torch.int64, device=device), backend=backend)
    with pytest.raises(TypeError, match="x2 must have the dtype of x1"):
        lk.ops.butterfly(_x(device), _x(device, dtype=torch.float64), backend=backend)


def test_not_a_tensor(be):
    backend, _ = be
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        lk.ops.channel_stats([1.0], backend=backend)


def test_empty(be):
    backend, device = be
    with pytest.raises(ValueError, match=r"x is empty \(shape \(0, 16, 4, 4\)\); N\*C\*H\*W must be > 0"):
        lk.ops.channel_stats(torch.empty(0, 16, 4, 4, device=device), backend=backend)
    with pytest.raises(ValueError, match="x1 is empty"):
        lk.ops.butterfly(torch.empty(1, 2, 0, 3, device=device), torch.empty(1, 2, 0, 3, device=device),
                         backend=backend)


def test_device_mismatch(be):
    backend, device = be
    x = _x(device)
    with pytest.raises(ValueError, match="x2 is on meta but x1 is on"):
        lk.ops.butterfly(x, torch.empty(x.shape, device="meta"), backend=backend)
    with pytest.raises(ValueError, match="alpha2 is on meta"):
        lk.ops.butterfly(x, x, alpha2=torch.empty(2, 16, device="meta"), backend=backend)
    w = make_weights(16, 1, device=device)
    w[2] = w[2].to("meta")
    with pytest.raises(ValueError, match="w2m is on meta but x is on"):
        lk.ops.combination_coefficients(x, *w, backend=backend)


def test_shape_mismatch(be):
    backend, device = be
    with pytest.raises(ValueError, match=r"x2 must have the shape of x1 \(2, 16, 4, 4\), got \(2, 16, 4, 5\)"):
        lk.ops.butterfly(_x(device), _x(device, (2, 16, 4, 5)), backend=backend)


def test_wrong_coefficient_shape(be):
    backend, device = be
    x = _x(device)
    with pytest.raises(ValueError, match=r"beta1 must have shape \(N, C\) = \(2, 16\).*got \(16,\)"):
        lk.ops.butterfly(x, x, beta1=torch.rand(16, device=device), backend=backend)


def test_wrong_weight_shape(be):
    backend, device = be
    x = _x(device)
    w = make_weights(16, 1, device=device)
    bad = list(w)
    bad[0] = torch.randn(1, 8, 1, 1, device=device)
    with pytest.raises(ValueError, match=r"w1m must have shape \(R, C, 1, 1\) or \(R, C\) with C = 16"):
        lk.ops.combination_coefficients(x, *bad, backend=backend)
    bad = list(w)
    bad[3] = torch.randn(15, device=device)
    with pytest.raises(ValueError, match=r"b2m must have shape \(16,\), got \(15,\)"):
        lk.ops.combination_coefficients(x, *bad, backend=backend)
    bad = list(w)
    bad[6] = torch.randn(16, 2, 1, 1, device=device)
    with pytest.raises(ValueError, match=r"w2s must have shape \(16, 1\)"):
        lk.ops.combination_coefficients(x, *bad, backend=backend)
    with pytest.raises(TypeError, match="missing 1 required positional argument: .b2s."):
        lk.ops.combination_coefficients(x, *w[:7], backend=backend)


def test_wrong_out(be):
    backend, device = be
    x = _x(device)
    with pytest.raises(ValueError, match=r"out must have shape \(N, 2C, H, W\) = \(2, 32, 4, 4\), got \(2, 16, 4, 4\)"):
        lk.ops.butterfly(x, x, out=torch.empty_like(x), backend=backend)
    with pytest.raises(TypeError, match="out must have the dtype of x1"):
        lk.ops.butterfly(x, x, out=torch.empty(2, 32, 4, 4, dtype=torch.float64, device=device), backend=backend)
    with pytest.raises(ValueError, match="out must be contiguous or channels_last"):
        lk.ops.butterfly(x, x, out=torch.empty(2, 32, 4, 8, device=device)[..., ::2], backend=backend)


def test_cpp_ops_check_too():
    """Direct torch.ops calls (bypassing the Python checks) still fail clearly."""
    if "cpu" not in lk.available_backends():
        pytest.skip("the compiled extension did not load")
    ops = torch.ops.lattice_kernels
    with pytest.raises(RuntimeError, match=r"x must be 4-D"):
        ops.channel_stats(torch.randn(3, 4))
    with pytest.raises(RuntimeError, match=r"alpha2 must have shape \(N, C\)"):
        ops.butterfly(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3), None, torch.rand(3), None, None, False)
    with pytest.raises(RuntimeError, match=r"alpha2 must be Float"):
        ops.butterfly(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3), None, torch.rand(1, 2).double(), None, None,
                      False)
    x = torch.randn(1, 2, 3, 3)
    with pytest.raises(RuntimeError, match="unsupported operation|overlap"):
        out = torch.empty(1, 4, 3, 3)
        ops.butterfly_out(out[:, :2], x, None, None, None, None, False, out)


def test_triton_refuses_float64():
    if "triton" not in lk.available_backends():
        pytest.skip("triton cannot run here")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, device=device)
    with pytest.raises(TypeError, match="backend 'triton' computes in float32.*float64 .* runs on the 'cpu'"):
        lk.ops.channel_stats(x, backend="triton")
    with pytest.raises(TypeError, match="backend 'triton' computes in float32"):
        lk.ops.butterfly(x, x, backend="triton")
