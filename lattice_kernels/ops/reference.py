"""The specification of every op, in plain PyTorch: every backend is tested against these functions, and the
``torch`` backend runs them as they are (autograd by PyTorch).

Conventions (the op contract of DESIGN.md):
- x: (N, C, H, W), float32/float16/bfloat16 (float64 too). Statistics and coefficients are float32, or float64 for
  float64 inputs ("the statistics dtype"). Elementwise results are computed in the statistics dtype and rounded
  once to the input dtype.
- std is the unbiased one (divide by H*W - 1), as torch.std: H*W = 1 gives NaN. A (n, c) row holding a NaN or an
  infinity has NaN statistics (mean included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..contract import no_autocast, stats_dtype

__all__ = ["butterfly", "channel_stats", "coefficients_from_stats", "combination_coefficients", "conv3x3",
           "stats_dtype"]


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """(N, C, H, W) -> mean, std: (N, C) each, over H*W; std unbiased. A row holding a NaN or an infinity has NaN
    mean and std (torch.mean would give +-inf for the mean: the kernels' shifted Welford sums give NaN, and the std,
    hence the combination coefficient, is NaN either way)."""
    xs = x.to(stats_dtype(x.dtype))
    mean, std = xs.mean(dim=(2, 3)), xs.std(dim=(2, 3))
    not_finite = ~torch.isfinite(xs).all(dim=(2, 3))
    return mean.masked_fill(not_finite, float("nan")), std.masked_fill(not_finite, float("nan"))


def coefficients_from_stats(
    mean: Tensor, std: Tensor,
    w1m: Tensor, b1m: Tensor, w2m: Tensor, b2m: Tensor,
    w1s: Tensor, b1s: Tensor, w2s: Tensor, b2s: Tensor,
) -> Tensor:
    """The combination-coefficient MLP on (N, C) statistics, weights 2-D (w1: (R, C), w2: (C, R)):
    0.5 * (sigmoid(w2m relu(w1m mean + b1m) + b2m) + sigmoid(w2s relu(w1s std + b1s) + b2s)). Never autocast."""
    with no_autocast(mean.device.type):
        m = torch.sigmoid(F.linear(F.relu(F.linear(mean, w1m, b1m)), w2m, b2m))
        s = torch.sigmoid(F.linear(F.relu(F.linear(std, w1s, b1s)), w2s, b2s))
    return 0.5 * (m + s)


def combination_coefficients(
    x: Tensor,
    w1m: Tensor, b1m: Tensor, w2m: Tensor, b2m: Tensor,
    w1s: Tensor, b1s: Tensor, w2s: Tensor, b2s: Tensor,
) -> Tensor:
    """The combination coefficient (CC) of x: (N, C) in the statistics dtype."""
    mean, std = channel_stats(x)
    return coefficients_from_stats(mean, std, w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s)


def _scale(c: Tensor | None, v: Tensor) -> Tensor:
    return v if c is None else c[:, :, None, None] * v


def butterfly(
    x1: Tensor, x2: Tensor,
    alpha1: Tensor | None = None, alpha2: Tensor | None = None,
    beta1: Tensor | None = None, beta2: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """p = alpha1*x1 + alpha2*x2, q = beta1*x1 + beta2*x2 with (N, C) coefficients (None = the constant 1);
    computed in the statistics dtype and rounded once to x1's dtype."""
    st = stats_dtype(x1.dtype)
    v1, v2 = x1.to(st), x2.to(st)
    p = _scale(alpha1, v1) + _scale(alpha2, v2)
    q = _scale(beta1, v1) + _scale(beta2, v2)
    return p.to(x1.dtype), q.to(x1.dtype)


def conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None, negative_slope: float | None = None) -> Tensor:
    """conv2d(x, weight (Cout, Cin, 3, 3), bias (Cout,), stride 1, padding 1), then leaky_relu(., negative_slope)
    when negative_slope is given: (N, Cin, H, W) -> (N, Cout, H, W) in x's dtype."""
    y = F.conv2d(x, weight, bias, padding=1)
    return y if negative_slope is None else F.leaky_relu(y, negative_slope)
