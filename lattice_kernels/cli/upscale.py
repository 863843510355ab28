"""lattice-upscale: super-resolve image files with LatticeNet (x2, x3, x4)."""

from __future__ import annotations

import argparse
from pathlib import Path

import lattice_kernels as lk

from .. import inference
from . import HelpFormatter, command
from .images import add_image_options, check_device, collect_inputs, exit_status, plan_jobs, process, run_options

DESCRIPTION = """\
Upscale images 2x, 3x or 4x with LatticeNet: the authors' published weights by scale (found in
$LATTICE_WEIGHTS_DIR or ~/.cache/lattice_kernels; nothing is downloaded) or a checkpoint file.

examples:
  lattice-upscale --scale 4 photo.jpg                        # writes ./photo_x4.png
  lattice-upscale --scale 2 photos/ -o big/ --format jpg --quality 92 --skip-existing
  find shots -name '*.png' | lattice-upscale --checkpoint LatticeNet_x3.pt - -o sr/ --tile 256

RGB, gray, palette, RGBA/LA (alpha upscaled apart, see --alpha), 16-bit PNG (kept 16-bit), EXIF-rotated and
ICC-tagged images are handled; outputs keep the mode, depth and ICC profile of their input. Refused with an
error: CMYK and other modes, animated GIF/PNG/WebP (no frame is picked for you), images under 2 pixels, and
files declaring more pixels than --max-pixels.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lattice-upscale", description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("-s", "--scale", type=int, choices=[2, 3, 4], default=None,
                   help="use the published LatticeNet_x<scale> weights (with --checkpoint: the scale it must have)")
    p.add_argument("-c", "--checkpoint", type=Path, default=None,
                   help="LatticeNet weights file (.pt as published, or .safetensors); the scale is read from it")
    p.add_argument("--alpha", choices=inference.ALPHA_METHODS, default="bicubic",
                   help="how an alpha channel is upscaled: bicubic interpolation, or the model on a gray copy")
    add_image_options(p, suffix="_x{scale}")
    return p


def load_model(args: argparse.Namespace) -> lk.LatticeNet:
    """The LatticeNet of --checkpoint or --scale (both: the file must hold that scale)."""
    if args.checkpoint is None and args.scale is None:
        raise ValueError("say which weights to use: --scale 2|3|4 (the published ones) or --checkpoint PATH")
    device = check_device(args.device)
    if args.checkpoint is None:
        return lk.LatticeNet.from_pretrained(args.scale, map_location=device, backend=args.backend).eval()
    net = lk.LatticeNet.from_checkpoint(args.checkpoint, map_location=device, backend=args.backend).eval()
    if args.scale is not None and net.scale != args.scale:
        raise ValueError(f"{args.checkpoint} holds x{net.scale} weights, but --scale {args.scale} was asked")
    return net


def run(args: argparse.Namespace) -> int:
    inputs = collect_inputs(args.inputs, args.glob, exclude=args.out_dir)
    net = load_model(args)
    suffix = args.suffix.replace("{scale}", str(net.scale))
    jobs = plan_jobs(inputs, args.out_dir, suffix, args.format)
    opts = run_options(args)

    def work(src: Path, dst: Path, on_tile) -> inference.LoadedImage:
        return inference.super_resolve_file(net, src, dst, alpha=args.alpha, format=args.format,
                                            quality=args.quality, on_tile=on_tile, **opts)

    summary = process("lattice-upscale", jobs, work, net.scale, skip_existing=args.skip_existing, quiet=args.quiet,
                      fail_fast=args.fail_fast)
    return exit_status(summary)


main = command("lattice-upscale", build_parser, run)

if __name__ == "__main__":
    raise SystemExit(main())
