"""Modules built on the lattice_kernels ops."""

from .combination_coefficient import CombinationCoefficient
from .conv import Conv3x3, ResidualBlock
from .lattice_block import PLACEMENTS, LatticeBlock, residual_block

__all__ = ["PLACEMENTS", "CombinationCoefficient", "Conv3x3", "LatticeBlock", "ResidualBlock", "residual_block"]
