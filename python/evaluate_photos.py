"""The published LatticeNet x2/x3/x4, plain and with the x8 self-ensemble (LatticeNet+), against bicubic on
scikit-image's photographs, with the SR papers' protocol (lattice_kernels.evaluation: HR cropped to a multiple of
the scale, LR by MATLAB-bicubic imresize, uint8 outputs, PSNR/SSIM on Y with the scale shaved, in float32). Prints the
Markdown table of docs/evaluation.md and writes it with a JSON record.

    python python/evaluate_photos.py [--weights DIR] [--photos astronaut chelsea ...] \\
        [--out bench/results/photos-psnr-ssim]     (writes .md and .json)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import lattice_kernels as lk
from lattice_kernels.evaluation import evaluate_images
from lattice_kernels.train.photos import PHOTOS, photo


def table(record: dict) -> str:
    """The photo table of docs/evaluation.md from the JSON record: one row per (scale, photo), then the means per
    scale; the LatticeNet+ column is the x8 self-ensemble of the same images."""
    rows = ["| scale | photo | HR size | bicubic PSNR / SSIM | LatticeNet PSNR / SSIM | LatticeNet+ PSNR / SSIM |",
            "|---|---|---|---|---|---|"]
    pairs = list(zip(record["datasets"], record["datasets_self_ensemble"], strict=True))
    for r, e in pairs:
        rows += [f"| x{r['scale']} | {im['name']} | {im['width']}x{im['height']} | {im['baseline_psnr']:.2f} / "
                 f"{im['baseline_ssim']:.4f} | {im['psnr']:.2f} / {im['ssim']:.4f} | {ie['psnr']:.2f} / "
                 f"{ie['ssim']:.4f} |" for im, ie in zip(r["images"], e["images"], strict=True)]
    for r, e in pairs:
        m, me = r["mean"], e["mean"]
        rows.append(f"| x{r['scale']} | **mean** | | {m['baseline_psnr']:.2f} / {m['baseline_ssim']:.4f} | "
                    f"{m['psnr']:.2f} / {m['ssim']:.4f} | {me['psnr']:.2f} / {me['ssim']:.4f} |")
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
    plain, ensemble = [], []
    images = {n: photo(n) for n in a.photos}
    for s in a.scales:
        net = (lk.LatticeNet.from_pretrained(s) if a.weights is None
               else lk.LatticeNet.from_checkpoint(a.weights / f"LatticeNet_x{s}.pt")).eval()
        plain.append(evaluate_images(net, images, "scikit-image photos", tile=a.tile, progress=True))
        ensemble.append(evaluate_images(net, images, "scikit-image photos (LatticeNet+)", tile=a.tile,
                                        progress=True, self_ensemble=True))
    record = {"protocol": "HR cropped to a multiple of the scale; LR = MATLAB-bicubic imresize of the uint8 HR; "
                          "output rounded to uint8; PSNR/SSIM on BT.601 Y, scale pixels shaved",
              "self_ensemble": "x8 flips and rotations, outputs averaged in float32 before rounding (LatticeNet+)",
              "datasets": [r.to_dict() for r in plain],
              "datasets_self_ensemble": [r.to_dict() for r in ensemble]}
    md = table(record)
    print(md)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".md").write_text(md)
        a.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
