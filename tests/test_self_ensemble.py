"""The x8 geometric self-ensemble ("LatticeNet+", inference.run(..., self_ensemble=True), --self-ensemble):
equal to the mean of 8 explicit calls of the model on the flipped and rotated image (written here with numpy's
rot90/fliplr, independently of the library's views), equivariant under the flips and rotations it averages over,
exact with tiling and whole-image statistics, on non-square images; the commands take the option and the
evaluation report names the mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lattice_kernels as lk
from lattice_kernels import inference
from lattice_kernels.evaluation import evaluate_images, markdown

from .images import crop, photo
from .test_cli import cli


@pytest.fixture(scope="module")
def net() -> lk.LatticeNet:
    torch.manual_seed(3)
    return lk.LatticeNet(2, backend="cpu").eval()


@pytest.fixture(scope="module")
def lr() -> torch.Tensor:
    """A non-square crop of a photograph, (1, 3, 18, 26) on 0..255."""
    img = crop(photo("chelsea"), 18, 26, 40, 90)
    return torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]


def _explicit_ensemble(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Mean over the 8 dihedral transforms T of T^-1(net(T(x))), in float64, with numpy's transforms on (H, W, C)."""
    img = x[0].permute(1, 2, 0).numpy()
    outs = []
    for flip in (False, True):
        for k in range(4):
            t = np.rot90(np.fliplr(img) if flip else img, k)
            with torch.no_grad():
                y = net(torch.from_numpy(np.ascontiguousarray(t)).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
            y = np.rot90(y, -k)
            outs.append((np.fliplr(y) if flip else y).astype(np.float64))
    return np.mean(outs, axis=0)


def test_equals_the_mean_of_eight_explicit_calls(net, lr):
    y = inference.run(net, lr, scale=2, self_ensemble=True, dtype=torch.float32)
    assert y.shape == (1, 3, 36, 52) and y.dtype == torch.float32
    expected = _explicit_ensemble(net, lr)
    got = y[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    plain = inference.run(net, lr, scale=2, dtype=torch.float32)
    assert (y - plain).abs().max() > 1e-3, "the ensemble should differ from the plain output"


@pytest.mark.parametrize(("k", "flip"), [(1, False), (2, False), (0, True), (3, True)])
def test_is_equivariant_under_its_transforms(net, lr, k, flip):
    def t(a: torch.Tensor) -> torch.Tensor:
        return torch.rot90(a.flip(3) if flip else a, k, dims=(2, 3))

    y = inference.run(net, lr, scale=2, self_ensemble=True)
    yt = inference.run(net, t(lr).contiguous(), scale=2, self_ensemble=True)
    # the same 8 outputs summed in another order: float32 rounding only
    torch.testing.assert_close(yt, t(y), rtol=1e-5, atol=1e-5 * y.abs().max().item())


def test_with_tiles_and_whole_image_statistics(net, lr):
    whole = inference.run(net, lr, scale=2, self_ensemble=True, dtype=torch.float32)
    calls: list[tuple[int, int]] = []
    tiled = inference.run(net, lr, scale=2, self_ensemble=True, tile=10, stats="global", dtype=torch.float32,
                          on_tile=lambda d, n: calls.append((d, n)))
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5 * whole.abs().max().item())
    total = calls[-1][1]
    assert calls == [(i + 1, total) for i in range(total)] and total % 8 == 0


def test_under_bfloat16_autocast(net, lr):
    y32 = inference.run(net, lr, scale=2, self_ensemble=True, dtype=torch.float32)
    y16 = inference.run(net, lr, scale=2, self_ensemble=True, dtype=torch.bfloat16)
    rel = ((y16 - y32).norm() / y32.norm()).item()
    assert rel < 2e-2, f"bfloat16 self-ensemble relative error {rel:.2e}"  # bf16 has 8 bits of mantissa


def test_wrong_inputs_are_refused_before_any_view(net):
    with pytest.raises(ValueError, match=r"x must be \(1, C, H, W\)"):
        inference.run(net, torch.zeros(3, 8, 8), scale=2, self_ensemble=True)


def test_evaluation_names_the_mode(net):
    images = {"chelsea": crop(photo("chelsea"), 36, 52, 40, 90)}
    plain = evaluate_images(net, images, "photos", dtype=torch.float32)
    plus = evaluate_images(net, images, "photos", self_ensemble=True, dtype=torch.float32)
    assert plus.images[0].psnr != plain.images[0].psnr
    assert "LatticeNet+ (x8 self-ensemble) PSNR / SSIM" in markdown([plus], "LatticeNet+ (x8 self-ensemble)")


def test_commands_take_the_option(net, tmp_path):
    from PIL import Image

    img = crop(photo("chelsea"), 18, 26, 40, 90)
    Image.fromarray(img).save(tmp_path / "in.png")
    hr = tmp_path / "hr"
    hr.mkdir()
    Image.fromarray(crop(photo("chelsea"), 36, 52, 40, 90)).save(hr / "c.png")
    ckpt = tmp_path / "net.safetensors"
    net.save_safetensors(ckpt)
    r = cli("lattice-upscale", "--checkpoint", ckpt, tmp_path / "in.png", "-o", tmp_path / "out", "--self-ensemble",
            "--backend", "cpu", "--dtype", "float32")
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(tmp_path / "out" / "in_x2.png"))
    with torch.no_grad():
        expected = _explicit_ensemble(net, torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None])
    diff = np.abs(out.astype(np.int64) - np.clip(np.round(expected), 0, 255).astype(np.int64))
    assert diff.max() <= 1
    r = cli("lattice-evaluate", "--checkpoint", ckpt, "--hr-dir", hr, "--self-ensemble", "--backend", "cpu",
            "--json", tmp_path / "e.json", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "LatticeNet+ (x8 self-ensemble) PSNR / SSIM" in r.stdout
    assert json.loads(Path(tmp_path / "e.json").read_text())["model"] == "LatticeNet+ (x8 self-ensemble)"
