"""The ``torch`` backend: the spec of reference.py run as it is (autograd by PyTorch)."""

from __future__ import annotations

import torch
from torch import Tensor

from . import reference as ref


def _empty(x: Tensor) -> Tensor:
    return x.new_empty((0,), dtype=ref.stats_dtype(x.dtype))


class TorchOps:
    def conv3x3(self, x: Tensor, weight: Tensor, bias: Tensor | None, negative_slope: float | None) -> Tensor:
        return ref.conv3x3(x, weight, bias, negative_slope)

    def channel_stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return ref.channel_stats(x)

    def combination_coefficients(self, x: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        return ref.combination_coefficients(x, *weights)

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
