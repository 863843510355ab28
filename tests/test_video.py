"""Video through lattice-upscale and lattice-denoise (lattice_kernels.video_files): a short clip made here from
photographs, encoded losslessly, so each output frame can be compared with the model's output on its input frame;
the frame count, size and rate are kept, the audio and subtitle streams copied packet for packet."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lattice_kernels as lk
from lattice_kernels import inference, video_files
from lattice_kernels.cli.upscale import main as upscale_main

from .images import PHOTOS, photo
from .test_cli import assert_user_error, cli

pytest.importorskip("imageio_ffmpeg", reason="the video extra (imageio-ffmpeg) is not installed")
FFMPEG = video_files.ffmpeg_exe()
RATE = "24000/1001"  # an NTSC rate, which ffmpeg prints rounded (23.98): the rate must come back exact
W, H = 40, 32


def frames_of_photos(n: int = 4) -> list[np.ndarray]:
    """n frames (H, W, 3) uint8: the photographs, each resized so the whole scene fits W x H."""
    return [np.asarray(Image.fromarray(photo(name)).resize((W, H), Image.LANCZOS)) for name in PHOTOS[:n]]


def make_clip(path: Path, frames: list[np.ndarray], codec: list[str], audio: str, subtitles: str) -> None:
    """Encode `frames` at RATE with a 1 kHz tone (`audio` encoder) and one subtitle (`subtitles` encoder)."""
    srt = path.with_suffix(".srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:00,100\nthe first frames\n")
    cmd = [FFMPEG, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", RATE,
           "-i", "-", "-f", "lavfi", "-i", "sine=frequency=1000:duration=0.2", "-i", str(srt),
           "-map", "0:v", "-map", "1:a", "-map", "2:s", *codec, "-c:a", audio, "-c:s", subtitles, str(path)]
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)


def packets_md5(path: Path, stream: str) -> str:
    """The MD5 of the packets of `path`'s stream ('a', 's'), copied out without decoding."""
    r = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", f"0:{stream}", "-c", "copy", "-f", "md5",
                        "-"], capture_output=True, text=True, check=True)
    return r.stdout.strip()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    frames = frames_of_photos()
    make_clip(d / "clip.mkv", frames, ["-c:v", "ffv1"], "flac", "srt")
    make_clip(d / "clip.mp4", frames, ["-c:v", "libx264rgb", "-qp", "0"], "aac", "mov_text")
    return {"mkv": d / "clip.mkv", "mp4": d / "clip.mp4", "frames": frames}


def test_the_test_clips_are_lossless(clips):
    for kind in ("mkv", "mp4"):
        decoded = list(video_files.read_frames(clips[kind]))
        assert len(decoded) == len(clips["frames"])
        for got, want in zip(decoded, clips["frames"]):
            np.testing.assert_array_equal(got, want)


def assert_frames_are(out: Path, src: Path, want: list[np.ndarray], size: tuple[int, int]) -> None:
    """`out` has the frames `want` (each within one level of a float rounding tie), size (w, h) and the rate and
    audio and subtitle packets of `src`."""
    info = video_files.probe_video(out)
    assert (info.width, info.height) == size
    assert info.fps == Fraction(RATE)
    assert (info.audio_streams, info.subtitle_streams) == (1, 1)
    got = list(video_files.read_frames(out))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        diff = np.abs(g.astype(int) - w.astype(int))
        # the command's process and this one round the same float32 results; they may differ at a rounding tie
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (i, diff.max(), (diff > 0).mean())
    for stream in ("a", "s"):
        assert packets_md5(out, stream) == packets_md5(src, stream), f"the {stream} stream was not copied"


def test_upscale_a_video_keeps_frames_rate_and_streams(clips, tmp_path):
    ckpt = tmp_path / "x2.safetensors"
    torch.manual_seed(0)
    net = lk.LatticeNet(scale=2).eval()
    net.save_safetensors(ckpt)
    r = cli("lattice-upscale", "-c", ckpt, clips["mkv"], "-o", tmp_path / "out", "--video-codec", "ffv1")
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "out" / "clip_x2.mkv"
    want = [inference.super_resolve_image(net, inference.LoadedImage(f)).color for f in clips["frames"]]
    assert_frames_are(out, clips["mkv"], want, (2 * W, 2 * H))
    # progress in frames with an ETA (a log, not a terminal: a line at each tenth)
    assert "lattice-upscale: clip.mkv: frame 1/" in r.stderr and "ETA 00:00" in r.stderr, r.stderr
    assert "lattice-upscale: clip.mkv: 4 frames in 00:" in r.stderr, r.stderr
    assert "1 file, " in r.stdout and f"{4 * W * H / 1e6:.2f} megapixels in" in r.stdout, r.stdout


