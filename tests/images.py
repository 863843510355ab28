"""Real photographs shipped with scikit-image, for tests."""

from __future__ import annotations

import numpy as np

from lattice_kernels.train.photos import PHOTOS, photo

__all__ = ["PHOTOS", "crop", "photo"]


def crop(img: np.ndarray, h: int, w: int, top: int = 0, left: int = 0) -> np.ndarray:
    return np.ascontiguousarray(img[top:top + h, left:left + w])
