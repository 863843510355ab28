"""CombinationCoefficient: the CC of LatticeNet, with the published parameter names."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import ops


class CombinationCoefficient(nn.Module):
    """cc(x) = 0.5 * (sigmoid(W2m relu(W1m mean(x) + b1m) + b2m) + sigmoid(W2s relu(W1s std(x) + b1s) + b2s)),
    mean/std per (n, c) over H*W (std unbiased). Parameters as published: conv_mean.{0,2}, conv_std.{0,2}
    (1x1 convs C -> C/reduction -> C). forward returns (N, C, 1, 1) like the published module; coefficients()
    and from_stats() return (N, C)."""

    def __init__(self, channels: int, reduction: int = 16, backend: str | None = None):
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"channels and reduction must be >= 1, got {channels}, {reduction}")
        hidden = max(1, channels // reduction)
        self.backend = backend

        def branch() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1),
                                 nn.Sigmoid())

        self.conv_mean = branch()
        self.conv_std = branch()

    def weights(self) -> tuple[Tensor, ...]:
        m, s = self.conv_mean, self.conv_std
        return (m[0].weight, m[0].bias, m[2].weight, m[2].bias, s[0].weight, s[0].bias, s[2].weight, s[2].bias)

    def coefficients(self, x: Tensor) -> Tensor:
        """(N, C) coefficients of x (N, C, H, W), float32 (float64 for float64 x)."""
        return ops.combination_coefficients(x, *self.weights(), backend=self.backend)

    def from_stats(self, mean: Tensor, std: Tensor) -> Tensor:
        """(N, C) coefficients from given (N, C) statistics."""
        return ops.coefficients_from_stats(mean, std, *self.weights(), backend=self.backend)

    def forward(self, x: Tensor) -> Tensor:
        return self.coefficients(x)[:, :, None, None]

    @torch.no_grad()
    def extra_repr(self) -> str:
        return f"channels={self.conv_mean[0].in_channels}, hidden={self.conv_mean[0].out_channels}"
