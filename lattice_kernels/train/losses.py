"""Losses: L1 reconstruction and the contrastive regularisation of stage 2 (LatticeNet-CL)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# torchvision's VGG-19 `features` (configuration E): conv channel widths, "M" = max-pool. Indices in the
# Sequential match torchvision's, so its state dict ("features.N.weight") loads as is.
_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
# relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 and their weights (as in the contrastive-regularisation papers).
VGG_LAYERS = (1, 6, 11, 20, 29)
VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """Frozen VGG-19 feature maps at `layers` for images in [0, rgb_range] (ImageNet-normalised inside). Weights
    come from a local file: a torchvision vgg19 state dict (.pth) or its `features.*` part; this machine cannot
    download them."""

    def __init__(self, weights_path: str | os.PathLike, layers: Sequence[int] = VGG_LAYERS, rgb_range: float = 255.0):
        super().__init__()
        mods: list[nn.Module] = []
        cin = 3
        for v in _VGG19:
            if v == "M":
                mods.append(nn.MaxPool2d(2, 2))
            else:
                mods += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*mods[: max(layers) + 1])
        self.layers = tuple(layers)
        self.rgb_range = rgb_range
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"VGG-19 weights not found: {weights_path} (a torchvision vgg19 state dict; "
                                    "download it on a machine with network access, e.g. vgg19-dcbb9e9d.pth)")
        sd = torch.load(weights_path, map_location="cpu", weights_only=True)
        sd = {k: v for k, v in sd.items() if k.startswith("features.")}
        own = self.state_dict()
        sd = {k: v for k, v in sd.items() if k in own}
        missing = [k for k in own if k.startswith("features.") and k not in sd]
        if missing:
            raise ValueError(f"{weights_path} is not a torchvision VGG-19 state dict: missing {missing[:4]}")
        self.load_state_dict({**own, **sd})
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> list[Tensor]:
        h = (x / self.rgb_range - self.mean) / self.std
        out = []
        for i, m in enumerate(self.features):
            h = m(h)
            if i in self.layers:
                out.append(h)
        return out


class PixelFeatures(nn.Module):
    """The identity feature space (contrast in pixels)."""

    def forward(self, x: Tensor) -> list[Tensor]:
        return [x]


class ContrastiveLoss(nn.Module):
    """L_cl = sum_l w_l * D(phi_l(a), phi_l(p)) / (sum_k D(phi_l(a), phi_l(n_k)) + eps), D = mean L1 distance;
    anchor a = the restored image, positive p = the ground truth, negatives n_k = images of the frozen stage-1
    network (no gradient flows into them or the positive). phi: any module returning a list of feature maps."""

    def __init__(self, features: nn.Module, weights: Sequence[float] | None = None, eps: float = 1e-7):
        super().__init__()
        self.features = features
        self.weights = tuple(weights) if weights is not None else None
        self.eps = eps

    def forward(self, anchor: Tensor, positive: Tensor, negatives: Sequence[Tensor]) -> Tensor:
        if not negatives:
            raise ValueError("the contrastive loss needs at least one negative")
        fa = self.features(anchor)
        with torch.no_grad():
            fp = self.features(positive)
            fns = [self.features(n) for n in negatives]
        weights = self.weights or (1.0,) * len(fa)
        if len(weights) != len(fa):
            raise ValueError(f"{len(weights)} layer weights for {len(fa)} feature maps")
        loss = anchor.new_zeros(())
        for layer, w in enumerate(weights):
            pos = F.l1_loss(fa[layer], fp[layer])
            neg = sum(F.l1_loss(fa[layer], fn[layer]) for fn in fns)
            loss = loss + w * pos / (neg + self.eps)
        return loss
