"""lattice-denoise: restore (denoise, derain) image files with a LatticeRestorer checkpoint."""

from __future__ import annotations

import argparse
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
    process,
    run_options,
)

DESCRIPTION = """\
Denoise (or derain) images with a LatticeRestorer checkpoint, e.g. the model.safetensors that lattice-train
--task denoise writes.

examples:
  lattice-denoise --checkpoint runs/dn/model.safetensors noisy.png      # writes ./noisy_restored.png
  lattice-denoise -c model.safetensors scans/ -o clean/ --glob '*.tif' --tile 512
  lattice-denoise -c model.safetensors clip.mkv -o clean/ --video-codec ffv1   # a video, losslessly encoded

RGB, gray, palette, RGBA/LA (the alpha channel is kept as it is), 16-bit PNG/TIFF (kept 16-bit), EXIF-rotated and
ICC-tagged images are handled. A color model takes gray images as RGB; a gray model takes color images channel
by channel. Refused with an error: CMYK and other modes, animated GIF/PNG/WebP (no frame is picked for you),
images under 2 pixels, and files declaring more pixels than --max-pixels.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lattice-denoise", description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("-c", "--checkpoint", type=Path, required=True,
                   help="LatticeRestorer weights (.safetensors or .pt)")
    add_image_options(p, suffix="_restored")
    return p


def run(args: argparse.Namespace) -> int:
    inputs = collect_inputs(args.inputs, args.glob, exclude=args.out_dir)
    net = lk.LatticeRestorer.from_checkpoint(args.checkpoint, map_location=check_device(args.device),
                                             backend=args.backend).eval()
    jobs = plan_jobs(inputs, args.out_dir, args.suffix, args.format)
    opts = run_options(args)
    device = next(net.parameters()).device

    def work(src: Path, dst: Path, on_progress) -> inference.LoadedImage | video_files.VideoResult:
        if video_files.is_video(src):
            return video_files.restore_video(net, src, dst, codec=args.video_codec, crf=args.crf, on_frame=on_progress,
                                             max_memory=memory_left(args, device), **frame_options(opts))
        return inference.restore_file(net, src, dst, format=args.format, quality=args.quality, on_tile=on_progress,
                                      max_memory=memory_left(args, device), **opts)

    summary = process("lattice-denoise", jobs, work, 1, skip_existing=args.skip_existing, quiet=args.quiet,
                      fail_fast=args.fail_fast, video_codec=args.video_codec)
    return exit_status(summary)


main = command("lattice-denoise", build_parser, run)

if __name__ == "__main__":
    raise SystemExit(main())
