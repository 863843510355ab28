"""Backend selection: ``auto``, ``cuda``, ``triton``, ``cpu``, ``torch``.

The default comes from ``LATTICE_KERNELS_BACKEND`` (else ``auto``); ``set_backend``/``use_backend`` change it and
every op and module takes ``backend=`` too. ``auto`` picks, per op, the fastest backend available for the tensors'
device: ``cpu`` on CPU; on a CUDA card the faster of ``cuda`` and ``triton`` as recorded for that card in
auto_backends.json (written by ``python -m bench.auto_table`` from a benchmark run, e.g. by ``make gpu-check``), else
``cuda`` with a warning that the choice is unmeasured. Asking for a backend that is not available raises
BackendUnavailableError saying how to get it. Nothing falls back silently.

What is available is decided once, on first use (``availability()``; ``refresh()`` gathers it again), and
``resolve`` is a constant for torch.compile (``torch.compiler.assume_constant_result``): traced code never calls into
the extension, the import system, the CUDA runtime or the file system, so ``torch.compile(fullgraph=True)`` works on
every device. A backend that cannot run, asked for inside a compiled function, stops the compilation: the
BackendUnavailableError reaches the caller wrapped in torch._dynamo's InternalTorchDynamoError, message unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from . import _extension

BACKENDS = ("auto", "cuda", "triton", "cpu", "torch")
AUTO_TABLE = Path(__file__).with_name("auto_backends.json")
# Ops that are the same code on both GPU backends (torch's convolution): nothing to measure or choose.
SAME_ON_GPU = frozenset({"conv3x3"})
# Ops that auto_backends.json does not measure apart: the coefficient MLP alone follows the fused op's choice.
RECORDED_AS = {"coefficients_from_stats": "combination_coefficients"}


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here (not built, not installed, or not for this device)."""


@dataclasses.dataclass(frozen=True)
class Availability:
    """The facts backend selection depends on, gathered once."""

    extension_error: str | None  # None when lattice_kernels._C loaded
    cuda_built: bool  # the extension has the CUDA kernels
    cuda_skipped: str | None  # why a CUDA torch's build has no CUDA kernels (LATTICE_KERNELS_CUDA=auto)
    cuda_device: bool  # torch.cuda.is_available()
    triton_installed: bool
    triton_interpreter: bool  # TRITON_INTERPRET=1: Triton kernels run on CPU tensors (tests)
    recorded: dict  # {card name: {op: backend}} from auto_backends.json
    device_names: dict  # {cuda device index: card name}


def _gather() -> Availability:
    cuda_device = torch.cuda.is_available()
    names = {i: torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())} if cuda_device else {}
    recorded = json.loads(AUTO_TABLE.read_text()).get("devices", {}) if AUTO_TABLE.exists() else {}
    return Availability(
        extension_error=_extension.LOAD_ERROR,
        cuda_built=_extension.CUDA_BUILT,
        cuda_skipped=_extension.BUILD.options.cuda_skipped if _extension.BUILD is not None else None,
        cuda_device=cuda_device,
        triton_installed=importlib.util.find_spec("triton") is not None,
        triton_interpreter=os.environ.get("TRITON_INTERPRET") == "1",
        recorded=recorded,
        device_names=names,
    )


_availability: Availability | None = None


def availability() -> Availability:
    """The availability facts, gathered on first use."""
    global _availability
    if _availability is None:
        _availability = _gather()
    return _availability


def refresh() -> Availability:
    """Gather the availability facts again (after a change of TRITON_INTERPRET, CUDA_VISIBLE_DEVICES or
    auto_backends.json in this process) and drop torch.compile's graphs, which hold the old resolutions."""
    global _availability
    _availability = None
    _warned.clear()
    torch._dynamo.reset()
    return availability()


def _validate(name: object) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


try:
    _current = _validate(os.environ.get("LATTICE_KERNELS_BACKEND", "auto"))
except ValueError as e:
    raise ValueError(f"LATTICE_KERNELS_BACKEND: {e}") from None


