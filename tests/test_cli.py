"""The installed commands (lattice-upscale, lattice-denoise, lattice-train), run through their entry points in a
subprocess on real photographs: every image mode, the inputs (folders, --glob, stdin lists, --skip-existing), outputs
that never replace inputs, the progress bar and summary line, and one-line user errors with exit status 2.

Expected pixels are computed here, in this process, by the model's plain forward on the pixels Pillow (or pypng)
decodes, with this file's own conversions; the commands must write exactly those (up to one unit of float rounding).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import png
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

import lattice_kernels as lk
from lattice_kernels import inference

from .conftest import weights_dir
from .images import crop, photo

BIN = Path(sys.executable).parent
WEIGHTS = weights_dir()
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason="published checkpoints not found (LATTICE_WEIGHTS_DIR)")
COMMANDS = ["lattice-upscale", "lattice-denoise", "lattice-train", "lattice-evaluate", "lattice-export",
            "lattice-kernels-build"]


def cli(name: str, *args: str | os.PathLike, cwd: Path | None = None, stdin: str | None = None,
        weights: bool = True, cache: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """Run an installed command (the console script next to this Python) and return the finished process."""
    exe = BIN / name
    if not exe.exists():
        pytest.fail(f"{exe} is not installed: pip install -e . (the [project.scripts] of pyproject.toml)")
    e = {k: v for k, v in os.environ.items() if k != "LATTICE_WEIGHTS_DIR"}
    if weights and WEIGHTS is not None:
        e["LATTICE_WEIGHTS_DIR"] = str(Path(WEIGHTS).resolve())
    e["XDG_CACHE_HOME"] = str(cache) if cache is not None else "/nonexistent-cache"
    e.setdefault("OMP_NUM_THREADS", "1")  # tiny images: one thread is fastest, and immune to a busy machine
    e.update(env)
    return subprocess.run([str(exe), *map(str, args)], cwd=cwd, input=stdin, capture_output=True, text=True,
                          env=e, timeout=300)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The expected outputs are computed here on tiny images, where one thread is fastest; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def assert_user_error(r: subprocess.CompletedProcess, prog: str, *needles: str) -> str:
    """Exit status 2 and exactly one line `prog: error: ...` on stderr containing each needle; returns the line."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{r.stderr}"
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    assert "weights_only" not in r.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------
# the photographs, in every mode

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _alpha(h: int, w: int) -> np.ndarray:
    """A smooth alpha matte (a soft disc) with fully transparent and fully opaque parts."""
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - h / 2) / h, (xx - w / 2) / w)
    return np.clip((0.45 - r) * 6 * 255, 0, 255).astype(np.uint8)


def _write_png16(path: Path, a: np.ndarray) -> None:
    """(H, W, C) uint16 as a 16-bit PNG, by pypng (an encoder independent of the library's)."""
    h, w, c = a.shape
    writer = png.Writer(w, h, greyscale=c in (1, 2), alpha=c in (2, 4), bitdepth=16)
    with open(path, "wb") as f:
        writer.write(f, a.reshape(h, w * c).tolist())


def _read_png16(path: Path) -> np.ndarray:
    w, h, rows, info = png.Reader(filename=str(path)).asDirect()
    assert info["bitdepth"] == 16, f"{path} is {info['bitdepth']}-bit"
    return np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(h, w, info["planes"])


def _to16(a: np.ndarray, seed: int) -> np.ndarray:
    """8-bit pixels widened to 16 bits with a random low byte (so that an 8-bit path would lose information)."""
    low = np.random.default_rng(seed).integers(0, 256, a.shape)
    return (a.astype(np.uint16) * 256 + low).astype(np.uint16)


