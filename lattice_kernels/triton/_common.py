"""Pieces shared by the Triton kernels: tile statistics, Chan's merge, the layout of an operand, block sizes.

Reductions are split over P = H*W into fixed ranges ("splits") whose number depends only on the shape and the
layout, never on the device or a timing, and partial results are merged in split order: the same inputs give the
same bits on every run. Within a split, values minus the split's first value are summed elementwise across its
tiles and reduced once after the loop, so the float32 partial means and M2 stay accurate when |mean| >> std;
splits are combined with Chan's formula, their means relative to the first value of their (n, c) row."""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..contract import memory_format_of

# Tiles per split: 8, or 2 for images of at most SMALL_IMAGE_P pixels, where 8 leaves too few programs to keep
# loads in flight ((16, 64, 64, 64): 256 programs for 132 SMs with 8, 1024 with 2; tools/gpu_efficiency). Large
# images keep 8: fewer tiles per split mean more partial results to write and merge.
TILES_PER_SPLIT = 8
TILES_PER_SPLIT_SMALL = 2
SMALL_IMAGE_P = 16384


@triton.jit
def program_channels(C, NCB, BLOCK_C: tl.constexpr):
    """The (n, channel block) of this program (axis 0 = n * NCB + block): n, the channels c, their mask."""
    pid = tl.program_id(0)
    n = pid // NCB
    c = (pid % NCB) * BLOCK_C + tl.arange(0, BLOCK_C)
    return n, c, c < C


@triton.jit
def split_stats(acc_sum, acc_sq, count, offset):
    """Per-row (count, mean, M2) of a split from [BLOCK_C, BLOCK_P] elementwise sums of its values minus a pivot
    (the split's first value) and of their squares (masked entries added as 0), reduced once after the split's
    loop; count: its pixels (a scalar, from the split's bounds); offset: pivot - the row's shift, so that the mean
    comes back relative to the shift as the merge expects. M2 = sum(d^2) - sum(d)^2 / count loses about
    eps * ((pivot - mean) / std)^2 relative: the pivot is one of the split's own values."""
    total = tl.sum(acc_sum, axis=1)
    sq = tl.sum(acc_sq, axis=1)
    cnt = tl.full(total.shape, 0.0, tl.float32) + count.to(tl.float32)
    mean = total / tl.maximum(cnt, 1.0)
    m2 = sq - total * mean
    # A NaN or an infinity in the row makes m2 NaN (inf - inf): the contract's NaN mean and std (tl.maximum would
    # turn the NaN into 0).
    bad = m2 != m2
    return cnt, tl.where(bad, float("nan"), mean + offset), tl.where(m2 < 0.0, 0.0, m2)


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
def merge_range(part_ptr, row, mask, s_begin, s_end, S, NC, BLOCK: tl.constexpr):
    """(count, mean, M2) of partials s_begin .. s_end - 1 of rows `row` of part[4, NC, S], merged in split order
    (the mean still shifted)."""
    cnt = tl.zeros([BLOCK], dtype=tl.float32)
    mean = tl.zeros([BLOCK], dtype=tl.float32)
    m2 = tl.zeros([BLOCK], dtype=tl.float32)
    for s in range(s_begin, s_end):
        pn = tl.load(part_ptr + row * S + s, mask=mask, other=0.0)
        pm = tl.load(part_ptr + (NC + row) * S + s, mask=mask, other=0.0)
        pv = tl.load(part_ptr + (2 * NC + row) * S + s, mask=mask, other=0.0)
        cnt, mean, m2 = chan_merge(cnt, mean, m2, pn, pm, pv)
    return cnt, mean, m2


@triton.jit
def merge_splits(part_ptr, row, cmask, S, NC, BLOCK_C: tl.constexpr):
    """Merge the S partials (count, mean, M2) of rows `row` of part[4, NC, S] in split order; the mean comes back
    with the row's shift (part[3]) added."""
    cnt, mean, m2 = merge_range(part_ptr, row, cmask, 0, S, S, NC, BLOCK_C)
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


# The largest grid along axes 1 and 2 of a CUDA launch.
MAX_GRID_YZ = 65535
# Partials per program of a merge level: the splits of a channel are merged in groups of this many, level after
# level, until a group is left (reduce_partials); each group merges in split order.
MERGE_GROUP = 32


@dataclasses.dataclass(frozen=True)
class Tiling:
    """How a kernel walks an (N, C, P) operand: programs of block_c channels take splits of split_p pixels (a whole
    number of block_p tiles); axis 1 of the grid is the split. A function of the shape and layout only, and the same
    for every kernel of a call, so results are bitwise reproducible."""

    block_c: int
    block_p: int
    split_p: int
    splits: int


