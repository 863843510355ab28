"""Hostile and awkward image inputs, through the installed commands: decompression bombs (over Pillow's limit and
over the library's --max-pixels), truncated and empty files, 1x1, 1xN and extreme aspect ratios, CMYK, I;16,
animated GIF/APNG/WebP (refused), folders and unreadable files; tiled inference at awkward sizes equals untiled.

A command either writes the expected pixels (the model's plain forward here, on the pixels Pillow decodes) or
exits with status 2 and one line naming the file and what is wrong."""

from __future__ import annotations

import subprocess
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features

import lattice_kernels as lk
from lattice_kernels.image_files import MAX_IMAGE_PIXELS, ImageError
from lattice_kernels.inference import read_image, read_image_file
from lattice_kernels.train.data import DataError, load_rgb

from .images import crop, photo
from .test_cli import WEIGHTS, assert_pixels, assert_user_error, cli, decoded, model_on, needs_weights, quantized


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def bilevel_png(path: Path, w: int, h: int) -> None:
    """A valid all-black 1-bit PNG of w x h pixels, written here by hand: a file of kilobytes that decodes to
    w*h pixels (the shape of a decompression bomb)."""
    row = b"\x00" * (1 + (w + 7) // 8)  # filter byte, then the packed bits
    raw = zlib.compress(row * h, 9)
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", raw)
                     + _png_chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def restorer(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A small randomly initialized color LatticeRestorer: the commands' plumbing is under test, not quality."""
    torch.manual_seed(7)
    net = lk.LatticeRestorer(3, "small").eval()
    path = tmp_path_factory.mktemp("restorer") / "dn.safetensors"
    net.save_safetensors(path)
    return path, net


def denoise(restorer, *args) -> subprocess.CompletedProcess:
    """The installed lattice-denoise command with the restorer's checkpoint."""
    return cli("lattice-denoise", "-c", restorer[0], "-q", *args)


def denoise_here(restorer, capsys, *args) -> subprocess.CompletedProcess:
    """The same command's main() in this process (no interpreter start): for the cases after a first one that
    went through the installed command."""
    from lattice_kernels.cli import denoise as command

    capsys.readouterr()
    code = command.main([str(a) for a in ("-c", restorer[0], "-q", *args)])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["lattice-denoise", *map(str, args)], code, out.out, out.err)


# ---------------------------------------------------------------------------------------------------------------
# decompression bombs

def test_decompression_bombs_are_refused_before_decoding(restorer, tmp_path, capsys):
    """10000x10000 (over Pillow's limit, where Pillow itself only warns and decodes) and 20000x20000 (over twice
    it, where Pillow raises its own error) are both refused with the library's limit named, from files of KBs."""
    assert MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS == 89_478_485, "the stated default is Pillow's limit"
    for side, command in ((10_000, denoise), (20_000, lambda *a: denoise_here(*a[:1], capsys, *a[1:]))):
        bomb = tmp_path / f"bomb{side}.png"
        bilevel_png(bomb, side, side)
        assert bomb.stat().st_size < 100_000
        assert_user_error(command(restorer, bomb, "-o", tmp_path / "o"), "lattice-denoise", bomb.name,
                          f"declares {side}x{side} = {side * side:,} pixels", "limit of 89,478,485",
                          "--max-pixels")
        with pytest.raises(DataError, match="decompression bombs"):  # training data goes through the same guard
            load_rgb(bomb)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_stated_limit_is_applied_and_can_be_raised(restorer, tmp_path, capsys):
    """--max-pixels below an image's size refuses it; at its size it is processed. In the library, max_pixels
    above Pillow's own limit reads the 10000x10000 file without Pillow's warning; None lifts the limit."""
    Image.fromarray(crop(photo("coffee"), 30, 40, 100, 100)).save(tmp_path / "small.png")
    assert_user_error(denoise_here(restorer, capsys, tmp_path / "small.png", "--max-pixels", "1199", "-o",
                                   tmp_path / "o"),
                      "lattice-denoise", "small.png declares 40x30 = 1,200 pixels, more than the limit of 1,199")
    r = denoise(restorer, tmp_path / "small.png", "--max-pixels", "1200", "-o", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "o" / "small_restored.png").size == (40, 30)
    bomb = tmp_path / "bomb.png"
    bilevel_png(bomb, 10_000, 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        img = read_image_file(bomb, max_pixels=10**8)
    assert img.color.shape == (10_000, 10_000, 1) and not img.color.any()
    del img
    with pytest.raises(ImageError, match="limit of 1,199"):
        read_image(tmp_path / "small.png", max_pixels=1199)
    with pytest.raises(ValueError, match="max_pixels must be a positive"):
        read_image_file(bomb, max_pixels=0)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485, "Pillow's global limit was left changed"


# ---------------------------------------------------------------------------------------------------------------
# broken files, folders, permissions

def test_truncated_and_empty_files(restorer, tmp_path, capsys):
    src = crop(photo("astronaut"), 64, 64, 100, 100)
    Image.fromarray(src).save(tmp_path / "full.png")
    Image.fromarray(src).save(tmp_path / "full.jpg", quality=90)
    for name in ("full.png", "full.jpg"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: len(data) // 2])
        r = denoise(restorer, cut, "-o", tmp_path / "o") if name.endswith("png") else \
            denoise_here(restorer, capsys, cut, "-o", tmp_path / "o")
        assert_user_error(r, "lattice-denoise", "cannot read image", cut.name, "truncated")
    (tmp_path / "empty.png").write_bytes(b"")
    assert_user_error(denoise_here(restorer, capsys, tmp_path / "empty.png", "-o", tmp_path / "o"), "lattice-denoise",
                      "cannot read image", "empty.png")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir()), "a partial output was left"


def test_folders_and_unreadable_files(restorer, tmp_path, monkeypatch, capsys):
    """A folder named like an image is searched (and holds none); read_image_file of a folder says it is one; a
    file this user may not read gives one line naming it (in-process: the tests run as root, who reads any file)."""
    (tmp_path / "adir.png").mkdir()
    assert_user_error(denoise(restorer, tmp_path / "adir.png"), "lattice-denoise", "no images", "adir.png")
    with pytest.raises(ImageError, match="adir.png is a folder, not an image file"):
        read_image_file(tmp_path / "adir.png")
    with pytest.raises(FileNotFoundError, match="image not found"):
        read_image_file(tmp_path / "missing.png")

    import PIL.Image

    from lattice_kernels.cli import denoise as denoise_cli

    Image.fromarray(crop(photo("coffee"), 8, 8)).save(tmp_path / "locked.png")

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(PIL.Image, "open", refuse)
    assert denoise_cli.main(["-c", str(restorer[0]), str(tmp_path / "locked.png"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lattice-denoise: error: cannot read image"), err
    assert "locked.png" in err[0] and "permission denied" in err[0], err


def _folder_with_bad_files(d: Path) -> list[str]:
    """Three good photographs and three files that cannot be used (truncated, empty, CMYK); the good names."""
    d.mkdir()
    pic = photo("coffee")
    good = ["a_good", "c_good", "e_good"]
    for i, name in enumerate(good):
        Image.fromarray(crop(pic, 24, 20, 30 * i, 40)).save(d / f"{name}.png")
    data = (d / "a_good.png").read_bytes()
    (d / "b_truncated.png").write_bytes(data[: len(data) // 2])
    (d / "d_empty.png").write_bytes(b"")
    Image.fromarray(crop(pic, 16, 16)).convert("CMYK").save(d / "f_cmyk.jpg")
    return good


def test_folder_run_goes_on_past_bad_files(restorer, tmp_path):
    """By default a folder run writes every good file, reports each bad one as it is met, lists them after the
    summary and exits with status 1; --fail-fast stops at the first one with status 2 and one error line."""
    d = tmp_path / "mixed"
    good = _folder_with_bad_files(d)
    r = denoise(restorer, d, "-o", tmp_path / "o")
    assert r.returncode == 1, (r.returncode, r.stderr)
    for name in good:
        out = decoded(tmp_path / "o" / f"{name}_restored.png")[0]
        src = np.asarray(Image.open(d / f"{name}.png"))
        assert_pixels(out, quantized(model_on(restorer[1], src, 1.0), 1.0, np.uint8), name)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [f"{n}_restored.png" for n in good]
    assert "3 files, 3 failed" in r.stdout, r.stdout
    err = r.stderr.strip().splitlines()
    skipped = [ln for ln in err if ln.startswith("lattice-denoise: skipped: ")]
    assert len(skipped) == 3, err
    assert "lattice-denoise: 3 files failed (not written):" in err, err
    listed = err[err.index("lattice-denoise: 3 files failed (not written):") + 1:]
    assert [ln.split(": ")[0].strip() for ln in listed] == [str(d / n) for n in
                                                            ("b_truncated.png", "d_empty.png", "f_cmyk.jpg")], listed
    assert "truncated" in listed[0] and "CMYK" in listed[2], listed

    r = denoise(restorer, d, "-o", tmp_path / "ff", "--fail-fast")
    assert_user_error(r, "lattice-denoise", "cannot read image", "b_truncated.png")
    assert sorted(p.name for p in (tmp_path / "ff").iterdir()) == ["a_good_restored.png"]


def test_interrupted_run_leaves_no_partial_output_and_resumes(restorer, tmp_path):
    """Ctrl-C (SIGINT) during a folder run: exit status 130, every output present is complete (no temporary or
    half-written file), and --skip-existing then does only the rest."""
    import os
    import signal
    import time

    from .test_cli import BIN

    d = tmp_path / "many"
    d.mkdir()
    pic = photo("astronaut")
    names = [f"im{i:02d}" for i in range(6)]
    for i, name in enumerate(names):
        Image.fromarray(crop(pic, 256, 256, 10 * i, 30)).save(d / f"{name}.png")
    out = tmp_path / "o"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --self-ensemble makes each file take 8 forwards (about half a second), so the interrupt lands mid-run
    proc = subprocess.Popen([str(BIN / "lattice-denoise"), "-c", str(restorer[0]), "-q", "--self-ensemble", str(d),
                             "-o", str(out)],
                            # a pytest-xdist worker ignores SIGINT, and an ignored signal stays ignored across exec
                            # (Python then installs no KeyboardInterrupt handler): give the command the default
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (out.exists() and any(out.glob("*_restored.png"))) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert "lattice-denoise: interrupted" in stderr
    first = sorted(p.name for p in out.iterdir())
    assert first and all(n.endswith("_restored.png") for n in first), first  # no temporary files
    assert len(first) < len(names), "the run finished before the interrupt: use more or bigger images"
    for n in first:
        Image.open(out / n).load()  # complete files only
    r = denoise(restorer, d, "-o", out, "--skip-existing")  # the rest, quickly (the plain model)
    assert r.returncode == 0, r.stderr
    rest = len(names) - len(first)
    assert f"{rest} file{'s' if rest != 1 else ''}, {len(first)} skipped (output exists)" in r.stdout, r.stdout
    assert sorted(p.name for p in out.iterdir()) == [f"{n}_restored.png" for n in names]


# ---------------------------------------------------------------------------------------------------------------
# sizes and modes

def test_one_pixel_is_refused_and_thin_images_are_right(restorer, tmp_path):
    """1x1 cannot be normalised (the unbiased std of one pixel is undefined): refused, not written as black.
    1xN, Nx1 and 2x300 images come out as the model's forward says."""
    Image.fromarray(np.full((1, 1, 3), 128, np.uint8)).save(tmp_path / "dot.png")
    assert_user_error(denoise(restorer, tmp_path / "dot.png", "-o", tmp_path / "o"), "lattice-denoise",
                      "1x1 image is too small", "at least 2 pixels")
    d = tmp_path / "thin"
    d.mkdir()
    pic = photo("chelsea")
    sizes = {"row": (1, 37), "col": (23, 1), "pair": (1, 2), "strip": (2, 300), "pole": (300, 2)}
    for name, (h, w) in sizes.items():
        Image.fromarray(crop(pic, h, w, 50, 60)).save(d / f"{name}.png")
    r = denoise(restorer, d, "-o", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    for name in sizes:
        color, _ = decoded(d / f"{name}.png")
        out, _ = decoded(tmp_path / "o" / f"{name}_restored.png")
        assert_pixels(out, quantized(model_on(restorer[1], color, 1.0), 1.0, np.uint8), name)


def test_cmyk_refused_and_16_bit_gray_tiff_kept(restorer, tmp_path, capsys):
    Image.new("CMYK", (8, 8), (10, 20, 30, 0)).save(tmp_path / "print.jpg")
    assert_user_error(denoise_here(restorer, capsys, tmp_path / "print.jpg", "-o", tmp_path / "o"), "lattice-denoise",
                      "print.jpg is a 'CMYK' image", "convert it to RGB first")
    g16 = (crop(photo("coffee"), 12, 20, 80, 80)[..., 1].astype(np.uint16) * 257
           + np.random.default_rng(0).integers(0, 257, (12, 20))).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.tif")
    assert Image.open(tmp_path / "g16.tif").mode == "I;16"
    r = denoise(restorer, tmp_path / "g16.tif", "-o", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    out, _ = decoded(tmp_path / "o" / "g16_restored.png")
    assert out.dtype == np.uint16
    assert_pixels(out, quantized(model_on(restorer[1], g16[..., None], 1.0), 1.0, np.uint16), "I;16 TIFF")


ANIMATED = [("GIF", "gif"), ("PNG", "png"),
            pytest.param("WEBP", "webp", marks=pytest.mark.skipif(not features.check("webp"),
                                                                  reason="this Pillow has no WebP support"))]


@pytest.mark.parametrize(("fmt", "suffix"), ANIMATED)
def test_animated_images_are_refused_and_stills_are_taken(restorer, tmp_path, capsys, fmt, suffix):
    """An animated GIF, APNG or WebP is refused (saying so), not reduced to its first frame; the same format with
    one frame is an ordinary image."""
    frames = [Image.fromarray(crop(photo(n), 16, 16, 100, 100)) for n in ("astronaut", "coffee", "chelsea")]
    anim = tmp_path / f"anim.{suffix}"
    frames[0].save(anim, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(anim), "n_frames", 1) == 3
    assert_user_error(denoise(restorer, anim, "-o", tmp_path / "o"), "lattice-denoise", anim.name,
                      f"animated {fmt} of 3 frames", "only still images")
    still = tmp_path / f"still.{suffix}"
    frames[0].save(still, format=fmt)
    r = denoise_here(restorer, capsys, still, "-o", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "o" / "still_restored.png").size == (16, 16)


# ---------------------------------------------------------------------------------------------------------------
# tiled inference at awkward sizes

AWKWARD = {"odd": (13, 11), "wide": (9, 17), "tall": (17, 5), "row": (1, 19), "col": (10, 1), "strip": (3, 40)}


@pytest.fixture(scope="module")
def awkward(tmp_path_factory) -> Path:
    """Sizes a tile of 8 does not divide, or leaves a last strip 1 pixel wide or tall (17 = 2*8 + 1), a 1-pixel
    row and column."""
    d = tmp_path_factory.mktemp("awkward")
    pic = photo("astronaut")
    for name, (h, w) in AWKWARD.items():
        Image.fromarray(crop(pic, h, w, 120, 150)).save(d / f"{name}.png")
    return d


def test_tiled_equals_untiled_at_awkward_sizes(restorer, awkward, tmp_path, capsys):
    """--tile 8 (does not divide, leaves 1-pixel strips), --tile 3 and --tile 64 (larger than every image) write
    the untiled outputs, and the untiled ones are the model's forward."""
    runs = {}
    for tile in (None, 8, 3, 64):
        out = tmp_path / f"t{tile}"
        run = denoise if tile in (None, 8) else lambda *a: denoise_here(a[0], capsys, *a[1:])
        r = run(restorer, awkward, "-o", out, *(["--tile", str(tile)] if tile else []))
        assert r.returncode == 0, r.stderr
        runs[tile] = out
    for name in AWKWARD:
        color, _ = decoded(awkward / f"{name}.png")
        untiled, _ = decoded(runs[None] / f"{name}_restored.png")
        assert_pixels(untiled, quantized(model_on(restorer[1], color, 1.0), 1.0, np.uint8), name)
        for tile in (8, 3, 64):
            tiled, _ = decoded(runs[tile] / f"{name}_restored.png")
            assert_pixels(tiled, untiled, f"{name} with --tile {tile}")


@needs_weights
def test_upscale_tiled_equals_untiled_at_awkward_sizes(awkward, tmp_path):
    """The same with the published x2 weights through lattice-upscale, in float32 (the forward's precision)."""
    from lattice_kernels.cli import upscale

    net = lk.LatticeNet.from_checkpoint(Path(WEIGHTS) / "LatticeNet_x2.pt").eval()
    r = cli("lattice-upscale", "-s", "2", awkward, "-o", tmp_path / "t8", "-q", "--tile", "8", "--dtype", "float32")
    assert r.returncode == 0, r.stderr
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATTICE_WEIGHTS_DIR", str(Path(WEIGHTS).resolve()))
        assert upscale.main(["-s", "2", str(awkward), "-o", str(tmp_path / "tNone"), "-q", "--dtype",
                             "float32"]) == 0
    for name in AWKWARD:
        color, _ = decoded(awkward / f"{name}.png")
        untiled, _ = decoded(tmp_path / "tNone" / f"{name}_x2.png")
        assert_pixels(untiled, quantized(model_on(net, color, 255.0), 255.0, np.uint8), name)
        assert_pixels(decoded(tmp_path / "t8" / f"{name}_x2.png")[0], untiled, f"{name} with --tile 8")