H, W = 20, 28


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    """One small file per image mode, cut from scikit-image's photographs."""
    d = tmp_path_factory.mktemp("gallery")
    rgb = crop(photo("astronaut"), H, W, 100, 180)
    Image.fromarray(rgb).save(d / "rgb.png")
    Image.fromarray(crop(photo("coffee"), H, W, 150, 200)[..., 1]).save(d / "gray.png")
    Image.fromarray(crop(photo("chelsea"), H, W, 100, 150)).quantize(48).save(d / "pal.png")
    pal_t = Image.fromarray(crop(photo("rocket"), H, W, 200, 250)).quantize(32)
    pal_t.save(d / "pal_t.png", transparency=0)
    rgba = np.dstack([crop(photo("motorcycle_left"), H, W, 200, 300), _alpha(H, W)])
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    la = np.dstack([crop(photo("immunohistochemistry"), H, W, 100, 100)[..., 2], _alpha(H, W)[::-1]])
    Image.fromarray(la, "LA").save(d / "la.png")
    _write_png16(d / "g16.png", _to16(crop(photo("coffee"), H, W, 50, 60)[..., :1], 1))
    _write_png16(d / "rgb16.png", _to16(crop(photo("chelsea"), H, W, 60, 90), 2))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    Image.fromarray(crop(photo("rocket"), H, W + 6, 100, 100)).save(d / "exif6.jpg", quality=95, exif=exif.tobytes())
    Image.fromarray(crop(photo("astronaut"), H, W, 300, 200)).save(d / "icc.png", icc_profile=SRGB)
    return d


