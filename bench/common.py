"""Pieces shared by the benchmark modules."""

from __future__ import annotations

import torch

import lattice_kernels as lk


def library_backends(device: torch.device, wanted: list[str] | None) -> list[str]:
    """The library backends to benchmark on `device`: those asked for (each must be available), else the native ones."""
    avail = lk.available_backends()
    native = {"cpu": ["cpu"], "cuda": ["cuda", "triton"]}[device.type]
    chosen = [b for b in native if b in avail] if wanted is None else wanted
    for b in chosen:
        if b not in avail:
            raise SystemExit(f"backend {b!r} is not available here (available: {', '.join(avail)})")
    return chosen
