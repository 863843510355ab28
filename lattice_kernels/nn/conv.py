"""Conv3x3: a 3x3 convolution (padding 1) with an optional LeakyReLU, run by ops.conv3x3."""

from __future__ import annotations

from torch import Tensor, nn

from .. import ops


class Conv3x3(nn.Conv2d):
    """nn.Conv2d(in_channels, out_channels, 3, padding=1) (same parameters and state-dict keys), followed by
    LeakyReLU(negative_slope) when negative_slope is not None; forward is ops.conv3x3 on the module's backend."""

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float | None = None,
                 bias: bool = True, backend: str | None = None):
        super().__init__(in_channels, out_channels, 3, padding=1, bias=bias)
        self.negative_slope = negative_slope
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        return ops.conv3x3(x, self.weight, self.bias, negative_slope=self.negative_slope, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, negative_slope={self.negative_slope}"


class ResidualBlock(nn.Module):
    """conv3x3 C -> C-d, LeakyReLU(slope), conv3x3 C-d -> C-d, LeakyReLU, conv3x3 C-d -> C, LeakyReLU: each conv
    with its activation is one Conv3x3. The convs are named "0", "2", "4" as in the published nn.Sequential (whose
    LeakyReLUs were "1", "3", "5"), so the state-dict keys are the published ones."""

    def __init__(self, channels: int, diff: int, negative_slope: float = 0.05, backend: str | None = None):
        super().__init__()
        mid = channels - diff
        for name, (cin, cout) in zip(("0", "2", "4"), ((channels, mid), (mid, mid), (mid, channels))):
            self.add_module(name, Conv3x3(cin, cout, negative_slope, backend=backend))

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.children():
            x = conv(x)
        return x
