"""The op set of each backend, one method per op with the arguments checked by ops/__init__.py: the spec run as it
is (``torch``), the C++ ops (``cpu`` and ``cuda``: the dispatcher picks the kernel by the tensors' device) and the
Triton ops (``triton``, registered on first use)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _extension
from . import reference as ref


def _empty(x: Tensor) -> Tensor:
    return x.new_empty((0,), dtype=ref.stats_dtype(x.dtype))


class TorchOps:
    """The ``torch`` backend: the spec of reference.py run as it is (autograd by PyTorch)."""

    def conv3x3(self, x: Tensor, weight: Tensor, bias: Tensor | None, negative_slope: float | None) -> Tensor:
        return ref.conv3x3(x, weight, bias, negative_slope)

    def channel_stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return ref.channel_stats(x)

    def combination_coefficients(self, x: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        return ref.combination_coefficients(x, *weights)

    def coefficients_from_stats(self, mean: Tensor, std: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        return ref.coefficients_from_stats(mean, std, *weights)

    def butterfly(self, x1, x2, a1, a2, b1, b2, q_stats: bool):
        p, q = ref.butterfly(x1, x2, a1, a2, b1, b2)
        mean_q, std_q = ref.channel_stats(q) if q_stats else (_empty(x1), _empty(x1))
        return p, q, mean_q, std_q

    def butterfly_stacked(self, x1, x2, a1, a2, b1, b2, q_stats: bool):
        p, q, mean_q, std_q = self.butterfly(x1, x2, a1, a2, b1, b2, q_stats)
        return torch.cat((p, q), dim=1), mean_q, std_q

    def butterfly_out(self, x1, x2, a1, a2, b1, b2, q_stats: bool, out: Tensor):
        p, q, mean_q, std_q = self.butterfly(x1, x2, a1, a2, b1, b2, q_stats)
        c = x1.shape[1]
        out[:, :c].copy_(p)
        out[:, c:].copy_(q)
        return mean_q, std_q


class LibraryOps:
    """An op set registered through torch.library with the schemas of csrc/lattice_kernels.cpp: the C++ ops
    (torch.ops.lattice_kernels: CPU or CUDA kernels by the tensors' device) or the Triton ones
    (torch.ops.lattice_kernels_triton)."""

    def __init__(self, namespace, conv3x3=None) -> None:
        self.ops = namespace
        # The library has a convolution of its own on CPU only; on GPUs conv3x3 is cuDNN's, through the spec.
        self._conv3x3 = ref.conv3x3 if conv3x3 is None else conv3x3

    def conv3x3(self, x: Tensor, weight: Tensor, bias: Tensor | None, negative_slope: float | None) -> Tensor:
        return self._conv3x3(x, weight, bias, negative_slope)

    def channel_stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.ops.channel_stats(x)

    def combination_coefficients(self, x: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        return self.ops.combination_coefficients(x, *weights)[0]

    def coefficients_from_stats(self, mean: Tensor, std: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        return self.ops.coefficients_from_stats(mean, std, *weights)

    def butterfly(self, x1, x2, a1, a2, b1, b2, q_stats: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.ops.butterfly(x1, x2, a1, a2, b1, b2, q_stats)

    def butterfly_stacked(self, x1, x2, a1, a2, b1, b2, q_stats: bool) -> tuple[Tensor, Tensor, Tensor]:
        return self.ops.butterfly_stacked(x1, x2, a1, a2, b1, b2, q_stats)

    def butterfly_out(self, x1, x2, a1, a2, b1, b2, q_stats: bool, out: Tensor) -> tuple[Tensor, Tensor]:
        return self.ops.butterfly_out(x1, x2, a1, a2, b1, b2, q_stats, out)


OPSETS: dict[str, object] = {}


def opset(name: str) -> object:
    """The op set of the concrete backend `name` (one of cpu, cuda, triton, torch), made on first use (the Triton
    ops are registered then)."""
    if name not in OPSETS:
        if name == "torch":
            OPSETS[name] = TorchOps()
        elif name == "triton":
            from ..triton import triton_ops

            OPSETS[name] = LibraryOps(triton_ops())
        else:
            ops = _extension.ops
            OPSETS[name] = LibraryOps(ops, ops.conv3x3 if name == "cpu" else None)
    return OPSETS[name]