def decoded(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(color (H, W, C), alpha or None) as a viewer shows the file: Pillow's own EXIF transpose and mode
    conversions, pypng for 16-bit PNGs."""
    if path.suffix == ".png" and open(path, "rb").read(25)[24] == 16:
        a = _read_png16(path)
    else:
        im = ImageOps.exif_transpose(Image.open(path))
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        a = np.asarray(im)
    a = a[..., None] if a.ndim == 2 else a
    return (a[..., :-1], a[..., -1]) if a.shape[2] in (2, 4) else (a, None)


def model_on(net: torch.nn.Module, a: np.ndarray, rng: float) -> torch.Tensor:
    """net's plain forward on (H, W, C) integer pixels scaled to [0, rng]; a 1-channel image goes through a
    3-channel net as three copies, its output averaged."""
    x = torch.from_numpy(a.astype(np.float64) / np.iinfo(a.dtype).max * rng).float().permute(2, 0, 1)[None]
    with torch.no_grad():
        if x.shape[1] == 1 and getattr(net, "channels", 3) == 3:
            return net(x.repeat(1, 3, 1, 1)).mean(1, keepdim=True)
        return net(x)


def quantized(y: torch.Tensor, rng: float, dtype) -> np.ndarray:
    top = np.iinfo(dtype).max
    return (y[0].double() / rng * top).round().clamp(0, top).permute(1, 2, 0).numpy().astype(dtype)


def assert_pixels(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Equal up to one unit: float rounding of the same forward may put a value on either side of .5."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
    assert diff.max() <= 1, f"{what}: max difference {diff.max()}"
    assert diff.mean() < 0.05, f"{what}: mean difference {diff.mean():.3f}"


@pytest.fixture(scope="module")
def net2():
    if WEIGHTS is None:
        pytest.skip("published checkpoints not found (LATTICE_WEIGHTS_DIR)")
    return lk.LatticeNet.from_checkpoint(Path(WEIGHTS) / "LatticeNet_x2.pt").eval()


def bicubic(a: np.ndarray, scale: int) -> torch.Tensor:
    x = torch.from_numpy(a.astype(np.float64) / np.iinfo(a.dtype).max * 255).float()[None, None]
    return torch.nn.functional.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


# ---------------------------------------------------------------------------------------------------------------
# --help shows a working example


_HELP: dict[str, subprocess.CompletedProcess] = {}


def help_of(name: str) -> subprocess.CompletedProcess:
    """`name --help`, run once per session."""
    if name not in _HELP:
        _HELP[name] = cli(name, "--help")
    return _HELP[name]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_an_example(name):
    r = help_of(name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: {name} "), r.stdout[:200]
    assert re.search(rf"^examples?:\n\s+(torchrun .*)?{name} ", r.stdout, re.M) or f"\n  {name} " in r.stdout, \
        f"{name} --help shows no example:\n{r.stdout}"


def _example(help_text: str, name: str) -> list[str]:
    line = next(ln for ln in help_text.splitlines() if ln.strip().startswith(name + " "))
    return shlex.split(line.split("#")[0])[1:]


@needs_weights
def test_upscale_help_example_runs(tmp_path):
    """The first example of `lattice-upscale --help`, run as written in a folder holding photo.jpg."""
    Image.fromarray(crop(photo("coffee"), 12, 16, 100, 200)).save(tmp_path / "photo.jpg")
    args = _example(help_of("lattice-upscale").stdout, "lattice-upscale")
    assert args == ["--scale", "4", "photo.jpg"], args
    r = cli("lattice-upscale", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "photo_x4.png").size == (64, 48)


def test_denoise_help_example_runs(tmp_path):
    """The first example of `lattice-denoise --help`, with a (randomly initialized) model where it names one."""
    torch.manual_seed(0)
    (tmp_path / "runs" / "dn").mkdir(parents=True)
    lk.LatticeRestorer(3, "small").eval().save_safetensors(tmp_path / "runs" / "dn" / "model.safetensors")
    Image.fromarray(crop(photo("rocket"), 16, 16, 100, 100)).save(tmp_path / "noisy.png")
    args = _example(help_of("lattice-denoise").stdout, "lattice-denoise")
    assert args == ["--checkpoint", "runs/dn/model.safetensors", "noisy.png"], args
    r = cli("lattice-denoise", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "noisy_restored.png").size == (16, 16)


# ---------------------------------------------------------------------------------------------------------------
# lattice-upscale on every image mode


@needs_weights
def test_upscale_every_mode(gallery, net2, tmp_path):
    """RGB, L, P (with and without transparency), RGBA, LA (alpha bicubic), 16-bit gray and RGB (written 16-bit),
    EXIF-rotated JPEG (upright output), ICC-tagged (profile carried over): each output equals the model's forward on
    the decoded pixels, in the input's mode and depth (in float32, the forward's precision; the default precision's
    own test is test_upscale_default_precision)."""
    r = cli("lattice-upscale", "--scale", "2", gallery, "-o", tmp_path, "-q", "--dtype", "float32")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in gallery.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n.rsplit(".", 1)[0] + "_x2.png" for n in names)
    for name in names:
        color, alpha = decoded(gallery / name)
        out_color, out_alpha = decoded(tmp_path / (name.rsplit(".", 1)[0] + "_x2.png"))
        assert_pixels(out_color, quantized(model_on(net2, color, 255.0), 255.0, color.dtype), name)
        assert (out_alpha is None) == (alpha is None), f"{name}: alpha channel lost or added"
        if alpha is not None:
            assert_pixels(out_alpha, quantized(bicubic(alpha, 2), 255.0, alpha.dtype)[..., 0], f"{name} alpha")
            pil = np.asarray(Image.fromarray(alpha).resize((2 * alpha.shape[1], 2 * alpha.shape[0]), Image.BICUBIC))
            assert np.abs(out_alpha.astype(int) - pil).mean() < 3, f"{name}: alpha far from PIL's bicubic"
    assert decoded(tmp_path / "exif6_x2.png")[0].shape == (2 * (W + 6), 2 * H, 3), "EXIF rotation not applied"
    assert Image.open(tmp_path / "icc_x2.png").info.get("icc_profile") == SRGB
    assert "icc_profile" not in Image.open(tmp_path / "rgb_x2.png").info
    g16 = _read_png16(tmp_path / "g16_x2.png")
    assert g16.shape == (2 * H, 2 * W, 1) and (g16 % 256 != 0).mean() > 0.9, "16-bit output lost its low byte"


@needs_weights
def test_upscale_default_precision(gallery, tmp_path):
    """Without --dtype the command runs in inference.default_dtype (bfloat16 for LatticeNet on a CPU with bf16
    arithmetic): the same file as the explicit --dtype, and not the other precision's."""
    default = str(inference.default_dtype(lk.LatticeNet(scale=2), "cpu")).removeprefix("torch.")
    other = "float32" if default == "bfloat16" else "bfloat16"
    files = {}
    for label, extra in (("auto", ()), (default, ("--dtype", default)), (other, ("--dtype", other))):
        r = cli("lattice-upscale", "-s", "2", gallery / "rgb.png", "-o", tmp_path / label, "-q", *extra)
        assert r.returncode == 0, r.stderr
        files[label] = (tmp_path / label / "rgb_x2.png").read_bytes()
    assert files["auto"] == files[default]
    assert files["auto"] != files[other]


