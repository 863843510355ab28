"""lattice_kernels.imresize (MATLAB's bicubic imresize): exact properties of the kernel and the resampling grid, and
agreement with an independent implementation (resize-right, written to match MATLAB's imresize; test extra) on
scikit-image photographs."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from lattice_kernels.imresize import cubic, imresize, output_size, resize_weights
from lattice_kernels.train.photos import photo as _photo


@functools.lru_cache
def photo(name: str) -> np.ndarray:
    img = _photo(name)
    img.flags.writeable = False
    return img


SCALES = [1 / 4, 1 / 3, 1 / 2, 0.4, 0.75, 1.5, 2, 2.5, 3, 4]


def _gray(name: str = "astronaut") -> np.ndarray:
    return photo(name)[..., 1]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("n", [1, 7, 50, 101])
def test_weights_sum_to_one_and_indices_in_range(n, scale):
    m = output_size(n, scale)
    idx, w = resize_weights(n, m, scale)
    assert idx.shape == w.shape and idx.shape[0] == m
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert idx.min() >= 0 and idx.max() < n


def test_cubic_kernel_values():
    # Keys' kernel, a = -0.5: 1 at 0, 0 at the other integers, 9/16 - ... known values at 0.5 and 1.5.
    np.testing.assert_allclose(cubic(np.array([0.0, 1.0, 2.0, -1.0, 3.0])), [1, 0, 0, 0, 0], atol=0)
    np.testing.assert_allclose(cubic(np.array([0.5, -0.5, 1.5, -1.5])), [0.5625, 0.5625, -0.0625, -0.0625])


def test_output_size_is_matlab_ceil():
    assert output_size(300, 1 / 3) == 100  # 300 * (1/3) is 100.00000000000001 in floats
    assert output_size(512, 1 / 3) == 171 and output_size(510, 0.4) == 204 and output_size(5, 1.5) == 8


def test_x1_is_the_identity():
    idx, w = resize_weights(40, 40, 1.0)
    assert idx.shape == (40, 1) and np.array_equal(idx[:, 0], np.arange(40)) and np.all(w == 1.0)
    img = photo("chelsea")[:60, :80]
    assert np.array_equal(imresize(img, 1.0), img)
    f = img.astype(np.float64) / 7
    assert np.array_equal(imresize(f, 1.0), f)


@pytest.mark.parametrize("scale", SCALES)
def test_constant_image_stays_constant(scale):
    img = np.full((45, 62, 3), 173, np.uint8)
    out = imresize(img, scale)
    assert out.shape == (output_size(45, scale), output_size(62, scale), 3)
    assert np.all(out == 173)
    f = imresize(np.full((45, 62), 0.3), scale)
    np.testing.assert_allclose(f, 0.3, rtol=0, atol=1e-14)


@pytest.mark.parametrize("scale", [2, 3, 4, 1.5, 2.5, 1 / 2, 1 / 3, 1 / 4])
def test_linear_ramp_is_reproduced_away_from_the_borders(scale):
    # The cubic (a = -0.5) reproduces linear functions when enlarging; when shrinking by an integer factor the taps
    # sit symmetrically around each output position, so the normalised antialiased kernel reproduces them too.
    n = 120
    ramp = 3.0 + 0.25 * np.arange(n)
    img = np.tile(ramp, (8, 1))  # varies along the width only
    out = imresize(img, (1.0, scale))
    m = out.shape[1]
    u = (np.arange(1, m + 1) / scale + 0.5 * (1 - 1 / scale)) - 1  # 0-based input coordinate of each output pixel
    reach = 2 / min(scale, 1) + 1  # kernel half-support in input pixels
    inside = (u - reach >= 0) & (u + reach <= n - 1)
    assert inside.sum() > m // 2
    np.testing.assert_allclose(out[:, inside], np.tile(3.0 + 0.25 * u[inside], (8, 1)), rtol=0, atol=1e-10)


@pytest.mark.parametrize("scale", [0.4, 0.75, 1.5, 2.5, 1 / 3])
def test_grid_is_anchored_top_left(scale):
    # MATLAB maps output pixel x to input x / s + (1 - 1/s) / 2 whatever the length: prefixes of different lengths
    # give the same outputs away from the far border.
    row = _gray()[200:201].astype(np.float64)
    a, b = imresize(row[:, :301], (1.0, scale)), imresize(row[:, :317], (1.0, scale))
    k = int(a.shape[1] - 3 / min(scale, 1) * scale - 2)
    np.testing.assert_allclose(a[:, :k], b[:, :k], rtol=0, atol=1e-10)


def _resize_right():
    return pytest.importorskip("resize_right", reason="resize-right (the independent reference) is in the test extra: "
                                                      "pip install --no-deps resize-right==0.0.2")


# resize-right centres the two pixel grids on each other, which is MATLAB's top-left anchored grid exactly when
# length * scale is an integer; the crops below are chosen so.
AGREE = [(1 / 2, 120, 150), (1 / 3, 120, 150), (1 / 4, 120, 160), (0.4, 120, 150), (0.75, 120, 160),
         (2, 60, 80), (3, 60, 80), (4, 60, 80), (1.5, 60, 80), (2.5, 60, 80)]


@pytest.mark.parametrize(("scale", "h", "w"), AGREE, ids=[f"x{s:.3g}" for s, _, _ in AGREE])
@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_agrees_with_resize_right_on_photographs(name, scale, h, w):
    mod = _resize_right()
    from resize_right import interp_methods

    img = photo(name)[100:100 + h, 50:50 + w]

    def rr_1d(a: np.ndarray, dim: int, s: float) -> np.ndarray:
        factors = [1.0] * a.ndim
        factors[dim] = s
        return mod.resize(a, scale_factors=factors, interp_method=interp_methods.cubic, antialiasing=True,
                          pad_mode="symmetric")

    # float64: the same numbers up to rounding
    f = img.astype(np.float64)
    ref = mod.resize(f, scale_factors=[scale, scale, 1], interp_method=interp_methods.cubic, antialiasing=True,
                     pad_mode="symmetric")
    ours = imresize(f, scale)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    # uint8, pass by pass (MATLAB rounds after each): within one level, from rounding ties (at half-pixel offsets the
    # weights are multiples of 1/16, so exact .5 sums occur and float summation order decides them)
    def round8(a: np.ndarray) -> np.ndarray:
        return np.clip(np.floor(a + 0.5), 0, 255).astype(np.uint8)

    rows = imresize(img, (scale, 1.0))
    both = imresize(rows, (1.0, scale))
    assert np.array_equal(imresize(img, scale), both)  # height first, then width
    for ours8, ref in ((rows, rr_1d(f, 0, scale)), (both, rr_1d(rows.astype(np.float64), 1, scale))):
        diff = np.abs(ours8.astype(int) - round8(ref).astype(int))
        assert diff.max() <= 1
        tie = np.abs(ref - np.floor(ref) - 0.5) < 1e-6
        assert np.all(tie[diff > 0]), "a difference that is not a rounding tie"


def test_uint8_is_rounded_and_clipped_after_each_pass():
    img = photo("astronaut")[:128, :128]
    ours = imresize(img, 1 / 2)
    h = np.floor(imresize(img.astype(np.float64), (1 / 2, 1.0)) + 0.5).clip(0, 255)
    want = np.floor(imresize(h, (1.0, 1 / 2)) + 0.5).clip(0, 255).astype(np.uint8)
    assert ours.dtype == np.uint8 and np.array_equal(ours, want)


def test_torch_batched_matches_numpy_per_image():
    imgs = [photo(n)[:48, :64] for n in ("chelsea", "coffee", "rocket")]
    batch = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()  # (3, 3, 48, 64) uint8
    out = imresize(batch, 1 / 3)
    assert out.shape == (3, 3, 16, 22) and out.dtype == torch.uint8
    for i, img in enumerate(imgs):
        assert np.array_equal(out[i].permute(1, 2, 0).numpy(), imresize(img, 1 / 3))
    up = imresize(batch.float() / 255, 2.0)
    want = imresize(batch.double() / 255, 2.0)
    assert up.dtype == torch.float32 and up.shape == (3, 3, 96, 128)
    torch.testing.assert_close(up.double(), want, rtol=0, atol=1e-5)
    half = imresize(batch.to(torch.bfloat16) / 255, 0.5)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.double(), imresize(batch.double() / 255, 0.5), rtol=0, atol=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (runs on the GPU machine)")
def test_cuda_matches_cpu():
    x = torch.from_numpy(photo("coffee")[:90, :120]).permute(2, 0, 1)[None].contiguous()
    assert torch.equal(imresize(x.cuda(), 0.25).cpu(), imresize(x, 0.25))
    torch.testing.assert_close(imresize(x.cuda().float(), 3.0).cpu(), imresize(x.float(), 3.0))


def test_size_argument_and_errors():
    img = photo("chelsea")[:90, :120]
    assert imresize(img, size=(30, 40)).shape == (30, 40, 3)
    assert np.array_equal(imresize(img, size=(30, 40)), imresize(img, 1 / 3))
    with pytest.raises(ValueError, match="exactly one of scale"):
        imresize(img, 0.5, size=(10, 10))
    with pytest.raises(ValueError, match="exactly one of scale"):
        imresize(img)
    with pytest.raises(ValueError, match="positive"):
        imresize(img, -2)
    with pytest.raises(ValueError, match="positive"):
        imresize(img, size=(0, 3))
    with pytest.raises(ValueError, match="empty"):
        imresize(torch.zeros(1, 3, 0, 5), 2)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        imresize(np.zeros((2, 3, 4, 5), np.uint8), 2)
    with pytest.raises(TypeError, match="uint8, float32 or float64"):
        imresize(img.astype(np.int16), 2)
    with pytest.raises(TypeError, match="uint8 or floating"):
        imresize(torch.zeros(4, 4, dtype=torch.int32), 2)
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        imresize([[1, 2], [3, 4]], 2)
