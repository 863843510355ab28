"""MATLAB-compatible bicubic resizing: `imresize(img, scale)` as MATLAB's `imresize(img, scale, 'bicubic')`, the
function that made the LR images of DIV2K and of the SR benchmarks (Set5, Set14, B100, Urban100, Manga109).

The math, per image dimension of length n resized to m = ceil(n * scale):
- output pixel x = 1..m (1-based) sits at input position u = x / scale + 0.5 * (1 - 1 / scale);
- the cubic kernel with a = -0.5 (Keys): k(t) = 1.5|t|^3 - 2.5|t|^2 + 1 for |t| <= 1,
  -0.5|t|^3 + 2.5|t|^2 - 4|t| + 2 for 1 < |t| <= 2, 0 beyond;
- shrinking (scale < 1) antialiases: the kernel is stretched, h(t) = scale * k(scale * t), support 4 / scale;
- the taps are input pixels floor(u - support/2) + 0..ceil(support) + 1, weights h(u - tap) normalised to sum 1;
  taps outside the image are mirrored (symmetric boundary: ... 2 1 | 1 2 ... n | n n-1 ...);
- the two dimensions are resized one after the other, the one that shrinks most first (height first on ties);
  uint8 images are rounded (half away from zero) and clipped to 0..255 after each pass, as MATLAB returns each pass
  in the input's class.

One implementation serves numpy arrays (H, W[, C], computed in float64 like MATLAB's double arithmetic) and torch
tensors (..., H, W, batched, on any device; uint8 in float64, floating tensors in their own precision, float16 and
bfloat16 in float32)."""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import torch
from torch import Tensor

__all__ = ["cubic", "imresize", "output_size", "resize_weights"]


def cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic'), float64, support [-2, 2]."""
    a = np.abs(np.asarray(t, dtype=np.float64))
    a2, a3 = a * a, a * a * a
    return ((1.5 * a3 - 2.5 * a2 + 1.0) * (a <= 1)
            + (-0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0) * ((a > 1) & (a <= 2)))


def output_size(length: int, scale: float) -> int:
    """ceil(length * scale), MATLAB's output length, ignoring float noise of 1e-9 relative (so that
    length = 300, scale = 1/3 gives 100, not 101)."""
    x = length * scale
    return max(1, math.ceil(x - 1e-9 * max(1.0, abs(x))))


