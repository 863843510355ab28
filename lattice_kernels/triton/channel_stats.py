"""Triton channel_stats: split reduction over H*W, merged per (n, c) in split order; fused backward."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..contract import empty_in_layout_of, stats_dtype
from ._common import (
    check_dtype,
    check_grid,
    merge_splits,
    operand,
    program_channels,
    reduce_partials,
    split_stats,
    store_partials,
    tiling,
)


@triton.jit
def stats_partial_kernel(x_ptr, part_ptr, C, P, sn, sc, sp, NCB, S, NC, SPLIT_P,
                         BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """part[4, N*C, S]: (count, mean, M2) of x - shift over the split's pixels, and the shift x[n, c, 0]. The
    partial means stay shifted (small numbers) until the final merge; within the split the sums are of x minus
    its first value there (split_stats)."""
    n, c, cmask = program_channels(C, NCB, BLOCK_C)
    s = tl.program_id(1)
    base = x_ptr + n.to(tl.int64) * sn + c[:, None].to(tl.int64) * sc
    shift = tl.load(base, mask=cmask[:, None], other=0.0).to(tl.float32)
    first = s * SPLIT_P
    pivot = tl.load(base + first.to(tl.int64) * sp, mask=cmask[:, None], other=0.0).to(tl.float32)
    acc_sum = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    acc_sq = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    p_end = tl.minimum(P, (s + 1) * SPLIT_P)
    for p0 in range(first, p_end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        mask = cmask[:, None] & (p < p_end)[None, :]
        v = tl.where(mask, tl.load(base + p[None, :].to(tl.int64) * sp, mask=mask).to(tl.float32) - pivot, 0.0)
        acc_sum += v
        acc_sq += v * v
    cnt, mean, m2 = split_stats(acc_sum, acc_sq, p_end - first, tl.sum(pivot - shift, axis=1))
    store_partials(part_ptr, n * C + c, s, S, NC, cmask, cnt, mean, m2, tl.sum(shift, axis=1))


@triton.jit
def stats_finalize_kernel(part_ptr, mean_ptr, std_ptr, C, S, NC, BLOCK_C: tl.constexpr):
    """Merge the S partials of each (n, c) in split order: mean and unbiased std (NaN for a single pixel)."""
    n = tl.program_id(0)
    c = tl.arange(0, BLOCK_C)
    cmask = c < C
    row = n * C + c
    cnt, mean, m2 = merge_splits(part_ptr, row, cmask, S, NC, BLOCK_C)
    tl.store(mean_ptr + row, mean, mask=cmask)
    tl.store(std_ptr + row, tl.sqrt(m2 / (cnt - 1.0)), mask=cmask)


@triton.jit
def stats_backward_kernel(x_ptr, dx_ptr, a_ptr, b_ptr, mean_ptr, C, P, sn, sc, sp, dn, dc, dp, NCB, SPLIT_P,
                          BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """dx = a + b * (x - mean) per (n, c), one pass; a program takes one split of the forward's tiling."""
    n, c, cmask = program_channels(C, NCB, BLOCK_C)
    s = tl.program_id(1)
    row = n * C + c
    a = tl.load(a_ptr + row, mask=cmask, other=0.0)[:, None]
    b = tl.load(b_ptr + row, mask=cmask, other=0.0)[:, None]
    m = tl.load(mean_ptr + row, mask=cmask, other=0.0)[:, None]
    n64, c64 = n.to(tl.int64), c[:, None].to(tl.int64)
    p_end = tl.minimum(P, (s + 1) * SPLIT_P)
    for p0 in range(s * SPLIT_P, p_end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        mask = cmask[:, None] & (p < p_end)[None, :]
        p64 = p[None, :].to(tl.int64)
        x = tl.load(x_ptr + n64 * sn + c64 * sc + p64 * sp, mask=mask, other=0.0).to(tl.float32)
        dx = a + b * (x - m)
        tl.store(dx_ptr + n64 * dn + c64 * dc + p64 * dp, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def launch_partials(x: Tensor, wrap) -> tuple[Tensor, int]:
    """Run the partial-statistics kernel and merge its splits down to a few (reduce_partials); returns
    part [4, N*C, S] (float32) and S."""
    check_dtype(x)
    x, (sn, sc, sp) = operand(x)
    n, c, h, w = x.shape
    p = h * w
    t = tiling(c, p, sc == 1 and c > 1)
    ncb = triton.cdiv(c, t.block_c)
    part = torch.empty((4, n * c, t.splits), dtype=torch.float32, device=x.device)
    grid = check_grid("stats_partial_kernel", (n * ncb, t.splits))
    wrap(stats_partial_kernel)[grid](x, part, c, p, sn, sc, sp, ncb, t.splits, n * c, t.split_p,
                                     BLOCK_C=t.block_c, BLOCK_P=t.block_p)
    return reduce_partials(part, t.splits, wrap)


def finalize_stats(part: Tensor, splits: int, n: int, c: int, wrap) -> tuple[Tensor, Tensor]:
    """mean and unbiased std (N, C) float32 from part[4, N*C, S]."""
    mean = torch.empty((n, c), dtype=torch.float32, device=part.device)
    std = torch.empty((n, c), dtype=torch.float32, device=part.device)
    grid = check_grid("stats_finalize_kernel", (n,))
    wrap(stats_finalize_kernel)[grid](part, mean, std, c, splits, n * c, BLOCK_C=triton.next_power_of_2(int(c)))
    return mean, std


def channel_stats(x: Tensor, wrap) -> tuple[Tensor, Tensor]:
    n, c = x.shape[:2]
    part, splits = launch_partials(x, wrap)
    mean, std = finalize_stats(part, splits, n, c, wrap)
    st = stats_dtype(x.dtype)
    return mean.to(st), std.to(st)


def fold_stats_grads(grad_mean: Tensor, grad_std: Tensor, std: Tensor, p: int) -> tuple[Tensor, Tensor]:
    """a = grad_mean / P, b = grad_std / ((P - 1) std), b = 0 where grad_std == 0 or std == 0 (as torch.std)."""
    a = (grad_mean / p).float().contiguous()
    b = grad_std / (std * (p - 1))
    b = torch.where((grad_std == 0) | (std == 0), torch.zeros_like(b), b)
    return a, b.float().contiguous()


def channel_stats_backward(grad_mean: Tensor, grad_std: Tensor, x: Tensor, mean: Tensor, std: Tensor,
                           wrap) -> Tensor:
    check_dtype(x)
    x, (sn, sc, sp) = operand(x)
    n, c, h, w = x.shape
    p = h * w
    a, b = fold_stats_grads(grad_mean, grad_std, std, p)
    dx = empty_in_layout_of(x)
    dn, dc, dp = operand(dx)[1]
    t = tiling(c, p, sc == 1 and c > 1)
    ncb = triton.cdiv(c, t.block_c)
    grid = check_grid("stats_backward_kernel", (n * ncb, t.splits))
    wrap(stats_backward_kernel)[grid](x, dx, a, b, mean.float().contiguous(), c, p, sn, sc, sp, dn, dc, dp, ncb,
                                      t.split_p, BLOCK_C=t.block_c, BLOCK_P=t.block_p)
    return dx
