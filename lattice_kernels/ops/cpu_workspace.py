"""The CPU workspace: a forward on CPU tensors takes its large buffers (>= 256 KiB: activations) from blocks freed
earlier in the same forward or in the previous one, instead of pages the C library maps afresh for every buffer.

glibc's malloc maps each buffer above its mmap threshold (at most 32 MiB, so always for a 64-channel activation of
a batch of 8 at 128x128) anew and unmaps it on free, so a plain process faults every activation in page by page;
ONNX Runtime and OpenVINO keep arenas of their own for the same reason. Inside a scope the CPU allocator of c10 is a
caching one for the thread that runs the forward (csrc/cpu/workspace.cpp; installed as c10's CPU allocator at the
first forward, it serves every other allocation as torch's default allocator does). During a forward it holds (blocks
in use and kept) at most 1.25x the larger of the previous and the current forward's peak of live bytes, and after
it at most 1.25x that forward's peak, keeping first the blocks it used; blocks freed outside every scope (the
forward's output, say) go back to the system at once.

The library's modules (LatticeBlock, LatticeNet, LatticeRestorer) open a scope around each eager forward on CPU
tensors. LATTICE_KERNELS_CPU_WORKSPACE=0, or set_cpu_workspace(False), turns it off (every buffer then comes from
torch's allocator); release_cpu_workspace() frees what it keeps.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import torch
from torch import Tensor

from .. import _extension

ENV = "LATTICE_KERNELS_CPU_WORKSPACE"


def _enabled_from_env() -> bool:
    value = os.environ.get(ENV, "1").strip().lower()
    if value in ("1", "on", "true", "yes", ""):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"{ENV}={value!r}: use 1 (the default) or 0")


_enabled: bool | None = None  # read from the environment on first use
_warned = False


def set_cpu_workspace(enabled: bool) -> None:
    """Turns the CPU workspace on or off for this process (overrides LATTICE_KERNELS_CPU_WORKSPACE)."""
    global _enabled
    _enabled = bool(enabled)


def cpu_workspace_enabled() -> bool:
    """Whether the library's modules open a CPU workspace scope around their forwards."""
    global _enabled
    if _enabled is None:
        _enabled = _enabled_from_env()
    return _enabled


class _Scope:
    __slots__ = ("_c", "_open")

    def __init__(self, c: Any):
        self._c, self._open = c, False

    def __enter__(self) -> None:
        global _warned
        self._open = bool(self._c.workspace_enter())
        if not self._open and not _warned:
            _warned = True
            warnings.warn("lattice_kernels: a CPU allocator other than torch's default was installed in this process "
                          "before the CPU workspace, which therefore is not used (buffers come from that allocator)",
                          stacklevel=3)

    def __exit__(self, *exc: object) -> None:
        if self._open:
            self._open = False
            self._c.workspace_exit()


def workspace(x: Tensor) -> contextlib.AbstractContextManager:
    """The scope for an eager forward on x: the CPU workspace when x is a CPU tensor, the workspace is enabled and
    the extension is loaded; otherwise (other devices, torch.compile/export tracing, no extension) nothing."""
    if x.device.type != "cpu" or torch.compiler.is_compiling() or not cpu_workspace_enabled():
        return contextlib.nullcontext()
    c = _extension.C
    return contextlib.nullcontext() if c is None else _Scope(c)


def cpu_workspace_info() -> dict[str, int | bool]:
    """The workspace's counters: live_bytes, cached_bytes, peak_bytes (the larger of the last and the current
    forward's peak of live bytes made during it; the allowance is 1.25x that), hits, misses, evictions, depth (open
    scopes, all threads), installed (whether the workspace is c10's CPU allocator: from the first forward on)."""
    c = _extension.C
    if c is None:
        raise RuntimeError(f"the CPU workspace is part of the compiled extension, which did not load: "
                           f"{_extension.LOAD_ERROR}")
    return dict(c.workspace_info())


def release_cpu_workspace() -> None:
    """Frees every block the CPU workspace keeps between forwards (a no-op without the extension)."""
    c = _extension.C
    if c is not None:
        c.workspace_release()
