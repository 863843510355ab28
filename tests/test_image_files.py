"""Image files in every common mode (lattice_kernels.inference.read_image_file / write_image_file), checked against
independent decoders and encoders: Pillow's own EXIF transpose and conversions, pypng for 16-bit PNG."""

from __future__ import annotations

import numpy as np
import png
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

import lattice_kernels as lk
from lattice_kernels import inference
from lattice_kernels.inference import ImageError, LoadedImage, read_image_file, write_image_file

from .images import crop, photo

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(orientation, tmp_path):
    """An image tagged with each EXIF orientation reads as Pillow's exif_transpose shows it."""
    rgb = crop(photo("chelsea"), 12, 17, 100, 100)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(tmp_path / "o.png", exif=exif.tobytes())
    want = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    got = read_image_file(tmp_path / "o.png")
    assert np.array_equal(got.color, want), orientation


@pytest.mark.parametrize("planes", [1, 2, 3, 4])
def test_16bit_png_roundtrip_against_pypng(planes, tmp_path):
    """16-bit gray / gray+alpha / RGB / RGBA: read through pypng-written files with every value kept, written by the
    library's encoder and read back by pypng (the independent decoder), the ICC profile in an iCCP chunk."""
    rng = np.random.default_rng(planes)
    base = crop(photo("astronaut"), 9, 13, 50, 50)
    chans = [base[..., i % 3] for i in range(planes)]
    a = (np.stack(chans, -1).astype(np.uint16) * 256 + rng.integers(0, 256, (9, 13, planes))).astype(np.uint16)
    writer = png.Writer(13, 9, greyscale=planes <= 2, alpha=planes in (2, 4), bitdepth=16)
    with open(tmp_path / "in.png", "wb") as f:
        writer.write(f, a.reshape(9, -1).tolist())
    img = read_image_file(tmp_path / "in.png")
    color_planes = 1 if planes <= 2 else 3
    assert img.color.dtype == np.uint16 and np.array_equal(img.color, a[..., :color_planes])
    assert (img.alpha is None) == (planes in (1, 3))
    if img.alpha is not None:
        assert np.array_equal(img.alpha, a[..., -1])
    img.icc_profile = SRGB
    write_image_file(tmp_path / "out.png", img)
    w, h, rows, info = png.Reader(filename=str(tmp_path / "out.png")).asDirect()
    back = np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(h, w, info["planes"])
    assert info["bitdepth"] == 16 and np.array_equal(back, a)
    assert Image.open(tmp_path / "out.png").info["icc_profile"] == SRGB


def test_palette_bilevel_and_16bit_tiff(tmp_path):
    rgb = crop(photo("rocket"), 10, 14, 200, 200)
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "p.png", transparency=3)
    img = read_image_file(tmp_path / "p.png")
    want = np.asarray(Image.open(tmp_path / "p.png").convert("RGBA"))
    assert img.mode == "P" and np.array_equal(img.color, want[..., :3]) and np.array_equal(img.alpha, want[..., 3])
    assert (img.alpha == 0).any() and (img.alpha == 255).any()
    Image.fromarray(rgb[..., 0] > 128).save(tmp_path / "b.png")
    one = read_image_file(tmp_path / "b.png")
    assert one.color.shape == (10, 14, 1) and set(np.unique(one.color)) <= {0, 255}
    g16 = (rgb[..., 1].astype(np.uint16) * 257)
    Image.fromarray(g16).save(tmp_path / "g.tif")
    t = read_image_file(tmp_path / "g.tif")
    assert t.color.dtype == np.uint16 and np.array_equal(t.color[..., 0], g16)


def test_refused_modes_and_formats(tmp_path):
    Image.new("CMYK", (4, 4)).save(tmp_path / "c.tif")
    with pytest.raises(ImageError, match="'CMYK' image, which no model here takes"):
        read_image_file(tmp_path / "c.tif")
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageError, match="'F' image"):
        read_image_file(tmp_path / "f.tif")
    with pytest.raises(FileNotFoundError, match="image not found"):
        read_image_file(tmp_path / "none.png")
    rgba = LoadedImage(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageError, match="JPEG has no alpha channel"):
        write_image_file(tmp_path / "x.jpg", rgba)
    with pytest.raises(ValueError, match="output format must be png or jpg"):
        write_image_file(tmp_path / "x.gif", rgba)
    with pytest.raises(ValueError, match="quality must be in 1..100"):
        write_image_file(tmp_path / "x.jpg", LoadedImage(np.zeros((4, 4, 3), np.uint8)), quality=0)
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".x*"))


def test_16bit_to_jpeg_rounds_to_8_bits(tmp_path):
    """Stripes 8 pixels wide (one JPEG block each) of 16-bit values: the JPEG holds round(v / 257)."""
    v = np.array([0, 128, 129, 32767, 65407, 65535], np.uint16)
    stripes = np.repeat(v, 8)[None, :, None].repeat(8, 0).repeat(3, 2)  # (8, 48, 3)
    write_image_file(tmp_path / "x.jpg", LoadedImage(stripes), quality=100)
    got = np.asarray(Image.open(tmp_path / "x.jpg").convert("RGB"), float)[4, 4::8, 0]
    assert np.abs(got - np.round(v / 257)).max() <= 1  # JPEG at quality 100: within one level


def test_super_resolve_image_keeps_mode_and_depth():
    """In process, with a randomly initialized x2 model: gray stays gray, 16-bit stays 16-bit, alpha by bicubic."""
    torch.manual_seed(0)
    net = lk.LatticeNet(scale=2).eval()
    g16 = LoadedImage((crop(photo("coffee"), 6, 7, 100, 100)[..., :1].astype(np.uint16) * 257),
                      np.full((6, 7), 65535, np.uint16))
    out = inference.super_resolve_image(net, g16)
    assert out.color.shape == (12, 14, 1) and out.color.dtype == np.uint16
    assert np.array_equal(out.alpha, np.full((12, 14), 65535, np.uint16)), "a constant alpha must stay constant"
    with pytest.raises(ValueError, match="alpha must be one of bicubic, model"):
        inference.super_resolve_image(net, g16, alpha="nearest")