def tiling(c: int, p: int | torch.SymInt, interleaved: bool) -> Tiling:
    """Planar rows are contiguous along P: a few channels by a long run of pixels; interleaved pixels are contiguous
    along C: the channels of a run of pixels. 2048-element tiles, 8 tiles per split (2 up to SMALL_IMAGE_P
    pixels); the split grows (in whole multiples of its base length, like split_len of the CUDA kernels) so that
    the splits fit grid axis 1.

    Under torch.compile(dynamic=True) p = H*W may be symbolic: it is only compared with constants (a tile shrinks
    to the power of two that holds a small image; the split grows past 65535 base lengths), so a compiled graph
    holds for every size in the same range and recompiles only when a size crosses into another (at most
    log2(2048/16) + 1 tile ranges, and SMALL_IMAGE_P), never once per size. The channel count is specialised
    (block sizes are compile-time constants, and a layer's C does not change)."""
    c = int(c)
    bc = min(triton.next_power_of_2(c), 64 if interleaved else 4)
    bp = max(16, 2048 // bc)
    cand = 16
    while cand < bp:  # the smallest power of two >= p, at least 16, at most bp, by comparisons only
        if p <= cand:
            bp = cand
            break
        cand *= 2
    base = bp * (TILES_PER_SPLIT_SMALL if p <= SMALL_IMAGE_P else TILES_PER_SPLIT)
    if p <= base * MAX_GRID_YZ:
        split_p = base
    else:  # frames of more than 65535 base lengths (> 16.7M pixels interleaved, > 268M planar)
        split_p = base * triton.cdiv(triton.cdiv(int(p), base), MAX_GRID_YZ)
    return Tiling(bc, bp, split_p, (p + split_p - 1) // split_p)


def check_grid(kernel_name: str, grid: tuple[int, ...]) -> tuple[int, ...]:
    """The grid, after checking the limits of a CUDA launch (axis 0 < 2**31, axes 1 and 2 <= 65535, none empty)."""
    if any(g < 1 for g in grid) or grid[0] >= 2**31 or any(g > MAX_GRID_YZ for g in grid[1:]):
        raise ValueError(f"{kernel_name}: grid {grid} is outside the CUDA launch limits (axis 0 in [1, 2**31), "
                         f"axes 1 and 2 in [1, {MAX_GRID_YZ}])")
    return grid


@triton.jit
def merge_partials_kernel(part_ptr, out_ptr, NC, S, S_OUT, BLOCK_R: tl.constexpr, GROUP: tl.constexpr):
    """out[4, NC, S_OUT]: group g of part[4, NC, S] (splits g*GROUP .. g*GROUP + GROUP - 1) merged in split order;
    the row's shift (part[3]) carried over."""
    row = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = row < NC
    g = tl.program_id(1)
    row64 = row.to(tl.int64)
    cnt, mean, m2 = merge_range(part_ptr, row64, rmask, g * GROUP, tl.minimum(S, g * GROUP + GROUP), S, NC, BLOCK_R)
    shift = tl.load(part_ptr + (3 * NC + row64) * S, mask=rmask, other=0.0)
    store_partials(out_ptr, row64, g, S_OUT, NC, rmask, cnt, mean, m2, shift)


def reduce_partials(part: Tensor, splits: int, wrap) -> tuple[Tensor, int]:
    """part[4, NC, S] merged in groups of MERGE_GROUP, level after level, to at most MERGE_GROUP partials per row
    (a fixed tree: bitwise reproducible); returns (partials, their number)."""
    nc = part.shape[1]
    block_r = 64
    while splits > MERGE_GROUP:
        s_out = triton.cdiv(splits, MERGE_GROUP)
        out = torch.empty((4, nc, s_out), dtype=torch.float32, device=part.device)
        grid = check_grid("merge_partials_kernel", (triton.cdiv(nc, block_r), s_out))
        wrap(merge_partials_kernel)[grid](part, out, nc, splits, s_out, BLOCK_R=block_r, GROUP=MERGE_GROUP)
        part, splits = out, s_out
    return part, splits


def device_of(*tensors: Tensor) -> contextlib.AbstractContextManager:
    """The CUDA device of the first CUDA tensor made current (Triton launches on the current device), else nothing."""
    for t in tensors:
        if isinstance(t, Tensor) and t.device.type == "cuda":
            return torch.cuda.device(t.device)
    return contextlib.nullcontext()
