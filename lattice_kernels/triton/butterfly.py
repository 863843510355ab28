"""Triton butterfly: p = a1*x1 + a2*x2, q = b1*x1 + b2*x2 (absent coefficients are the constant 1), with the
statistics of q in the same pass; fused backward giving dx1, dx2 and all coefficient gradients in one pass."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..contract import empty_in_layout_of, stats_dtype
from ._common import (
    check_dtype,
    check_grid,
    operand,
    program_channels,
    reduce_partials,
    split_stats,
    store_partials,
    tiling,
)
from .channel_stats import finalize_stats, fold_stats_grads


@triton.jit
def _coef(ptr, row, cmask, HAS: tl.constexpr):
    if HAS:
        return tl.load(ptr + row, mask=cmask, other=0.0)
    return tl.full(row.shape, 1.0, tl.float32)


@triton.jit
def _coefs(a1_ptr, a2_ptr, b1_ptr, b2_ptr, row, cmask, HAS_A1: tl.constexpr, HAS_A2: tl.constexpr,
           HAS_B1: tl.constexpr, HAS_B2: tl.constexpr):
    """The four coefficients of the program's channels as [BLOCK_C, 1] columns (1 where absent)."""
    return (_coef(a1_ptr, row, cmask, HAS_A1)[:, None], _coef(a2_ptr, row, cmask, HAS_A2)[:, None],
            _coef(b1_ptr, row, cmask, HAS_B1)[:, None], _coef(b2_ptr, row, cmask, HAS_B2)[:, None])


