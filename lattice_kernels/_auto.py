"""What ``auto`` picks on a CUDA device."""

from __future__ import annotations

import torch


def pick_gpu_backend(device: torch.device) -> str:
    from ._backend import _why_unavailable

    for name in ("cuda", "triton"):
        if _why_unavailable(name) is None:
            return name
    return "torch"
