"""What lattice-upscale and lattice-denoise share: the image options, the inputs (files, folders searched
recursively, `-` for a list of paths on stdin), the output names (never an input), and the loop over the files with
one progress bar, a summary line, and the files that could not be used listed at the end."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from .. import BACKENDS
from ..image_files import IMAGE_SUFFIXES, ImageError
from ..inference import MAX_IMAGE_PIXELS, LoadedImage, OutputSize, resident_bytes
from ..video_files import (
    DEFAULT_CRF,
    VIDEO_SUFFIXES,
    VideoResult,
    check_encoder,
    default_codec,
    ffmpeg_exe,
    is_video,
)
from . import one_line

ProgressCallback = Callable[[int, int | None], None]  # (tiles or frames done, total)


def positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def jpeg_quality(text: str) -> int:
    v = int(text)
    if not 1 <= v <= 100:
        raise argparse.ArgumentTypeError(f"must be in 1..100, got {text}")
    return v


_UNITS = {"": 1, "b": 1, "k": 10 ** 3, "kb": 10 ** 3, "m": 10 ** 6, "mb": 10 ** 6, "g": 10 ** 9, "gb": 10 ** 9,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "t": 10 ** 12, "tb": 10 ** 12, "tib": 2 ** 40}


def crf_value(text: str) -> int:
    v = int(text)
    if not 0 <= v <= 63:
        raise argparse.ArgumentTypeError(f"must be in 0..63, got {text}")
    return v


def byte_size(text: str) -> int:
    """'2GiB' -> 2147483648: a number and an optional unit (B, kB, MB, GB, TB powers of 1000; KiB, MiB, GiB, TiB
    powers of 1024)."""
    t = text.strip().lower()
    number = t.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
    unit = t[len(t.rstrip("abcdefghijklmnopqrstuvwxyz")):]
    try:
        v = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"must be a size such as 2GiB, 1.5GB or 800MiB, got {text!r}") from None
    if not v >= 1:
        raise argparse.ArgumentTypeError(f"must be a positive size, got {text!r}")
    return int(v)


def add_image_options(p: argparse.ArgumentParser, suffix: str) -> None:
    """The inputs, outputs and inference options of an image command; `suffix` is the default output suffix."""
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (searched recursively) or - (a list of paths on stdin, one per line)")
    p.add_argument("-o", "--out-dir", type=Path, default=Path("."),
                   help="output folder; a folder's images keep their sub-folders under it")
    p.add_argument("--suffix", default=suffix, help="added to each output's name (default: %(default)s)")
    p.add_argument("--format", choices=["png", "jpg"], default="png",
                   help="output format: png keeps 16-bit depth and alpha; jpg is 8-bit and has no alpha")
    p.add_argument("--quality", type=jpeg_quality, default=95, help="JPEG quality, 1..100")
    p.add_argument("--glob", default=None,
                   help=f"pattern of the files taken from folders, e.g. '*.png' (default: {' '.join(IMAGE_SUFFIXES)})")
    p.add_argument("--skip-existing", action="store_true", help="skip inputs whose output file exists")
    p.add_argument("--fail-fast", action="store_true",
                   help="stop at the first file that cannot be used (default: report it, go on with the others, "
                        "list the failed files at the end and exit with status 1)")
    p.add_argument("--max-pixels", type=positive_int, default=MAX_IMAGE_PIXELS,
                   help="refuse input files declaring more pixels (width*height) than this: a guard against "
                        "decompression bombs (default: Pillow's limit)")
    p.add_argument("--tile", type=positive_int, default=None,
                   help="process in tiles of this many input pixels (bounded memory; same result with --stats global)")
    p.add_argument("--max-memory", type=byte_size, default=None, metavar="SIZE",
                   help="the most memory the command may hold, e.g. 2GiB or 800MB (its peak RSS on the CPU; the "
                        "allocated device memory on CUDA; not ffmpeg's own processes for a video): picks the "
                        "largest tile that fits, exact statistics")
    p.add_argument("--overlap", type=int, default=16, help="blended margin of the tiles with --stats tile")
    p.add_argument("--stats", choices=["global", "tile"], default="global",
                   help="global: the exact whole-image result (several passes); tile: one pass, approximate")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                   help=f"compute precision (bfloat16/float16 via autocast); {DTYPE_AUTO_HELP}")
    p.add_argument("--channels-last", action="store_true", help="run the model in channels_last memory format")
    p.add_argument("--no-cuda-graphs", action="store_true",
                   help="on CUDA, run every forward eagerly instead of replaying a CUDA graph captured per input "
                        "shape (the default for untiled images and --stats tile)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="x8 geometric self-ensemble (the papers' '+' rows): the mean of the outputs over the 8 flips "
                        "and rotations, 8x the time")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--backend", choices=BACKENDS, default=None, help="op backend (default: auto)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-file lines")
    video = p.add_argument_group(f"video files ({', '.join(VIDEO_SUFFIXES)}, given by name; needs the video extra: "
                                 f"pip install 'lattice_kernels[video]')",
                                 "each frame is processed as an image; the output keeps the input's container and "
                                 "frame rate, and copies its audio and subtitle streams")
    video.add_argument("--video-codec", default=None, metavar="ENCODER",
                       help="the ffmpeg encoder of the output (default: libx264, libvpx-vp9 for .webm; lossless: "
                            "ffv1 in .mkv/.avi)")
    video.add_argument("--crf", type=crf_value, default=DEFAULT_CRF,
                       help="the encoder's quality, lower is better: x264/x265 0..51, VP9/AV1 0..63 (0 with "
                            "libx264rgb: lossless; lossless codecs such as ffv1 ignore it)")


def check_device(name: str) -> torch.device:
    """torch.device(name), refusing a CUDA device that this torch cannot use (instead of failing mid-run)."""
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available to this torch ({torch.__version__}); "
                         f"use --device cpu")
    return dev


def memory_left(args: argparse.Namespace, device: torch.device) -> int | None:
    """The max_memory of the next file's call under --max-memory: on the CPU the budget less what the process holds
    now (ValueError when nothing is left); on CUDA the budget less the device memory allocated now."""
    if args.max_memory is None:
        return None
    held = torch.cuda.memory_allocated(device) if device.type == "cuda" else resident_bytes()
    if held >= args.max_memory:
        where = "on the device" if device.type == "cuda" else "in this process (the model, torch and the libraries)"
        raise ValueError(f"--max-memory {args.max_memory / 2**20:.0f} MiB: {held / 2**20:.0f} MiB is already held "
                         f"{where}; allow more memory")
    return args.max_memory - held


DTYPE_CHOICES = ["auto", "float32", "bfloat16", "float16"]
DTYPE_AUTO_HELP = ("auto: bfloat16 for LatticeNet on a CPU with bf16 arithmetic (within 0.0012 dB of float32 on the "
                   "published weights), else float32 (inference.default_dtype)")


def dtype_option(name: str) -> torch.dtype | None:
    """--dtype as inference.run's dtype: None for auto (inference.default_dtype)."""
    return None if name == "auto" else getattr(torch, name)


