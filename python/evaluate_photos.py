"""The published LatticeNet x2/x3/x4 against bicubic on scikit-image's photographs, with the SR papers' protocol
(lattice_kernels.evaluation: HR cropped to a multiple of the scale, LR by MATLAB-bicubic imresize, uint8 outputs,
PSNR/SSIM on Y with the scale shaved). Prints the README's Markdown table and writes it with a JSON record.

    python python/evaluate_photos.py [--weights DIR] [--photos astronaut chelsea ...] \\
        [--out bench/results/photos-psnr-ssim]     (writes .md and .json)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import lattice_kernels as lk
from lattice_kernels.evaluation import DatasetScores, evaluate_images
from lattice_kernels.train.photos import PHOTOS, photo


def table(results: list[DatasetScores]) -> str:
    rows = ["| scale | photo | HR size | bicubic PSNR / SSIM | LatticeNet PSNR / SSIM |", "|---|---|---|---|---|"]
    for r in results:
        rows += [f"| x{r.scale} | {im.name} | {im.width}x{im.height} | {im.baseline_psnr:.2f} / {im.baseline_ssim:.4f} "
                 f"| {im.psnr:.2f} / {im.ssim:.4f} |" for im in r.images]
    rows += [f"| x{r.scale} | **mean** | | {r.mean('baseline_psnr'):.2f} / {r.mean('baseline_ssim'):.4f} | "
             f"{r.mean('psnr'):.2f} / {r.mean('ssim'):.4f} |" for r in results]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=None,
                   help="folder with the published LatticeNet_x{2,3,4}.pt (default: LatticeNet.from_pretrained's "
                        "search: $LATTICE_WEIGHTS_DIR, then the user cache folder)")
    p.add_argument("--photos", nargs="+", default=list(PHOTOS))
    p.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--tile", type=int, default=None, help="tile size in LR pixels (exact, whole-image statistics)")
    p.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    a = p.parse_args(argv)
    torch.set_grad_enabled(False)
    results = []
    for s in a.scales:
        net = (lk.LatticeNet.from_pretrained(s) if a.weights is None
               else lk.LatticeNet.from_checkpoint(a.weights / f"LatticeNet_x{s}.pt")).eval()
        results.append(evaluate_images(net, {n: photo(n) for n in a.photos}, "scikit-image photos", tile=a.tile,
                                       progress=True))
    md = table(results)
    print(md)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".md").write_text(md)
        a.out.with_suffix(".json").write_text(json.dumps(
            {"protocol": "HR cropped to a multiple of the scale; LR = MATLAB-bicubic imresize of the uint8 HR; "
                         "output rounded to uint8; PSNR/SSIM on BT.601 Y, scale pixels shaved",
             "datasets": [r.to_dict() for r in results]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
