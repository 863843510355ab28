"""lattice-upscale: super-resolve image files with LatticeNet (x2, x3, x4)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import lattice_kernels as lk

from .. import inference, video_files
from . import HelpFormatter, command
from .images import (
    add_image_options,
    check_device,
    collect_inputs,
    exit_status,
    frame_options,
    memory_left,
    plan_jobs,
    positive_int,
    process,
    run_options,
)

DESCRIPTION = """\
Upscale images 2x, 3x or 4x with LatticeNet: the authors' published weights by scale (found in
$LATTICE_WEIGHTS_DIR or ~/.cache/lattice_kernels; nothing is downloaded) or a checkpoint file.

examples:
  lattice-upscale --scale 4 photo.jpg                        # writes ./photo_x4.png
  lattice-upscale --scale 2 photos/ -o big/ --format jpg --quality 92 --skip-existing
  find shots -name '*.png' | lattice-upscale --checkpoint LatticeNet_x3.pt - -o sr/ --tile 256
  lattice-upscale --scale 4 photo.jpg --outscale 3.5             # x4 network, then resized to 3.5x
  lattice-upscale --scale 2 photos/ -o hd/ --width 1920          # every output 1920 wide, aspect kept
  lattice-upscale --scale 4 big.png --max-memory 2GiB             # the largest tile that fits in 2 GiB
  lattice-upscale --scale 2 clip.mp4 -o out/                     # every frame; audio and subtitles copied

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
    size = p.add_argument_group("output size (default: the network's scale; otherwise the network's output is "
                                "resized to it with MATLAB-bicubic imresize, as Real-ESRGAN's --outscale)")
    size.add_argument("--outscale", type=positive_float, default=None,
                      help="output size = input size x this factor (any float, e.g. 1.5 or 6); {scale} in --suffix "
                           "becomes it")
    size.add_argument("--size", type=pixel_size, default=None, metavar="WxH", help="output width x height, exactly")
    size.add_argument("--width", type=positive_int, default=None, help="output width; the aspect ratio is kept")
    size.add_argument("--height", type=positive_int, default=None, help="output height; the aspect ratio is kept")
    return p


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive factor, got {text}")
    return v


def pixel_size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080): width x height."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT in pixels, e.g. 1920x1080, got {text!r}")
    return int(parts[0]), int(parts[1])


def output_size(args: argparse.Namespace) -> inference.OutputSize | None:
    """The OutputSize chosen on the command line, or None for the network's own scale."""
    given = [name for name in ("outscale", "size", "width", "height") if getattr(args, name) is not None]
    if len(given) > 1 and ("outscale" in given or "size" in given):
        raise ValueError(f"--{given[0]} and --{given[1]} both set the output size: give --outscale, --size, or "
                         f"--width and/or --height")
    if args.size is not None:
        return inference.OutputSize(width=args.size[0], height=args.size[1])
    if given:
        return inference.OutputSize(outscale=args.outscale, width=args.width, height=args.height)
    return None


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
    size = output_size(args)
    suffix = args.suffix.replace("{scale}", f"{args.outscale:g}" if args.outscale is not None else str(net.scale))
    jobs = plan_jobs(inputs, args.out_dir, suffix, args.format)
    opts = run_options(args)
    device = next(net.parameters()).device

    def work(src: Path, dst: Path, on_progress) -> inference.LoadedImage | video_files.VideoResult:
        if video_files.is_video(src):
            return video_files.super_resolve_video(net, src, dst, codec=args.video_codec, crf=args.crf,
                                                   on_frame=on_progress, output_size=size,
                                                   max_memory=memory_left(args, device), **frame_options(opts))
        return inference.super_resolve_file(net, src, dst, alpha=args.alpha, format=args.format,
                                            quality=args.quality, output_size=size, on_tile=on_progress,
                                            max_memory=memory_left(args, device), **opts)

    summary = process("lattice-upscale", jobs, work, net.scale, skip_existing=args.skip_existing, quiet=args.quiet,
                      fail_fast=args.fail_fast, video_codec=args.video_codec, output_size=size)
    return exit_status(summary)


main = command("lattice-upscale", build_parser, run)

if __name__ == "__main__":
    raise SystemExit(main())
