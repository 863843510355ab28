"""lattice_kernels: fused CPU, CUDA and Triton kernels for the Lattice Block of LatticeNet, with drop-in models."""

from . import ops
from ._version import __version__
from .backends import (
    BACKENDS,
    BackendUnavailableError,
    available_backends,
    get_backend,
    set_backend,
    use_backend,
)
from .export import export_onnx, export_program
from .models import LatticeNet, LatticeRestorer
from .nn import CombinationCoefficient, LatticeBlock

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "CombinationCoefficient",
    "LatticeBlock",
    "LatticeNet",
    "LatticeRestorer",
    "__version__",
    "available_backends",
    "export_onnx",
    "export_program",
    "get_backend",
    "ops",
    "set_backend",
    "use_backend",
]
