"""The Triton backend: kernels (one file per op), registered as torch.library triton_ops in their own namespace
(lattice_kernels_triton) with the schemas, fake implementations and autograd of the C++ ops. On CPU tensors they
run only under TRITON_INTERPRET=1 (the tests)."""

from .ops import triton_ops

__all__ = ["triton_ops"]
