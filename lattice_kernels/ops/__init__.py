"""The public functional ops. Each validates its arguments, resolves the backend (``backend=``, else the default
of lattice_kernels.set_backend / LATTICE_KERNELS_BACKEND) for the inputs' device and runs that backend's op.

- channel_stats(x) -> (mean, std)
- combination_coefficients(x, w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s) -> cc
- coefficients_from_stats(mean, std, w1m, ..., b2s) -> cc     (the CC's MLP on given statistics)
- butterfly(x1, x2, alpha1, alpha2, beta1, beta2, out=, q_stats=) -> (p, q[, mean_q, std_q])
- butterfly_stacked(x1, x2, ..., q_stats=) -> (pq[, mean_q, std_q])
- conv3x3(x, weight, bias=None, negative_slope=None) -> y     (3x3 conv, padding 1, optional LeakyReLU)
- workspace(x): the scope of the CPU workspace (see ops/cpu_workspace.py) the library's modules open around a forward
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import backends
from ..contract import autocast_enabled
from . import _checks, _opsets, reference
from .cpu_workspace import (
    cpu_workspace_enabled,
    cpu_workspace_info,
    release_cpu_workspace,
    set_cpu_workspace,
    workspace,
)

__all__ = [
    "butterfly",
    "butterfly_stacked",
    "channel_stats",
    "coefficients_from_stats",
    "combination_coefficients",
    "conv3x3",
    "cpu_workspace_enabled",
    "cpu_workspace_info",
    "reference",
    "release_cpu_workspace",
    "set_cpu_workspace",
    "workspace",
]

def _backend_of(name: str, device_type: str, device_index: int | None, op: str) -> str:
    """The concrete backend for `op` on the device; sets up its op set (registering the Triton ops on first use)."""
    concrete = backends.resolve(name, torch.device(device_type, device_index), op)
    _opsets.opset(concrete)
    return concrete


# A constant for torch.compile: backend resolution and the op sets' set-up run eagerly when a graph is traced, and
# the traced code reads the chosen op set from a dict.
_backend_of = torch.compiler.assume_constant_result(_backend_of)


def _opset(backend: str | None, device: torch.device, op: str):
    name = _backend_of(backends.get_backend() if backend is None else backend, device.type, device.index, op)
    return _opsets.OPSETS[name]


def channel_stats(x: Tensor, *, backend: str | None = None) -> tuple[Tensor, Tensor]:
    """Per-(n, c) mean and unbiased std over H*W of x (N, C, H, W): two (N, C) tensors, float32 (float64 for
    float64 x). H*W = 1 gives NaN std, like torch.std; a row holding a NaN or an infinity gives NaN mean and std."""
    _checks.check_input(x, "x")
    return _opset(backend, x.device, "channel_stats").channel_stats(x)


def combination_coefficients(
    x: Tensor,
    w1m: Tensor, b1m: Tensor, w2m: Tensor, b2m: Tensor,
    w1s: Tensor, b1s: Tensor, w2s: Tensor, b2s: Tensor,
    *,
    backend: str | None = None,
) -> Tensor:
    """The combination coefficient of x (N, C, H, W): (N, C) in float32 (float64 for float64 x),
    0.5 * (sigmoid(w2m relu(w1m mean + b1m) + b2m) + sigmoid(w2s relu(w1s std + b1s) + b2s)).
    Weights in the published Conv2d layout (w1: (R, C, 1, 1), w2: (C, R, 1, 1)) or 2-D."""
    _checks.check_input(x, "x")
    weights = _checks.mlp_weights(x, (w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s))
    return _opset(backend, x.device, "combination_coefficients").combination_coefficients(x, weights)


def coefficients_from_stats(
    mean: Tensor, std: Tensor,
    w1m: Tensor, b1m: Tensor, w2m: Tensor, b2m: Tensor,
    w1s: Tensor, b1s: Tensor, w2s: Tensor, b2s: Tensor,
    *,
    backend: str | None = None,
) -> Tensor:
    """The CC's MLP on given (N, C) statistics (e.g. the q statistics of a butterfly): (N, C) in float32 (float64
    for float64 statistics), never autocast. One kernel on the GPU backends (a dozen ATen ops as plain PyTorch)."""
    if not isinstance(mean, Tensor) or not isinstance(std, Tensor):
        raise TypeError("mean and std must be torch.Tensor")
    if mean.dim() != 2 or std.shape != mean.shape or mean.numel() == 0:
        raise ValueError(f"mean and std must be non-empty (N, C) tensors of one shape, got {tuple(mean.shape)} and "
                         f"{tuple(std.shape)}")
    if not (mean.is_floating_point() and std.is_floating_point()):
        raise ValueError(f"mean and std must be floating point, got {mean.dtype} and {std.dtype}")
    if std.device != mean.device:
        raise ValueError(f"std is on {std.device} but mean is on {mean.device}")
    probe = mean[:, :, None, None]
    weights = _checks.mlp_weights(probe, (w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s))
    st = weights[0].dtype
    return _opset(backend, mean.device, "coefficients_from_stats").coefficients_from_stats(mean.to(st), std.to(st),
                                                                                           weights)


def _butterfly_args(x1, x2, alpha1, alpha2, beta1, beta2):
    _checks.check_input(x1, "x1")
    _checks.check_like(x2, x1, "x2", "x1")
    return tuple(
        _checks.coefficient(c, x1, n)
        for c, n in ((alpha1, "alpha1"), (alpha2, "alpha2"), (beta1, "beta1"), (beta2, "beta2"))
    )


def butterfly(
    x1: Tensor, x2: Tensor,
    alpha1: Tensor | None = None, alpha2: Tensor | None = None,
    beta1: Tensor | None = None, beta2: Tensor | None = None,
    *,
    out: Tensor | None = None,
    q_stats: bool = False,
    backend: str | None = None,
) -> tuple[Tensor, ...]:
    """p = alpha1*x1 + alpha2*x2, q = beta1*x1 + beta2*x2 for x1, x2 (N, C, H, W) of one dtype; coefficients are
    (N, C) tensors or None (the constant 1). Returns (p, q), plus (mean_q, std_q) = channel_stats(q) computed in the
    same pass when q_stats. With out, an (N, 2C, H, W) buffer, p and q are written to its channels [0, C) and
    [C, 2C) and returned as views of it (no autograd: use butterfly_stacked for a differentiable stacked result)."""
    coefs = _butterfly_args(x1, x2, alpha1, alpha2, beta1, beta2)
    ops = _opset(backend, x1.device, "butterfly")
    if out is None:
        p, q, mean_q, std_q = ops.butterfly(x1, x2, *coefs, bool(q_stats))
    else:
        _checks.out_buffer(out, x1, {"x1": x1, "x2": x2, "alpha1": alpha1, "alpha2": alpha2, "beta1": beta1,
                                     "beta2": beta2})
        if torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x1, x2, *coefs)
        ):
            raise RuntimeError(
                "butterfly(out=...) does not support autograd (an input requires grad); call it under "
                "torch.no_grad(), or use butterfly_stacked(), which returns p and q in one differentiable "
                "(N, 2C, H, W) tensor"
            )
        mean_q, std_q = ops.butterfly_out(x1, x2, *coefs, bool(q_stats), out)
        c = x1.shape[1]
        p, q = out[:, :c], out[:, c:]
    return (p, q, mean_q, std_q) if q_stats else (p, q)


def butterfly_stacked(
    x1: Tensor, x2: Tensor,
    alpha1: Tensor | None = None, alpha2: Tensor | None = None,
    beta1: Tensor | None = None, beta2: Tensor | None = None,
    *,
    q_stats: bool = False,
    backend: str | None = None,
) -> tuple[Tensor, ...]:
    """butterfly with p and q in channels [0, C) and [C, 2C) of one new (N, 2C, H, W) tensor pq (the input of a
    following 1x1 conv, with no cat), differentiable. Returns (pq,) or (pq, mean_q, std_q)."""
    coefs = _butterfly_args(x1, x2, alpha1, alpha2, beta1, beta2)
    pq, mean_q, std_q = _opset(backend, x1.device, "butterfly").butterfly_stacked(x1, x2, *coefs, bool(q_stats))
    return (pq, mean_q, std_q) if q_stats else (pq,)


def conv3x3(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, *, negative_slope: float | None = None,
    backend: str | None = None,
) -> Tensor:
    """y = conv2d(x, weight, bias, stride 1, padding 1), then leaky_relu(y, negative_slope) when it is given:
    x (N, Cin, H, W), weight (Cout, Cin, 3, 3), bias (Cout,) or None, all of one dtype; y (N, Cout, H, W) in x's
    dtype and memory format. Under autocast the inputs are cast to the autocast dtype, as for nn.Conv2d.

    The ``cpu`` backend computes it by Winograd F(4x4, 3x3) (float32 arithmetic, float64 for float64 inputs; one
    GEMM per transform point): about 4x fewer multiplications than a direct convolution, with a float32 error of
    ~2e-6 of max |y|, 2-7x a direct convolution's (tests/test_conv3x3.py). A NaN or infinite input gives a non-finite
    output wherever the direct convolution does, and may also make NaN the rest of each 4x4 output tile whose 6x6
    input patch holds it (the transforms mix a tile's inputs). On a CPU with AMX (the ``amx`` kernel set), bf16
    inputs take a direct convolution on AMX tiles instead: bf16 products, float32 sums in an order fixed by the
    shape, one rounding to bf16 (within 2x eager's bf16 error, tests/test_conv3x3.py); a NaN there reaches only its
    3x3 neighbourhood. Its weight gradient: an infinite input at the image border can also make NaN the taps that
    exclude it (it meets the zero gradient of the padding: 0 * inf). On GPUs (``cuda``, ``triton``) and with
    ``torch`` it is torch's own convolution (cuDNN on CUDA)."""
    device_type = x.device.type if isinstance(x, Tensor) else "cpu"
    if isinstance(x, Tensor) and autocast_enabled(device_type) and x.dtype != torch.float64:
        dt = torch.get_autocast_dtype(device_type)
        x = x.to(dt)
        weight = weight.to(dt) if isinstance(weight, Tensor) else weight
        bias = bias.to(dt) if isinstance(bias, Tensor) else bias
    _checks.conv3x3_args(x, weight, bias, negative_slope)
    slope = None if negative_slope is None else float(negative_slope)
    return _opset(backend, x.device, "conv3x3").conv3x3(x, weight, bias, slope)