def run_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of inference.super_resolve_file / restore_file chosen on the command line: those of
    inference.run() and max_pixels (max_memory is per file: memory_left)."""
    if args.max_memory is not None and args.tile is not None:
        raise ValueError("--max-memory picks the tile: give --max-memory or --tile, not both")
    if args.max_memory is not None and args.stats != "global":
        raise ValueError("--max-memory tiles with exact statistics: it needs --stats global")
    return {"tile": args.tile, "overlap": args.overlap, "stats": args.stats, "dtype": dtype_option(args.dtype),
            "channels_last": args.channels_last, "self_ensemble": args.self_ensemble, "max_pixels": args.max_pixels,
            "cuda_graphs": not args.no_cuda_graphs}


def frame_options(opts: dict) -> dict:
    """run_options() for the frames of a video (max_pixels is a guard of image files)."""
    return {k: v for k, v in opts.items() if k != "max_pixels"}


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


def _in_folder(folder: Path, pattern: str | None, exclude: Path | None) -> list[Path]:
    """The images in `folder` and its sub-folders, except those in `exclude` when it lies inside `folder`."""
    top = folder.resolve()
    if exclude is not None and (exclude == top or exclude in top.parents):
        exclude = None
    found = folder.rglob(pattern) if pattern else folder.rglob("*")
    files = []
    for f in found:
        if not f.is_file() or (pattern is None and f.suffix.lower() not in IMAGE_SUFFIXES):
            continue
        if exclude is not None and exclude in f.resolve().parents:
            continue  # the outputs of an earlier run into a folder inside this one
        files.append(f)
    return sorted(files)


def collect_inputs(inputs: Iterable[str], pattern: str | None = None, exclude: Path | None = None,
                   stdin: TextIO | None = None) -> list[tuple[Path, Path]]:
    """(file, its path relative to the folder it was found in, or its name) for each input: a file, the images in
    a folder (recursively; `pattern` filters, else the known image suffixes; nothing under `exclude`), or, for '-',
    the files and folders listed on stdin. Each file once; FileNotFoundError for a path that does not exist,
    ValueError when no image is found."""
    out: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    exclude = exclude.resolve() if exclude is not None else None

    def add(f: Path, rel: Path) -> None:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            out.append((f, rel))

    names: list[str] = []
    for item in inputs:
        if item == "-":
            names += [ln.strip() for ln in (stdin or sys.stdin).read().splitlines() if ln.strip()]
        else:
            names.append(item)
    for name in names:
        path = Path(name)
        if path.is_dir():
            for f in _in_folder(path, pattern, exclude):
                add(f, f.relative_to(path))
        elif path.is_file():
            add(path, Path(path.name))
        else:
            raise FileNotFoundError(f"input not found: {path}")
    if not out:
        what = f"matching {pattern!r}" if pattern else f"({', '.join(IMAGE_SUFFIXES)})"
        raise ValueError(f"no images {what} in {', '.join(names) or 'the list on stdin'}")
    return out


def plan_jobs(inputs: list[tuple[Path, Path]], out_dir: Path, suffix: str, fmt: str) -> list[Job]:
    """One Job per input: out_dir / <relative folder> / <stem><suffix>.<fmt> (a video: <stem><suffix> and its own
    suffix). Refuses (ValueError) an output that
    is one of the inputs, and two inputs that would write the same output."""
    sources = {src.resolve(): src for src, _ in inputs}
    jobs, targets = [], {}
    for src, rel in inputs:
        ext = src.suffix if is_video(src) else f".{fmt}"  # a video keeps its container
        dst = out_dir / rel.parent / f"{rel.stem}{suffix}{ext}"
        key = dst.resolve()
        if key in sources or (dst.exists() and any(os.path.samefile(dst, s) for s in sources.values())):
            raise ValueError(f"the output {dst} would overwrite the input {sources.get(key, dst)}; outputs never "
                             f"replace inputs: choose another --out-dir or --suffix")
        if key in targets:
            raise ValueError(f"{targets[key]} and {src} would both be written to {dst}; process them into "
                             f"different --out-dir folders")
        targets[key] = src
        jobs.append(Job(src, dst))
    return jobs


def process(prog: str, jobs: list[Job], work: Callable[[Path, Path, ProgressCallback], LoadedImage | VideoResult],
            scale: int, skip_existing: bool = False, quiet: bool = False, fail_fast: bool = False,
            output_size: OutputSize | None = None, video_codec: str | None = None) -> dict:
    """work(src, dst, on_progress) for each job, under one progress bar over the files (shown on a terminal unless
    quiet; on_progress(i, n) counts the tiles of an image in its postfix, the frames of a video in a
    FrameProgress), printing `src -> dst` per file unless quiet and a summary line at the end (files, megapixels in
    and out, all frames of a video counted, seconds; out = in x scale^2, or the output_size the files were resized
    to). Returns the summary's numbers, with "failed": the (file, reason) of each file that could not be
    used.

    A file that cannot be used (ImageError: unreadable, truncated, an unsupported mode, too many pixels, ...) is
    reported on stderr as it is met and the run goes on; the failed files are listed after the summary. With
    fail_fast, or when the run has a single file, its error stops the run instead (the command's exit status 2). Any
    other error stops the run (a video encoder that refuses the output, VideoEncoderError, included; the encoder
    `video_codec` of the videos is checked before the first file). Outputs are written to a temporary file and
    renamed, so an interrupted run leaves no partial output and skip_existing resumes it."""
    from tqdm.auto import tqdm

    videos = [job for job in jobs if is_video(job.src)]
    if videos:  # the video extra or the encoder is missing: say so before any file is processed
        ffmpeg_exe()
        for codec in sorted({video_codec or default_codec(job.dst) for job in videos}):
            check_encoder(codec)
    t0 = time.perf_counter()
    done = skipped = 0
    mp_in = mp_out = 0.0
    failed: list[tuple[str, str]] = []
    stop_on_error = fail_fast or len(jobs) == 1
    with tqdm(total=len(jobs), unit="file", desc=prog, disable=True if quiet else None, file=sys.stderr) as bar:
        for job in jobs:
            if skip_existing and job.dst.exists():
                skipped += 1
                bar.update()
                continue
            job.dst.parent.mkdir(parents=True, exist_ok=True)
            bar.set_postfix_str(job.src.name)

            def on_tile(i: int, n: int, name: str = job.src.name) -> None:
                if n > 1:
                    bar.set_postfix_str(f"{name} tile {i}/{n}")

            frames = FrameProgress(prog, job.src.name, bar, quiet) if is_video(job.src) else None
            try:
                img = work(job.src, job.dst, on_tile if frames is None else frames.update)
                if frames is not None:
                    frames.close(finished=True)
            except ImageError as e:
                if stop_on_error:
                    raise
                failed.append((str(job.src), one_line(e)))
                bar.write(f"{prog}: skipped: {one_line(e)}", file=sys.stderr)
                bar.update()
                continue
            finally:
                if frames is not None:
                    frames.close()
            done += 1
            mp_in += img.megapixels
            if isinstance(img, VideoResult):
                mp_out += img.megapixels_out
            elif output_size is None:
                mp_out += img.megapixels * scale * scale
            else:
                h, w = output_size.of(*img.color.shape[:2])
                mp_out += h * w / 1e6
            bar.update()
            if not quiet:
                bar.write(f"{job.src} -> {job.dst}", file=sys.stdout)
    seconds = time.perf_counter() - t0
    summary = {"files": done, "skipped": skipped, "failed": failed, "megapixels_in": mp_in,
               "megapixels_out": mp_out, "seconds": seconds}
    extra = f", {skipped} skipped (output exists)" if skipped else ""
    extra += f", {len(failed)} failed" if failed else ""
    print(f"{prog}: {done} file{'s' if done != 1 else ''}{extra}, {mp_in:.2f} megapixels in, "
          f"{mp_out:.2f} out, {seconds:.1f} s", flush=True)
    if failed:
        lines = [f"{prog}: {len(failed)} file{'s' if len(failed) != 1 else ''} failed (not written):"]
        lines += [f"  {src}: {reason}" for src, reason in failed]
        print("\n".join(lines), file=sys.stderr, flush=True)
    return summary


class FrameProgress:
    """The frames of one video: a second tqdm bar under the files' bar on a terminal; elsewhere (a log), unless
    quiet, a line `prog: name: frame i/n (p%), mm:ss elapsed, ETA mm:ss` at each tenth of the estimated frame count."""

    def __init__(self, prog: str, name: str, files_bar, quiet: bool) -> None:
        from tqdm.auto import tqdm

        self.prog, self.name, self.quiet = prog, name, quiet
        self.bar = None if files_bar.disable else tqdm(unit="frame", desc=name, position=1, leave=False,
                                                       file=sys.stderr)
        self.t0 = time.perf_counter()
        self.step = -1
        self.done = 0

    def update(self, done: int, total: int | None) -> None:
        self.done = done
        if self.bar is not None:
            if total is not None and self.bar.total != max(total, done):
                self.bar.total = max(total, done)
            self.bar.update(done - self.bar.n)
            return
        if self.quiet:
            return
        step = done * 10 // total if total else done // 100
        if step == self.step:
            return
        self.step = step
        elapsed = time.perf_counter() - self.t0
        if total and done <= total:
            eta = elapsed / done * (total - done)
            text = (f"frame {done}/{total} ({100 * done // total}%), {self._clock(elapsed)} elapsed, "
                    f"ETA {self._clock(eta)}")
        else:
            text = f"frame {done}, {self._clock(elapsed)} elapsed"
        print(f"{self.prog}: {self.name}: {text}", file=sys.stderr, flush=True)

    @staticmethod
    def _clock(seconds: float) -> str:
        from tqdm import tqdm

        return tqdm.format_interval(seconds)

    def close(self, finished: bool = False) -> None:
        """Ends the bar; in a log, when the video was written, a last line with the frames done (the estimated
        count may differ)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif finished and not self.quiet:
            elapsed = time.perf_counter() - self.t0
            print(f"{self.prog}: {self.name}: {self.done} frames in {self._clock(elapsed)} "
                  f"({self.done / max(elapsed, 1e-9):.1f} frames/s)", file=sys.stderr, flush=True)


def exit_status(summary: dict) -> int:
    """The image commands' exit status: 0, or 1 when some file failed (the others were written)."""
    return 1 if summary["failed"] else 0
