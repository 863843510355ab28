"""The compiled extension lattice_kernels._C (the CPU and, when built, CUDA kernels of csrc/, registered as
torch.ops.lattice_kernels.*), loaded once, with the fake implementations and autograd of its ops (the contract).
When it does not load, ``C`` is None and ``LOAD_ERROR`` says why; only the ``torch`` backend can run then."""

from __future__ import annotations

import torch

from . import contract

try:
    from . import _C as C  # registers the lattice_kernels ops (CPU, and CUDA when built)

    LOAD_ERROR: str | None = None
except ImportError as e:  # the extension is missing or broken
    C = None
    LOAD_ERROR = str(e)

ops = torch.ops.lattice_kernels if C is not None else None
CUDA_BUILT: bool = C is not None and bool(C.cuda_built())

if C is not None:
    contract.register_fakes(contract.NS)
    contract.register_autograd(contract.NS, ops)
    contract.register_conv3x3(contract.NS)
