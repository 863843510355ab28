"""LatticeNet for super-resolution (x2/x3/x4), with the published architecture and state-dict keys."""

from __future__ import annotations

import contextlib
import os

import torch
from torch import Tensor, nn

from .. import ops
from ..contract import autocast_enabled, memory_format_of, no_autocast
from ..nn import Conv3x3, LatticeBlock
from .checkpoint import CheckpointError, check_state_dict, read_state_dict, save_safetensors
from .pretrained import find_weights

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Conv2d):
    """A frozen 1x1 conv adding (sign=+1) or subtracting (sign=-1) rgb_range * mean. The published checkpoints
    carry their own (slightly trained) values, which load over these."""

    def __init__(self, rgb_range: float, mean=DIV2K_MEAN, sign: int = -1):
        super().__init__(3, 3, 1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(mean))
        self.requires_grad_(False)


def _tdm(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels // 2, 1), nn.ReLU(inplace=True))


class LatticeNet(nn.Module):
    """LatticeNet(scale): (N, 3, h, w) RGB in [0, rgb_range] -> (N, 3, scale*h, scale*w).

    sub_mean -> conv1 -> conv2 -> 4 LatticeBlocks -> backward fusion (T_tdm/L_tdm) -> + conv2's output -> tail
    (conv, conv to 3*s^2, PixelShuffle) -> add_mean. 756K / 765K / 777K parameters for x2 / x3 / x4."""

    # inference.run's default precision is bfloat16 autocast on a CPU with bf16 arithmetic (inference.default_dtype):
    # the published checkpoints stay within 0.0012 dB of float32 in it on the photo table (tests/test_precision.py).
    bf16_by_default = True

    def __init__(self, scale: int = 4, n_feats: int = 64, n_blocks: int = 4, rgb_range: float = 255.0,
                 backend: str | None = None, **block_kwargs):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
        if n_blocks != 4:
            raise ValueError("the backward fusion of LatticeNet is defined for n_blocks = 4")
        self.scale = scale
        self.rgb_range = rgb_range
        # 3x3 convs on the longest path: conv1, conv2, 6 per block, tail.0, tail.1 (for tiled inference).
        self.receptive_radius = 2 + 6 * n_blocks + 2
        # Registered in the published order, so state_dict() lists the keys as the checkpoints do.
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.conv1 = nn.Conv2d(3, n_feats, 3, padding=1)
        self.conv2 = Conv3x3(n_feats, n_feats, backend=backend)
        for i in range(1, 5):
            self.add_module(f"body_unit{i}", LatticeBlock(n_feats, backend=backend, **block_kwargs))
        for i in range(1, 4):
            self.add_module(f"T_tdm{i}", _tdm(n_feats))
            self.add_module(f"L_tdm{i}", _tdm(n_feats))
        self.tail = nn.Sequential(Conv3x3(n_feats, n_feats, backend=backend),
                                  Conv3x3(n_feats, 3 * scale * scale, backend=backend), nn.PixelShuffle(scale))
        self.add_mean = MeanShift(rgb_range, sign=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LatticeNet takes (N, 3, H, W) RGB in [0, {self.rgb_range:g}], got {tuple(x.shape)}")
        # The scope ends after _forward's frame is gone, so its intermediate buffers return to the workspace.
        with ops.workspace(x):
            return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        # The network runs in channels_last whatever the input's format: on CPU the library's convolution, the
        # fused ops and oneDNN's 1x1 convs are faster there (LatticeNet x4 at LR 320x180, cpu backend, 2-core EPYC,
        # 10 interleaved rounds in one process: 355 ms against 397 ms run in NCHW throughout). A 3-channel input is
        # cheap to convert; the output gets the input's memory format back.
        out_format = memory_format_of(x)
        x = x.contiguous(memory_format=torch.channels_last)
        # Under autocast the image-valued ends (the mean shift and conv1, whose input is the image; the last conv,
        # with add_mean folded in, whose output is) stay in float32: bfloat16 steps by 0.5 to 1 on values of 64 to
        # 255, and rounding the image there cost LatticeNet x2 0.013 dB of its 0.014 dB loss in bfloat16 (the photo
        # table's mean Y-PSNR; docs/performance.md#bf16-on-cpu).
        amp = autocast_enabled(x.device.type) and self.conv1.weight.dtype == torch.float32
        with no_autocast(x.device.type) if amp else contextlib.nullcontext():
            x = self.conv1(self.sub_mean(x.float() if amp else x))
        x = self.conv2(x)
        # The backward fusion's L branches run as soon as their block's output exists, which is then dropped: the
        # forward keeps 32-channel halves instead of whole 64-channel outputs (the same ops, the same results).
        res = self.body_unit1(x)
        l3 = self.L_tdm3(res)
        res = self.body_unit2(res)
        l2 = self.L_tdm2(res)
        res = self.body_unit3(res)
        l1 = self.L_tdm1(res)
        res = self.body_unit4(res)
        t = torch.cat((self.T_tdm1(res), l1), 1)
        del res, l1
        t = torch.cat((self.T_tdm2(t), l2), 1)
        del l2
        t = torch.cat((self.T_tdm3(t), l3), 1)
        del l3
        y = self.tail[0](t + x)
        del t, x
        with no_autocast(y.device.type) if amp else contextlib.nullcontext():
            y = self._output(y.float() if amp else y)
        return y.contiguous(memory_format=out_format)

    def _output(self, y: Tensor) -> Tensor:
        """add_mean(PixelShuffle(tail.1(y))) as one convolution: add_mean (a 3x3 channel mix M and a bias) folded
        into tail.1, whose output channel c*s*s + k becomes HR channel c (k: the sub-pixel). At LR 320x180 x4 the
        1x1 convolution on the HR image took 1.3 ms (LR 320x180 x4 under bf16 autocast, 2-core EPYC, 2026-12-07).
        Hooks on tail.1, tail.2 and add_mean do not fire: their parameters are used here, their forwards are not."""
        conv, shuffle, mix = self.tail[1], self.tail[2], self.add_mean
        s2 = self.scale * self.scale
        m = mix.weight[:, :, 0, 0]
        w = torch.einsum("cd,dkiab->ckiab", m, conv.weight.unflatten(0, (3, s2))).flatten(0, 1)
        b = (m @ conv.bias.view(3, s2) + mix.bias[:, None]).flatten()
        return shuffle(ops.conv3x3(y, w, b, backend=conv.backend))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu",
                        backend: str | None = None) -> LatticeNet:
        """A LatticeNet with the weights of a .pt (published) or .safetensors file; the scale is inferred from
        the tail. A file that does not fit says which keys and shapes are wrong."""
        sd = read_state_dict(path, map_location)
        tail = sd.get("tail.1.weight")
        if tail is None or tail.dim() != 4 or tail.shape[0] not in (12, 27, 48):
            shape = None if tail is None else tuple(tail.shape)
            raise CheckpointError(f"{path}: cannot infer the scale: 'tail.1.weight' should be (3*s*s, 64, 3, 3) with "
                                  f"s in 2, 3, 4, got {shape}")
        scale = {12: 2, 27: 3, 48: 4}[tail.shape[0]]
        model = cls(scale=scale, backend=backend)
        check_state_dict(model, sd, str(path))
        model.load_state_dict(sd)
        return model.to(map_location)

    @classmethod
    def from_pretrained(cls, scale: int, map_location: str | torch.device = "cpu",
                        backend: str | None = None) -> LatticeNet:
        """The authors' published LatticeNet_x{scale} weights, found on disk by name in $LATTICE_WEIGHTS_DIR or the
        user cache folder (see models/pretrained.py); nothing is downloaded. A missing file raises
        WeightsNotFoundError saying where the authors publish it and where to put it."""
        if scale not in (2, 3, 4):
            raise ValueError(f"published LatticeNet weights exist for scale 2, 3 or 4, got {scale}")
        path = find_weights(f"LatticeNet_x{scale}")
        model = cls.from_checkpoint(path, map_location=map_location, backend=backend)
        if model.scale != scale:
            raise CheckpointError(f"{path}, found for LatticeNet x{scale}, holds x{model.scale} weights")
        return model

    def save_safetensors(self, path: str | os.PathLike) -> None:
        save_safetensors(self, path, metadata={"model": "LatticeNet", "scale": str(self.scale)})
