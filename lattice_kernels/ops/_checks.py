"""Argument checks shared by every backend: each bad input raises ValueError/TypeError naming the argument and
saying what was expected."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..contract import FLOAT_DTYPES, stats_dtype


def check_input(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); N*C*H*W must be > 0")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {x.dtype}")
    return x


def check_like(t: object, ref: Tensor, name: str, ref_name: str) -> Tensor:
    t = check_input(t, name)
    if t.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; move both to one device")
    return t


def coefficient(c: object, x: Tensor, name: str) -> Tensor | None:
    """None (the constant 1) or an (N, C) / (N, C, 1, 1) tensor; returned as (N, C) in the statistics dtype."""
    if c is None:
        return None
    if not isinstance(c, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(c).__name__}")
    n, ch = x.shape[:2]
    if c.dim() == 4 and c.shape[2:] == (1, 1):
        c = c.flatten(1)
    if tuple(c.shape) != (n, ch):
        raise ValueError(f"{name} must have shape (N, C) = ({n}, {ch}) (or (N, C, 1, 1)), got {tuple(c.shape)}")
    if c.device != x.device:
        raise ValueError(f"{name} is on {c.device} but the inputs are on {x.device}")
    if not c.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {c.dtype}")
    return c.to(stats_dtype(x.dtype)).contiguous()


def mlp_weights(x: Tensor, weights: tuple[object, ...]) -> tuple[Tensor, ...]:
    """The eight CC weights (w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s), each accepted in the published Conv2d layout
    ((R, C, 1, 1), (C, R, 1, 1)) or 2-D; returned 2-D/1-D in the statistics dtype."""
    names = ("w1m", "b1m", "w2m", "b2m", "w1s", "b1s", "w2s", "b2s")
    if len(weights) != 8:
        raise TypeError(f"combination_coefficients takes 8 weights ({', '.join(names)}), got {len(weights)}")
    ch = x.shape[1]
    st = stats_dtype(x.dtype)
    out = []
    r = None
    for name, w in zip(names, weights):
        if not isinstance(w, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
        if w.device != x.device:
            raise ValueError(f"{name} is on {w.device} but x is on {x.device}; move the module to x's device")
        if w.dim() == 4 and w.shape[2:] == (1, 1):
            w = w.flatten(1)
        if name.startswith("w1"):
            if w.dim() != 2 or w.shape[1] != ch or w.shape[0] < 1:
                raise ValueError(f"{name} must have shape (R, C, 1, 1) or (R, C) with C = {ch}, got {tuple(w.shape)}")
            if r is None:
                r = w.shape[0]
        expected = {"w1": (r, ch), "b1": (r,), "w2": (ch, r), "b2": (ch,)}[name[:2]]
        if tuple(w.shape) != expected:
            hint = " (or with trailing 1, 1)" if name[0] == "w" else ""
            raise ValueError(f"{name} must have shape {expected}{hint}, got {tuple(w.shape)}")
        out.append(w.to(st))
    return tuple(out)


def _memory_span(t: Tensor) -> tuple[int, int, int]:
    """(storage address, first byte, one past the last byte) of the elements t can reach."""
    reach = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
    first = t.storage_offset() * t.element_size()
    return t.untyped_storage().data_ptr(), first, first + (reach + 1) * t.element_size()


def shares_memory(a: Tensor, b: Tensor) -> bool:
    """Whether the byte ranges a and b span in one storage intersect (conservative: two interleaved views that
    touch no common element count as sharing)."""
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    sa, a0, a1 = _memory_span(a)
    sb, b0, b1 = _memory_span(b)
    return sa == sb and a0 < b1 and b0 < a1


def out_buffer(out: object, x1: Tensor, inputs: dict[str, Tensor | None] | None = None) -> Tensor:
    """out for butterfly(out=): (N, 2C, H, W), x1's dtype and device, contiguous or channels_last, sharing no
    memory with any of `inputs` (name -> tensor; p and q are written while x1, x2 and the coefficients are read)."""
    if not isinstance(out, Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    n, c, h, w = x1.shape
    if tuple(out.shape) != (n, 2 * c, h, w):
        raise ValueError(f"out must have shape (N, 2C, H, W) = ({n}, {2 * c}, {h}, {w}), got {tuple(out.shape)}")
    if out.dtype != x1.dtype:
        raise TypeError(f"out must have the dtype of x1 ({x1.dtype}), got {out.dtype}")
    if out.device != x1.device:
        raise ValueError(f"out is on {out.device} but x1 is on {x1.device}")
    if not (out.is_contiguous() or out.is_contiguous(memory_format=torch.channels_last)):
        raise ValueError("out must be contiguous or channels_last-contiguous")
    if not torch.compiler.is_compiling():  # fake tensors under torch.compile have no storage to compare
        for name, t in (inputs or {}).items():
            if t is not None and shares_memory(out, t):
                raise ValueError(f"out shares memory with {name}; pass a separate buffer (or {name}.clone())")
    return out


def conv3x3_args(x: object, weight: object, bias: object, negative_slope: object) -> None:
    """x (N, Cin, H, W); weight (Cout, Cin, 3, 3) and bias (Cout,) or None of x's dtype and device;
    negative_slope None or a finite float >= 0."""
    x = check_input(x, "x")
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 4 or weight.shape[1] != x.shape[1] or weight.shape[2:] != (3, 3) or weight.shape[0] == 0:
        raise ValueError(f"weight must have shape (Cout, Cin, 3, 3) with Cin = {x.shape[1]} (x's channels), "
                         f"got {tuple(weight.shape)}")
    tensors = [("weight", weight)]
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must have shape (Cout,) = ({weight.shape[0]},), got {tuple(bias.shape)}")
        tensors.append(("bias", bias))
    for name, t in tensors:
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype ({x.dtype}), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; move both to one device")
    if negative_slope is None:
        return
    # float() also specialises a symbolic float of torch.compile(dynamic=True) (a module's slope) to its value.
    number = not isinstance(negative_slope, bool) and isinstance(negative_slope, (int, float, torch.SymFloat))
    if not number or not 0 <= float(negative_slope) < math.inf:
        raise ValueError(f"negative_slope must be None or a finite number >= 0, got {negative_slope!r}")