@needs_weights
def test_upscale_alpha_by_model_and_jpeg_output(gallery, net2, tmp_path):
    """--alpha model: the alpha channel is the model's output on its gray replica. --format jpg --quality 90: JPEG
    files with the quantization tables of quality 90, the ICC profile, and 16-bit input rounded to 8 bits."""
    r = cli("lattice-upscale", "-s", "2", gallery / "rgba.png", gallery / "la.png", "--alpha", "model",
            "-o", tmp_path / "a", "-q", "--dtype", "float32")
    assert r.returncode == 0, r.stderr
    for name in ("rgba", "la"):
        _, alpha = decoded(gallery / f"{name}.png")
        _, out_alpha = decoded(tmp_path / "a" / f"{name}_x2.png")
        assert_pixels(out_alpha, quantized(model_on(net2, alpha[..., None], 255.0), 255.0, np.uint8)[..., 0], name)
    r = cli("lattice-upscale", "-s", "2", gallery / "icc.png", gallery / "rgb16.png", "--format", "jpg",
            "--quality", "90", "-o", tmp_path / "j", "-q")
    assert r.returncode == 0, r.stderr
    for name in ("icc", "rgb16"):
        path = tmp_path / "j" / f"{name}_x2.jpg"
        assert path.read_bytes()[:2] == b"\xff\xd8", f"{path} is not a JPEG"
        im = Image.open(path)
        # libjpeg's scaling of the standard luminance table (first entry 16) at quality 90: 16 * 20 / 100 -> 3
        assert im.quantization[0][0] == (16 * (200 - 2 * 90) + 50) // 100
        color, _ = decoded(gallery / f"{name}.png")
        want = quantized(model_on(net2, color, 255.0), 255.0, np.uint8).astype(float)
        assert np.abs(np.asarray(im, float) - want).mean() < 3, f"{name}: JPEG far from the PNG result"
    assert Image.open(tmp_path / "j" / "icc_x2.jpg").info.get("icc_profile") == SRGB


# ---------------------------------------------------------------------------------------------------------------
# lattice-denoise on every mode


@pytest.fixture(scope="module")
def restorers(tmp_path_factory) -> dict[int, tuple[Path, torch.nn.Module]]:
    """Small randomly initialized LatticeRestorers (color and gray) saved as safetensors: only the plumbing is
    under test, not the quality."""
    d = tmp_path_factory.mktemp("restorers")
    out = {}
    for ch in (3, 1):
        torch.manual_seed(ch)
        net = lk.LatticeRestorer(ch, "small").eval()
        net.save_safetensors(d / f"dn{ch}.safetensors")
        out[ch] = (d / f"dn{ch}.safetensors", net)
    return out


def test_denoise_every_mode(gallery, restorers, tmp_path):
    """A color model on RGB, L (as RGB, averaged back), P, RGBA/LA (alpha kept as it is), 16-bit gray and RGB
    (kept 16-bit), EXIF-rotated, ICC-tagged; a gray model on color images channel by channel."""
    path3, net3 = restorers[3]
    r = cli("lattice-denoise", "-c", path3, gallery, "-o", tmp_path / "c", "-q")
    assert r.returncode == 0, r.stderr
    for src in sorted(gallery.iterdir()):
        color, alpha = decoded(src)
        out_color, out_alpha = decoded(tmp_path / "c" / f"{src.stem}_restored.png")
        assert_pixels(out_color, quantized(model_on(net3, color, 1.0), 1.0, color.dtype), src.name)
        if alpha is None:
            assert out_alpha is None, src.name
        else:
            assert np.array_equal(out_alpha, alpha), f"{src.name}: alpha changed"
    assert Image.open(tmp_path / "c" / "icc_restored.png").info.get("icc_profile") == SRGB
    path1, net1 = restorers[1]
    r = cli("lattice-denoise", "-c", path1, gallery / "rgb.png", gallery / "gray.png", "-o", tmp_path / "g", "-q")
    assert r.returncode == 0, r.stderr
    color, _ = decoded(gallery / "rgb.png")
    want = np.concatenate([quantized(model_on(net1, color[..., c:c + 1], 1.0), 1.0, np.uint8) for c in range(3)], 2)
    assert_pixels(decoded(tmp_path / "g" / "rgb_restored.png")[0], want, "gray model on RGB")
    gray, _ = decoded(gallery / "gray.png")
    assert_pixels(decoded(tmp_path / "g" / "gray_restored.png")[0],
                  quantized(model_on(net1, gray, 1.0), 1.0, np.uint8), "gray model on L")


# ---------------------------------------------------------------------------------------------------------------
# inputs, outputs, progress, summary


