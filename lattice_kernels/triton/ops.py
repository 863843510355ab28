"""Registration of the Triton kernels as torch.library.triton_op's (torch.compile traces into them on a GPU),
with the schemas of csrc/lattice_kernels.cpp (inferred from the annotations below), so the shared autograd
applies. triton_op registers each launcher as its own fake implementation."""

# No `from __future__ import annotations`: torch.library infers the schemas from these annotations at runtime.
import functools
from typing import Optional

import torch
from torch import Tensor
from torch.library import wrap_triton

from ..contract import register_autograd
from . import butterfly as bf
from . import channel_stats as cs
from . import combination_coefficients as cc
from ._common import device_of

NS = "lattice_kernels_triton"

OptT = Optional[Tensor]  # noqa: UP045 (the schema inference of older torch needs typing.Optional)
T2 = tuple[Tensor, Tensor]
T3 = tuple[Tensor, Tensor, Tensor]
T4 = tuple[Tensor, Tensor, Tensor, Tensor]
T6 = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
T9 = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
T10 = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _empty_if_none(t: OptT, like: Tensor) -> Tensor:
    return like.new_empty((0,), dtype=torch.float64 if like.dtype == torch.float64 else torch.float32) \
        if t is None else t


def _channel_stats(x: Tensor) -> T2:
    return cs.channel_stats(x, wrap_triton)


def _channel_stats_backward(grad_mean: Tensor, grad_std: Tensor, x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return cs.channel_stats_backward(grad_mean, grad_std, x, mean, std, wrap_triton)


def _combination_coefficients(x: Tensor, w1m: Tensor, b1m: Tensor, w2m: Tensor, b2m: Tensor, w1s: Tensor,
                              b1s: Tensor, w2s: Tensor, b2s: Tensor) -> T3:
    return cc.combination_coefficients(x, (w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s), wrap_triton)


def _combination_coefficients_backward(grad: Tensor, x: Tensor, mean: Tensor, std: Tensor, w1m: Tensor, b1m: Tensor,
                                       w2m: Tensor, b2m: Tensor, w1s: Tensor, b1s: Tensor, w2s: Tensor,
                                       b2s: Tensor) -> T9:
    return cc.combination_coefficients_backward(grad, x, mean, std, (w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s),
                                                wrap_triton)


def _coefficients_from_stats(mean: Tensor, std: Tensor, w1m: Tensor, b1m: Tensor, w2m: Tensor, b2m: Tensor,
                             w1s: Tensor, b1s: Tensor, w2s: Tensor, b2s: Tensor) -> Tensor:
    return cc.coefficients_from_stats(mean, std, (w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s), wrap_triton)


def _coefficients_from_stats_backward(grad: Tensor, mean: Tensor, std: Tensor, w1m: Tensor, b1m: Tensor,
                                      w2m: Tensor, b2m: Tensor, w1s: Tensor, b1s: Tensor, w2s: Tensor,
                                      b2s: Tensor) -> T10:
    return cc.coefficients_from_stats_backward(grad, mean, std, (w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s))


def _butterfly(x1: Tensor, x2: Tensor, alpha1: OptT, alpha2: OptT, beta1: OptT, beta2: OptT, q_stats: bool) -> T4:
    return bf.butterfly(x1, x2, (alpha1, alpha2, beta1, beta2), q_stats, wrap_triton)


def _butterfly_stacked(x1: Tensor, x2: Tensor, alpha1: OptT, alpha2: OptT, beta1: OptT, beta2: OptT,
                       q_stats: bool) -> T3:
    return bf.butterfly_stacked(x1, x2, (alpha1, alpha2, beta1, beta2), q_stats, wrap_triton)


def _butterfly_out(x1: Tensor, x2: Tensor, alpha1: OptT, alpha2: OptT, beta1: OptT, beta2: OptT, q_stats: bool,
                   out: Tensor) -> T2:
    c = x1.shape[1]
    return bf.butterfly_into(x1, x2, (alpha1, alpha2, beta1, beta2), q_stats, out[:, :c], out[:, c:], wrap_triton)


def _butterfly_backward(grad_p: Tensor, grad_q: Tensor, grad_mean_q: OptT, grad_std_q: OptT, x1: Tensor, x2: Tensor,
                        alpha1: OptT, alpha2: OptT, beta1: OptT, beta2: OptT, mean_q: OptT, std_q: OptT) -> T6:
    def present(t):
        return t if t is not None and t.numel() > 0 else None

    out = bf.butterfly_backward(grad_p, grad_q, present(grad_mean_q), present(grad_std_q), x1, x2,
                                (alpha1, alpha2, beta1, beta2), mean_q, std_q, wrap_triton)
    return (out[0], out[1], *(_empty_if_none(t, x1) for t in out[2:]))


def on_input_device(fn):
    """Run the launcher with the CUDA device of its tensors current: Triton launches on the current device, which
    need not be the inputs' one (multi-GPU)."""

    @functools.wraps(fn)
    def launcher(*args, **kwargs):
        with device_of(*args, *kwargs.values()):
            return fn(*args, **kwargs)

    launcher.on_input_device = True
    return launcher


_IMPLS = {name: on_input_device(fn) for name, fn in {
    "channel_stats": _channel_stats,
    "channel_stats_backward": _channel_stats_backward,
    "combination_coefficients": _combination_coefficients,
    "combination_coefficients_backward": _combination_coefficients_backward,
    "coefficients_from_stats": _coefficients_from_stats,
    "coefficients_from_stats_backward": _coefficients_from_stats_backward,
    "butterfly": _butterfly,
    "butterfly_stacked": _butterfly_stacked,
    "butterfly_out": _butterfly_out,
    "butterfly_backward": _butterfly_backward,
}.items()}


@functools.cache
def triton_ops():
    """Define the ops once (on first use of the triton backend) and return torch.ops.lattice_kernels_triton."""
    for name, fn in _IMPLS.items():
        torch.library.triton_op(f"{NS}::{name}", fn, mutates_args=("out",) if name == "butterfly_out" else ())
    register_autograd(NS, torch.ops.lattice_kernels_triton)
    return torch.ops.lattice_kernels_triton
