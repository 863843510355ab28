"""Training data: HR image folders (LR made on the fly by MATLAB-bicubic downscaling as DIV2K's LR images were
made, PIL's bicubic as an option, or a paired LR folder) for super-resolution, and clean folders with Gaussian
noise for denoising; random crops, flips and 90-degree rotations.

Every random choice of a sample is a function of (seed, epoch, index) only, so the data a step sees does not depend
on the number of DataLoader workers, and a resumed run sees exactly what an uninterrupted one would.
Unreadable files are reported with their path: on_error="fail" raises, "skip" warns once per file and uses the next
readable image instead; a broken file is never silently used."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from ..image_files import IMAGE_SUFFIXES, DataError, ImageError, list_images, open_image


def load_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8; raises DataError naming the file when it cannot be decoded, is animated or declares more
    than MAX_IMAGE_PIXELS pixels (see image_files.open_image)."""
    try:
        with open_image(path) as im:
            return np.asarray(im.convert("RGB"))
    except ImageError as e:
        raise DataError(str(e)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


LR_RESIZE = ("matlab", "pil")


def bicubic_downscale(hr: np.ndarray, scale: int, method: str = "matlab") -> np.ndarray:
    """uint8 (H, W, 3) -> (H // s, W // s, 3): the HR image cropped to a multiple of s, downscaled by MATLAB's
    imresize(hr, 1/s, 'bicubic') (method "matlab": the DIV2K and benchmark protocol) or PIL's bicubic ("pil")."""
    if method not in LR_RESIZE:
        raise ValueError(f"LR resize method must be one of {', '.join(LR_RESIZE)}, got {method!r}")
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    if method == "matlab":
        from ..imresize import imresize

        return imresize(hr[: h * scale, : w * scale], size=(h, w))
    return np.asarray(Image.fromarray(hr[: h * scale, : w * scale]).resize((w, h), Image.BICUBIC))


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def augment(rng: np.random.Generator, *imgs: np.ndarray) -> list[np.ndarray]:
    """The same random horizontal flip, vertical flip and transpose (the 8 dihedral transforms) for every image."""
    hflip, vflip, rot = rng.random(3) < 0.5
    out = []
    for im in imgs:
        if hflip:
            im = im[:, ::-1]
        if vflip:
            im = im[::-1]
        if rot:
            im = im.transpose(1, 0, 2)
        out.append(np.ascontiguousarray(im))
    return out


def to_tensor(img: np.ndarray, scale: float) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() * scale


class _ImageSource:
    """Decoded images by index, cached in memory (optional), with the on_error policy."""

    def __init__(self, files: Sequence[Path], on_error: str, cache: bool):
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
        self.files, self.on_error, self.cache = list(files), on_error, cache
        self._cache: dict[int, np.ndarray] = {}
        self._bad: set[int] = set()

    def get(self, i: int) -> tuple[int, np.ndarray]:
        """The image at i, or with on_error='skip' the next readable one (and its index)."""
        for k in range(len(self.files)):
            j = (i + k) % len(self.files)
            if j in self._bad:
                continue
            if j in self._cache:
                return j, self._cache[j]
            try:
                img = load_rgb(self.files[j])
            except DataError as e:
                if self.on_error == "fail":
                    raise
                warnings.warn(f"skipping unreadable training image: {e}", RuntimeWarning, stacklevel=2)
                self._bad.add(j)
                continue
            if self.cache:
                self._cache[j] = img
            return j, img
        raise DataError(f"none of the {len(self.files)} images could be read")


class SRDataset(Dataset):
    """(lr, hr) crops for scale s: lr (3, patch, patch), hr (3, s*patch, s*patch), in [0, rgb_range]. LR comes from
    a paired folder (same relative names) when given, else from bicubic downscaling of the whole HR image
    (bicubic_downscale with `lr_resize`, computed once per image when `cache`)."""

    def __init__(self, hr_folder, scale: int, patch: int = 48, lr_folder=None, rgb_range: float = 255.0,
                 repeat: int = 1, seed: int = 0, on_error: str = "fail", cache: bool = True, augment: bool = True,
                 lr_resize: str = "matlab"):
        if lr_resize not in LR_RESIZE:
            raise ValueError(f"lr_resize must be one of {', '.join(LR_RESIZE)}, got {lr_resize!r}")
        self.lr_resize = lr_resize
        self._lr_cache: dict[int, np.ndarray] = {}
        self.hr_files = list_images(hr_folder)
        self.scale, self.patch, self.rgb_range, self.repeat, self.seed = scale, patch, rgb_range, repeat, seed
        self.augment = augment
        self.epoch = 0
        self.hr = _ImageSource(self.hr_files, on_error, cache)
        self.lr = None
        if lr_folder is not None:
            root = Path(hr_folder)
            lr_root = Path(lr_folder)
            lr_files = []
            for f in self.hr_files:
                rel = f.relative_to(root)
                cands = [lr_root / rel] + [lr_root / rel.with_suffix(s) for s in IMAGE_SUFFIXES]
                match = next((c for c in cands if c.exists()), None)
                if match is None:
                    raise DataError(f"no LR image for {f} in {lr_root} (expected {lr_root / rel})")
                lr_files.append(match)
            self.lr = _ImageSource(lr_files, on_error, cache)

    def __len__(self) -> int:
        return len(self.hr_files) * self.repeat

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = sample_rng(self.seed, self.epoch, index)
        j, hr = self.hr.get(index % len(self.hr_files))
        s, p = self.scale, self.patch
        if self.lr is not None:
            _, lr = self.lr.get(j)
            if lr.shape[0] * s > hr.shape[0] or lr.shape[1] * s > hr.shape[1]:
                raise DataError(f"LR {self.lr.files[j]} {lr.shape[:2]} is not HR {self.hr_files[j]} / {s}")
        elif j in self._lr_cache:
            lr = self._lr_cache[j]
        else:
            lr = bicubic_downscale(hr, s, self.lr_resize)
            if self.hr.cache:
                self._lr_cache[j] = lr
        if lr.shape[0] < p or lr.shape[1] < p:
            raise DataError(f"{self.hr_files[j]}: LR size {lr.shape[:2]} is smaller than the patch {p}")
        y, x = rng.integers(0, lr.shape[0] - p + 1), rng.integers(0, lr.shape[1] - p + 1)
        lr_c = lr[y:y + p, x:x + p]
        hr_c = hr[y * s:(y + p) * s, x * s:(x + p) * s]
        if self.augment:
            lr_c, hr_c = augment(rng, lr_c, hr_c)
        k = self.rgb_range / 255.0
        return to_tensor(lr_c, k), to_tensor(hr_c, k)


class DenoiseDataset(Dataset):
    """(noisy, clean) crops in [0, 1]: clean + N(0, sigma/255) with sigma fixed or drawn from [lo, hi] per sample;
    channels 1 (gray, BT.601 luma) or 3."""

    def __init__(self, folder, sigma: float | tuple[float, float] = 25.0, patch: int = 64, channels: int = 3,
                 repeat: int = 1, seed: int = 0, on_error: str = "fail", cache: bool = True, augment: bool = True):
        self.files = list_images(folder)
        self.src = _ImageSource(self.files, on_error, cache)
        self.sigma, self.patch, self.channels, self.repeat, self.seed = sigma, patch, channels, repeat, seed
        self.augment = augment
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = sample_rng(self.seed, self.epoch, index)
        j, img = self.src.get(index % len(self.files))
        p = self.patch
        if img.shape[0] < p or img.shape[1] < p:
            raise DataError(f"{self.files[j]}: size {img.shape[:2]} is smaller than the patch {p}")
        y, x = rng.integers(0, img.shape[0] - p + 1), rng.integers(0, img.shape[1] - p + 1)
        crop = img[y:y + p, x:x + p]
        if self.augment:
            (crop,) = augment(rng, crop)
        clean = to_tensor(crop, 1 / 255.0)
        if self.channels == 1:
            clean = (0.299 * clean[0:1] + 0.587 * clean[1:2] + 0.114 * clean[2:3])
        sigma = self.sigma if np.isscalar(self.sigma) else rng.uniform(*self.sigma)
        noise = torch.from_numpy(rng.standard_normal(clean.shape).astype(np.float32)) * (sigma / 255.0)
        return clean + noise, clean


class EpochSampler(Sampler[int]):
    """A permutation of the dataset fixed by (seed, epoch), sharded over ranks, that can start mid-epoch (resume).
    The dataset's epoch is set too, so its per-sample randomness follows."""

    def __init__(self, dataset, seed: int = 0, rank: int = 0, world: int = 1):
        self.dataset, self.seed, self.rank, self.world = dataset, seed, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def _indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(len(self.dataset), generator=g).tolist()
        usable = len(perm) - len(perm) % self.world
        return perm[self.rank:usable:self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start:])

    def __len__(self) -> int:
        return max(0, len(self.dataset) // self.world - self.start)
