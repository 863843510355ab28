"""Pieces shared by the Triton kernels: tile statistics, Chan's merge, the layout of an operand, block sizes.

Reductions are split over P = H*W into fixed ranges ("splits") whose number depends only on the shape and the
layout, never on the device or a timing, and partial results are merged in split order: the same inputs give the
same bits on every run. Values are shifted by the first element of their (n, c) row before they are summed, so the
float32 partial means and M2 stay accurate when |mean| >> std; tiles are combined with Chan's formula."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..contract import memory_format_of

TILES_PER_SPLIT = 8


@triton.jit
def program_channels(C, NCB, BLOCK_C: tl.constexpr):
    """The (n, channel block) of this program (axis 0 = n * NCB + block): n, the channels c, their mask."""
    pid = tl.program_id(0)
    n = pid // NCB
    c = (pid % NCB) * BLOCK_C + tl.arange(0, BLOCK_C)
    return n, c, c < C


@triton.jit
def tile_stats(v, mask):
    """Per-row (count, mean, M2) of a [BLOCK_C, BLOCK_P] tile, masked entries excluded (compensated two-pass)."""
    cnt = tl.sum(mask.to(tl.float32), axis=1)
    inv = 1.0 / tl.maximum(cnt, 1.0)
    mt = tl.sum(tl.where(mask, v, 0.0), axis=1) * inv
    d = tl.where(mask, v - mt[:, None], 0.0)
    s1 = tl.sum(d, axis=1)
    m2 = tl.sum(d * d, axis=1) - s1 * s1 * inv
    return cnt, mt + s1 * inv, tl.maximum(m2, 0.0)


@triton.jit
def chan_merge(na, ma, m2a, nb, mb, m2b):
    """(count, mean, M2) of the union of two parts (Chan et al.)."""
    n = na + nb
    frac = tl.where(n > 0, nb / tl.maximum(n, 1.0), 0.0)
    delta = mb - ma
    return n, ma + delta * frac, m2a + m2b + delta * delta * na * frac


def check_dtype(x: Tensor) -> None:
    if x.dtype == torch.float64:
        raise TypeError("backend 'triton' computes in float32 and takes float32, float16 or bfloat16 inputs; "
                        "float64 (for gradchecks) runs on the 'cpu' and 'torch' backends")


@triton.jit
def merge_splits(part_ptr, row, cmask, S, NC, BLOCK_C: tl.constexpr):
    """Merge the S partials (count, mean, M2) of rows `row` of part[4, NC, S] in split order; the mean comes back
    with the row's shift (part[3]) added."""
    cnt = tl.zeros([BLOCK_C], dtype=tl.float32)
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for s in range(0, S):
        pn = tl.load(part_ptr + row * S + s, mask=cmask, other=0.0)
        pm = tl.load(part_ptr + (NC + row) * S + s, mask=cmask, other=0.0)
        pv = tl.load(part_ptr + (2 * NC + row) * S + s, mask=cmask, other=0.0)
        cnt, mean, m2 = chan_merge(cnt, mean, m2, pn, pm, pv)
    return cnt, mean + tl.load(part_ptr + (3 * NC + row) * S, mask=cmask, other=0.0), m2


@triton.jit
def store_partials(part_ptr, row, s, S, NC, cmask, cnt, mean, m2, shift):
    tl.store(part_ptr + row * S + s, cnt, mask=cmask)
    tl.store(part_ptr + (NC + row) * S + s, mean, mask=cmask)
    tl.store(part_ptr + (2 * NC + row) * S + s, m2, mask=cmask)
    tl.store(part_ptr + (3 * NC + row) * S + s, shift, mask=cmask)


def flat_strides(t: Tensor) -> tuple[int, int, int] | None:
    """(sn, sc, sp) when H and W flatten into one axis of stride sp, else None."""
    _, _, h, w = t.shape
    if h == 1:
        sp = t.stride(3)
    elif w == 1 or t.stride(2) == w * t.stride(3):
        sp = t.stride(3) if w > 1 else t.stride(2)
    else:
        return None
    return t.stride(0), t.stride(1), sp


def operand(t: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
    """t itself when its strides flatten, else a copy in its memory format."""
    s = flat_strides(t)
    if s is None:
        t = t.contiguous(memory_format=memory_format_of(t))
        s = flat_strides(t)
    return t, s


def blocks(c: int, p: int, interleaved: bool) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_P, number of splits). Planar rows are contiguous along P: a few channels by a long run of
    pixels; interleaved pixels are contiguous along C: the channels of a run of pixels. 2048-element tiles."""
    bc = min(triton.next_power_of_2(c), 64 if interleaved else 4)
    bp = max(16, 2048 // bc)
    bp = min(bp, max(16, triton.next_power_of_2(p)))
    splits = triton.cdiv(p, bp * TILES_PER_SPLIT)
    return bc, bp, splits
