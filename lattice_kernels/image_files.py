"""Finding and opening image files: shared by training, evaluation, inference and the commands."""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A dataset that cannot be used: empty folder, unreadable image (with on_error='fail'), bad pairing."""


class ImageError(ValueError):
    """An input image that cannot be used: unreadable, too large, animated, or of a mode the model does not take."""


# The most pixels (width * height) an image file may declare before it is decoded: Pillow's own default limit
# (PIL.Image.MAX_IMAGE_PIXELS = 1024**3 // 4 // 3, an RGB image of 256 MiB), applied as an error rather than
# Pillow's warning, so a decompression bomb (a small file declaring a huge image) is refused before any memory is
# taken. Pass max_pixels (the commands' --max-pixels) to read larger images, None for no limit.
MAX_IMAGE_PIXELS = 89_478_485
_PILLOW_LIMIT = threading.Lock()  # PIL.Image.MAX_IMAGE_PIXELS is process-global: open_image changes it under this


@contextlib.contextmanager
def open_image(path: str | os.PathLike, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Iterator:
    """PIL.Image.open(path) of a still image of at most max_pixels pixels, closed on exit (pixels not yet decoded).

    Raises FileNotFoundError for a missing path, and ImageError naming the file for a folder, a file this process
    may not read, a file Pillow cannot identify, an image declaring more than max_pixels pixels, and an animated
    GIF, PNG or WebP (refused, not reduced to its first frame: save the frame you want as a still image)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image file")
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels or None, got {max_pixels}")
    try:
        with _PILLOW_LIMIT, warnings.catch_warnings():
            # Only our limit applies: Pillow's would warn above its limit and refuse above twice it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except PermissionError:
        raise ImageError(f"cannot read image {path}: permission denied (this user may not read it)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read image {path}: {e}") from None
    with im:
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageError(f"{path} declares {w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,} "
                             "(a guard against decompression bombs); if the file is genuine, raise the limit "
                             "(--max-pixels, or max_pixels=)")
        if im.format in ("GIF", "PNG", "WEBP") and getattr(im, "is_animated", False):
            raise ImageError(f"{path} is an animated {im.format} of {im.n_frames} frames; only still images are "
                             "taken (the first frame is not used silently): save the frame you want as a still image")
        yield im


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """The image files under `folder` (and its subfolders when `recursive`), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files
