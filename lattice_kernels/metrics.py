"""PSNR and SSIM on uint8 images: on the Y channel (ITU-R BT.601) with the border shaved by the scale, the protocol
of the super-resolution papers (and of the MATLAB code they report with), and on all channels of the full image, the
denoising benchmarks' protocol."""

from __future__ import annotations

import math

import numpy as np
import torch


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float64 (H, W) luma in [16, 235]: 16 + (65.481 R + 128.553 G + 24.966 B) / 255.
    A 2-D (grayscale) image is returned as float64 unchanged."""
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 2:
        return a
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) RGB or (H, W) gray, got shape {a.shape}")
    return 16.0 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255.0


def _check_pair(img: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img, ref = np.asarray(img), np.asarray(ref)
    if img.shape != ref.shape:
        raise ValueError(f"images differ in shape: {img.shape} vs {ref.shape}")
    if img.dtype != np.uint8 or ref.dtype != np.uint8:
        raise TypeError(f"PSNR/SSIM take uint8 images (rounded outputs), got {img.dtype} and {ref.dtype}")
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f"PSNR/SSIM take non-empty (H, W) or (H, W, C) images, got shape {img.shape}")
    return img, ref


def _shave(a: np.ndarray, shave: int) -> np.ndarray:
    if not shave:
        return a
    if 2 * shave >= min(a.shape[:2]):
        raise ValueError(f"image {a.shape[:2]} too small to shave {shave} pixels from each border")
    return a[shave:-shave, shave:-shave]


def _prepare(sr: np.ndarray, hr: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    sr, hr = _check_pair(sr, hr)
    return _shave(rgb_to_y(sr), shave), _shave(rgb_to_y(hr), shave)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB), peak 255, of two float64 arrays of the same shape (all elements)."""
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int = 0) -> float:
    """PSNR (dB) of the Y channels, peak 255, after removing `shave` pixels at each border."""
    return _psnr(*_prepare(sr, hr, shave))


def psnr(img: np.ndarray, ref: np.ndarray, shave: int = 0) -> float:
    """PSNR (dB), peak 255, over every pixel and channel of uint8 (H, W) or (H, W, C) images, after removing
    `shave` pixels at each border (the denoising benchmarks' PSNR with shave = 0)."""
    img, ref = _check_pair(img, ref)
    return _psnr(_shave(img.astype(np.float64), shave), _shave(ref.astype(np.float64), shave))


def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The 1-D Gaussian of the SSIM window, float64, summing to 1; the 11x11 window is its outer product."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _window_means(maps: torch.Tensor) -> torch.Tensor:
    """The 11x11 Gaussian-weighted means over the valid windows of (K, H, W) float64 maps -> (K, H-10, W-10).
    The window is separable: a pass down the columns, then along the rows, each 11 shifted multiply-adds over the
    whole maps (22 per pixel instead of 121, and no im2col: on a 1024x768 image, one thread of the 2-core EPYC,
    2026-12-06, torch's float64 conv2d with the 11x11 window took 2.8 s per SSIM, this 0.1 s; see
    bench/evaluation_timing.py for the evaluation's steps). Equal to the 2-D window to float64 rounding."""
    g = _gaussian_taps().tolist()
    n = len(g)
    h, w = maps.shape[1] - n + 1, maps.shape[2] - n + 1
    cols = maps[:, :h] * g[0]
    for k in range(1, n):
        cols.add_(maps[:, k:k + h], alpha=g[k])
    out = cols[:, :, :w] * g[0]
    for k in range(1, n):
        out.add_(cols[:, :, k:k + w], alpha=g[k])
    return out


# Rows of the SSIM map computed at a time: the maps of a band stay in cache (a 1024x768 image's SSIM went from
# 48 to 20 ms on the 2-core EPYC, 2026-12-06, against filtering whole maps; bench/evaluation_timing.py).
SSIM_BAND_ROWS = 128


def _ssim(ys: np.ndarray, yh: np.ndarray, mu_h: torch.Tensor | None = None) -> float:
    """SSIM of two float64 (H, W) arrays on the 0..255 scale (see ssim_y); mu_h: yh's window means, when known.
    Only the sum of the two variances enters SSIM, so four maps are filtered: a, b, a^2 + b^2 and ab; the map is
    computed in bands of SSIM_BAND_ROWS rows and summed in float64."""
    if min(ys.shape) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels (its window), got {ys.shape}")
    a_all = torch.from_numpy(np.ascontiguousarray(ys))
    b_all = torch.from_numpy(np.ascontiguousarray(yh))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    rows = a_all.shape[0] - 10
    total = 0.0
    for r0 in range(0, rows, SSIM_BAND_ROWS):
        r1 = min(rows, r0 + SSIM_BAND_ROWS)
        a, b = a_all[r0:r1 + 10], b_all[r0:r1 + 10]
        if mu_h is None:
            mu_a, mu_b, sq, ab = _window_means(torch.stack([a, b, a * a + b * b, a * b]))
        else:
            mu_a, sq, ab = _window_means(torch.stack([a, a * a + b * b, a * b]))
            mu_b = mu_h[r0:r1]
        mu_ab = mu_a * mu_b
        mu_sq = mu_a * mu_a + mu_b * mu_b
        num = (2 * mu_ab + c1) * (2 * (ab - mu_ab) + c2)
        den = (mu_sq + c1) * (sq - mu_sq + c2)
        total += float((num / den).sum())
    return total / (rows * (a_all.shape[1] - 10))


def scores_y(images: list[np.ndarray], ref: np.ndarray, shave: int = 0) -> list[tuple[float, float]]:
    """[(psnr_y, ssim_y)] of each uint8 image against the same ref (the model's output and the bicubic baseline
    against the HR image): the same numbers as psnr_y and ssim_y, with ref's luma and window means computed once."""
    yr = None
    mu_r = None
    out = []
    for img in images:
        ya, yb = _check_pair(img, ref)
        if yr is None:
            yr = _shave(rgb_to_y(yb), shave)
            if min(yr.shape) >= 11:
                mu_r = _window_means(torch.from_numpy(np.ascontiguousarray(yr))[None])[0]
        ya = _shave(rgb_to_y(ya), shave)
        out.append((_psnr(ya, yr), _ssim(ya, yr, mu_r)))
    return out


def ssim_y(sr: np.ndarray, hr: np.ndarray, shave: int = 0) -> float:
    """SSIM (Wang et al. 2004) of the Y channels: 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
    L = 255, statistics over valid windows only, mean over the map."""
    return _ssim(*_prepare(sr, hr, shave))


def ssim(img: np.ndarray, ref: np.ndarray, shave: int = 0) -> float:
    """SSIM as ssim_y, per channel of uint8 (H, W) or (H, W, C) images, averaged over the channels."""
    img, ref = _check_pair(img, ref)
    a, b = _shave(img.astype(np.float64), shave), _shave(ref.astype(np.float64), shave)
    if a.ndim == 2:
        return _ssim(a, b)
    return float(np.mean([_ssim(a[..., c], b[..., c]) for c in range(a.shape[2])]))