def why_unavailable(name: str) -> str | None:
    """None when `name` can run on some device here, else what is missing and how to get it."""
    a = availability()
    if name in ("torch", "auto"):
        return None
    if name in ("cpu", "cuda") and a.extension_error is not None:
        return (
            f"the compiled extension lattice_kernels._C could not be built or loaded ({a.extension_error}); "
            "`lattice-kernels-build --force --verbose` compiles it again and shows the compiler's output"
        )
    if name == "cuda":
        if not a.cuda_built:
            why = f" ({a.cuda_skipped})" if a.cuda_skipped else ""
            return (
                f"lattice_kernels was built without the CUDA kernels{why}; with a CUDA build of torch and the CUDA "
                "toolkit, `LATTICE_KERNELS_CUDA=1 lattice-kernels-build` builds them (and says what is missing)"
            )
        if not a.cuda_device:
            return "no CUDA device is visible (torch.cuda.is_available() is False)"
    if name == "triton":
        if not a.triton_installed:
            return "triton is not installed: `pip install triton` (or the [triton] extra)"
        if not (a.cuda_device or a.triton_interpreter):
            return "triton needs a CUDA device, or TRITON_INTERPRET=1 to run its interpreter on CPU tensors"
    return None


def available_backends() -> list[str]:
    """Concrete backends that can run on this machine (``torch`` always)."""
    return [b for b in BACKENDS if b != "auto" and why_unavailable(b) is None]


def set_backend(name: str) -> None:
    """Set the default backend for every op and module that is not given ``backend=``."""
    global _current
    name = _validate(name)
    why = why_unavailable(name)
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


_warned: set[str] = set()


def _auto_gpu(index: int | None, op: str | None) -> str:
    usable = [b for b in ("cuda", "triton") if why_unavailable(b) is None]
    if not usable:
        return "torch"
    if op in SAME_ON_GPU:
        return usable[0]
    a = availability()
    name = a.device_names.get(torch.cuda.current_device() if index is None else index, "")
    choice = a.recorded.get(name, {}).get(RECORDED_AS.get(op, op) or "", None)
    if choice in usable:
        return choice
    if name not in _warned and len(usable) > 1:
        _warned.add(name)
        warnings.warn(f"lattice_kernels: no measurements recorded for {name!r} in {AUTO_TABLE.name}; backend 'auto' "
                      f"uses '{usable[0]}'. Run `make gpu-check` (or python -m bench, then python -m bench.auto_table) "
                      "on this card to record the faster backend per op.", RuntimeWarning, stacklevel=2)
    return usable[0]


def _auto_cpu() -> str:
    a = availability()
    if a.extension_error is None:
        return "cpu"
    if "cpu" not in _warned:
        _warned.add("cpu")
        warnings.warn(
            f"lattice_kernels: the compiled CPU kernels did not load ({a.extension_error}); backend 'auto' runs the "
            "plain-PyTorch spec ('torch') on CPU. `lattice-kernels-build --force --verbose` shows why.",
            RuntimeWarning, stacklevel=2)
    return "torch"


def _resolve(name: str, device_type: str, device_index: int | None, op: str | None) -> str:
    _validate(name)
    if name == "auto":
        if device_type == "cuda":
            return _auto_gpu(device_index, op)
        return _auto_cpu() if device_type == "cpu" else "torch"
    why = why_unavailable(name)
    if why is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available: {why}")
    a = availability()
    if name == "cpu" and device_type != "cpu":
        raise BackendUnavailableError(
            f"backend 'cpu' runs on CPU tensors, got tensors on {device_type}; use 'cuda', 'triton' or 'auto'")
    if name == "cuda" and device_type != "cuda":
        raise BackendUnavailableError(
            f"backend 'cuda' runs on CUDA tensors, got tensors on {device_type}; use 'cpu' or 'auto'")
    if name == "triton" and device_type != "cuda" and not (device_type == "cpu" and a.triton_interpreter):
        raise BackendUnavailableError(
            f"backend 'triton' runs on CUDA tensors (or on CPU tensors with TRITON_INTERPRET=1), got {device_type}")
    return name


# Under torch.compile the resolution runs once, eagerly, when a graph is traced, and its result is a constant of the
# graph (guarded on the arguments, which are constants of the traced code).
_resolve_constant = torch.compiler.assume_constant_result(_resolve)


def resolve(name: str | None, device: torch.device, op: str | None = None) -> str:
    """The concrete backend that runs `op` on `device`, for the requested name (None = the default)."""
    return _resolve_constant(_current if name is None else name, device.type, device.index, op)
