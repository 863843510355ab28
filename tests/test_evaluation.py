"""The benchmarks' evaluation protocols (lattice_kernels.evaluation) and the evaluate command: the metrics against
scikit-image's, the SR protocol on photographs with the published checkpoints against an independent pipeline
(resize-right LR, the plain-PyTorch reference LatticeNet, scikit-image PSNR/SSIM), the denoising protocol, and every
user error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lattice_kernels import LatticeRestorer
from lattice_kernels.cli import evaluate as cli
from lattice_kernels.evaluation import add_noise, crop_to_scale, evaluate_denoise, make_lr, noise_rng, to_gray
from lattice_kernels.imresize import imresize
from lattice_kernels.inference import ImageError
from lattice_kernels.metrics import psnr, psnr_y, scores_y, ssim, ssim_y
from lattice_kernels.models import save_safetensors

from .conftest import weights_dir
from .images import crop, photo

WEIGHTS = weights_dir()
needs_weights = pytest.mark.skipif(
    WEIGHTS is None, reason="published checkpoints not found: set LATTICE_WEIGHTS_DIR or put ../shared/weights beside "
    "the repository")

# HR crops of real photographs, deliberately not multiples of 3 or 4 (the protocol crops them)
CROPS = {"astronaut": (101, 130, 30, 170), "coffee": (98, 123, 60, 200)}


def _write(folder: Path, images: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        Image.fromarray(img).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("hr") / "Photos" / "HR",
                  {n: crop(photo(n), *c) for n, c in CROPS.items()})


# ---------------------------------------------------------------------------------------------------------------
# metrics, against scikit-image

def test_metrics_match_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    hr = crop(photo("chelsea"), 80, 90, 40, 100)
    noisy = np.clip(hr + np.random.default_rng(0).normal(0, 9, hr.shape), 0, 255).round().astype(np.uint8)
    assert psnr(noisy, hr) == pytest.approx(peak_signal_noise_ratio(hr, noisy, data_range=255), abs=1e-9)
    # The benchmarks' SSIM (Wang et al.'s MATLAB code): scikit-image's documented settings to match it.
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    y = lambda a: 16 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255  # noqa: E731
    assert ssim_y(noisy, hr, 3) == pytest.approx(structural_similarity(y(noisy)[3:-3, 3:-3], y(hr)[3:-3, 3:-3],
                                                                       **kw), abs=1e-9)
    assert psnr_y(noisy, hr, 3) == pytest.approx(
        peak_signal_noise_ratio(y(hr)[3:-3, 3:-3], y(noisy)[3:-3, 3:-3], data_range=255), abs=1e-9)
    assert ssim(noisy, hr) == pytest.approx(structural_similarity(hr.astype(float), noisy.astype(float),
                                                                  channel_axis=2, **kw), abs=1e-9)
    with pytest.raises(ValueError, match="11x11"):
        ssim(noisy[:8, :8], hr[:8, :8])


def test_scores_y_are_psnr_y_and_ssim_y():
    """scores_y (the evaluation's one pass over an output and its baseline, the reference's luma and window means
    shared) gives psnr_y and ssim_y's numbers, and scikit-image's SSIM, for non-square images down to the window."""
    from skimage.metrics import structural_similarity

    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    y = lambda a: 16 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255  # noqa: E731
    rng = np.random.default_rng(1)
    for h, w, shave in ((150, 97, 4), (21, 40, 5), (13, 14, 1)):
        hr = crop(photo("astronaut"), h, w, 60, 70)
        a, b = (np.clip(hr + rng.normal(0, sd, hr.shape), 0, 255).round().astype(np.uint8) for sd in (4, 12))
        got = scores_y([a, b], hr, shave)
        for img, (p, q) in zip((a, b), got):
            assert p == pytest.approx(psnr_y(img, hr, shave), abs=1e-12)
            assert q == pytest.approx(ssim_y(img, hr, shave), abs=1e-12)
            sl = slice(shave, -shave)
            assert q == pytest.approx(structural_similarity(y(img)[sl, sl], y(hr)[sl, sl], **kw), abs=1e-9)
    with pytest.raises(ValueError, match="11x11"):
        scores_y([a[:12, :12]], hr[:12, :12], 1)
    with pytest.raises(ValueError, match="differ in shape"):
        scores_y([a], hr[:, :10], 1)


# ---------------------------------------------------------------------------------------------------------------
# super-resolution protocol

def test_crop_and_lr():
    hr = crop(photo("rocket"), 103, 130)
    assert crop_to_scale(hr, 4).shape == (100, 128, 3)
    lr = make_lr(hr, 4)
    assert lr.shape == (25, 32, 3) and lr.dtype == np.uint8
    assert np.array_equal(lr, imresize(hr[:100, :128], 1 / 4))
    with pytest.raises(ValueError, match="smaller than the scale"):
        crop_to_scale(hr[:2], 3)


def _independent_scores(scale: int, hr_dir: Path) -> tuple[float, float, float]:
    """The protocol written out with other code: LR by resize-right (MATLAB's per-pass uint8 rounding), the plain
    reference network (no tiling), Y and PSNR/SSIM by scikit-image. Means of PSNR, SSIM and bicubic PSNR."""
    rr = pytest.importorskip("resize_right", reason="resize-right is in the test extra")
    from resize_right import interp_methods
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from lattice_kernels.models.reference import PlainLatticeNet

    def rr_uint8(img, s):
        out = img.astype(np.float64)
        for dim in (0, 1):
            f = [1.0, 1.0, 1.0]
            f[dim] = s
            out = rr.resize(out, scale_factors=f, interp_method=interp_methods.cubic, pad_mode="symmetric")
            out = np.clip(np.floor(out + 0.5), 0, 255)
        return out.astype(np.uint8)

    net = PlainLatticeNet(scale)
    net.load_state_dict(torch.load(Path(WEIGHTS) / f"LatticeNet_x{scale}.pt", map_location="cpu", weights_only=True))
    net.eval()
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    ps, ss, bs = [], [], []
    for f in sorted(hr_dir.glob("*.png")):
        hr = np.asarray(Image.open(f).convert("RGB"))
        hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
        lr = rr_uint8(hr, 1 / scale)
        with torch.no_grad():
            sr = net(torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float())
        sr = sr[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        bic = rr_uint8(lr, scale)
        y = lambda a: (16 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255  # noqa: E731
                       )[scale:-scale, scale:-scale]
        ps.append(peak_signal_noise_ratio(y(hr), y(sr), data_range=255))
        ss.append(structural_similarity(y(hr), y(sr), **kw))
        bs.append(peak_signal_noise_ratio(y(hr), y(bic), data_range=255))
    return float(np.mean(ps)), float(np.mean(ss)), float(np.mean(bs))


@needs_weights
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_evaluate_command_on_photographs(scale, hr_dir, tmp_path, capsys):
    """The command against the independent pipeline: the means agree within 0.02 dB / 0.0005 (LR pixels may differ
    by one level at rounding ties). Tiled inference equals untiled inference (tests/test_inference.py)."""
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    rc = cli.main(["--checkpoint", str(Path(WEIGHTS) / f"LatticeNet_x{scale}.pt"), "--hr-dir", str(hr_dir),
                   "--json", str(out_json), "--markdown", str(out_md), "--quiet"])
    assert rc == 0
    report = json.loads(out_json.read_text())
    (ds,) = report["datasets"]
    assert ds["name"] == "Photos" and ds["scale"] == scale and [im["name"] for im in ds["images"]] == sorted(CROPS)
    want_psnr, want_ssim, want_bicubic = _independent_scores(scale, hr_dir)
    assert ds["mean"]["psnr"] == pytest.approx(want_psnr, abs=0.02)
    assert ds["mean"]["ssim"] == pytest.approx(want_ssim, abs=5e-4)
    assert ds["mean"]["baseline_psnr"] == pytest.approx(want_bicubic, abs=0.02)
    assert ds["mean"]["psnr"] > ds["mean"]["baseline_psnr"] + 0.5  # the network beats bicubic on real photos
    md = out_md.read_text()
    assert md == capsys.readouterr().out and f"### Photos (x{scale})" in md and "| **mean** |" in md


@needs_weights
def test_lr_dir_and_gray_images(hr_dir, tmp_path):
    """Pre-made LR images (the archives' 'namex4' names) give the same scores as LR made on the fly; a gray HR
    image is scored as its RGB replication."""
    ckpt = str(Path(WEIGHTS) / "LatticeNet_x4.pt")
    lr_dir = _write(tmp_path / "LR", {f"{f.stem}x4": make_lr(np.asarray(Image.open(f)), 4)
                                      for f in hr_dir.glob("*.png")})
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    cli.main(["--checkpoint", ckpt, "--hr-dir", str(hr_dir), "--json", str(a), "--quiet"])
    cli.main(["--checkpoint", ckpt, "--hr-dir", str(hr_dir), "--lr-dir", str(lr_dir), "--json", str(b), "--quiet"])
    ia, ib = (json.loads(p.read_text())["datasets"][0]["images"] for p in (a, b))
    assert [(x["psnr"], x["ssim"]) for x in ia] == [(x["psnr"], x["ssim"]) for x in ib]

    gray = to_gray(crop(photo("coffee"), 64, 72))
    g_dir = _write(tmp_path / "gray", {"g": gray})
    c_dir = _write(tmp_path / "rgb", {"g": np.repeat(gray[..., None], 3, axis=2)})
    c, d = tmp_path / "c.json", tmp_path / "d.json"
    cli.main(["--checkpoint", ckpt, "--hr-dir", str(g_dir), "--json", str(c), "--quiet"])
    cli.main(["--checkpoint", ckpt, "--hr-dir", str(c_dir), "--json", str(d), "--quiet"])
    assert json.loads(c.read_text())["datasets"][0]["mean"] == json.loads(d.read_text())["datasets"][0]["mean"]


# ---------------------------------------------------------------------------------------------------------------
# denoising protocol

def _identity_restorer(channels: int) -> LatticeRestorer:
    """A LatticeRestorer whose last conv is zero: output = input + tanh(0) = input."""
    torch.manual_seed(0)
    net = LatticeRestorer(channels=channels, preset="small").eval()
    with torch.no_grad():
        net.tail[1].weight.zero_()
        net.tail[1].bias.zero_()
    return net


def test_noise_is_seeded_unclipped_and_clipped_on_request():
    clean = crop(photo("astronaut"), 40, 50)
    a, b = add_noise(clean, 50, noise_rng(3, 1)), add_noise(clean, 50, noise_rng(3, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, add_noise(clean, 50, noise_rng(3, 2)))
    assert a.dtype == np.float32 and a.min() < 0 and a.max() > 255  # not clipped, not rounded
    assert np.std(a - clean) == pytest.approx(50, rel=0.03)
    c = add_noise(clean, 50, noise_rng(3, 1), clip=True)
    assert c.min() >= 0 and c.max() <= 255 and np.array_equal(c, np.clip(a, 0, 255))
    with pytest.raises(ValueError, match="sigma"):
        add_noise(clean, -1, noise_rng(0, 0))


@pytest.mark.parametrize("channels", [1, 3])
def test_denoise_protocol_full_image_psnr(channels):
    img = crop(photo("coffee"), 48, 64)
    net = _identity_restorer(channels)
    score = evaluate_denoise(net, img, 25.0, noise_rng(0, 0))
    clean = to_gray(img) if channels == 1 else img
    noisy = add_noise(clean, 25.0, noise_rng(0, 0))
    out = np.floor(np.clip(noisy, 0, 255) + 0.5)  # the identity network's rounded output
    mse = np.mean((out - clean.astype(np.float64)) ** 2)  # every pixel and channel, no shave
    assert score.psnr == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-4)
    assert score.psnr == pytest.approx(score.baseline_psnr, abs=1e-4)
    assert (score.width, score.height) == (64, 48)


def test_evaluate_command_denoise(tmp_path):
    ckpt = tmp_path / "restorer.safetensors"
    save_safetensors(_identity_restorer(3), ckpt)
    images = {"coffee": crop(photo("coffee"), 48, 64), "rocket": crop(photo("rocket"), 40, 40)}
    d = _write(tmp_path / "clean", images)
    out = tmp_path / "r.json"
    assert cli.main(["--task", "denoise", "--sigma", "15", "--checkpoint", str(ckpt), "--hr-dir", str(d),
                     "--json", str(out), "--quiet"]) == 0
    ds = json.loads(out.read_text())["datasets"][0]
    assert ds["sigma"] == 15 and len(ds["images"]) == 2
    assert ds["mean"]["psnr"] == pytest.approx(ds["mean"]["baseline_psnr"], abs=1e-4)
    want = []
    for i, clean in enumerate(images[k] for k in sorted(images)):  # noise of image i (sorted order), seed 0
        out = np.floor(np.clip(add_noise(clean, 15.0, noise_rng(0, i)), 0, 255) + 0.5)
        want.append(10 * np.log10(255**2 / np.mean((out - clean) ** 2)))
    assert ds["mean"]["psnr"] == pytest.approx(np.mean(want), abs=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# user errors: each names what was wrong

@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A randomly initialised x2 LatticeNet checkpoint: the error paths need no published weights."""
    import lattice_kernels as lk

    p = tmp_path_factory.mktemp("ckpt") / "x2.safetensors"
    save_safetensors(lk.LatticeNet(scale=2), p)
    return p


def _run(*argv: str) -> int:
    """The command's run: user errors come out as the library's exceptions (main() turns each into one
    `lattice-evaluate: error: ...` line and exit status 2, tested in tests/test_cli.py)."""
    return cli.run(cli.build_parser().parse_args([*argv, "--quiet"]))


def test_error_missing_folders_and_files(tiny_ckpt, hr_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found: .*nowhere"):
        _run("--checkpoint", str(tiny_ckpt), "--hr-dir", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="image folder not found: .*no-lr"):
        _run("--checkpoint", str(tiny_ckpt), "--hr-dir", str(hr_dir), "--lr-dir", str(tmp_path / "no-lr"))
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        _run("--checkpoint", str(tmp_path / "missing.pt"), "--hr-dir", str(hr_dir))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        _run("--checkpoint", str(tiny_ckpt), "--hr-dir", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="one --lr-dir per --hr-dir"):
        _run("--checkpoint", str(tiny_ckpt), "--hr-dir", str(hr_dir), "--hr-dir", str(hr_dir), "--lr-dir",
             str(hr_dir))


def test_error_unreadable_image_is_named(tiny_ckpt, tmp_path):
    d = _write(tmp_path / "hr", {"good": crop(photo("chelsea"), 40, 40)})
    (d / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageError, match=r"cannot read image .*broken\.png"):
        _run("--checkpoint", str(tiny_ckpt), "--hr-dir", str(d))


def test_error_lr_missing_or_mismatched(tiny_ckpt, tmp_path):
    hr = crop(photo("chelsea"), 40, 41)
    d = _write(tmp_path / "hr", {"cat": hr})
    lr_dir = _write(tmp_path / "lr", {"other": make_lr(hr, 2)})
    with pytest.raises(FileNotFoundError, match=r"no LR image for .*cat\.png"):
        _run("--checkpoint", str(tiny_ckpt), "--hr-dir", str(d), "--lr-dir", str(lr_dir))
    _write(lr_dir, {"cat_x2": make_lr(hr, 2)[:, :-1]})
    with pytest.raises(ValueError, match=r"cat_x2\.png: LR image is 19x20, expected 20x20 .*cat\.png"):
        _run("--checkpoint", str(tiny_ckpt), "--hr-dir", str(d), "--lr-dir", str(lr_dir))
    with pytest.raises(ValueError, match="super-resolution"):
        from lattice_kernels.evaluation import evaluate_folder

        evaluate_folder(_identity_restorer(3), d, task="denoise", lr_dir=lr_dir)
    with pytest.raises(ValueError, match="--tile"):
        _run("--checkpoint", str(tiny_ckpt), "--hr-dir", str(d), "--tile", "-1")


# ---------------------------------------------------------------------------------------------------------------
# training pairs use the same imresize

def test_training_lr_is_the_protocol_lr(tmp_path):
    from lattice_kernels.train import SRDataset
    from lattice_kernels.train.data import bicubic_downscale

    hr = crop(photo("rocket"), 66, 81)
    d = _write(tmp_path / "hr", {"rocket": hr})
    ds = SRDataset(d, scale=3, patch=22, augment=False)  # LR 22x27: the crop may start at x = 0..5
    lr, hr_patch = ds[0]
    want = make_lr(hr, 3)
    x0 = [x for x in range(want.shape[1] - 22 + 1)
          if np.array_equal(want[:, x:x + 22], lr.permute(1, 2, 0).round().to(torch.uint8).numpy())]
    assert len(x0) >= 1
    assert np.array_equal(hr_patch.permute(1, 2, 0).round().to(torch.uint8).numpy(),
                          hr[:66, x0[0] * 3:(x0[0] + 22) * 3])
    pil = bicubic_downscale(hr, 3, "pil")
    assert pil.shape == want.shape and not np.array_equal(pil, want)
    assert SRDataset(d, scale=3, patch=22, lr_resize="pil").lr_resize == "pil"
    with pytest.raises(ValueError, match="lr_resize must be one of matlab, pil"):
        SRDataset(d, scale=3, patch=22, lr_resize="lanczos")
