"""What ``auto`` picks on a CUDA device: per op, the faster of ``cuda`` and ``triton`` as measured on that card
and recorded in auto_backends.json (written by `python -m bench.auto_table` from a benchmark run, e.g. by
`make gpu-check`). For a card with no recorded measurements, ``cuda`` (then ``triton``) is used and a warning says
that the choice is not measured and how to measure it."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import torch

TABLE = Path(__file__).with_name("auto_backends.json")


@functools.cache
def recorded() -> dict[str, dict[str, str]]:
    """{device name: {op: backend}} from auto_backends.json (empty when absent)."""
    if not TABLE.exists():
        return {}
    return json.loads(TABLE.read_text()).get("devices", {})


_warned: set[str] = set()
# Ops that are the same code on both GPU backends (torch's convolution): nothing to measure or choose.
SAME_ON_GPU = frozenset({"conv3x3"})


def pick_gpu_backend(device: torch.device, op: str | None = None) -> str:
    from ._backend import _why_unavailable

    usable = [b for b in ("cuda", "triton") if _why_unavailable(b) is None]
    if not usable:
        return "torch"
    if op in SAME_ON_GPU:
        return usable[0]
    name = torch.cuda.get_device_name(device)
    choice = recorded().get(name, {}).get(op or "", None)
    if choice in usable:
        return choice
    if name not in _warned and len(usable) > 1:
        _warned.add(name)
        warnings.warn(f"lattice_kernels: no measurements recorded for {name!r} in {TABLE.name}; backend 'auto' uses "
                      f"'{usable[0]}'. Run `make gpu-check` (or python -m bench, then python -m bench.auto_table) "
                      "on this card to record the faster backend per op.", RuntimeWarning, stacklevel=4)
    return usable[0]
