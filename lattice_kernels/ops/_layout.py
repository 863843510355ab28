"""The kernels' memory-format rule, mirrored from csrc/binding_common.h (is_interleaved) for the fake impls."""

from __future__ import annotations

import torch
from torch import Tensor


def memory_format_of(x: Tensor) -> torch.memory_format:
    """channels_last for channels_last-contiguous tensors that are not also NCHW-contiguous, else contiguous."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def empty_in_layout_of(x: Tensor, channels: int | None = None) -> Tensor:
    n, c, h, w = x.shape
    shape = (n, c if channels is None else channels, h, w)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))