def test_denoise_a_video(clips, tmp_path):
    ckpt = tmp_path / "dn.safetensors"
    torch.manual_seed(0)
    net = lk.LatticeRestorer(3, "small").eval()
    net.save_safetensors(ckpt)
    r = cli("lattice-denoise", "-c", ckpt, clips["mp4"], "-o", tmp_path, "--video-codec", "libx264rgb", "--crf",
            "0")
    assert r.returncode == 0, r.stderr[-3000:]
    want = [inference.restore_image(net, inference.LoadedImage(f)).color for f in clips["frames"]]
    assert_frames_are(tmp_path / "clip_restored.mp4", clips["mp4"], want, (W, H))


def test_video_with_an_output_size_and_the_default_codec(clips, tmp_path):
    """The Python API; --width 61: odd sides (x264 in 4:4:4), the frames in lossy H.264 at crf 18."""
    torch.manual_seed(0)
    net = lk.LatticeNet(scale=2).eval()
    size = inference.OutputSize(width=61)
    res = video_files.super_resolve_video(net, clips["mp4"], tmp_path / "w.mp4", output_size=size)
    assert (res.frames, res.size_in, res.size_out) == (4, (W, H), (61, 49))
    got = list(video_files.read_frames(tmp_path / "w.mp4"))
    assert len(got) == 4 and got[0].shape == (49, 61, 3)
    want = inference.super_resolve_image(net, inference.LoadedImage(clips["frames"][0]), output_size=size).color
    err = np.abs(got[0].astype(float) - want).mean()
    assert err < 3, f"mean error {err:.2f} levels of crf 18 H.264 against the model's frame"


@pytest.mark.parametrize("text, rate", [("25", Fraction(25)), ("23.98", Fraction(24000, 1001)),
                                        ("29.97", Fraction(30000, 1001)), ("59.94", Fraction(60000, 1001)),
                                        ("12.5", Fraction(25, 2)), ("1k", Fraction(1000))])
def test_printed_rates(text, rate):
    assert video_files._rate(text) == rate


# ---------------------------------------------------------------------------------------------------------------
# what a user gets wrong

def test_without_the_video_extra(clips, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails as if not installed
    lk.LatticeNet(scale=2).save_safetensors(tmp_path / "x2.safetensors")
    status = upscale_main(["-c", str(tmp_path / "x2.safetensors"), str(clips["mkv"]), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and "pip install 'lattice_kernels[video]'" in err, err
    assert not (tmp_path / "out").exists()


def test_an_unreadable_video_is_skipped_and_listed(clips, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    ckpt = tmp_path / "dn.safetensors"
    lk.LatticeRestorer(3, "small").save_safetensors(ckpt)
    r = cli("lattice-denoise", "-c", ckpt, bad, clips["mkv"], "-o", tmp_path / "out", "--video-codec", "ffv1")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "cannot read" in r.stderr and "broken.mp4" in r.stderr.splitlines()[-1], r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip_restored.mkv"]
    alone = cli("lattice-denoise", "-c", ckpt, bad, "-o", tmp_path / "out2")
    assert_user_error(alone, "lattice-denoise", "broken.mp4", "no video stream")
    assert not (tmp_path / "out2").exists() or not list((tmp_path / "out2").iterdir())


def test_an_encoder_that_fails_leaves_no_file(clips, tmp_path):
    ckpt = tmp_path / "dn.safetensors"
    lk.LatticeRestorer(3, "small").save_safetensors(ckpt)
    r = cli("lattice-denoise", "-c", ckpt, clips["mkv"], "-o", tmp_path / "out", "--video-codec", "no-such-codec")
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]  # after the lines of frame progress
    assert last.startswith("lattice-denoise: error: ffmpeg could not write") and "no-such-codec" in last, last
    assert "Encoder not found" in last and " frames in " not in r.stderr, r.stderr
    assert not list((tmp_path / "out").iterdir()), "a partial output or temporary file was left"


def test_crf_out_of_range(clips, tmp_path):
    r = cli("lattice-upscale", "--scale", "2", clips["mkv"], "--crf", "70", weights=False)
    assert r.returncode == 2 and "--crf: must be in 0..63" in r.stderr, r.stderr
