"""Inference on whole images: tiled, in bounded memory, optionally in bf16/fp16 and channels_last; image files in
(PNG/JPEG) and out (PNG, written atomically).

The Lattice Block's coefficients depend on per-image channel statistics, so tiles that used their own statistics
would not reproduce the whole-image result. stats="global" (default) gathers the whole-image statistics tile by
tile, in the order the network needs them (one pass per group of statistics, each stopping at that group), then
runs the tiles with them: the output equals the untiled one up to float rounding, and memory stays that of one
tile plus the input and output images. It costs about 4-6x the compute of one pass. stats="tile" runs each tile
once with its own statistics and blends the overlaps (fast, approximate).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .nn import LatticeBlock


class ImageError(ValueError):
    """An input image that cannot be used: unreadable, or of a mode the model does not take."""


def receptive_radius(model: nn.Module) -> int:
    """Pixels of context each output pixel needs on each side (in input pixels): the model's receptive_radius,
    else the count of its 3x3 convolutions (an upper bound for a chain of them)."""
    r = getattr(model, "receptive_radius", None)
    if r is not None:
        return int(r)
    return sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))


@dataclass
class _Tile:
    y0: int  # interior, in input pixels
    y1: int
    x0: int
    x1: int
    py0: int  # padded (interior + halo, clipped to the image)
    py1: int
    px0: int
    px1: int


def _grid(h: int, w: int, tile: int, halo: int) -> list[_Tile]:
    """Interiors partitioning the image, each padded by `halo` (clipped at the borders)."""
    ny, nx = math.ceil(h / tile), math.ceil(w / tile)
    ys = [round(i * h / ny) for i in range(ny + 1)]
    xs = [round(i * w / nx) for i in range(nx + 1)]
    return [_Tile(ys[i], ys[i + 1], xs[j], xs[j + 1], max(0, ys[i] - halo), min(h, ys[i + 1] + halo),
                  max(0, xs[j] - halo), min(w, xs[j + 1] + halo)) for i in range(ny) for j in range(nx)]


def _overlapping(n: int, tile: int, overlap: int) -> list[int]:
    if n <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, n - tile, step))
    return [*starts, n - tile]


class _Stop(Exception):
    """Raised by the statistics hook once the statistics of the current group are in."""


class _Accumulator:
    """Whole-image (count, mean, M2) per (n, c) from tile interiors, merged with Chan's formula in float64."""

    def __init__(self):
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, t: Tensor) -> None:
        t = t.detach().double()
        cnt = t.shape[2] * t.shape[3]
        mean = t.mean(dim=(2, 3))
        m2 = (t - mean[:, :, None, None]).square().sum(dim=(2, 3))
        if self.mean is None:
            self.count, self.mean, self.m2 = cnt, mean, m2
            return
        total = self.count + cnt
        delta = mean - self.mean
        self.mean = self.mean + delta * (cnt / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * cnt / total)
        self.count = total

    def result(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        return self.mean.to(dtype), (self.m2 / (self.count - 1)).sqrt().to(dtype)


class _GlobalStatistics:
    """The hook installed on every LatticeBlock during tiled inference (see LatticeBlock.statistics_hook)."""

    def __init__(self, blocks: list[LatticeBlock]):
        self.index = {id(b): i for i, b in enumerate(blocks)}
        self.known: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}
        self.collecting: list[tuple[int, str]] = []
        self.acc: dict[tuple[int, str], _Accumulator] = {}
        self.interior: tuple[slice, slice] | None = None

    def __call__(self, block: LatticeBlock, name: str, t: Tensor) -> tuple[Tensor, Tensor]:
        key = (self.index[id(block)], name)
        if key in self.known:
            mean, std = self.known[key]
            return mean.to(t.device), std.to(t.device)
        if key not in self.collecting:
            raise RuntimeError(f"tiled inference: statistics {key} requested before they were gathered")
        ys, xs = self.interior
        self.acc[key].add(t[:, :, ys, xs])
        if key == self.collecting[-1]:
            raise _Stop
        from . import ops

        return ops.channel_stats(t, backend=block.backend)

    def groups(self, blocks: list[LatticeBlock]) -> list[list[tuple[int, str]]]:
        out = []
        for i, b in enumerate(blocks):
            need = b.needed_statistics()
            for group in (("x", "f"), ("q1", "g")):
                keys = [(i, n) for n in need if n in group]
                if keys:
                    out.append(keys)
        return out


