"""Video files in and out through the ffmpeg binary of imageio-ffmpeg (the `video` extra): frames stream through
pipes as 8-bit RGB (no frames on disk), each is processed on its own, and the result is encoded at the input's frame
rate with the audio and subtitle streams copied unchanged from the input.

What changes: the video is re-encoded (the encoder of `codec`, default libx264 at `crf` 18; .webm: libvpx-vp9; YUV
outputs in BT.709), decoded to 8-bit RGB first (a 10-bit or HDR input loses its depth; an alpha plane is dropped),
rotated upright when the input carries a rotation, and written at a constant frame rate (a variable-rate input is
decoded at its average rate, frames repeated or dropped, so the copied audio stays in sync). The output container is
the input's (its suffix); metadata and chapters are copied."""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from torch import nn

from . import inference
from ._files import atomic_write
from .image_files import ImageError

# suffix -> ffmpeg muxer (the output is written under a temporary name, so the container is named, not guessed)
VIDEO_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
VIDEO_SUFFIXES = tuple(VIDEO_CONTAINERS)
DEFAULT_CRF = 18
_CRF_CODECS = {"libx264", "libx264rgb", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1"}  # take -crf


class VideoError(ImageError):
    """An input video that cannot be used (no video stream, undecodable): a folder run skips it, like an image."""


class VideoEncoderError(ValueError):
    """The encoder refused the output (an unknown --video-codec, a codec the container cannot hold, a full disk):
    it would refuse every video, so a run stops."""


def default_codec(path: str | Path) -> str:
    """The encoder a video is written with unless one is named: libvpx-vp9 for .webm, else libx264."""
    return "libvpx-vp9" if Path(path).suffix.lower() == ".webm" else "libx264"


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_CONTAINERS


def ffmpeg_exe() -> str:
    """The ffmpeg binary that imageio-ffmpeg ships (ImportError naming the extra when it is not installed)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise ImportError("video files need the ffmpeg binary of imageio-ffmpeg: pip install "
                          "'lattice_kernels[video]' (or pip install imageio-ffmpeg==0.8.1)") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class VideoInfo:
    """The first video stream of a file, as decoded (upright): width, height, the (average) frame rate, the frame
    count estimated from the duration (None when unknown), how many audio and subtitle streams the file has, and
    the pixels' aspect ratio."""

    width: int
    height: int
    fps: Fraction
    frames: int | None
    audio_streams: int
    subtitle_streams: int
    sample_aspect: Fraction = Fraction(1)  # the pixels' width over height (SAR; not 1 for anamorphic video)


def _rate(text: str) -> Fraction:
    """ffmpeg's printed rate ('25', '23.98', '29.97', '12.5', '1k') as a fraction; the NTSC rates N*1000/1001 that
    ffmpeg prints rounded to two decimals are recognised."""
    exact = Fraction(text[:-1]) * 1000 if text.endswith("k") else Fraction(text)
    ntsc = round(float(exact) * 1.001)
    if exact.denominator != 1 and abs(float(exact) - ntsc / 1.001) < 0.006:
        return Fraction(ntsc * 1000, 1001)
    return exact


def probe_video(path: str | Path) -> VideoInfo:
    """VideoInfo of `path` from ffmpeg's description of its streams (VideoError when it has no video stream)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                          errors="replace").stderr
    return parse_probe(text, path)


def parse_probe(text: str, path: str | Path) -> VideoInfo:
    """VideoInfo from ffmpeg's description of a file's streams (`ffmpeg -i path` on stderr)."""
    streams = re.findall(r"^\s*Stream #\d+:\d+.*?: (Video|Audio|Subtitle): (.*)$", text, flags=re.M)
    video = next((desc for kind, desc in streams if kind == "Video" and "attached pic" not in desc), None)
    if video is None:
        last = text.strip().splitlines()[-1] if text.strip() else "no output"
        raise VideoError(f"cannot read {path} as a video: ffmpeg finds no video stream in it ({last})")
    size = re.search(r"(?:^|[ ,])(\d{2,5})x(\d{2,5})(?=[ ,]|$)", video)
    rate = re.search(r"([\d.]+k?) fps", video) or re.search(r"([\d.]+k?) tbr", video)
    if size is None or rate is None:
        raise VideoError(f"cannot read {path}: ffmpeg gives no frame size or rate for its video stream ({video})")
    w, h = int(size[1]), int(size[2])
    rotation = re.search(r"rotation of (-?[\d.]+) degrees", text)
    if rotation and round(float(rotation[1])) % 180 == 90:
        w, h = h, w  # decoded upright
    fps = _rate(rate[1])
    duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", text)
    frames = None
    if duration:
        seconds = int(duration[1]) * 3600 + int(duration[2]) * 60 + float(duration[3])
        frames = max(1, round(seconds * fps))
    kinds = [kind for kind, _ in streams]
    sar = re.search(r"SAR (\d+):(\d+)", video)
    aspect = Fraction(int(sar[1]), int(sar[2])) if sar and int(sar[1]) > 0 and int(sar[2]) > 0 else Fraction(1)
    if rotation and round(float(rotation[1])) % 180 == 90:
        aspect = 1 / aspect
    return VideoInfo(w, h, fps, frames, kinds.count("Audio"), kinds.count("Subtitle"), aspect)


def read_frames(path: str | Path, info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """The frames of the first video stream of `path` (not a cover picture), each (H, W, 3) uint8 RGB, decoded by
    ffmpeg into a pipe at the constant rate info.fps (a variable-rate stream's frames repeated or dropped)."""
    info = info or probe_video(path)
    frame_bytes = info.width * info.height * 3
    with tempfile.TemporaryFile() as log:
        # 0:V: video streams that are not attached pictures (cover art); -fps_mode cfr -r: the frames of a
        # variable-rate input at the (average) rate the encoder is given, so the copied audio stays in sync
        proc = subprocess.Popen([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:V:0", "-an",
                                 "-sn", "-fps_mode", "cfr", "-r", str(info.fps), "-f", "rawvideo", "-pix_fmt",
                                 "rgb24", "-"],
                                stdout=subprocess.PIPE, stderr=log)
        try:
            while True:
                buf = proc.stdout.read(frame_bytes)
                if not buf:
                    break
                if len(buf) != frame_bytes:
                    raise VideoError(f"{path}: the decoder gave a partial frame ({len(buf)} of {frame_bytes} bytes)")
                yield np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
            if proc.wait() != 0:
                log.seek(0)
                raise VideoError(f"cannot decode {path}: {_last_line(log.read())}")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()


def _last_line(err: bytes) -> str:
    lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "ffmpeg failed without a message"


_YUV_CODECS = {"libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1"}


def _encoder_options(codec: str, crf: int, width: int, height: int, sample_aspect: Fraction) -> list[str]:
    """The encoder's options: crf for the codecs that take it; for the YUV codecs 4:2:0 (4:4:4 when a side is
    odd) converted with the BT.709 matrix and tagged so (players assume BT.709 for untagged HD); the input's pixel
    aspect ratio."""
    opts = ["-c:v", codec]
    if codec in _CRF_CODECS:
        opts += ["-crf", str(crf)] + (["-b:v", "0"] if codec == "libvpx-vp9" else [])
    filters = []
    if codec in _YUV_CODECS:
        even = width % 2 == 0 and height % 2 == 0
        filters.append("scale=out_color_matrix=bt709:out_range=tv")
        opts += ["-pix_fmt", "yuv420p" if even or codec not in ("libx264", "libx265") else "yuv444p",
                 "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
    if sample_aspect != 1:
        filters.append(f"setsar={sample_aspect.numerator}/{sample_aspect.denominator}")
    return opts + (["-vf", ",".join(filters)] if filters else [])


def check_encoder(codec: str) -> None:
    """VideoEncoderError when this ffmpeg has no encoder `codec` (before any video is processed)."""
    r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-h", f"encoder={codec}"], capture_output=True, text=True,
                       errors="replace")
    if r.returncode != 0 or f"Encoder {codec} " not in r.stdout:
        raise VideoEncoderError(f"ffmpeg has no video encoder {codec!r}: name one of `ffmpeg -encoders` (e.g. "
                                f"libx264, libx265, libvpx-vp9, ffv1)")


@dataclass(frozen=True)
class VideoResult:
    """What process_video did: frames written, their size in and out, and megapixels in and out (all frames)."""

    frames: int
    size_in: tuple[int, int]
    size_out: tuple[int, int]

    @property
    def megapixels(self) -> float:
        return self.frames * self.size_in[0] * self.size_in[1] / 1e6

    @property
    def megapixels_out(self) -> float:
        return self.frames * self.size_out[0] * self.size_out[1] / 1e6


def process_video(src: str | Path, dst: str | Path, frame_fn: Callable[[np.ndarray], np.ndarray], *,
                  codec: str | None = None, crf: int = DEFAULT_CRF,
                  on_frame: Callable[[int, int | None], None] | None = None) -> VideoResult:
    """Write `dst` (atomically) with frame_fn(frame) for each frame of `src`: frames (H, W, 3) uint8 in, (H', W', 3)
    uint8 out, every output frame the size of the first. The frame rate (a variable one: its average) and the
    pixel aspect ratio are kept; audio and subtitle streams, metadata and chapters are copied from `src`.
    codec: an ffmpeg encoder (default_codec: libx264, libvpx-vp9 for .webm; 'ffv1' (.mkv, .avi) or 'libx264rgb'
    with crf 0 are lossless); crf: its quality (x264/x265/VP9/AV1). on_frame(done, estimated_total) after each
    frame. Sizes are (width, height). VideoError for an input that cannot be decoded, VideoEncoderError when the
    encoder refuses the output."""
    src, dst = Path(src), Path(dst)
    muxer = VIDEO_CONTAINERS.get(dst.suffix.lower())
    if muxer is None:
        raise ValueError(f"cannot write {dst}: the video containers are {', '.join(VIDEO_SUFFIXES)}")
    if not 0 <= crf <= 63:
        raise ValueError(f"crf must be in 0..63, got {crf}")
    info = probe_video(src)
    codec = codec or default_codec(dst)
    result: list[VideoResult] = []

    def write(tmp: Path) -> None:
        encoder = None
        size_out = None
        n = 0
        log = tempfile.TemporaryFile()
        try:
            for frame in read_frames(src, info):
                out = np.ascontiguousarray(frame_fn(frame), dtype=np.uint8)
                if out.ndim != 3 or out.shape[2] != 3:
                    raise ValueError(f"frame_fn must return (H, W, 3) uint8 frames, got shape {out.shape}")
                if encoder is None:
                    size_out = (out.shape[1], out.shape[0])
                    encoder = subprocess.Popen(
                        [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                         "-s", f"{size_out[0]}x{size_out[1]}", "-r", str(info.fps), "-i", "-", "-i", str(src),
                         "-map", "0:v:0", "-map", "1:a?", "-map", "1:s?", "-c:a", "copy", "-c:s", "copy",
                         "-map_metadata", "1", "-map_chapters", "1",
                         *_encoder_options(codec, crf, *size_out, info.sample_aspect), "-f", muxer, str(tmp)],
                        stdin=subprocess.PIPE, stderr=log)
                elif (out.shape[1], out.shape[0]) != size_out:
                    raise ValueError(f"frame {n} came out {out.shape[1]}x{out.shape[0]}, the first was "
                                     f"{size_out[0]}x{size_out[1]}: every frame must have one size")
                try:
                    encoder.stdin.write(out.data)
                except BrokenPipeError:
                    break  # the encoder stopped: its message is read below
                n += 1
                if on_frame is not None:
                    on_frame(n, info.frames)
            if encoder is None:
                raise VideoError(f"{src} has no frames")
            with contextlib.suppress(BrokenPipeError):
                encoder.stdin.close()
            if encoder.wait() != 0:
                log.seek(0)
                hint = ""
                if (info.audio_streams or info.subtitle_streams) and dst.suffix.lower() != src.suffix.lower():
                    hint = (f" (the audio and subtitle streams of {src.name} are copied unchanged: write them to "
                            f"a {src.suffix} file)")
                raise VideoEncoderError(f"ffmpeg could not write {dst} with the {codec} encoder: "
                                        f"{_last_line(log.read())}{hint}")
            result.append(VideoResult(n, (info.width, info.height), size_out))
        finally:
            if encoder is not None and encoder.poll() is None:
                encoder.kill()
                encoder.wait()
            log.close()

    atomic_write(dst, write)
    return result[0]


def super_resolve_video(model: nn.Module, src: str | Path, dst: str | Path, *, codec: str | None = None,
                        crf: int = DEFAULT_CRF, on_frame: Callable[[int, int | None], None] | None = None,
                        **kwargs) -> VideoResult:
    """Upscale every frame of the video `src` with inference.super_resolve_image (kwargs: its output_size and those
    of inference.run(): tile, dtype, max_memory per frame, ...) and write `dst` (process_video: codec, crf)."""
    return process_video(src, dst, lambda f: inference.super_resolve_image(model, inference.LoadedImage(f),
                                                                           **kwargs).color,
                         codec=codec, crf=crf, on_frame=on_frame)


def restore_video(model: nn.Module, src: str | Path, dst: str | Path, *, codec: str | None = None,
                  crf: int = DEFAULT_CRF, on_frame: Callable[[int, int | None], None] | None = None,
                  **kwargs) -> VideoResult:
    """Restore (denoise) every frame of the video `src` with inference.restore_image (kwargs: those of
    inference.run()) and write `dst` (process_video: codec, crf)."""
    return process_video(src, dst, lambda f: inference.restore_image(model, inference.LoadedImage(f), **kwargs).color,
                         codec=codec, crf=crf, on_frame=on_frame)
