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


def packets(path: Path, stream: str) -> list[str]:
    """The packets of `path`'s stream ('v', 'a', 's'), copied out without decoding: the time base, then per packet
    its timestamps, duration, size and MD5 (ffmpeg's framemd5)."""
    r = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", f"0:{stream}", "-c", "copy", "-f", "framemd5",
                        "-"], capture_output=True, text=True, check=True)
    return [ln for ln in r.stdout.splitlines() if ln.startswith("#tb") or not ln.startswith("#")]


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
    for stream in ("a", "s"):  # packet for packet, timestamps included
        assert packets(out, stream) == packets(src, stream), f"the {stream} stream was not copied"


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
    # the rate, exactly: MP4's video time base 1/24000, each frame 1001 ticks, as in the input
    video = packets(tmp_path / "clip_restored.mp4", "v")
    assert video[0] == "#tb 0: 1/24000" and [ln.split(",")[3].strip() for ln in video[1:]] == ["1001"] * 4, video


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


def test_an_unknown_encoder_is_refused_before_any_file(clips, tmp_path):
    ckpt = tmp_path / "dn.safetensors"
    lk.LatticeRestorer(3, "small").save_safetensors(ckpt)
    Image.fromarray(clips["frames"][0]).save(tmp_path / "a.png")
    r = cli("lattice-denoise", "-c", ckpt, tmp_path / "a.png", clips["mkv"], "-o", tmp_path / "out",
            "--video-codec", "no-such-codec")
    assert_user_error(r, "lattice-denoise", "no video encoder 'no-such-codec'")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_an_encoder_that_fails_stops_the_run_and_leaves_no_file(clips, tmp_path):
    """H.263 takes only its standard picture sizes (not 40x32): the encoder fails on the first frame. That is not
    a bad input file (the next video would fail alike): the run stops with status 2, no partial or temporary file
    is left."""
    ckpt = tmp_path / "dn.safetensors"
    lk.LatticeRestorer(3, "small").save_safetensors(ckpt)
    r = cli("lattice-denoise", "-c", ckpt, clips["mp4"], clips["mkv"], "-o", tmp_path / "out", "--video-codec",
            "h263")
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]  # after the lines of frame progress
    assert last.startswith("lattice-denoise: error: ffmpeg could not write") and "h263" in last, last
    assert " frames in " not in r.stderr and "skipped" not in r.stderr, r.stderr
    assert not list((tmp_path / "out").iterdir()), "a partial output or temporary file was left"
    assert not list((tmp_path / "out").iterdir()), "a partial output or temporary file was left"


def test_crf_out_of_range(clips, tmp_path):
    r = cli("lattice-upscale", "--scale", "2", clips["mkv"], "--crf", "70", weights=False)
    assert r.returncode == 2 and "--crf: must be in 0..63" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------------------------
# what real files carry: rotation, anamorphic pixels, cover art, a variable frame rate


def _ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)


def test_a_rotated_video_is_processed_upright(clips, tmp_path):
    _ffmpeg("-display_rotation", "90", "-i", str(clips["mp4"]), "-c", "copy", str(tmp_path / "rot.mp4"))
    info = video_files.probe_video(tmp_path / "rot.mp4")
    assert (info.width, info.height) == (H, W)
    frames = list(video_files.read_frames(tmp_path / "rot.mp4"))
    assert len(frames) == 4 and frames[0].shape == (W, H, 3)
    res = video_files.process_video(tmp_path / "rot.mp4", tmp_path / "out.mp4", lambda f: f, codec="libx264rgb",
                                    crf=0)
    assert res.size_out == (H, W)
    np.testing.assert_array_equal(next(video_files.read_frames(tmp_path / "out.mp4")), frames[0])


def test_the_pixel_aspect_ratio_is_kept(clips, tmp_path):
    _ffmpeg("-i", str(clips["mp4"]), "-map", "0:v", "-vf", "setsar=8/9", "-c:v", "libx264", str(tmp_path / "a.mp4"))
    assert video_files.probe_video(tmp_path / "a.mp4").sample_aspect == Fraction(8, 9)
    video_files.process_video(tmp_path / "a.mp4", tmp_path / "b.mp4", lambda f: np.repeat(f, 2, axis=0))
    assert video_files.probe_video(tmp_path / "b.mp4").sample_aspect == Fraction(8, 9)


def test_cover_art_is_not_taken_for_the_video(clips, tmp_path):
    Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / "cover.png")
    _ffmpeg("-i", str(tmp_path / "cover.png"), "-i", str(clips["mp4"]), "-map", "0", "-map", "1", "-c", "copy",
            "-disposition:v:0", "attached_pic", str(tmp_path / "c.mp4"))
    info = video_files.probe_video(tmp_path / "c.mp4")
    assert (info.width, info.height) == (W, H)
    frames = list(video_files.read_frames(tmp_path / "c.mp4", info))
    assert len(frames) == 4
    np.testing.assert_array_equal(frames[0], clips["frames"][0])


def test_a_variable_frame_rate_keeps_the_audio_in_sync(tmp_path):
    """30 fps with every fifth frame dropped (average 24, time base rate 30): the output runs as long as the
    audio it carries."""
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=40x32:rate=30:duration=2", "-f", "lavfi", "-i", "sine=duration=2",
            "-vf", "select='not(eq(mod(n\\,5)\\,4))'", "-fps_mode", "vfr", "-c:v", "libx264", "-c:a", "aac",
            str(tmp_path / "vfr.mp4"))
    info = video_files.probe_video(tmp_path / "vfr.mp4")
    res = video_files.process_video(tmp_path / "vfr.mp4", tmp_path / "out.mp4", lambda f: f)
    out = video_files.probe_video(tmp_path / "out.mp4")
    assert out.fps == info.fps
    seconds = res.frames / out.fps
    assert abs(seconds - 2.0) <= 1.5 / out.fps, (res.frames, out.fps, float(seconds))
