"""Restore (denoise / derain) image files with a LatticeRestorer checkpoint (.safetensors from python/train.py).

    python python/denoise.py --checkpoint runs/denoise/model.safetensors noisy.png --out-dir clean/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import lattice_kernels as lk
from lattice_kernels import inference


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--out-dir", type=Path, default=Path("."))
    p.add_argument("--tile", type=int, default=None)
    p.add_argument("--stats", choices=["global", "tile"], default="global")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backend", default=None, choices=lk.BACKENDS)
    a = p.parse_args(argv)
    net = lk.LatticeRestorer.from_checkpoint(a.checkpoint, map_location=a.device, backend=a.backend).eval()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    for src in a.images:
        dst = a.out_dir / f"{src.stem}_restored.png"
        inference.restore_file(net, src, dst, tile=a.tile, stats=a.stats, dtype=getattr(torch, a.dtype),
                               channels_last=a.channels_last)
        print(f"{src} -> {dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
