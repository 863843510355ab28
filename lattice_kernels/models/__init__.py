"""Models: LatticeNet (super-resolution) and the restoration model, with checkpoint loading and inference."""

from .checkpoint import CheckpointError, read_state_dict, save_safetensors
from .latticenet import LatticeNet, MeanShift
from .restoration import PRESETS, LatticeRestorer

__all__ = ["PRESETS", "CheckpointError", "LatticeNet", "LatticeRestorer", "MeanShift", "read_state_dict",
           "save_safetensors"]
