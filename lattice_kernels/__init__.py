"""lattice_kernels: fused CPU, CUDA and Triton kernels for the Lattice Block of LatticeNet, with drop-in models."""

from . import ops
from ._backend import (
    BACKENDS,
    BackendUnavailableError,
    available_backends,
    get_backend,
    set_backend,
    use_backend,
)

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "get_backend",
    "ops",
    "set_backend",
    "use_backend",
]
__version__ = "0.1.0"
