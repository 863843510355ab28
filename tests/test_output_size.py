"""lattice-upscale --outscale / --size / --width / --height: the network's scale first, then its float output
resized to the target and rounded once. Checked against an independent resize (resize-right, whose grid is
MATLAB's when the output length is given) of the model's own forward, at sizes that are not multiples of the
scale, with shrinking and enlarging targets and an alpha channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import lattice_kernels as lk
from lattice_kernels.cli import upscale as upscale_cli
from lattice_kernels.inference import OutputSize

from .images import crop, photo
from .test_cli import assert_pixels, cli, decoded, model_on, quantized


@pytest.fixture(scope="module")
def net2(tmp_path_factory):
    """A small randomly initialized x2 LatticeNet saved as safetensors: the resize plumbing is under test."""
    torch.manual_seed(3)
    net = lk.LatticeNet(scale=2).eval()
    path = tmp_path_factory.mktemp("net2") / "net2.safetensors"
    net.save_safetensors(path)
    return path, net


def reference(net: torch.nn.Module, src: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """resize-right (cubic, antialiased, symmetric borders) of the model's float output to size = (H, W), rounded."""
    rr = pytest.importorskip("resize_right", reason="resize-right is in the test extra")
    from resize_right import interp_methods

    y = model_on(net, src, 255.0)[0].double().numpy()  # (C, h, w)
    z = rr.resize(y, out_shape=(y.shape[0], *size), interp_method=interp_methods.cubic, antialiasing=True,
                  pad_mode="symmetric")
    return quantized(torch.from_numpy(z)[None], 255.0, np.uint8)


def test_output_size_rules():
    assert OutputSize(outscale=1.5).of(23, 37) == (35, 56)  # 34.5 and 55.5: halves round up
    assert OutputSize(width=50).of(23, 37) == (31, 50)  # 23 * 50 / 37 = 31.08
    assert OutputSize(height=10).of(23, 37) == (10, 16)
    assert OutputSize(width=40, height=30).of(23, 37) == (30, 40)
    assert OutputSize(outscale=0.01).of(23, 37) == (1, 1)
    for bad, msg in (({"outscale": 0}, "positive factor"), ({"outscale": float("nan")}, "positive factor"),
                     ({"width": 0}, "positive number"), ({"height": 2.5}, "positive number"),
                     ({"outscale": 2, "width": 4}, "not both")):
        with pytest.raises(ValueError, match=msg):
            OutputSize(**bad)


@pytest.mark.parametrize(("option", "size", "suffix"),
                         [(["--outscale", "1.5"], (35, 56), "_x1.5"), (["--outscale", "3.3"], (76, 122), "_x3.3"),
                          (["--width", "50"], (31, 50), "_x2"), (["--size", "40x30"], (30, 40), "_x2"),
                          (["--height", "17"], (17, 27), "_x2")],
                         ids=["outscale-1.5", "outscale-3.3", "width", "size", "height"])
def test_output_is_the_resized_network_output(net2, tmp_path, option, size, suffix, capsys):
    src = crop(photo("coffee"), 23, 37, 120, 200)
    Image.fromarray(src).save(tmp_path / "in.png")
    code = upscale_cli.main(["-c", str(net2[0]), "-q", str(tmp_path / "in.png"), "-o", str(tmp_path), *option])
    assert code == 0, capsys.readouterr().err
    out = decoded(tmp_path / f"in{suffix}.png")[0]
    assert out.shape[:2] == size
    assert_pixels(out, reference(net2[1], src, size), " ".join(option))
    h, w = size
    assert f"{h * w / 1e6:.2f} out" in capsys.readouterr().out


def test_alpha_is_resized_too_and_the_installed_command(net2, tmp_path):
    src = crop(photo("astronaut"), 21, 30, 200, 200)
    alpha = np.linspace(0, 255, 21 * 30).reshape(21, 30).astype(np.uint8)
    Image.fromarray(np.dstack([src, alpha]), "RGBA").save(tmp_path / "a.png")
    r = cli("lattice-upscale", "-c", net2[0], "-q", tmp_path / "a.png", "-o", tmp_path, "--outscale", "0.8")
    assert r.returncode == 0, r.stderr
    color, out_alpha = decoded(tmp_path / "a_x0.8.png")
    assert color.shape[:2] == out_alpha.shape == (17, 24)
    assert_pixels(color, reference(net2[1], src, (17, 24)), "color at 0.8")


def test_conflicting_or_bad_size_options(net2, tmp_path, capsys):
    Image.fromarray(crop(photo("coffee"), 16, 16)).save(tmp_path / "in.png")
    base = ["-c", str(net2[0]), str(tmp_path / "in.png"), "-o", str(tmp_path / "o")]
    assert upscale_cli.main([*base, "--outscale", "2", "--width", "30"]) == 2
    assert "--outscale and --width both set the output size" in capsys.readouterr().err
    assert upscale_cli.main([*base, "--size", "30x20", "--height", "9"]) == 2
    assert "--size and --height both set the output size" in capsys.readouterr().err
    for bad in (["--outscale", "-1"], ["--outscale", "abc"], ["--size", "30"], ["--size", "0x5"], ["--width", "0"]):
        with pytest.raises(SystemExit) as e:
            upscale_cli.main([*base, *bad])
        assert e.value.code == 2, bad
    assert not (tmp_path / "o").exists()
    r = cli("lattice-upscale", *base, "--size", "axb")
    assert r.returncode == 2 and "must be WIDTHxHEIGHT" in r.stderr, r.stderr
