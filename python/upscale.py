"""Super-resolve image files with a LatticeNet checkpoint.

    python python/upscale.py --checkpoint ../shared/weights/LatticeNet_x4.pt in.png [more.jpg ...] --out-dir sr/
    python python/upscale.py --checkpoint x4.safetensors photo.jpg --tile 256 --dtype bfloat16 --channels-last
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import lattice_kernels as lk
from lattice_kernels import inference


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path, help="PNG/JPEG inputs (RGB or grayscale)")
    p.add_argument("--checkpoint", required=True, type=Path, help="LatticeNet .pt (published) or .safetensors")
    p.add_argument("--out-dir", type=Path, default=Path("."), help="where <name>_x<scale>.png files go")
    p.add_argument("--tile", type=int, default=None, help="tile size in input pixels (bounded memory)")
    p.add_argument("--overlap", type=int, default=16, help="blended margin for --stats tile")
    p.add_argument("--stats", choices=["global", "tile"], default="global",
                   help="global: exact whole-image result (several passes); tile: one pass, approximate")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backend", default=None, choices=lk.BACKENDS)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    net = lk.LatticeNet.from_checkpoint(a.checkpoint, map_location=a.device, backend=a.backend).eval()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    for src in a.images:
        dst = a.out_dir / f"{src.stem}_x{net.scale}.png"
        inference.super_resolve_file(net, src, dst, tile=a.tile, overlap=a.overlap, stats=a.stats,
                                     dtype=getattr(torch, a.dtype), channels_last=a.channels_last,
                                     progress=not a.quiet)
        print(f"{src} -> {dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