@pytest.fixture
def tree(tmp_path) -> Path:
    """photos/a.png, photos/sub/b.jpg, photos/sub/deeper/c.png, photos/notes.txt."""
    d = tmp_path / "photos"
    (d / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(crop(photo("astronaut"), 12, 16, 50, 200)).save(d / "a.png")
    Image.fromarray(crop(photo("coffee"), 10, 14, 50, 200)).save(d / "sub" / "b.jpg")
    Image.fromarray(crop(photo("chelsea"), 8, 12, 50, 200)).save(d / "sub" / "deeper" / "c.png")
    (d / "notes.txt").write_text("not an image")
    return d


SUMMARY = re.compile(r"^lattice-upscale: (\d+) files?(?:, (\d+) skipped \(output exists\))?, (\d+\.\d\d) megapixels "
                     r"in, (\d+\.\d\d) out, (\d+\.\d) s$", re.M)


@needs_weights
def test_folders_glob_stdin_skip_existing_and_summary(tree, tmp_path):
    out = tmp_path / "out"
    r = cli("lattice-upscale", "-s", "2", tree, "-o", out, "--glob", "*.png")
    assert r.returncode == 0, r.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a_x2.png", "sub/deeper/c_x2.png"]
    m = SUMMARY.search(r.stdout)
    assert m, r.stdout
    assert m.group(1) == "2" and m.group(2) is None
    assert float(m.group(3)) == pytest.approx(round((12 * 16 + 8 * 12) / 1e6, 2))
    assert float(m.group(4)) == pytest.approx(round(4 * (12 * 16 + 8 * 12) / 1e6, 2))
    assert f"{tree / 'a.png'} -> {out / 'a_x2.png'}" in r.stdout
    # all images (default suffixes, notes.txt left out), outputs of the first run kept: they are skipped
    stamp = (out / "a_x2.png").stat().st_mtime_ns
    r = cli("lattice-upscale", "-s", "2", tree, "-o", out, "--skip-existing", "-q")
    assert r.returncode == 0, r.stderr
    m = SUMMARY.search(r.stdout)
    assert m and m.group(1) == "1" and m.group(2) == "2", r.stdout
    assert (out / "sub" / "b_x2.png").exists() and (out / "a_x2.png").stat().st_mtime_ns == stamp
    # a list of paths on stdin
    r = cli("lattice-upscale", "-s", "2", "-", "-o", tmp_path / "listed", "-q",
            stdin=f"{tree / 'sub' / 'b.jpg'}\n\n{tree / 'a.png'}\n")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "listed").iterdir()) == ["a_x2.png", "b_x2.png"]


@needs_weights
def test_outputs_never_overwrite_inputs(tree, tmp_path):
    before = (tree / "a.png").read_bytes()
    r = cli("lattice-upscale", "-s", "2", tree / "a.png", "-o", tree, "--suffix", "")
    assert_user_error(r, "lattice-upscale", "would overwrite the input", "a.png")
    assert (tree / "a.png").read_bytes() == before


@needs_weights
def test_progress_bar_over_files_and_tiles(tree, tmp_path):
    """On a terminal: one bar over the files whose postfix counts the tiles of the current file."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 150, 0, 0))  # tqdm sizes the bar by it
    try:
        e = {**os.environ, "LATTICE_WEIGHTS_DIR": str(Path(WEIGHTS).resolve()), "OMP_NUM_THREADS": "1"}
        p = subprocess.Popen([str(BIN / "lattice-upscale"), "-s", "2", tree / "a.png", tree / "sub" / "b.jpg",
                              "-o", tmp_path, "--tile", "6"], stderr=slave, stdout=subprocess.DEVNULL, env=e)
        os.close(slave)
        slave = None
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        assert p.wait(timeout=300) == 0
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    text = b"".join(chunks).decode(errors="replace")
    assert "lattice-upscale: 100%" in text and "2/2" in text, text[-2000:]
    assert re.search(r"a\.png tile \d+/\d+", text), text[-2000:]


# ---------------------------------------------------------------------------------------------------------------
# user errors: one line, exit status 2; --debug shows the traceback


@needs_weights
def test_user_errors_are_one_line(tree, tmp_path):
    """Through the installed command: a file that is no checkpoint, an unsupported image mode, a bad option value;
    each one line on stderr and exit status 2, never torch's weights_only advice."""
    junk = tmp_path / "bad.pt"
    junk.write_bytes(b"this is not a checkpoint")
    Image.new("CMYK", (8, 8)).save(tmp_path / "cmyk.jpg")
    a = tree / "a.png"
    assert_user_error(cli("lattice-upscale", "-c", junk, a), "lattice-upscale",
                      "bad.pt is neither a PyTorch checkpoint", "nor a safetensors file")
    assert_user_error(cli("lattice-upscale", "-s", "2", tmp_path / "cmyk.jpg", "-o", tmp_path / "o"),
                      "lattice-upscale", "'CMYK' image, which no model here takes")
    # --debug: one traceback (no chained "During handling ..." second one), then the same line
    r = cli("lattice-upscale", "-c", junk, a, "--debug")
    assert r.returncode == 2 and r.stderr.count("Traceback (most recent call last)") == 1, r.stderr
    assert "During handling" not in r.stderr and "direct cause" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("lattice-upscale: error: ") and "bad.pt is neither" in last, last
    # argparse's own errors (a value out of its choices) exit 2 too
    r = cli("lattice-upscale", "-s", "5", a)
    assert r.returncode == 2 and "lattice-upscale: error: argument -s/--scale: invalid choice" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@needs_weights