def resize_weights(in_length: int, out_length: int, scale: float,
                   antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The taps of one dimension: (indices, weights), both (out_length, P); indices are 0-based into the input (already
    mirrored at the borders), weights float64 rows summing to 1. Columns that are zero in every row are dropped."""
    if in_length < 1 or out_length < 1:
        raise ValueError(f"lengths must be positive, got in_length={in_length}, out_length={out_length}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    shrink = antialias and scale < 1
    support = 4.0 / scale if shrink else 4.0
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - support / 2.0)
    taps = math.ceil(support) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    dist = u[:, None] - idx
    w = scale * cubic(scale * dist) if shrink else cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    idx0 = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_length)]
    keep = np.any(w != 0, axis=0)
    return idx0[:, keep], w[:, keep]


def _compute_dtype(x: Tensor) -> torch.dtype:
    if x.dtype == torch.uint8:
        return torch.float64
    if x.dtype in (torch.float32, torch.float64):
        return x.dtype
    if x.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    raise TypeError(f"imresize takes uint8 or floating images, got {x.dtype}")


def _resize_rows(x: Tensor, out_length: int, scale: float, antialias: bool, round_uint8: bool) -> Tensor:
    """x (..., H, W) float resized along H: out[..., i, :] = sum_k w[i, k] x[..., idx[i, k], :]."""
    idx, w = resize_weights(x.shape[-2], out_length, scale, antialias)
    idx_t = torch.from_numpy(idx).to(x.device)
    w_t = torch.from_numpy(w).to(device=x.device, dtype=x.dtype)
    x = x.contiguous()
    y = None
    for k in range(idx.shape[1]):  # one pass per tap, each a copy of whole rows: no (taps x output) temporary
        term = x.index_select(-2, idx_t[:, k]).mul_(w_t[:, k, None])
        y = term if y is None else y.add_(term)
    if round_uint8:
        y = torch.floor(y.add_(0.5)).clamp_(0, 255)
    return y


def _resize_tensor(x: Tensor, scale: float | tuple[float, float] | None, size: tuple[int, int] | None,
                   antialias: bool) -> Tensor:
    if x.dim() < 2:
        raise ValueError(f"imresize takes (..., H, W) tensors, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h == 0 or w == 0 or x.numel() == 0:
        raise ValueError(f"imresize got an empty image of shape {tuple(x.shape)}")
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale (a factor) and size ((height, width))")
    if size is not None:
        oh, ow = (int(v) for v in size)
        if oh < 1 or ow < 1:
            raise ValueError(f"size must be positive, got {size}")
        sh, sw = oh / h, ow / w
    else:
        sh, sw = (float(scale), float(scale)) if np.isscalar(scale) else (float(s) for s in scale)
        if not (sh > 0 and sw > 0 and math.isfinite(sh) and math.isfinite(sw)):
            raise ValueError(f"scale must be positive and finite, got {scale}")
        oh, ow = output_size(h, sh), output_size(w, sw)
    dtype = _compute_dtype(x)
    round_uint8 = x.dtype == torch.uint8
    y = x.to(dtype)
    order = [(-2, oh, sh), (-1, ow, sw)] if sh <= sw else [(-1, ow, sw), (-2, oh, sh)]
    for dim, length, s in order:
        if s == 1.0 and length == y.shape[dim]:
            continue  # identity: the weights are exactly one tap of weight 1
        if dim == -2:
            y = _resize_rows(y, length, s, antialias, round_uint8)
        else:
            y = _resize_rows(y.transpose(-1, -2), length, s, antialias, round_uint8).transpose(-1, -2)
    return y.to(x.dtype).contiguous()


@overload
def imresize(img: np.ndarray, scale: float | tuple[float, float] | None = None, *,
             size: tuple[int, int] | None = None, antialias: bool = True) -> np.ndarray: ...
@overload
def imresize(img: Tensor, scale: float | tuple[float, float] | None = None, *,
             size: tuple[int, int] | None = None, antialias: bool = True) -> Tensor: ...


def imresize(img, scale=None, *, size=None, antialias=True):
    """MATLAB's imresize(img, scale, 'bicubic') (see the module docstring).

    img: numpy (H, W) or (H, W, C), or a torch tensor (..., H, W) such as (N, C, H, W); uint8 or floating.
    scale: a factor (> 1 enlarges, < 1 shrinks: 1/4 makes the x4 LR image) or (height factor, width factor);
    size: (height, width) instead of scale (the factors are then out/in, as MATLAB's imresize(img, [rows cols])).
    antialias: stretch the kernel when shrinking (MATLAB's default, True).
    Returns the same type, dtype (uint8 rounded) and device as img; H and W resized to ceil(H * scale), ceil(W * scale).
    """
    if isinstance(img, Tensor):
        return _resize_tensor(img, scale, size, antialias)
    if isinstance(img, np.ndarray):
        if img.ndim not in (2, 3):
            raise ValueError(f"imresize takes numpy images (H, W) or (H, W, C), got shape {img.shape}")
        if img.dtype not in (np.uint8, np.float32, np.float64):
            raise TypeError(f"imresize takes uint8, float32 or float64 numpy images, got {img.dtype}")
        arr = np.ascontiguousarray(img)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        t = t if img.ndim == 2 else t.permute(2, 0, 1)
        if img.dtype == np.float32:
            t = t.double()  # numpy images compute in float64, as MATLAB does in double
        y = _resize_tensor(t, scale, size, antialias)
        y = y if img.ndim == 2 else y.permute(1, 2, 0)
        return np.ascontiguousarray(y.numpy().astype(img.dtype, copy=False))
    raise TypeError(f"imresize takes a numpy array or a torch tensor, got {type(img).__name__}")