@contextlib.contextmanager
def _hooked(blocks: list[LatticeBlock], hook) -> Iterator[None]:
    for b in blocks:
        b.statistics_hook = hook
    try:
        yield
    finally:
        for b in blocks:
            b.statistics_hook = None


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tile")


def run(model: nn.Module, x: Tensor, *, scale: int, tile: int | None = None, overlap: int = 16,
        stats: str = "global", dtype: torch.dtype = torch.float32, channels_last: bool = False,
        device: torch.device | str | None = None, progress: bool = False) -> Tensor:
    """model(x) for x (1, C, H, W) float32 (on any device; the result is float32 on the CPU), optionally in tiles of
    `tile` input pixels. dtype float16/bfloat16 runs the model under autocast. See the module docstring for
    `stats`; `overlap` is the blended margin of stats="tile"."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be (1, C, H, W), got {tuple(x.shape)}")
    if stats not in ("global", "tile"):
        raise ValueError(f"stats must be 'global' or 'tile', got {stats!r}")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    if tile is not None and tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def forward(t: Tensor) -> Tensor:
        t = t.to(dev).contiguous(memory_format=fmt)
        ctx = (torch.autocast(dev.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
        with ctx:
            return model(t).float()

    h, w = x.shape[2:]
    with torch.no_grad():
        if tile is None or (tile >= h and tile >= w):
            return forward(x).cpu()
        if stats == "tile":
            return _run_blended(forward, x, scale, tile, overlap, progress)
        return _run_global(model, forward, x, scale, tile, progress)


def _run_global(model, forward, x, scale, tile, progress) -> Tensor:
    h, w = x.shape[2:]
    blocks = [m for m in model.modules() if isinstance(m, LatticeBlock)]
    tiles = _grid(h, w, tile, receptive_radius(model))
    out: Tensor | None = None
    hook = _GlobalStatistics(blocks)
    groups = hook.groups(blocks)
    with _hooked(blocks, hook), _progress(len(tiles) * (len(groups) + 1), progress, "tiles") as bar:
        for group in groups:
            hook.collecting = group
            hook.acc = {k: _Accumulator() for k in group}
            for t in tiles:
                hook.interior = (slice(t.y0 - t.py0, t.y1 - t.py0), slice(t.x0 - t.px0, t.x1 - t.px0))
                with contextlib.suppress(_Stop):
                    forward(x[:, :, t.py0:t.py1, t.px0:t.px1])
                if bar is not None:
                    bar.update()
            for k in group:
                hook.known[k] = hook.acc[k].result(torch.float32)
        hook.collecting = []
        for t in tiles:
            y = forward(x[:, :, t.py0:t.py1, t.px0:t.px1]).cpu()
            if out is None:
                out = torch.empty((1, y.shape[1], h * scale, w * scale), dtype=torch.float32)
            oy, ox = (t.y0 - t.py0) * scale, (t.x0 - t.px0) * scale
            out[:, :, t.y0 * scale:t.y1 * scale, t.x0 * scale:t.x1 * scale] = \
                y[:, :, oy:oy + (t.y1 - t.y0) * scale, ox:ox + (t.x1 - t.x0) * scale]
            if bar is not None:
                bar.update()
    return out


def _ramp(n: int, lead: int, trail: int) -> Tensor:
    """1 in the middle, rising linearly over `lead` samples and falling over `trail` samples (0 < w <= 1)."""
    r = torch.ones(n)
    if lead:
        r[:lead] = torch.arange(1, lead + 1) / (lead + 1)
    if trail:
        r[n - trail:] = torch.minimum(r[n - trail:], torch.arange(trail, 0, -1) / (trail + 1))
    return r


def _run_blended(forward, x, scale, tile, overlap, progress) -> Tensor:
    h, w = x.shape[2:]
    ys, xs = _overlapping(h, tile, overlap), _overlapping(w, tile, overlap)
    out = wsum = None
    with _progress(len(ys) * len(xs), progress, "tiles") as bar:
        for i, y0 in enumerate(ys):
            for j, x0 in enumerate(xs):
                th, tw = min(tile, h), min(tile, w)
                y = forward(x[:, :, y0:y0 + th, x0:x0 + tw]).cpu()
                if out is None:
                    out = torch.zeros((1, y.shape[1], h * scale, w * scale))
                    wsum = torch.zeros((1, 1, h * scale, w * scale))
                # Ramps only where a neighbour tile overlaps this one.
                lead_y = (ys[i - 1] + th - y0) * scale if i else 0
                trail_y = (y0 + th - ys[i + 1]) * scale if i + 1 < len(ys) else 0
                lead_x = (xs[j - 1] + tw - x0) * scale if j else 0
                trail_x = (x0 + tw - xs[j + 1]) * scale if j + 1 < len(xs) else 0
                wt = _ramp(th * scale, lead_y, trail_y)[:, None] * _ramp(tw * scale, lead_x, trail_x)[None, :]
                sl = (slice(None), slice(None), slice(y0 * scale, (y0 + th) * scale),
                      slice(x0 * scale, (x0 + tw) * scale))
                out[sl] += y * wt
                wsum[sl] += wt
                if bar is not None:
                    bar.update()
    return out / wsum


# ---------------------------------------------------------------------------------------------------------------
# image files

def read_image(path: str | os.PathLike, mode: str = "RGB") -> np.ndarray:
    """(H, W, 3) uint8 for mode RGB, (H, W) for L. Grayscale files are accepted for RGB (replicated); other modes
    (alpha, palette, CMYK, 16-bit) raise ImageError saying how to convert."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            src = im.mode
            if src == mode or (mode == "RGB" and src == "L") or (mode == "L" and src == "RGB"):
                return np.asarray(im.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageError(f"cannot read image {path}: {e}") from e
    hint = " (it has an alpha channel: flatten it onto a background first)" if "A" in src else ""
    raise ImageError(f"{path} is a {src!r} image; this model takes {mode} (or L) 8-bit images{hint}. "
                     f"Convert it, e.g. PIL's Image.open(p).convert('{mode}').save(...)")


def write_png(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write uint8 (H, W[, 3]) as PNG atomically: a temporary file in the same folder, then a rename, so an
    interrupted run never leaves a half-written image under the final name."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"output must be a .png file, got {path}")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        Image.fromarray(img).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _to_uint8(y: Tensor, rng: float) -> np.ndarray:
    img = (y[0] * (255.0 / rng)).round().clamp(0, 255).to(torch.uint8)
    return img.permute(1, 2, 0).squeeze(-1).numpy()


def super_resolve(model: nn.Module, img: np.ndarray, **kwargs) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (sH, sW, 3) with a LatticeNet (inputs in [0, rgb_range]). kwargs: see run()."""
    rng = float(getattr(model, "rgb_range", 255.0))
    x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].float() * (rng / 255.0)
    return _to_uint8(run(model, x, scale=model.scale, **kwargs), rng)


def restore(model: nn.Module, img: np.ndarray, **kwargs) -> np.ndarray:
    """(H, W) or (H, W, 3) on the 0..255 scale (uint8, or float such as an unclipped noisy image) -> uint8 of the
    same shape, with a LatticeRestorer (inputs in [0, 1])."""
    arr = img[..., None] if img.ndim == 2 else img
    x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    return _to_uint8(run(model, x, scale=1, **kwargs), 1.0)


def super_resolve_file(model: nn.Module, src: str | os.PathLike, dst: str | os.PathLike, **kwargs) -> None:
    write_png(dst, super_resolve(model, read_image(src, "RGB"), **kwargs))


def restore_file(model: nn.Module, src: str | os.PathLike, dst: str | os.PathLike, **kwargs) -> None:
    mode = "L" if getattr(model, "channels", 3) == 1 else "RGB"
    write_png(dst, restore(model, read_image(src, mode), **kwargs))
