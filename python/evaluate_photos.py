"""PSNR/SSIM (Y channel, border shaved by the scale, uint8 outputs) of the published LatticeNet x2/x3/x4 against
bicubic upscaling on scikit-image photographs, each cropped to a multiple of the scale and downscaled with PIL's
bicubic. Prints a Markdown table (the README's).

    python python/evaluate_photos.py [--weights ../shared/weights] [--photos astronaut chelsea ...]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import lattice_kernels as lk
from lattice_kernels import inference
from lattice_kernels.train.metrics import psnr_y, ssim_y
from lattice_kernels.train.photos import PHOTOS, photo


def bicubic(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = os.environ.get("LATTICE_WEIGHTS_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "weights"))
    p.add_argument("--weights", type=Path, default=Path(default))
    p.add_argument("--photos", nargs="+", default=list(PHOTOS))
    p.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--tile", type=int, default=None)
    a = p.parse_args(argv)
    torch.set_grad_enabled(False)
    rows = []
    for s in a.scales:
        net = lk.LatticeNet.from_checkpoint(a.weights / f"LatticeNet_x{s}.pt").eval()
        for name in a.photos:
            hr = photo(name)
            h, w = (hr.shape[0] // s) * s, (hr.shape[1] // s) * s
            hr = hr[:h, :w]
            lr = bicubic(hr, (w // s, h // s))
            sr = inference.super_resolve(net, lr, tile=a.tile)
            bic = bicubic(lr, (w, h))
            rows.append((s, name, f"{w}x{h}", psnr_y(bic, hr, s), ssim_y(bic, hr, s), psnr_y(sr, hr, s),
                         ssim_y(sr, hr, s)))
            print(f"x{s} {name}: bicubic {rows[-1][3]:.2f} dB, LatticeNet {rows[-1][5]:.2f} dB", flush=True)
    print()
    print("| scale | photo | HR size | bicubic PSNR / SSIM | LatticeNet PSNR / SSIM |")
    print("|---|---|---|---|---|")
    for s, name, size, bp, bs, lp, ls in rows:
        print(f"| x{s} | {name} | {size} | {bp:.2f} / {bs:.4f} | {lp:.2f} / {ls:.4f} |")
    for s in a.scales:
        sel = [r for r in rows if r[0] == s]
        print(f"| x{s} | **mean** | | {np.mean([r[3] for r in sel]):.2f} / {np.mean([r[4] for r in sel]):.4f} | "
              f"{np.mean([r[5] for r in sel]):.2f} / {np.mean([r[6] for r in sel]):.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
