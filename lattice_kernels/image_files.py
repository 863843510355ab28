"""Finding image files in folders: shared by training, evaluation and the commands."""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A dataset that cannot be used: empty folder, unreadable image (with on_error='fail'), bad pairing."""


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