@triton.jit
def butterfly_kernel(x1_ptr, x2_ptr, p_ptr, q_ptr, a1_ptr, a2_ptr, b1_ptr, b2_ptr, part_ptr,
                     C, P, s1n, s1c, s1p, s2n, s2c, s2p, pn, pc, pp, qn, qc, qp, NCB, S, NC, SPLIT_P,
                     HAS_A1: tl.constexpr, HAS_A2: tl.constexpr, HAS_B1: tl.constexpr, HAS_B2: tl.constexpr,
                     Q_STATS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    n, c, cmask = program_channels(C, NCB, BLOCK_C)
    s = tl.program_id(1)
    row = n * C + c
    a1, a2, b1, b2 = _coefs(a1_ptr, a2_ptr, b1_ptr, b2_ptr, row, cmask, HAS_A1, HAS_A2, HAS_B1, HAS_B2)
    n64, c64 = n.to(tl.int64), c[:, None].to(tl.int64)
    x1b = x1_ptr + n64 * s1n + c64 * s1c
    x2b = x2_ptr + n64 * s2n + c64 * s2c
    pb = p_ptr + n64 * pn + c64 * pc
    qb = q_ptr + n64 * qn + c64 * qc
    if Q_STATS:  # shift: q at the first pixel, as stored
        shift = (b1 * tl.load(x1b, mask=cmask[:, None], other=0.0).to(tl.float32)
                 + b2 * tl.load(x2b, mask=cmask[:, None], other=0.0).to(tl.float32))
        shift = shift.to(q_ptr.dtype.element_ty).to(tl.float32)
    first = s * SPLIT_P
    if Q_STATS:  # the split's pivot: q at its first pixel, as stored
        f64 = first.to(tl.int64)
        pivot = (b1 * tl.load(x1b + f64 * s1p, mask=cmask[:, None], other=0.0).to(tl.float32)
                 + b2 * tl.load(x2b + f64 * s2p, mask=cmask[:, None], other=0.0).to(tl.float32))
        pivot = pivot.to(q_ptr.dtype.element_ty).to(tl.float32)
    acc_sum = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    acc_sq = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    p_end = tl.minimum(P, (s + 1) * SPLIT_P)
    for p0 in range(first, p_end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        mask = cmask[:, None] & (p < p_end)[None, :]
        p64 = p[None, :].to(tl.int64)
        v1 = tl.load(x1b + p64 * s1p, mask=mask, other=0.0).to(tl.float32)
        v2 = tl.load(x2b + p64 * s2p, mask=mask, other=0.0).to(tl.float32)
        tl.store(pb + p64 * pp, (a1 * v1 + a2 * v2).to(p_ptr.dtype.element_ty), mask=mask)
        q = (b1 * v1 + b2 * v2).to(q_ptr.dtype.element_ty)
        tl.store(qb + p64 * qp, q, mask=mask)
        if Q_STATS:
            d = tl.where(mask, q.to(tl.float32) - pivot, 0.0)
            acc_sum += d
            acc_sq += d * d
    if Q_STATS:
        cnt, mean, m2 = split_stats(acc_sum, acc_sq, p_end - first, tl.sum(pivot - shift, axis=1))
        store_partials(part_ptr, row, s, S, NC, cmask, cnt, mean, m2, tl.sum(shift, axis=1))


@triton.jit
def butterfly_backward_kernel(gp_ptr, gq_ptr, x1_ptr, x2_ptr, dx1_ptr, dx2_ptr, a1_ptr, a2_ptr, b1_ptr, b2_ptr,
                              gm_ptr, bs_ptr, mq_ptr, sums_ptr,
                              C, P, gpn, gpc, gpp, gqn, gqc, gqp, s1n, s1c, s1p, s2n, s2c, s2p, dn, dc, dp, NCB, S, NC,
                              SPLIT_P, HAS_A1: tl.constexpr, HAS_A2: tl.constexpr, HAS_B1: tl.constexpr,
                              HAS_B2: tl.constexpr, Q_GRAD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """dq' = dq + gm + bs*(q - mean_q) (q recomputed), dx1 = a1*dp + b1*dq', dx2 = a2*dp + b2*dq', and per split
    the sums of dp*x1, dp*x2, dq'*x1, dq'*x2 (sums[4, N*C, S]). dx1 and dx2 share one layout (d*)."""
    n, c, cmask = program_channels(C, NCB, BLOCK_C)
    s = tl.program_id(1)
    row = n * C + c
    a1, a2, b1, b2 = _coefs(a1_ptr, a2_ptr, b1_ptr, b2_ptr, row, cmask, HAS_A1, HAS_A2, HAS_B1, HAS_B2)
    if Q_GRAD:
        gm = tl.load(gm_ptr + row, mask=cmask, other=0.0)[:, None]
        bs = tl.load(bs_ptr + row, mask=cmask, other=0.0)[:, None]
        mq = tl.load(mq_ptr + row, mask=cmask, other=0.0)[:, None]
    n64, c64 = n.to(tl.int64), c[:, None].to(tl.int64)
    r0 = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)  # elementwise across the loop, reduced once after it
    r1 = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    r2 = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    r3 = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    p_end = tl.minimum(P, (s + 1) * SPLIT_P)
    for p0 in range(s * SPLIT_P, p_end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        mask = cmask[:, None] & (p < p_end)[None, :]
        p64 = p[None, :].to(tl.int64)
        g_p = tl.load(gp_ptr + n64 * gpn + c64 * gpc + p64 * gpp, mask=mask, other=0.0).to(tl.float32)
        g_q = tl.load(gq_ptr + n64 * gqn + c64 * gqc + p64 * gqp, mask=mask, other=0.0).to(tl.float32)
        v1 = tl.load(x1_ptr + n64 * s1n + c64 * s1c + p64 * s1p, mask=mask, other=0.0).to(tl.float32)
        v2 = tl.load(x2_ptr + n64 * s2n + c64 * s2c + p64 * s2p, mask=mask, other=0.0).to(tl.float32)
        if Q_GRAD:
            g_q = g_q + gm + bs * ((b1 * v1 + b2 * v2) - mq)
        d = n64 * dn + c64 * dc + p64 * dp
        tl.store(dx1_ptr + d, (a1 * g_p + b1 * g_q).to(dx1_ptr.dtype.element_ty), mask=mask)
        tl.store(dx2_ptr + d, (a2 * g_p + b2 * g_q).to(dx2_ptr.dtype.element_ty), mask=mask)
        g_q = tl.where(mask, g_q, 0.0)  # masked loads are 0, but g_q's Q_GRAD terms are not
        r0 += g_p * v1
        r1 += g_p * v2
        r2 += g_q * v1
        r3 += g_q * v2
    tl.store(sums_ptr + row * S + s, tl.sum(r0, axis=1), mask=cmask)
    tl.store(sums_ptr + (NC + row) * S + s, tl.sum(r1, axis=1), mask=cmask)
    tl.store(sums_ptr + (2 * NC + row) * S + s, tl.sum(r2, axis=1), mask=cmask)
    tl.store(sums_ptr + (3 * NC + row) * S + s, tl.sum(r3, axis=1), mask=cmask)


# Warps per backward program. Its four tile loads and four elementwise sums took 184-211 registers per thread at 4
# warps (sm_90); 8 warps halve each thread's share of a tile: 99-122 registers, except bfloat16 channels_last at 157,
# where a thread's 16-byte vectors span 8 channels and holds 7 per-channel coefficients for each (56 registers).
# Half tiles there give 95 registers but 8-byte accesses (tools/gpu_efficiency, 2026-12-07).
BACKWARD_WARPS = 8


def _f32(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.float().contiguous()


def butterfly_into(x1: Tensor, x2: Tensor, coefs, q_stats: bool, p_out: Tensor, q_out: Tensor, wrap):
    """Writes p_out, q_out (any strides that flatten H, W); returns (mean_q, std_q) or empty tensors."""
    check_dtype(x1)
    x1, s1 = operand(x1)
    x2, s2 = operand(x2)
    n, c, h, w = x1.shape
    P = h * w
    t = tiling(c, P, s1[1] == 1 and c > 1)
    ncb = triton.cdiv(c, t.block_c)
    sp_, sq_ = operand(p_out)[1], operand(q_out)[1]
    part = torch.empty((4, n * c, t.splits) if q_stats else (1,), dtype=torch.float32, device=x1.device)
    a = [_f32(v) for v in coefs]
    dummy = part
    grid = check_grid("butterfly_kernel", (n * ncb, t.splits))
    wrap(butterfly_kernel)[grid](
        x1, x2, p_out, q_out, *[v if v is not None else dummy for v in a], part,
        c, P, *s1, *s2, *sp_, *sq_, ncb, t.splits, n * c, t.split_p,
        HAS_A1=a[0] is not None, HAS_A2=a[1] is not None, HAS_B1=a[2] is not None, HAS_B2=a[3] is not None,
        Q_STATS=q_stats, BLOCK_C=t.block_c, BLOCK_P=t.block_p)
    st = stats_dtype(x1.dtype)
    if not q_stats:
        return x1.new_empty((0,), dtype=st), x1.new_empty((0,), dtype=st)
    part, splits = reduce_partials(part, t.splits, wrap)
    mean, std = finalize_stats(part, splits, n, c, wrap)
    return mean.to(st), std.to(st)


def butterfly(x1, x2, coefs, q_stats: bool, wrap):
    p, q = empty_in_layout_of(x1), empty_in_layout_of(x1)
    return (p, q, *butterfly_into(x1, x2, coefs, q_stats, p, q, wrap))


def butterfly_stacked(x1, x2, coefs, q_stats: bool, wrap):
    c = x1.shape[1]
    pq = empty_in_layout_of(x1, 2 * c)
    return (pq, *butterfly_into(x1, x2, coefs, q_stats, pq[:, :c], pq[:, c:], wrap))


def butterfly_backward(grad_p, grad_q, grad_mean_q, grad_std_q, x1, x2, coefs, mean_q, std_q, wrap):
    """(dx1, dx2, da1, da2, db1, db2); the gradient of an absent coefficient is None."""
    check_dtype(x1)
    x1, s1 = operand(x1)
    x2, s2 = operand(x2)
    grad_p, gps = operand(grad_p)
    grad_q, gqs = operand(grad_q)
    n, c, h, w = x1.shape
    P = h * w
    t = tiling(c, P, s1[1] == 1 and c > 1)
    ncb = triton.cdiv(c, t.block_c)
    dx1, dx2 = empty_in_layout_of(x1), empty_in_layout_of(x1)
    ds = operand(dx1)[1]
    a = [_f32(v) for v in coefs]
    sums = torch.empty((4, n * c, t.splits), dtype=torch.float32, device=x1.device)
    q_grad = grad_mean_q is not None or grad_std_q is not None
    if q_grad:
        zeros = torch.zeros_like(mean_q)
        gm, bs = fold_stats_grads(zeros if grad_mean_q is None else grad_mean_q,
                                  zeros if grad_std_q is None else grad_std_q, std_q, P)
        mq = _f32(mean_q)
    else:
        gm = bs = mq = sums
    grid = check_grid("butterfly_backward_kernel", (n * ncb, t.splits))
    wrap(butterfly_backward_kernel)[grid](
        grad_p, grad_q, x1, x2, dx1, dx2, *[v if v is not None else sums for v in a], gm, bs, mq, sums,
        c, P, *gps, *gqs, *s1, *s2, *ds, ncb, t.splits, n * c, t.split_p,
        HAS_A1=a[0] is not None, HAS_A2=a[1] is not None, HAS_B1=a[2] is not None, HAS_B2=a[3] is not None,
        Q_GRAD=q_grad, BLOCK_C=t.block_c, BLOCK_P=t.block_p, num_warps=BACKWARD_WARPS)
    # over the splits, in a fixed order (no atomics); torch's reshape keeps symbolic sizes (einops' pinned them)
    red = sums.unflatten(1, (n, c)).sum(-1)
    st = stats_dtype(x1.dtype)
    grads = [None if v is None else red[i].to(st).clone() for i, v in enumerate(coefs)]
    return (dx1, dx2, *grads)