def test_more_user_errors_through_main(tree, tmp_path, capsys):
    """The same main() as the console script, called in this process (no interpreter start per case)."""
    from lattice_kernels.cli import upscale

    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    a = tree / "a.png"
    x4 = Path(WEIGHTS) / "LatticeNet_x4.pt"
    pickled = tmp_path / "model.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)
    (tmp_path / "other").mkdir()
    Image.open(a).save(tmp_path / "other" / "a.jpg")
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(tmp_path / "rgba.png")
    cases = [
        (["-c", pickled, a], ["model.pt is a PyTorch checkpoint holding Python objects other than tensors"]),
        (["-c", x4, a, tmp_path / "other" / "a.jpg", "-o", tmp_path / "o"], ["would both be written to"]),
        (["-c", x4, tmp_path / "rgba.png", "--format", "jpg", "-o", tmp_path / "o"], ["JPEG has no alpha channel"]),
        (["-c", x4, "-s", "2", a], ["holds x4 weights, but --scale 2 was asked"]),
        (["-c", x4, tmp_path / "missing.png"], ["input not found", "missing.png"]),
        (["-c", x4, tmp_path / "junk.png", "-o", tmp_path / "o"], ["cannot read image", "junk.png"]),
        (["-c", x4, tmp_path / "empty"], ["input not found"]),
        ([a], ["--scale 2|3|4", "--checkpoint PATH"]),
    ]
    (tmp_path / "nothing").mkdir()
    cases.append((["-c", x4, tmp_path / "nothing"], ["no images (.png"]))
    if not torch.cuda.is_available():
        cases.append((["-c", x4, a, "--device", "cuda"], ["--device cuda: no CUDA device"]))
    for args, needles in cases:
        assert upscale.main([str(v) for v in args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lattice-upscale: error: "), err
        assert all(n in err[0] for n in needles), (needles, err[0])
        assert "weights_only" not in err[0]
    for args in (["-s", "2", a, "--quality", "0"], ["-s", "2", a, "--tile", "0"], ["--bogus", a]):
        with pytest.raises(SystemExit) as exc:
            upscale.main([str(v) for v in args])
        assert exc.value.code == 2
        assert "lattice-upscale: error:" in capsys.readouterr().err


def test_missing_published_weights_say_where_to_get_them(tmp_path):
    Image.fromarray(crop(photo("coffee"), 8, 8)).save(tmp_path / "c.png")
    r = cli("lattice-upscale", "--scale", "3", tmp_path / "c.png", weights=False, cache=tmp_path / "cache")
    assert_user_error(r, "lattice-upscale", "LatticeNet_x3.pt not found",
                      "https://github.com/ymff0592/super-resolution", str(tmp_path / "cache" / "lattice_kernels"),
                      "LATTICE_WEIGHTS_DIR")


# ---------------------------------------------------------------------------------------------------------------
# lattice-train


def _train_examples() -> list[list[str]]:
    """The lattice-train command lines of `lattice-train --help` (continuation lines joined), without the program."""
    text = help_of("lattice-train").stdout.replace("\\\n", " ")
    out = []
    for ln in text.splitlines():
        words = shlex.split(ln.split("#")[0]) if "lattice-train " in ln or "cli.train " in ln else []
        if words and words[0] in ("lattice-train", "torchrun"):
            out.append(words)
    return out


def test_train_help_examples_parse():
    """Every example of `lattice-train --help` is a valid command line for the TrainConfig it names."""
    from lattice_kernels.cli import train

    examples = _train_examples()
    assert len(examples) == 4 and examples[-1][0] == "torchrun", examples
    for words in examples:
        args = words[words.index("lattice_kernels.cli.train") + 1:] if words[0] == "torchrun" else words[1:]
        cfg = train.config_from_args(train.build_parser().parse_args(args))
        assert cfg.data and cfg.out_dir


def test_train_under_torchrun_as_in_help(tmp_path):
    """The torchrun example of `lattice-train --help` with 2 CPU processes (gloo), shortened to 2 steps on 16-pixel
    patches of photographs: both ranks exit 0 (torchrun's status), rank 0 alone prints the last step's metrics (two
    ranks printing at once interleaved their lines) and the run folder holds the model."""
    (tmp_path / "DIV2K" / "HR").mkdir(parents=True)
    for name in ("astronaut", "coffee"):
        Image.fromarray(crop(photo(name), 64, 64, 100, 100)).save(tmp_path / "DIV2K" / "HR" / f"{name}.png")
    words = _train_examples()[-1]
    assert words[:3] == ["torchrun", "--nproc_per_node", "4"], words
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *words[3:], "--steps", "2", "--patch", "16", "--batch-size", "2", "--repeat", "4", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, r.stdout
    last = json.loads(lines[0])
    assert last["step"] == 2 and np.isfinite(last["loss"]), last
    assert (tmp_path / "runs" / "x2" / "model.safetensors").exists()
    r = cli("lattice-train", "--data", tmp_path / "nowhere", "--out-dir", tmp_path / "r")
    assert_user_error(r, "lattice-train", "image folder not found")


def test_train_options_are_the_trainconfig_fields():
    """One option per TrainConfig field, named after it, with its default, help and choices: flags cannot drift."""
    import dataclasses

    from lattice_kernels.cli import train
    from lattice_kernels.train import TrainConfig

    parser = train.build_parser()
    by_dest = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(TrainConfig):
        action = by_dest.get(f.name)
        assert action is not None, f"no option for TrainConfig.{f.name}"
        assert f"--{f.name.replace('_', '-')}" in action.option_strings
        assert action.help == f.metadata["help"]
        if f.default is not dataclasses.MISSING:
            assert action.default == f.default, f.name
        elif f.default_factory is not dataclasses.MISSING:
            assert action.default == f.default_factory(), f.name
        else:
            assert action.required, f.name
        if "choices" in f.metadata:
            assert list(action.choices) == list(f.metadata["choices"]), f.name
    assert set(by_dest) - {"help", "debug"} == {f.name for f in dataclasses.fields(TrainConfig)}
    # the defaults alone give TrainConfig's defaults
    args = parser.parse_args(["--data", "d", "--out-dir", "o"])
    assert train.config_from_args(args) == TrainConfig(data="d", out_dir="o")
    argv = ["--data", "d", "--out-dir", "o", "--task", "denoise", "--sigma", "15", "50", "--betas", "0.8", "0.99",
            "--lr-milestones", "10", "20", "--no-progress", "--channels-last", "--amp", "bf16", "--ema", "0.999",
            "--snapshots", "a.pt", "b.pt", "--stage1-checkpoint", "s1.safetensors", "--no-cache-images"]
    cfg = train.config_from_args(parser.parse_args(argv))
    assert cfg == TrainConfig(data="d", out_dir="o", task="denoise", sigma=(15.0, 50.0), betas=(0.8, 0.99),
                              lr_milestones=[10, 20], progress=False, channels_last=True, amp="bf16", ema=0.999,
                              snapshots=["a.pt", "b.pt"], stage1_checkpoint="s1.safetensors", cache_images=False)
    assert train.config_from_args(parser.parse_args(["--data", "d", "--out-dir", "o", "--sigma", "20"])).sigma == 20.0
    with pytest.raises(ValueError, match="--sigma takes 1 or 2 values, got 3"):
        train.config_from_args(parser.parse_args(["--data", "d", "--out-dir", "o", "--sigma", "1", "2", "3"]))
    with pytest.raises(TypeError, match="cannot make an option of type"):
        train._option_spec("mapping", dict[str, int], None)
