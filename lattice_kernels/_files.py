"""File writing shared by the package: checkpoints, training state and images are written atomically."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """write(tmp) into a temporary file beside `path`, then rename it to `path`: an interrupted run never leaves a
    half-written file under the final name (the rename is atomic within one file system)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
