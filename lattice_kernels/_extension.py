"""The compiled extension lattice_kernels._C (the CPU and, when built, CUDA kernels of csrc/, registered as
torch.ops.lattice_kernels.*), with the fake implementations and autograd of its ops (the contract).

Loaded, and compiled first when this torch has no build of it yet (see _build.py), on first access to ``C``,
``ops``, ``LOAD_ERROR``, ``CUDA_BUILT`` or ``BUILD``, not at ``import lattice_kernels``. When it cannot be built or
loaded, ``C`` is None and ``LOAD_ERROR`` says why; only the ``torch`` and ``triton`` backends can run then."""

from __future__ import annotations

from typing import Any

import torch

from . import _build, contract

_LAZY = ("C", "ops", "LOAD_ERROR", "CUDA_BUILT", "BUILD")


def _load() -> None:
    g = globals()
    try:
        build = _build.load_extension()
        g.update(C=build.module, LOAD_ERROR=None, BUILD=build)
    except (_build.ExtensionBuildError, ImportError, OSError) as e:  # not buildable here, or a broken binary
        g.update(C=None, LOAD_ERROR=str(e), BUILD=None)
    C = g["C"]
    g["ops"] = torch.ops.lattice_kernels if C is not None else None
    g["CUDA_BUILT"] = C is not None and bool(C.cuda_built())
    if C is not None:
        contract.register_fakes(contract.NS)
        contract.register_autograd(contract.NS, g["ops"])
        contract.register_conv3x3(contract.NS)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        _load()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
