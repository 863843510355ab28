"""Finding the published weights on disk by name. Nothing is downloaded: the files are looked up in
$LATTICE_WEIGHTS_DIR (one folder, or several separated by os.pathsep) and then in the user cache folder
($XDG_CACHE_HOME/lattice_kernels, default ~/.cache/lattice_kernels)."""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS_ENV = "LATTICE_WEIGHTS_DIR"
# Where the LatticeNet authors publish LatticeNet_x2.pt, LatticeNet_x3.pt and LatticeNet_x4.pt (folder premodel/).
AUTHORS_REPOSITORY = "https://github.com/ymff0592/super-resolution"


class WeightsNotFoundError(FileNotFoundError):
    """Published weights that are not in any of the folders searched; the message says where to get them."""


def cache_dir() -> Path:
    """The user cache folder of the library: $XDG_CACHE_HOME/lattice_kernels, default ~/.cache/lattice_kernels."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lattice_kernels"


def weights_dirs() -> list[Path]:
    """The folders searched for published weights, in order: $LATTICE_WEIGHTS_DIR's entries, then cache_dir()."""
    env = os.environ.get(WEIGHTS_ENV, "")
    return [Path(d).expanduser() for d in env.split(os.pathsep) if d] + [cache_dir()]


def find_weights(stem: str, published_at: str = AUTHORS_REPOSITORY) -> Path:
    """The first `stem`.pt or `stem`.safetensors in weights_dirs(); WeightsNotFoundError naming the folders searched
    and where the files are published when there is none."""
    names = [f"{stem}.pt", f"{stem}.safetensors"]
    dirs = weights_dirs()
    for d in dirs:
        for name in names:
            if (d / name).is_file():
                return d / name
    env = "" if os.environ.get(WEIGHTS_ENV) else f" (${WEIGHTS_ENV} is not set)"
    raise WeightsNotFoundError(
        f"{names[0]} not found in {', '.join(str(d) for d in dirs)}{env}. The authors publish it at {published_at} "
        f"(folder premodel/); download it yourself and put it in {dirs[-1]} or in a folder named by "
        f"${WEIGHTS_ENV}, or pass the file's path (--checkpoint PATH on the command line)")
