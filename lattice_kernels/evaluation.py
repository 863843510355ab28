"""The benchmarks' evaluation protocols, on image folders or arrays.

Super-resolution (the protocol of LatticeNet's paper, and of EDSR, RCAN, IMDN, BasicSR):
- the HR image is cropped to a multiple of the scale s (bottom and right rows dropped);
- LR = MATLAB-bicubic downscale of the uint8 HR by 1/s (`lattice_kernels.imresize`), rounded to uint8, unless a
  folder of pre-made LR images is given (the benchmark archives ship them);
- the model's output is rounded to uint8;
- PSNR and SSIM on the ITU-R BT.601 luma Y = 16 + 65.481 R + 128.553 G + 24.966 B (RGB in [0, 1]), s pixels shaved
  at each border; SSIM with an 11x11 Gaussian window (sigma 1.5) over the valid region (metrics.py);
- grayscale images are replicated to RGB when read, as EDSR's and BasicSR's loaders do, and scored on the Y of the
  replicated image. The baseline is MATLAB-bicubic upscaling of the same LR image.

Denoising (the protocol of the DnCNN-style benchmarks):
- noisy = clean + sigma * N(0, 1) on the 0..255 scale, in float, not rounded and not clipped (unless clip_noisy),
  the noise drawn from numpy's default_rng([seed, image index]) so every run and every model sees the same noise;
- gray models (1 channel) take the BT.601 luma of the image, rounded to uint8; color models take RGB;
- the output is rounded to uint8; PSNR over every pixel and channel of the full image, SSIM per channel averaged.
  The baseline is the noisy input itself (clipped and rounded to uint8 to be scored as an image).

The model runs in float32, the precision of published scores, whatever inference.run's default on this machine,
unless run_kwargs give a dtype (None: inference.default_dtype).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import inference
from .image_files import IMAGE_SUFFIXES, DataError, list_images
from .imresize import imresize
from .metrics import psnr, scores_y, ssim

TASKS = ("sr", "denoise")


@dataclass
class ImageScore:
    """One image: the model's and the baseline's PSNR (dB) / SSIM, and the size of the image scored (W, H)."""

    name: str
    width: int
    height: int
    psnr: float
    ssim: float
    baseline_psnr: float
    baseline_ssim: float


@dataclass
class DatasetScores:
    """The scores of one folder (dataset) under one protocol; `baseline` names what the baseline columns are."""

    name: str
    task: str
    scale: int = 1
    sigma: float | None = None
    baseline: str = ""
    images: list[ImageScore] = field(default_factory=list)

    def mean(self, key: str) -> float:
        return float(np.mean([getattr(im, key) for im in self.images]))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = {k: self.mean(k) for k in ("psnr", "ssim", "baseline_psnr", "baseline_ssim")}
        return d


# ---------------------------------------------------------------------------------------------------------------
# super-resolution

def crop_to_scale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The top-left (H - H % s, W - W % s) part of an (H, W[, C]) image."""
    h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
    if h == 0 or w == 0:
        raise ValueError(f"image of size {hr.shape[1]}x{hr.shape[0]} is smaller than the scale {scale}")
    return hr[:h, :w]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """The benchmarks' LR image: MATLAB imresize(crop_to_scale(hr), 1/scale, 'bicubic'), uint8 (H/s, W/s[, C])."""
    hr = crop_to_scale(hr, scale)
    return imresize(hr, size=(hr.shape[0] // scale, hr.shape[1] // scale))


def evaluate_sr(model: nn.Module, hr: np.ndarray, lr: np.ndarray | None = None, name: str = "",
                **run_kwargs) -> ImageScore:
    """Score a LatticeNet (`model.scale` = s) on one uint8 (H, W, 3) HR image (see the module docstring).
    lr: the pre-made uint8 LR image, which must be (H // s, W // s, 3); default make_lr(hr, s).
    run_kwargs go to inference.run (tile, stats, dtype, channels_last, ...)."""
    s = int(model.scale)
    hr = crop_to_scale(hr, s)
    if lr is None:
        lr = make_lr(hr, s)
    elif lr.shape[:2] != (hr.shape[0] // s, hr.shape[1] // s):
        raise ValueError(f"{name or 'LR image'}: LR is {lr.shape[1]}x{lr.shape[0]}, expected "
                         f"{hr.shape[1] // s}x{hr.shape[0] // s} (the HR image cropped to {hr.shape[1]}x{hr.shape[0]}, "
                         f"divided by the scale {s})")
    sr = inference.super_resolve(model, lr, **_scored_precision(run_kwargs))
    up = imresize(lr, size=hr.shape[:2])
    (p, q), (bp, bq) = scores_y([sr, up], hr, s)
    return ImageScore(name, hr.shape[1], hr.shape[0], p, q, bp, bq)


# ---------------------------------------------------------------------------------------------------------------
# denoising

def to_gray(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> uint8 (H, W) BT.601 luma round(0.299 R + 0.587 G + 0.114 B); (H, W) passes through."""
    if img.ndim == 2:
        return img
    return np.floor(img.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) + 0.5).clip(0, 255).astype(np.uint8)


def add_noise(clean: np.ndarray, sigma: float, rng: np.random.Generator, clip: bool = False) -> np.ndarray:
    """clean (uint8) + sigma * N(0, 1), float32 on the 0..255 scale; clipped to [0, 255] only when `clip`."""
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0 (on the 0..255 scale), got {sigma}")
    noisy = clean.astype(np.float64) + sigma * rng.standard_normal(clean.shape)
    if clip:
        noisy = np.clip(noisy, 0.0, 255.0)
    return noisy.astype(np.float32)


def noise_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of the noise of image number `index` (sorted order) of a folder."""
    return np.random.default_rng([seed, index])


def evaluate_denoise(model: nn.Module, img: np.ndarray, sigma: float, rng: np.random.Generator,
                     clip_noisy: bool = False, name: str = "", **run_kwargs) -> ImageScore:
    """Score a LatticeRestorer on one uint8 image (RGB, or gray for a 1-channel model; an RGB image is converted to
    luma for a gray model): see the module docstring."""
    gray = getattr(model, "channels", 3) == 1
    clean = to_gray(img) if gray else img
    if not gray and clean.ndim == 2:
        clean = np.repeat(clean[..., None], 3, axis=2)
    noisy = add_noise(clean, sigma, rng, clip_noisy)
    out = inference.restore(model, noisy, **_scored_precision(run_kwargs))
    noisy8 = np.floor(np.clip(noisy, 0, 255) + 0.5).astype(np.uint8)
    return ImageScore(name, clean.shape[1], clean.shape[0], psnr(out, clean), ssim(out, clean), psnr(noisy8, clean),
                      ssim(noisy8, clean))


# ---------------------------------------------------------------------------------------------------------------
# folders

def image_files(folder: str | os.PathLike) -> list[Path]:
    """The images directly in `folder` (not its subfolders: a benchmark folder may hold LR folders too), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    try:
        return list_images(folder, recursive=False)
    except DataError as e:
        raise ValueError(str(e)) from e


def find_lr(hr_path: Path, lr_dir: Path, scale: int) -> Path:
    """The LR file of `hr_path` in `lr_dir`: the same stem, or the stem + 'x{s}' (the benchmark archives' names,
    e.g. baby.png -> babyx4.png) or + '_x{s}', with any image suffix."""
    stems = (hr_path.stem, f"{hr_path.stem}x{scale}", f"{hr_path.stem}_x{scale}")
    for stem in stems:
        for suffix in (hr_path.suffix, *IMAGE_SUFFIXES, *(x.upper() for x in IMAGE_SUFFIXES)):
            p = lr_dir / f"{stem}{suffix}"
            if p.is_file():
                return p
    raise FileNotFoundError(f"no LR image for {hr_path} in {lr_dir} (looked for {', '.join(stems)} with suffixes "
                            f"{', '.join(IMAGE_SUFFIXES)})")


def dataset_name(folder: str | os.PathLike) -> str:
    """The folder's name, or its parent's for the benchmark archives' HR folders (Set5/HR -> Set5)."""
    p = Path(folder).resolve()
    return p.parent.name if p.name.lower() in ("hr", "gt", "gtmod12", "original") and p.parent.name else p.name


def _progress(items: Sequence, enabled: bool, desc: str) -> Iterable:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="image")


def _scores(model: nn.Module, name: str, task: str, sigma: float, given_lr: bool) -> DatasetScores:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if task == "sr":
        return DatasetScores(name, task, scale=int(model.scale),
                             baseline="bicubic (MATLAB imresize)" + (" of the given LR" if given_lr else ""))
    return DatasetScores(name, task, sigma=float(sigma), baseline="noisy input")


def _scored_precision(run_kwargs: dict) -> dict:
    """run_kwargs with float32 unless they name a dtype (see the module docstring)."""
    return {"dtype": torch.float32, **run_kwargs}


def _score_one(model: nn.Module, res: DatasetScores, index: int, name: str, img: np.ndarray, lr: np.ndarray | None,
               seed: int, clip_noisy: bool, run_kwargs: dict) -> None:
    if res.task == "sr":
        res.images.append(evaluate_sr(model, img, lr, name=name, **run_kwargs))
    else:
        res.images.append(evaluate_denoise(model, img, res.sigma, noise_rng(seed, index), clip_noisy, name=name,
                                           **run_kwargs))


def evaluate_images(model: nn.Module, images: dict[str, np.ndarray], name: str, task: str = "sr",
                    sigma: float = 25.0, seed: int = 0, clip_noisy: bool = False, progress: bool = False,
                    **run_kwargs) -> DatasetScores:
    """evaluate_folder for images in memory: {image name: uint8 (H, W, 3)}, in the dict's order (image i gets the
    noise of index i)."""
    res = _scores(model, name, task, sigma, False)
    for i, key in enumerate(_progress(list(images), progress, name)):
        _score_one(model, res, i, key, images[key], None, seed, clip_noisy, run_kwargs)
    return res


def evaluate_folder(model: nn.Module, hr_dir: str | os.PathLike, task: str = "sr",
                    lr_dir: str | os.PathLike | None = None, sigma: float = 25.0, seed: int = 0,
                    clip_noisy: bool = False, progress: bool = False, name: str | None = None,
                    **run_kwargs) -> DatasetScores:
    """Score `model` on every image directly in `hr_dir` (HR images for task 'sr', clean ones for 'denoise'), in
    sorted order. lr_dir: pre-made LR images (task 'sr'), found by find_lr. Files that cannot be read, or LR images
    of the wrong size, raise an error naming the file. run_kwargs go to inference.run."""
    res = _scores(model, name or dataset_name(hr_dir), task, sigma, lr_dir is not None)
    files = image_files(hr_dir)
    if lr_dir is not None:
        if task != "sr":
            raise ValueError("lr_dir is for super-resolution (task 'sr') only")
        if not Path(lr_dir).is_dir():
            raise FileNotFoundError(f"LR image folder not found: {lr_dir}")
    for i, f in enumerate(_progress(files, progress, res.name)):
        img = inference.read_image(f, "RGB")
        lr = None
        if lr_dir is not None:
            s = res.scale
            lr_path = find_lr(f, Path(lr_dir), s)
            lr = inference.read_image(lr_path, "RGB")
            if lr.shape[:2] != (img.shape[0] // s, img.shape[1] // s):
                raise ValueError(f"{lr_path}: LR image is {lr.shape[1]}x{lr.shape[0]}, expected "
                                 f"{img.shape[1] // s}x{img.shape[0] // s} for the HR image {f} "
                                 f"({img.shape[1]}x{img.shape[0]}) at x{s}")
        _score_one(model, res, i, f.stem, img, lr, seed, clip_noisy, run_kwargs)
    return res


# ---------------------------------------------------------------------------------------------------------------
# reports

def _fmt(p: float, s: float) -> str:
    return f"{p:.2f} / {s:.4f}" if math.isfinite(p) else f"inf / {s:.4f}"


def model_label(task: str, self_ensemble: bool) -> str:
    """The model's name in reports: 'LatticeNet', or 'LatticeNet+' for the x8 self-ensemble as the papers mark it."""
    name = "LatticeNet" if task == "sr" else "LatticeRestorer"
    return f"{name}+ (x8 self-ensemble)" if self_ensemble else name


def markdown(results: Sequence[DatasetScores], model_label: str = "LatticeNet") -> str:
    """One Markdown table per dataset: per image and the mean, PSNR (dB) / SSIM of the baseline and the model."""
    out = []
    for r in results:
        what = f"x{r.scale}" if r.task == "sr" else f"sigma {r.sigma:g}"
        out.append(f"### {r.name} ({what})\n")
        out.append(f"| image | size | {r.baseline} PSNR / SSIM | {model_label} PSNR / SSIM |")
        out.append("|---|---|---|---|")
        for im in r.images:
            out.append(f"| {im.name} | {im.width}x{im.height} | {_fmt(im.baseline_psnr, im.baseline_ssim)} | "
                       f"{_fmt(im.psnr, im.ssim)} |")
        out.append(f"| **mean** | | {_fmt(r.mean('baseline_psnr'), r.mean('baseline_ssim'))} | "
                   f"**{_fmt(r.mean('psnr'), r.mean('ssim'))}** |")
        out.append("")
    return "\n".join(out)
