"""Backend selection: ``auto``, ``cuda``, ``triton``, ``cpu``, ``torch``.

The default comes from ``LATTICE_KERNELS_BACKEND`` (else ``auto``); ``set_backend``/``use_backend`` change it and
every op and module takes ``backend=`` too. ``auto`` picks the fastest backend available for the tensor's device;
asking for one that is not available raises BackendUnavailableError saying how to get it. Nothing falls back
silently.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Iterator

import torch

BACKENDS = ("auto", "cuda", "triton", "cpu", "torch")


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here (not built, not installed, or not for this device)."""


try:
    from . import _C  # registers the lattice_kernels ops (CPU, and CUDA when built)

    _C_ERROR: str | None = None
except ImportError as e:  # the extension is missing or broken: only the torch backend can run
    _C = None
    _C_ERROR = str(e)


def _validate(name: object) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


_env = os.environ.get("LATTICE_KERNELS_BACKEND", "auto")
try:
    _current = _validate(_env)
except ValueError as e:
    raise ValueError(f"LATTICE_KERNELS_BACKEND: {e}") from None


def triton_interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _why_unavailable(name: str) -> str | None:
    """None when `name` can run on some device here, else what is missing and how to get it."""
    if name in ("torch", "auto"):
        return None
    if name in ("cpu", "cuda") and _C is None:
        return (
            f"the compiled extension lattice_kernels._C did not load ({_C_ERROR}); rebuild it with "
            "`pip install --no-build-isolation -e .` (or `make install`) against the installed torch"
        )
    if name == "cuda":
        if not _C.cuda_built():
            return (
                "lattice_kernels was built without CUDA kernels; on a machine with a CUDA build of torch and nvcc, "
                "reinstall with `LATTICE_KERNELS_CUDA=1 pip install --no-build-isolation -e .`"
            )
        if not torch.cuda.is_available():
            return "no CUDA device is visible (torch.cuda.is_available() is False)"
    if name == "triton":
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed: `pip install triton` (or the [triton] extra)"
        if not (torch.cuda.is_available() or triton_interpreter()):
            return "triton needs a CUDA device, or TRITON_INTERPRET=1 to run its interpreter on CPU tensors"
    return None


def available_backends() -> list[str]:
    """Concrete backends that can run on this machine (``torch`` always)."""
    return [b for b in BACKENDS if b != "auto" and _why_unavailable(b) is None]


def set_backend(name: str) -> None:
    """Set the default backend for every op and module that is not given ``backend=``."""
    global _current
    name = _validate(name)
    why = _why_unavailable(name)
    if why is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available: {why}")
    _current = name


def get_backend() -> str:
    return _current


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Temporarily set the default backend."""
    previous = _current
    set_backend(name)
    try:
        yield
    finally:
        globals()["_current"] = previous


_warned_auto = False


def _auto_for(device: torch.device, op: str | None) -> str:
    global _warned_auto
    if device.type == "cuda":
        from ._auto import pick_gpu_backend

        return pick_gpu_backend(device, op)
    if device.type == "cpu":
        if _C is not None:
            return "cpu"
        if not _warned_auto:
            warnings.warn(
                f"lattice_kernels: the compiled CPU kernels did not load ({_C_ERROR}); backend 'auto' runs the "
                "plain-PyTorch spec ('torch') on CPU. Rebuild with `pip install --no-build-isolation -e .`.",
                RuntimeWarning,
                stacklevel=3,
            )
            _warned_auto = True
        return "torch"
    return "torch"


def resolve(name: str | None, device: torch.device, op: str | None = None) -> str:
    """The concrete backend that runs `op` on `device`, for the requested name (None = the default)."""
    name = _current if name is None else _validate(name)
    if name == "auto":
        return _auto_for(device, op)
    why = _why_unavailable(name)
    if why is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available: {why}")
    if name == "cpu" and device.type != "cpu":
        raise BackendUnavailableError(
            f"backend 'cpu' runs on CPU tensors, got tensors on {device}; use 'cuda', 'triton' or 'auto'"
        )
    if name == "cuda" and device.type != "cuda":
        raise BackendUnavailableError(
            f"backend 'cuda' runs on CUDA tensors, got tensors on {device}; use 'cpu' or 'auto'"
        )
    if name == "triton" and device.type != "cuda" and not (device.type == "cpu" and triton_interpreter()):
        raise BackendUnavailableError(
            f"backend 'triton' runs on CUDA tensors (or on CPU tensors with TRITON_INTERPRET=1), got {device}"
        )
    return name
