"""Models: LatticeNet (super-resolution) and the restoration model, with checkpoint loading and inference."""

from .checkpoint import CheckpointError, read_state_dict, save_safetensors
from .latticenet import LatticeNet, MeanShift
from .pretrained import WeightsNotFoundError, cache_dir, weights_dirs
from .restoration import PRESETS, LatticeRestorer

__all__ = ["PRESETS", "CheckpointError", "LatticeNet", "LatticeRestorer", "MeanShift", "WeightsNotFoundError",
           "cache_dir", "read_state_dict", "save_safetensors", "weights_dirs"]
