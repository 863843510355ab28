"""The LatticeNet restoration model (denoising / deraining), grayscale or color."""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from .. import ops
from ..nn import LatticeBlock
from .checkpoint import check_state_dict, read_state_dict, save_safetensors

# (n_feats, n_blocks): 'small' 2 Lattice Blocks (406K parameters gray, 408K color), 'large' 4 (737K / 739K).
PRESETS = {"small": (64, 2), "large": (64, 4)}


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LatticeRestorer(nn.Module):
    """(N, C, H, W) in [0, 1] with C = 1 (gray) or 3 (color) -> the restored image:
    head conv -> BN+ReLU -> conv -> BN+ReLU -> LatticeBlocks, a short skip around each pair -> conv -> BN+ReLU ->
    conv -> tanh, plus the long skip from the input."""

    def __init__(self, channels: int = 3, preset: str = "small", backend: str | None = None, **block_kwargs):
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (gray) or 3 (color), got {channels}")
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        feats, n_blocks = PRESETS[preset]
        self.channels, self.preset = channels, preset
        self.receptive_radius = 2 + 6 * n_blocks + 2  # 3x3 convs on the longest path (for tiled inference)
        self.head = nn.Sequential(_conv_bn_relu(channels, feats), _conv_bn_relu(feats, feats))
        self.blocks = nn.ModuleList(LatticeBlock(feats, backend=backend, **block_kwargs) for _ in range(n_blocks))
        self.tail = nn.Sequential(_conv_bn_relu(feats, feats), nn.Conv2d(feats, channels, 3, padding=1), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"LatticeRestorer({self.channels} channels) takes (N, {self.channels}, H, W), "
                             f"got {tuple(x.shape)}")
        # The scope ends after _forward's frame is gone, so its intermediate buffers return to the workspace.
        with ops.workspace(x):
            return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        h = self.head(x)
        for i in range(0, len(self.blocks), 2):
            pair = self.blocks[i:i + 2]
            y = h
            for block in pair:
                y = block(y)
            h = h + y
        return x + self.tail(h)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu",
                        backend: str | None = None) -> LatticeRestorer:
        sd = read_state_dict(path, map_location)
        channels = sd.get("head.0.0.weight", torch.empty(0, 3)).shape[1]
        n_blocks = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
        preset = next((p for p, (_, n) in PRESETS.items() if n == n_blocks), "small")
        model = cls(channels=channels, preset=preset, backend=backend)
        check_state_dict(model, sd, str(path))
        model.load_state_dict(sd)
        return model.to(map_location)

    def save_safetensors(self, path: str | os.PathLike) -> None:
        save_safetensors(self, path, metadata={"model": "LatticeRestorer", "preset": self.preset})
