"""Real photographs shipped inside scikit-image (no download), for demos, tests and the CPU training recipe."""

from __future__ import annotations

import numpy as np

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "immunohistochemistry")


def photo(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB photograph `name` (one of PHOTOS, or any RGB/gray image function of skimage.data)."""
    try:
        import skimage.data
    except ImportError as e:
        raise ImportError("the sample photographs come from scikit-image: pip install scikit-image") from e
    if name == "motorcycle_left":
        img = skimage.data.stereo_motorcycle()[0]
    else:
        img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])
