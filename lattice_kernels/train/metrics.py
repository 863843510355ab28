"""PSNR and SSIM on the Y channel (ITU-R BT.601), border shaved by the scale, on uint8 images: the protocol of the
super-resolution papers (and of the MATLAB code they report with)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float64 (H, W) luma in [16, 235]: 16 + (65.481 R + 128.553 G + 24.966 B) / 255.
    A 2-D (grayscale) image is returned as float64 unchanged."""
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 2:
        return a
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) RGB or (H, W) gray, got shape {a.shape}")
    return 16.0 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255.0


def _prepare(sr: np.ndarray, hr: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    sr, hr = np.asarray(sr), np.asarray(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"images differ in shape: {sr.shape} vs {hr.shape}")
    if sr.dtype != np.uint8 or hr.dtype != np.uint8:
        raise TypeError(f"PSNR/SSIM take uint8 images (rounded outputs), got {sr.dtype} and {hr.dtype}")
    ys, yh = rgb_to_y(sr), rgb_to_y(hr)
    if shave:
        if 2 * shave >= min(ys.shape):
            raise ValueError(f"image {ys.shape} too small to shave {shave} pixels from each border")
        ys, yh = ys[shave:-shave, shave:-shave], yh[shave:-shave, shave:-shave]
    return ys, yh


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int = 0) -> float:
    """PSNR (dB) of the Y channels, peak 255, after removing `shave` pixels at each border."""
    ys, yh = _prepare(sr, hr, shave)
    mse = float(np.mean((ys - yh) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_y(sr: np.ndarray, hr: np.ndarray, shave: int = 0) -> float:
    """SSIM (Wang et al. 2004) of the Y channels: 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
    L = 255, statistics over valid windows only, mean over the map."""
    ys, yh = _prepare(sr, hr, shave)
    a = torch.from_numpy(np.ascontiguousarray(ys))[None, None]
    b = torch.from_numpy(np.ascontiguousarray(yh))[None, None]
    w = _gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    var_a = F.conv2d(a * a, w) - mu_a**2
    var_b = F.conv2d(b * b, w) - mu_b**2
    cov = F.conv2d(a * b, w) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())
