"""Evaluate a checkpoint on benchmark folders with the SR papers' protocol (or the denoising benchmarks' one) and
print a table per dataset (PSNR / SSIM per image and the mean), optionally written as Markdown and JSON.

examples:
  lattice-evaluate --checkpoint LatticeNet_x4.pt --hr-dir Set5/HR --hr-dir Set14/HR
  lattice-evaluate --checkpoint LatticeNet_x4.pt --hr-dir Set5/HR --lr-dir Set5/LR_bicubic/X4
  lattice-evaluate --task denoise --sigma 25 --checkpoint restorer.safetensors --hr-dir CBSD68

Super-resolution: HR cropped to a multiple of the scale, LR = MATLAB-bicubic downscale (or --lr-dir), output
rounded to uint8, PSNR/SSIM on the BT.601 Y channel with `scale` pixels shaved (see lattice_kernels.evaluation).
Denoising: Gaussian noise of --sigma on the 0..255 scale (seeded, not clipped unless --clip-noisy), PSNR/SSIM on
the full image.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .. import BACKENDS, LatticeNet, LatticeRestorer
from ..evaluation import TASKS, DatasetScores, evaluate_folder, markdown, model_label
from . import HelpFormatter, command
from .images import DTYPE_AUTO_HELP, DTYPE_CHOICES, dtype_option


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lattice-evaluate", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="LatticeNet .pt (published) or .safetensors; a LatticeRestorer .safetensors for --task denoise")
    p.add_argument("--hr-dir", required=True, action="append", type=Path, metavar="DIR",
                   help="folder of HR (or clean) images, one dataset; repeat for several")
    p.add_argument("--lr-dir", action="append", type=Path, metavar="DIR",
                   help="folder of pre-made LR images for the --hr-dir of the same position (name, namex4 or "
                        "name_x4); default: MATLAB-bicubic downscaling of the HR image")
    p.add_argument("--task", choices=TASKS, default="sr")
    p.add_argument("--sigma", type=float, default=25.0, help="denoising: noise sigma on the 0..255 scale")
    p.add_argument("--seed", type=int, default=0, help="denoising: seed of the noise")
    p.add_argument("--clip-noisy", action="store_true", help="denoising: clip the noisy input to [0, 255]")
    p.add_argument("--tile", type=int, default=512,
                   help="tile size in input pixels for big images (exact: whole-image statistics); 0: no tiling")
    p.add_argument("--stats", choices=["global", "tile"], default="global")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                   help="float32 (default): the reference precision of published scores; "
                        f"{DTYPE_AUTO_HELP}, as lattice-upscale runs")
    p.add_argument("--self-ensemble", action="store_true",
                   help="x8 geometric self-ensemble: the papers' '+' rows (LatticeNet+), 8x the time")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backend", default=None, choices=BACKENDS)
    p.add_argument("--markdown", type=Path, default=None, help="write the tables to this .md file")
    p.add_argument("--json", type=Path, default=None, help="write the scores to this .json file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    lr_dirs = args.lr_dir or []
    if lr_dirs and len(lr_dirs) != len(args.hr_dir):
        raise ValueError(f"give one --lr-dir per --hr-dir ({len(args.hr_dir)} --hr-dir, {len(lr_dirs)} --lr-dir)")
    if args.tile < 0:
        raise ValueError(f"--tile must be >= 0, got {args.tile}")
    for d in [*args.hr_dir, *lr_dirs]:
        if not d.is_dir():
            raise FileNotFoundError(f"image folder not found: {d}")
    cls = LatticeNet if args.task == "sr" else LatticeRestorer
    model = cls.from_checkpoint(args.checkpoint, map_location=args.device, backend=args.backend).eval()
    kwargs = {"tile": args.tile or None, "stats": args.stats, "dtype": dtype_option(args.dtype),
              "self_ensemble": args.self_ensemble}
    results: list[DatasetScores] = []
    for i, hr_dir in enumerate(args.hr_dir):
        results.append(evaluate_folder(model, hr_dir, task=args.task, lr_dir=lr_dirs[i] if lr_dirs else None,
                                       sigma=args.sigma, seed=args.seed, clip_noisy=args.clip_noisy,
                                       progress=not args.quiet, **kwargs))
    label = model_label(args.task, args.self_ensemble)
    table = markdown(results, label)
    sys.stdout.write(table + "\n")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        report = {"checkpoint": str(args.checkpoint), "task": args.task, "model": label,
                  "protocol": _protocol(args), "datasets": [r.to_dict() for r in results]}
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _protocol(args: argparse.Namespace) -> str:
    if args.task == "sr":
        return ("HR cropped to a multiple of the scale; LR = " + ("given (--lr-dir)" if args.lr_dir else
                "MATLAB-bicubic downscale of the uint8 HR") + "; output rounded to uint8; PSNR/SSIM on BT.601 Y, "
                "scale pixels shaved; SSIM 11x11 Gaussian (sigma 1.5), valid region")
    return (f"clean + N(0, {args.sigma:g}^2) on 0..255, seed {args.seed}, noisy input "
            + ("clipped" if args.clip_noisy else "not clipped") + "; output rounded to uint8; PSNR/SSIM on the full "
            "image, all channels")


main = command("lattice-evaluate", build_parser, run)


if __name__ == "__main__":
    raise SystemExit(main())
