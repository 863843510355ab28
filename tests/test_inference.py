"""Tiled inference, image files and the PSNR/SSIM metrics."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import lattice_kernels as lk
from lattice_kernels import inference
from lattice_kernels.metrics import psnr_y, rgb_to_y, ssim_y

from .conftest import weights_dir
from .images import crop, photo

WEIGHTS = weights_dir()
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason="published checkpoints not found (LATTICE_WEIGHTS_DIR)")


@pytest.fixture(scope="module")
def net4():
    if WEIGHTS is None:
        pytest.skip("published checkpoints not found (LATTICE_WEIGHTS_DIR)")
    return lk.LatticeNet.from_checkpoint(os.path.join(WEIGHTS, "LatticeNet_x4.pt")).eval()


@pytest.mark.slow
def test_tiled_matches_untiled_1024(net4):
    """A 1024x1024 x4 output (256x256 input, a real photograph) in 128-pixel tiles equals the untiled output
    (float32; bf16 in test_tiled_bf16_within_bf16_error)."""
    x = torch.from_numpy(crop(photo("astronaut"), 256, 256, 120, 130)).permute(2, 0, 1)[None].float()
    full = inference.run(net4, x, scale=4, dtype=torch.float32)
    tiled = inference.run(net4, x, scale=4, tile=128, dtype=torch.float32)
    assert tiled.shape == full.shape == (1, 3, 1024, 1024)
    err = (tiled - full).abs().max().item()
    assert err <= 1e-3, f"tiled vs untiled: max abs error {err:.2e} on 0..255"


def test_tiled_global_statistics_on_uneven_grid(net4):
    x = torch.from_numpy(crop(photo("coffee"), 45, 71, 100, 100)).permute(2, 0, 1)[None].float()
    full = inference.run(net4, x, scale=4, dtype=torch.float32)
    tiled = inference.run(net4, x, scale=4, tile=20, dtype=torch.float32)
    assert (tiled - full).abs().max().item() <= 1e-3


def test_tiled_bf16_within_bf16_error(net4):
    """In bfloat16 (the default on a CPU with bf16 arithmetic) exact-statistics tiles differ from the untiled run
    where a float32 sum's order flips a bf16 rounding; the difference stays within bf16's own error against
    float32 (max and mean)."""
    x = torch.from_numpy(crop(photo("coffee"), 45, 71, 100, 100)).permute(2, 0, 1)[None].float()
    ref = inference.run(net4, x, scale=4, dtype=torch.float32)
    full = inference.run(net4, x, scale=4, dtype=torch.bfloat16)
    tiled = inference.run(net4, x, scale=4, tile=20, dtype=torch.bfloat16)
    own = (full - ref).abs()
    diff = (tiled - full).abs()
    assert diff.max() <= 2 * own.max(), (diff.max(), own.max())
    assert diff.mean() <= 2 * own.mean(), (diff.mean(), own.mean())


def test_per_tile_statistics_blend_without_seams(net4):
    """stats='tile' uses each tile's own statistics (approximate): the blend has no seam artefacts, i.e. the
    tiled output stays close to the untiled one everywhere."""
    x = torch.from_numpy(crop(photo("chelsea"), 48, 64, 50, 100)).permute(2, 0, 1)[None].float()
    full = inference.run(net4, x, scale=4)
    tiled = inference.run(net4, x, scale=4, tile=32, overlap=12, stats="tile")
    assert tiled.shape == full.shape
    assert (tiled - full).abs().mean().item() < 2.0
    assert torch.isfinite(tiled).all()


def test_restorer_tiled_matches_untiled():
    torch.manual_seed(0)
    net = lk.LatticeRestorer(3, "small").eval()
    x = torch.from_numpy(crop(photo("rocket"), 40, 52, 100, 100)).permute(2, 0, 1)[None].float() / 255
    full = inference.run(net, x, scale=1)
    tiled = inference.run(net, x, scale=1, tile=24)
    assert (tiled - full).abs().max().item() <= 1e-4


def test_bf16_and_channels_last(net4):
    x = torch.from_numpy(crop(photo("astronaut"), 24, 30, 200, 200)).permute(2, 0, 1)[None].float()
    full = inference.run(net4, x, scale=4, dtype=torch.float32)
    cl = inference.run(net4, x, scale=4, channels_last=True, dtype=torch.float32)
    assert (cl - full).abs().max().item() <= 1e-3
    bf = inference.run(net4, x, scale=4, dtype=torch.bfloat16)
    assert bf.dtype == torch.float32 and (bf - full).abs().mean().item() < 2.0


def test_run_argument_errors(net4):
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"x must be \(1, C, H, W\)"):
        inference.run(net4, x[0], scale=4)
    with pytest.raises(ValueError, match="stats must be 'global' or 'tile'"):
        inference.run(net4, x, scale=4, tile=4, stats="local")
    with pytest.raises(ValueError, match="tile must be a positive number of pixels"):
        inference.run(net4, x, scale=4, tile=0)


def test_files_roundtrip_and_atomic(tmp_path, net4):
    src = tmp_path / "in.png"
    Image.fromarray(crop(photo("coffee"), 20, 26, 100, 200)).save(src)
    dst = tmp_path / "out.png"
    inference.super_resolve_file(net4, src, dst, tile=12)
    out = np.asarray(Image.open(dst))
    assert out.shape == (80, 104, 3) and out.dtype == np.uint8
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")], "temporary file left behind"
    # An interrupted write leaves no file under the final name.
    bad = tmp_path / "never.png"
    with pytest.raises(TypeError):
        inference.write_png(bad, np.zeros((4, 4, 3), dtype=object))
    assert not bad.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_unreadable_and_wrong_mode_images(tmp_path, net4):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG not really")
    with pytest.raises(inference.ImageError, match="cannot read image .*junk.png"):
        inference.super_resolve_file(net4, junk, tmp_path / "o.png")
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8)).save(cmyk)
    with pytest.raises(inference.ImageError, match="'CMYK' image, which no model here takes"):
        inference.super_resolve_file(net4, cmyk, tmp_path / "o.png")
    with pytest.raises(FileNotFoundError, match="image not found"):
        inference.super_resolve_file(net4, tmp_path / "missing.jpg", tmp_path / "o.png")
    with pytest.raises(ValueError, match="output must be a .png file"):
        inference.write_png(tmp_path / "o.jpg", np.zeros((2, 2, 3), np.uint8))
    assert not (tmp_path / "o.png").exists()
    gray = tmp_path / "gray.png"
    Image.fromarray(crop(photo("coffee"), 10, 12)[..., 0]).save(gray)
    inference.super_resolve_file(net4, gray, tmp_path / "g.png")  # through the RGB model, written gray
    assert np.asarray(Image.open(tmp_path / "g.png")).shape == (40, 48)


def test_psnr_ssim_protocol():
    hr = crop(photo("astronaut"), 64, 64, 100, 100)
    assert psnr_y(hr, hr, shave=4) == float("inf")
    assert ssim_y(hr, hr, shave=4) == pytest.approx(1.0)
    noisy = np.clip(hr.astype(int) + np.random.default_rng(0).integers(-3, 4, hr.shape), 0, 255).astype(np.uint8)
    y1, y2 = rgb_to_y(noisy)[4:-4, 4:-4], rgb_to_y(hr)[4:-4, 4:-4]
    mse = np.mean((y1 - y2) ** 2)
    assert psnr_y(noisy, hr, shave=4) == pytest.approx(10 * np.log10(255**2 / mse))
    from skimage.metrics import structural_similarity

    want = structural_similarity(y1, y2, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    assert ssim_y(noisy, hr, shave=4) == pytest.approx(want, abs=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        psnr_y(hr.astype(np.float32), hr)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr_y(hr[:10], hr)
