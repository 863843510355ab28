"""Modules built on the lattice_kernels ops."""

from .combination_coefficient import CombinationCoefficient
from .lattice_block import PLACEMENTS, LatticeBlock, residual_block

__all__ = ["PLACEMENTS", "CombinationCoefficient", "LatticeBlock", "residual_block"]
