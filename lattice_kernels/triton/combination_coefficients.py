"""Triton combination_coefficients: the channel-statistics split reduction, and a last stage that merges the
splits and runs the coefficient MLP in the same program (one program per sample, all channels); and
coefficients_from_stats, the MLP alone on given statistics."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..contract import stats_dtype
from ._common import check_dtype, check_grid, merge_splits
from .channel_stats import channel_stats_backward, launch_partials


@triton.jit
def _branch(u, w1_ptr, b1_ptr, w2_ptr, b2_ptr, c, cmask, r, rmask, C, R):
    """sigmoid(W2 relu(W1 u + b1) + b2) for one sample: u [BLOCK_C] -> [BLOCK_C]."""
    w1 = tl.load(w1_ptr + r[:, None] * C + c[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0)
    h = tl.sum(w1 * u[None, :], axis=1) + tl.load(b1_ptr + r, mask=rmask, other=0.0)
    h = tl.maximum(h, 0.0, propagate_nan=tl.PropagateNan.ALL)  # relu keeping NaN (std at H*W = 1), as torch
    h = tl.where(rmask, h, 0.0)  # padded rows: 0 * an infinite statistic would be NaN in every output
    w2 = tl.load(w2_ptr + c[:, None] * R + r[None, :], mask=cmask[:, None] & rmask[None, :], other=0.0)
    z = tl.sum(w2 * h[None, :], axis=1) + tl.load(b2_ptr + c, mask=cmask, other=0.0)
    return tl.sigmoid(z)


@triton.jit
def cc_finalize_kernel(part_ptr, mean_ptr, std_ptr, cc_ptr,
                       w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s, C, R, S, NC,
                       BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
    n = tl.program_id(0)
    c = tl.arange(0, BLOCK_C)
    cmask = c < C
    r = tl.arange(0, BLOCK_R)
    rmask = r < R
    row = n * C + c
    cnt, mean, m2 = merge_splits(part_ptr, row, cmask, S, NC, BLOCK_C)
    std = tl.sqrt(m2 / (cnt - 1.0))
    tl.store(mean_ptr + row, mean, mask=cmask)
    tl.store(std_ptr + row, std, mask=cmask)
    sm = _branch(tl.where(cmask, mean, 0.0), w1m, b1m, w2m, b2m, c, cmask, r, rmask, C, R)
    ss = _branch(tl.where(cmask, std, 0.0), w1s, b1s, w2s, b2s, c, cmask, r, rmask, C, R)
    tl.store(cc_ptr + row, 0.5 * (sm + ss), mask=cmask)


@triton.jit
def cc_from_stats_kernel(mean_ptr, std_ptr, cc_ptr, w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s, C, R,
                         BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
    """The coefficient MLP on given statistics: one program per sample, all channels."""
    n = tl.program_id(0)
    c = tl.arange(0, BLOCK_C)
    cmask = c < C
    r = tl.arange(0, BLOCK_R)
    rmask = r < R
    row = n * C + c
    mean = tl.load(mean_ptr + row, mask=cmask, other=0.0)
    std = tl.load(std_ptr + row, mask=cmask, other=0.0)
    sm = _branch(mean, w1m, b1m, w2m, b2m, c, cmask, r, rmask, C, R)
    ss = _branch(std, w1s, b1s, w2s, b2s, c, cmask, r, rmask, C, R)
    tl.store(cc_ptr + row, 0.5 * (sm + ss), mask=cmask)


def coefficients_from_stats(mean: Tensor, std: Tensor, weights: tuple[Tensor, ...], wrap) -> Tensor:
    """cc (N, C) float32 from float32 (N, C) statistics; weights 2-D/1-D (w1 (R, C), w2 (C, R)). One launch."""
    check_dtype(mean)  # the ops layer gives float32 (or float64, refused here) statistics
    n, c = mean.shape
    r = weights[0].shape[0]
    cc = torch.empty((n, c), dtype=torch.float32, device=mean.device)
    w = [t.float().contiguous() for t in weights]
    wrap(cc_from_stats_kernel)[check_grid("cc_from_stats_kernel", (n,))](
        mean.contiguous(), std.contiguous(), cc, *w, c, r, BLOCK_C=triton.next_power_of_2(int(c)),
        BLOCK_R=triton.next_power_of_2(int(r)))
    return cc


def combination_coefficients(x: Tensor, weights: tuple[Tensor, ...], wrap) -> tuple[Tensor, Tensor, Tensor]:
    """(cc, mean, std), each (N, C) in the statistics dtype; weights 2-D/1-D (w1 (R, C), w2 (C, R))."""
    n, c = x.shape[:2]
    r = weights[0].shape[0]
    part, splits = launch_partials(x, wrap)
    dev = x.device
    mean, std, cc = (torch.empty((n, c), dtype=torch.float32, device=dev) for _ in range(3))
    w = [t.float().contiguous() for t in weights]
    wrap(cc_finalize_kernel)[check_grid("cc_finalize_kernel", (n,))](part, mean, std, cc, *w, c, r, splits, n * c,
                                   BLOCK_C=triton.next_power_of_2(int(c)), BLOCK_R=triton.next_power_of_2(int(r)))
    st = stats_dtype(x.dtype)
    return cc.to(st), mean.to(st), std.to(st)


def _branch_backward(g: Tensor, u: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor):
    """Backward of 0.5 * sigmoid(w2 relu(w1 u + b1) + b2) for (N, C) u and grad g: (du, dw1, db1, dw2, db2)."""
    pre = u @ w1.t() + b1
    h = pre.clamp_min(0)
    s = torch.sigmoid(h @ w2.t() + b2)
    dz = 0.5 * g * s * (1 - s)
    dh = (dz @ w2) * (pre > 0)
    return dh @ w1, dh.t() @ u, dh.sum(0), dz.t() @ h, dz.sum(0)


def combination_coefficients_backward(grad: Tensor, x: Tensor, mean: Tensor, std: Tensor,
                                      weights: tuple[Tensor, ...], wrap) -> tuple[Tensor, ...]:
    """(dx, dw1m, db1m, dw2m, db2m, dw1s, db1s, dw2s, db2s): the tiny MLP's backward in PyTorch ops, then one
    fused pass over x for dx."""
    g = grad.float()
    w = [t.float() for t in weights]
    dm, *gm = _branch_backward(g, mean.float(), *w[:4])
    ds, *gs = _branch_backward(g, std.float(), *w[4:])
    dx = channel_stats_backward(dm, ds, x, mean, std, wrap)
    order = (0, 1, 2, 3)  # dw1, db1, dw2, db2
    return (dx, *(gm[i].to(weights[i].dtype) for i in order), *(gs[i].to(weights[4 + i].dtype) for i in order))


def coefficients_from_stats_backward(grad: Tensor, mean: Tensor, std: Tensor,
                                     weights: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """(dmean, dstd, dw1m, db1m, dw2m, db2m, dw1s, db1s, dw2s, db2s): the tiny MLP's backward in PyTorch ops."""
    g = grad.float()
    w = [t.float() for t in weights]
    dm, *gm = _branch_backward(g, mean.float(), *w[:4])
    ds, *gs = _branch_backward(g, std.float(), *w[4:])
    order = (0, 1, 2, 3)  # dw1, db1, dw2, db2
    return (dm.to(mean.dtype), ds.to(std.dtype), *(gm[i].to(weights[i].dtype) for i in order),
            *(gs[i].to(weights[4 + i].dtype) for i in order))
