"""Inference on whole images: tiled, in bounded memory, in float32, bf16 or fp16 and optionally channels_last; image
files in (PNG/JPEG) and out (PNG, written atomically).

The precision (run's `dtype`, --dtype of lattice-upscale and lattice-denoise; lattice-evaluate defaults to float32)
defaults to default_dtype(model, device): bfloat16 autocast for a model that declares it safe (`bf16_by_default`:
LatticeNet, whose published checkpoints lose at most 0.0012 dB of Y-PSNR in it on the photo table,
tests/test_precision.py) on a CPU with bf16 arithmetic (AVX512_BF16), where it is the fastest mode; float32
everywhere else: CPUs without bf16 arithmetic, where bf16 is several times slower (docs/benchmarks.md), machines
where the library's CPU kernels are not built, other models, and GPUs, where it has not been measured.

The Lattice Block's coefficients depend on per-image channel statistics, so tiles that used their own statistics
would not reproduce the whole-image result. stats="global" (default) gathers the whole-image statistics tile by
tile, in the order the network needs them (one pass per group of statistics, each stopping at that group), then
runs the tiles with them: the output equals the untiled one up to float rounding (in bf16: within bf16's own error,
where a float32 sum in another order flips a bf16 rounding), and memory stays that of one
tile plus the input and output images. It costs about 4-6x the compute of one pass. stats="tile" runs each tile
once with its own statistics and blends the overlaps (fast, approximate).

max_memory (a byte budget) picks the tile instead: the largest whose modelled peak fits, with stats="global". The
model is peak = MEMORY_MARGIN * c * (padded tile pixels) (+ the output image when tiled), c the peak per pixel of
a probe run of the smallest tile (CPU: the growth of the resident memory, Linux only; CUDA: max_memory_allocated).
On the CPU glibc's heap makes the growth per pixel vary by +-20% between runs and sizes; the smallest tile has the
highest (3.5-4.4 kB per LR pixel for LatticeNet x4, 3.0-3.5 kB at 100-256 px), so the model errs on the safe side
for the larger ones. Between tiles, glibc's free heap pages are handed back (malloc_trim).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ._files import atomic_write
from .cuda_graphs import graphed_call
from .image_files import MAX_IMAGE_PIXELS, ImageError, open_image
from .imresize import imresize
from .nn import LatticeBlock


def default_dtype(model: nn.Module, device: torch.device | str) -> torch.dtype:
    """run's default precision for `model` on `device` (see the module docstring): torch.bfloat16 or
    torch.float32."""
    from . import _extension, backends

    dev = torch.device(device)
    if (dev.type == "cpu" and getattr(model, "bf16_by_default", False) and "cpu" in backends.available_backends()
            and _extension.C.cpu_bf16_arithmetic()):
        return torch.bfloat16
    return torch.float32


MIN_TILE = 16  # the smallest tile max_memory will choose, in input pixels
MEMORY_MARGIN = 1.2  # headroom over the linear model; tests/test_memory_budget.py measures the peaks it gives
# What a tiled run holds besides the output image and one tile: 11-15 MiB more resident memory in the last pass,
# LatticeNet x4 at LR 256x256 and 512x512 on the 2-core EPYC, 2026-12-06.
TILED_OVERHEAD = 16 * 2 ** 20


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


def _tile_done(bar, on_tile, done: int, total: int) -> None:
    if bar is not None:
        bar.update()
    if on_tile is not None:
        on_tile(done, total)


# The eight views of the x8 geometric self-ensemble (EDSR's forward_x8, "+" in the papers' tables): each dihedral
# transform of the image as (quarter turns, horizontal flip first), in a fixed order (the mean is summed in it).
ENSEMBLE_VIEWS = tuple((k, flip) for flip in (False, True) for k in range(4))


def _view(t: Tensor, k: int, flip: bool) -> Tensor:
    return torch.rot90(t.flip(3) if flip else t, k, dims=(2, 3))


def _unview(t: Tensor, k: int, flip: bool) -> Tensor:
    t = torch.rot90(t, -k, dims=(2, 3))
    return t.flip(3) if flip else t


def run(model: nn.Module, x: Tensor, *, scale: int, tile: int | None = None, overlap: int = 16,
        stats: str = "global", dtype: torch.dtype | None = None, channels_last: bool = False,
        device: torch.device | str | None = None, progress: bool = False,
        on_tile: Callable[[int, int], None] | None = None, self_ensemble: bool = False,
        max_memory: int | None = None, cuda_graphs: bool = True) -> Tensor:
    """model(x) for x (1, C, H, W) float32 (on any device; the result is float32 on the CPU), optionally in tiles of
    `tile` input pixels. dtype float16/bfloat16 runs the model under autocast; None: default_dtype(model, device)
    (bfloat16 for LatticeNet on a CPU with bf16 arithmetic, else float32). See the module docstring for
    `stats`; `overlap` is the blended margin of stats="tile". progress: a tqdm bar of its own over the tile passes;
    on_tile(done, total) is called after each tile pass instead (for a caller's own bar).
    self_ensemble: the x8 geometric self-ensemble ("LatticeNet+"): the float mean over ENSEMBLE_VIEWS of
    unview(model(view(x))), each view run as above (tiles, statistics and dtype alike; a rotated non-square image
    is run in its rotated shape), 8x the time.
    max_memory: the bytes the call may add (to the process's memory on the CPU, the output included; to the
    device's allocated memory on CUDA): picks the largest tile that fits (see the module docstring), untiled when
    the whole image fits; ValueError naming the amount needed when even MIN_TILE does not. Not with `tile`.
    cuda_graphs: on CUDA, the untiled forward and the tiles of stats="tile" replay a CUDA graph captured once per
    input shape (lattice_kernels/cuda_graphs.py; the same result); not with max_memory or the passes of
    stats="global" over tiles, which run eagerly. False runs every forward eagerly."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be (1, C, H, W), got {tuple(x.shape)}")
    if stats not in ("global", "tile"):
        raise ValueError(f"stats must be 'global' or 'tile', got {stats!r}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    if dtype is None:
        dtype = default_dtype(model, dev)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    if tile is not None and tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile}")
    if x.shape[2] * x.shape[3] < 2:
        raise ImageError(f"a {x.shape[3]}x{x.shape[2]} image is too small: a Lattice Block normalises by the "
                         "standard deviation of each channel over the image, which needs at least 2 pixels")
    if max_memory is not None:
        if tile is not None:
            raise ValueError("give tile or max_memory, not both: max_memory picks the tile")
        if stats != "global":
            raise ValueError("max_memory tiles with exact whole-image statistics: use stats='global'")
    if self_ensemble:
        if max_memory is not None:  # the views' sum, and a rotated or flipped copy of a view's output
            max_memory -= 2 * _image_bytes(x, scale)
        return _run_self_ensemble(model, x, scale=scale, tile=tile, overlap=overlap, stats=stats, dtype=dtype,
                                  channels_last=channels_last, device=device, progress=progress, on_tile=on_tile,
                                  max_memory=max_memory, cuda_graphs=cuda_graphs)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def on_device(t: Tensor) -> Tensor:
        ctx = (torch.autocast(dev.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
        with ctx:
            return model(t).float()

    def forward(t: Tensor) -> Tensor:
        return on_device(t.to(dev).contiguous(memory_format=fmt))

    def replayed(t: Tensor) -> Tensor:  # on CUDA: a graph per input shape
        return graphed_call(model, on_device, t.to(dev).contiguous(memory_format=fmt), settings=(dtype, fmt))

    fast = replayed if cuda_graphs and dev.type == "cuda" and max_memory is None else forward

    h, w = x.shape[2:]
    with torch.no_grad():
        if max_memory is not None:
            tile = tile_for_memory(model, forward, x, scale, max_memory, dev)
        if tile is None or (tile >= h and tile >= w):
            y = fast(x).cpu()
            _tile_done(None, on_tile, 1, 1)
            return y
        if stats == "tile":
            return _run_blended(fast, x, scale, tile, overlap, progress, on_tile)
        return _run_global(model, forward, x, scale, tile, progress, on_tile, trim=max_memory is not None)


def _image_bytes(x: Tensor, scale: int) -> int:
    """Bytes of run()'s float32 output for x."""
    return x.shape[1] * x.shape[2] * scale * x.shape[3] * scale * 4


def _added_peak(fn: Callable[[], object], dev: torch.device) -> int:
    """The most memory fn() added at once: on the CPU to the process's resident memory (Linux; VmHWM after
    resetting it, over the resident memory after glibc has handed its free pages back), on CUDA to the allocated
    device memory."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        torch.cuda.synchronize(dev)
        return torch.cuda.max_memory_allocated(dev) - base
    if dev.type != "cpu":
        raise ValueError(f"max_memory is measured on cpu and cuda devices, not {dev.type}")
    base = resident_bytes()
    global _peak_before_reset
    _peak_before_reset = max(_peak_before_reset, _proc_status_bytes("VmHWM"))
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the resident memory now
    except OSError as e:
        raise RuntimeError(f"max_memory on the CPU measures the peak resident memory through /proc/self (Linux), "
                           f"which this system does not give ({e}); give a tile instead") from None
    fn()
    return _proc_status_bytes("VmHWM") - base


_peak_before_reset = 0


def peak_resident_bytes() -> int:
    """This process's peak resident memory so far (Linux VmHWM), including the peaks before max_memory's probes
    reset the kernel's counter."""
    return max(_peak_before_reset, _proc_status_bytes("VmHWM"))


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def resident_bytes() -> int:
    """This process's resident memory (Linux), after the garbage collector has run and glibc has handed its free
    heap pages back to the system."""
    import gc

    gc.collect()
    release_free_pages()
    return _proc_status_bytes("VmRSS")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import ctypes.util

    libc = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(libc).malloc_trim if libc else None
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_pages() -> None:
    """glibc's malloc_trim(0): free pages inside the heap go back to the system. Between tiles under max_memory,
    without it the heap's free holes grow the resident memory by about a tile's output per tile."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def tile_for_memory(model: nn.Module, forward: Callable[[Tensor], Tensor], x: Tensor, scale: int,
                    max_memory: int, dev: torch.device) -> int | None:
    """The tile (input pixels; None = untiled) that run(max_memory=...) uses for x: the largest whose modelled
    peak (module docstring) fits max_memory."""
    h, w = x.shape[2:]
    halo = receptive_radius(model)
    side = 2 * halo + MIN_TILE  # the smallest tile: the probe itself stays within any budget that fits one
    gen = torch.Generator().manual_seed(0)  # not the global generator: a budget must not change seeded results
    probe = torch.rand(1, x.shape[1], side, side + 1, generator=gen)[..., :side]  # strided: copied, as a tile
    per_pixel = _added_peak(lambda: forward(probe), dev) / side ** 2

    def need(pixels: int, tiled: bool) -> float:
        return MEMORY_MARGIN * per_pixel * pixels + (_image_bytes(x, scale) + TILED_OVERHEAD if tiled else 0)

    if need(h * w, False) <= max_memory:
        return None

    def padded(n: int, t: int) -> int:  # the largest padded tile of _grid along an axis of n pixels
        return min(n, math.ceil(n / math.ceil(n / t)) + 2 * halo)

    for t in range(max(h, w) - 1, MIN_TILE - 1, -1):
        if need(padded(h, t) * padded(w, t), True) <= max_memory:
            return t
    mib = 2 ** 20
    raise ValueError(
        f"max_memory {max_memory / mib:.0f} MiB is too small for this {w}x{h} image: tiles of {MIN_TILE} pixels "
        f"need about {need(padded(h, MIN_TILE) * padded(w, MIN_TILE), True) / mib:.0f} MiB (the output image "
        f"alone is {_image_bytes(x, scale) / mib:.0f} MiB); allow more memory")


def _run_self_ensemble(model: nn.Module, x: Tensor, *, progress: bool, on_tile, **kwargs) -> Tensor:
    """run(..., self_ensemble=True): one run per view, the outputs summed in ENSEMBLE_VIEWS order in float32."""
    n = len(ENSEMBLE_VIEWS)
    bar = None
    acc: Tensor | None = None
    try:
        for i, (k, flip) in enumerate(ENSEMBLE_VIEWS):
            def view_done(done: int, total: int, i: int = i) -> None:
                nonlocal bar
                if progress and bar is None:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=n * total, desc="self-ensemble views x tiles", unit="tile")
                if bar is not None:
                    bar.update()
                if on_tile is not None:
                    on_tile(i * total + done, n * total)

            y = _unview(run(model, _view(x, k, flip), on_tile=view_done, **kwargs), k, flip)
            acc = y if acc is None else acc.add_(y)
    finally:
        if bar is not None:
            bar.close()
    return acc.div_(n)


def _run_global(model, forward, x, scale, tile, progress, on_tile=None, trim=False) -> Tensor:
    h, w = x.shape[2:]
    blocks = [m for m in model.modules() if isinstance(m, LatticeBlock)]
    tiles = _grid(h, w, tile, receptive_radius(model))
    out: Tensor | None = None
    hook = _GlobalStatistics(blocks)
    groups = hook.groups(blocks)
    total = len(tiles) * (len(groups) + 1)
    done = 0
    with _hooked(blocks, hook), _progress(total, progress, "tiles") as bar:
        for group in groups:
            hook.collecting = group
            hook.acc = {k: _Accumulator() for k in group}
            for t in tiles:
                hook.interior = (slice(t.y0 - t.py0, t.y1 - t.py0), slice(t.x0 - t.px0, t.x1 - t.px0))
                with contextlib.suppress(_Stop):
                    forward(x[:, :, t.py0:t.py1, t.px0:t.px1])
                if trim:
                    release_free_pages()
                done += 1
                _tile_done(bar, on_tile, done, total)
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
            del y
            if trim:
                release_free_pages()
            done += 1
            _tile_done(bar, on_tile, done, total)
    return out


def _ramp(n: int, lead: int, trail: int) -> Tensor:
    """1 in the middle, rising linearly over `lead` samples and falling over `trail` samples (0 < w <= 1)."""
    r = torch.ones(n)
    if lead:
        r[:lead] = torch.arange(1, lead + 1) / (lead + 1)
    if trail:
        r[n - trail:] = torch.minimum(r[n - trail:], torch.arange(trail, 0, -1) / (trail + 1))
    return r


def _run_blended(forward, x, scale, tile, overlap, progress, on_tile=None) -> Tensor:
    h, w = x.shape[2:]
    ys, xs = _overlapping(h, tile, overlap), _overlapping(w, tile, overlap)
    out = wsum = None
    total = len(ys) * len(xs)
    with _progress(total, progress, "tiles") as bar:
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
                _tile_done(bar, on_tile, i * len(xs) + j + 1, total)
    return out / wsum


# ---------------------------------------------------------------------------------------------------------------
# image files

def read_image(path: str | os.PathLike, mode: str = "RGB", max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 for mode RGB, (H, W) for L. Grayscale files are accepted for RGB (replicated); other modes
    (alpha, palette, CMYK, 16-bit) raise ImageError saying how to convert. See open_image for max_pixels and the
    files refused (folders, unreadable, animated)."""
    from PIL import UnidentifiedImageError

    path = Path(path)
    with open_image(path, max_pixels) as im:
        try:
            im.load()
        except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as e:
            raise ImageError(f"cannot read image {path}: {e}") from None
        src = im.mode
        if src == mode or (mode == "RGB" and src == "L") or (mode == "L" and src == "RGB"):
            return np.asarray(im.convert(mode))
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
    atomic_write(path, lambda tmp: Image.fromarray(img).save(tmp, format="PNG"))


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


# ---------------------------------------------------------------------------------------------------------------
# image files in every common mode: RGB, L, 1, P, RGBA, LA, 16-bit gray/RGB(A), EXIF-oriented, ICC-tagged

ALPHA_METHODS = ("bicubic", "model")
OUTPUT_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class LoadedImage:
    """An image file's pixels as the models take them, and what is needed to write a result like it.

    color: (H, W, 3) RGB or (H, W, 1) gray, uint8 (8-bit files) or uint16 (16-bit files), EXIF orientation applied;
    alpha: (H, W) of the same dtype, or None; icc_profile: the file's embedded ICC profile, carried to the output;
    mode: the file's mode as read (e.g. 'P', 'RGBA', 'I;16', 'RGB;16'), for messages."""

    color: np.ndarray
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None
    mode: str = ""

    @property
    def megapixels(self) -> float:
        return self.color.shape[0] * self.color.shape[1] / 1e6


# EXIF orientation tag (0x0112) values -> the transform that shows the image upright (TIFF/EXIF 2.3: 2 mirrors,
# 3 rotates by 180, 4 flips, 5 transposes, 6 rotates 90 clockwise, 7 transverses, 8 rotates 90 counter-clockwise).
_ORIENTATIONS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W[, C]) as it is to be shown for an EXIF orientation value (1..8; anything else: unchanged)."""
    f = _ORIENTATIONS.get(orientation)
    return np.ascontiguousarray(f(a)) if f is not None else a


def _png_depth(path: Path) -> int | None:
    """The bit depth of a PNG file (from its IHDR chunk), None for other files."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) == 26 and head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
        return head[24]
    return None


def _read_png16(path: Path) -> tuple[np.ndarray, str]:
    """A 16-bit PNG (gray, gray+alpha, RGB, RGBA) as (H, W, planes) uint16, with its mode name. Pillow reads only
    the high byte of 16-bit color PNGs, so these go through pypng."""
    import png

    try:
        w, h, rows, info = png.Reader(filename=str(path)).asDirect()
        arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(h, w, info["planes"])
    except (png.Error, ValueError, OSError, EOFError) as e:
        raise ImageError(f"cannot read image {path}: {e}") from None
    if info["bitdepth"] != 16:  # an sBIT chunk made pypng scale to the significant bits: back to 16-bit
        arr = np.round(arr.astype(np.float64) * (65535 / (2 ** info["bitdepth"] - 1))).astype(np.uint16)
    mode = ("LA" if info["alpha"] else "L") if info["greyscale"] else ("RGBA" if info["alpha"] else "RGB")
    return arr, f"{mode};16"


def read_image_file(path: str | os.PathLike, max_pixels: int | None = MAX_IMAGE_PIXELS) -> LoadedImage:
    """Read any common image file: RGB, L and 1-bit, P (palette, to RGB or RGBA when it has transparency), RGBA and
    LA (alpha kept apart), 16-bit gray / RGB(A) PNG and 16-bit gray TIFF (kept 16-bit); the EXIF orientation is
    applied and the ICC profile kept. Raises FileNotFoundError, or ImageError for an unreadable, truncated or
    animated file, one over max_pixels pixels (see open_image) or a mode no model takes (CMYK, YCbCr, LAB, HSV,
    32-bit integer or float)."""
    from PIL import UnidentifiedImageError

    path = Path(path)
    with open_image(path, max_pixels) as im:
        try:
            im.load()
            icc = im.info.get("icc_profile") or None
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            if _png_depth(path) == 16:
                arr, mode = _read_png16(path)
            else:
                mode = im.mode
                arr = _pillow_pixels(im, path)
        except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as e:
            raise ImageError(f"cannot read image {path}: {e}") from None
    arr = apply_orientation(arr, orientation)
    if arr.ndim == 2:
        arr = arr[..., None]
    color, alpha = (arr[..., :-1], arr[..., -1]) if arr.shape[2] in (2, 4) else (arr, None)
    return LoadedImage(np.ascontiguousarray(color), None if alpha is None else np.ascontiguousarray(alpha), icc, mode)


def _pillow_pixels(im, path: Path) -> np.ndarray:
    """(H, W[, C]) uint8 or uint16 of an image Pillow decoded, converting the modes that convert without loss."""
    mode = im.mode
    if mode in ("RGB", "L", "RGBA", "LA"):
        return np.asarray(im)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("P", "PA"):
        return np.asarray(im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB"))
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    raise ImageError(f"{path} is a {mode!r} image, which no model here takes (supported: RGB, L, 1-bit, P, RGBA, "
                     f"LA, 16-bit gray or RGB); convert it to RGB first, with a color-managed tool for CMYK")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import zlib

    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def _encode_png16(pixels: np.ndarray, icc_profile: bytes | None) -> bytes:
    """(H, W, C) uint16 with C = 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) as a 16-bit PNG (rows unfiltered,
    deflated), with an iCCP chunk holding icc_profile if given."""
    import zlib

    h, w, c = pixels.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(h, w * c * 2)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter type 0 (None) on every row
    chunks = [_png_chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([16, color_type, 0, 0, 0]))]
    if icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    chunks += [_png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)), _png_chunk(b"IEND", b"")]
    return _PNG_SIGNATURE + b"".join(chunks)


def output_format(path: str | os.PathLike, format: str | None = None) -> str:
    """'PNG' or 'JPEG', from `format` (png, jpg, jpeg) or else the suffix of `path`."""
    key = (format or Path(path).suffix.lstrip(".")).lower()
    if key not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be png or jpg, got {format or Path(path).suffix or 'no suffix'!r} "
                         f"({path})")
    return OUTPUT_FORMATS[key]


def write_image_file(path: str | os.PathLike, img: LoadedImage, format: str | None = None,
                     quality: int = 95) -> None:
    """Write `img` atomically as PNG (8- or 16-bit as the image, alpha and ICC profile kept) or JPEG (8-bit: a 16-bit
    image is rounded to 8 bits; `quality` 1..100; no alpha channel, so an image with one is refused)."""
    from PIL import Image

    path = Path(path)
    fmt = output_format(path, format)
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    planes = img.color if img.alpha is None else np.concatenate([img.color, img.alpha[..., None]], axis=2)
    if fmt == "JPEG" and img.alpha is not None:
        raise ImageError(f"cannot write {path}: JPEG has no alpha channel and the image has one; write PNG instead")
    if planes.dtype == np.uint16 and fmt == "PNG":
        data = _encode_png16(planes, img.icc_profile)
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
        return
    if planes.dtype == np.uint16:
        planes = ((planes.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    pil = Image.fromarray(planes[..., 0] if planes.shape[2] == 1 else planes)
    opts = {"quality": quality} if fmt == "JPEG" else {}
    if img.icc_profile:
        opts["icc_profile"] = img.icc_profile
    atomic_write(path, lambda tmp: pil.save(tmp, format=fmt, **opts))


def _to_model(a: np.ndarray, rng: float) -> Tensor:
    """(H, W, C) uint8/uint16 -> (1, C, H, W) float32 in [0, rng]."""
    maxval = float(np.iinfo(a.dtype).max)
    return torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)[None] * (rng / maxval)


def _from_model(y: Tensor, rng: float, dtype: np.dtype) -> np.ndarray:
    """(1, C, H, W) float in [0, rng] -> (H, W, C) of `dtype` (uint8/uint16), rounded and clamped."""
    bad = int((~torch.isfinite(y)).sum())
    if bad:  # NaN would become 0 silently, inf 255
        raise ValueError(f"the model's output holds {bad} NaN or infinite values; under --dtype float16 a value may "
                         "have overflowed (use bfloat16 or float32), or the model's weights hold NaN")
    maxval = float(np.iinfo(dtype).max)
    out = np.empty((y.shape[2], y.shape[3], y.shape[1]), dtype=dtype)
    for r in range(0, y.shape[2], 64):  # in bands: the double temporaries stay small
        q = (y[0, :, r:r + 64].double() * (maxval / rng)).round_().clamp_(0, maxval)
        out[r:r + 64] = q.permute(1, 2, 0).numpy()
    return out


def _buffer_bytes(img: LoadedImage, out_pixels: int, area_scale: int) -> int:
    """What super_resolve_image/restore_image hold besides run(): the float input, the rounded output and the
    encoder's copy of it, and the alpha channel's float input and output (counted as 3 channels, as a gray image
    runs through an RGB model)."""
    h, w, c = img.color.shape
    size = img.color.dtype.itemsize
    alpha = 0 if img.alpha is None else 3 * 4 * h * w * (1 + area_scale)
    return 3 * 4 * h * w + 2 * c * size * out_pixels + alpha


def _run_gray_as_rgb(model: nn.Module, x: Tensor, scale: int, **kwargs) -> Tensor:
    """A 3-channel model on a 1-channel image: the gray replicated to RGB, the output's channels averaged."""
    return run(model, x.expand(1, 3, *x.shape[2:]), scale=scale, **kwargs).mean(dim=1, keepdim=True)


@dataclass(frozen=True)
class OutputSize:
    """The size of an upscaled image when it is not the network's: `outscale` (any factor > 0 of the input size),
    or `width` and/or `height` in pixels (one of them alone keeps the aspect ratio). Real-ESRGAN's --outscale: the
    network's scale first, then a resize of its float output to the target (`imresize`, MATLAB bicubic,
    antialiased when shrinking), rounded once."""

    outscale: float | None = None
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        if self.outscale is not None and (self.width is not None or self.height is not None):
            raise ValueError("give either outscale or a width/height, not both")
        if self.outscale is not None and not (self.outscale > 0 and math.isfinite(self.outscale)):
            raise ValueError(f"outscale must be a positive factor, got {self.outscale}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and (int(v) != v or v < 1):
                raise ValueError(f"{name} must be a positive number of pixels, got {v}")

    def of(self, height: int, width: int) -> tuple[int, int]:
        """The output (height, width) for an input of height x width pixels (halves rounded up)."""
        def rounded(x: float) -> int:
            return max(1, math.floor(x + 0.5))

        if self.outscale is not None:
            return rounded(height * self.outscale), rounded(width * self.outscale)
        if self.width is not None and self.height is not None:
            return int(self.height), int(self.width)
        if self.width is not None:
            return rounded(height * self.width / width), int(self.width)
        if self.height is not None:
            return int(self.height), rounded(width * self.height / height)
        raise ValueError("OutputSize needs outscale, width or height")


def super_resolve_image(model: nn.Module, img: LoadedImage, alpha: str = "bicubic",
                        output_size: OutputSize | None = None, **kwargs) -> LoadedImage:
    """Upscale a LoadedImage by model.scale with a LatticeNet: RGB as is, gray through the RGB model (replicated,
    then averaged), computed in float (16-bit images stay 16-bit). The alpha channel is upscaled apart: bicubic
    interpolation (alpha="bicubic") or the model on its gray replica (alpha="model"). output_size: resize the
    float result to another size (OutputSize) before it is rounded. kwargs: see run()."""
    if alpha not in ALPHA_METHODS:
        raise ValueError(f"alpha must be one of {', '.join(ALPHA_METHODS)}, got {alpha!r}")
    rng, scale = float(getattr(model, "rgb_range", 255.0)), model.scale
    target = None if output_size is None else output_size.of(*img.color.shape[:2])

    def resized(t: Tensor) -> Tensor:
        return t if target is None or tuple(t.shape[-2:]) == target else imresize(t.float(), size=target)

    if kwargs.get("max_memory") is not None:
        out_px = (target[0] * target[1]) if target is not None else img.color.shape[0] * img.color.shape[1] * scale ** 2
        reserve = _buffer_bytes(img, out_px, scale ** 2) + (3 * 4 * 3 * out_px if target is not None else 0)
        kwargs["max_memory"] -= reserve  # + imresize's float target and its pass between the axes
    x = _to_model(img.color, rng)
    y = run(model, x, scale=scale, **kwargs) if x.shape[1] == 3 else _run_gray_as_rgb(model, x, scale, **kwargs)
    out_alpha = None
    if img.alpha is not None:
        a = _to_model(img.alpha[..., None], rng)
        if alpha == "model":
            ya = _run_gray_as_rgb(model, a, scale, **kwargs)
        else:
            ya = torch.nn.functional.interpolate(a, scale_factor=scale, mode="bicubic", align_corners=False)
        out_alpha = _from_model(resized(ya), rng, img.alpha.dtype)[..., 0]
    return LoadedImage(_from_model(resized(y), rng, img.color.dtype), out_alpha, img.icc_profile, img.mode)


def restore_image(model: nn.Module, img: LoadedImage, **kwargs) -> LoadedImage:
    """Restore (denoise) a LoadedImage with a LatticeRestorer (inputs in [0, 1]), computed in float: a color model
    takes gray images replicated to RGB (output averaged back to gray), a gray model takes color images channel by
    channel. The alpha channel is kept as it is. kwargs: see run()."""
    channels = getattr(model, "channels", 3)
    if kwargs.get("max_memory") is not None:
        kwargs["max_memory"] -= _buffer_bytes(img, img.color.shape[0] * img.color.shape[1], 1)
    x = _to_model(img.color, 1.0)
    if x.shape[1] == channels:
        y = run(model, x, scale=1, **kwargs)
    elif channels == 3:
        y = _run_gray_as_rgb(model, x, 1, **kwargs)
    else:
        y = torch.cat([run(model, x[:, c:c + 1], scale=1, **kwargs) for c in range(x.shape[1])], dim=1)
    return LoadedImage(_from_model(y, 1.0, img.color.dtype), img.alpha, img.icc_profile, img.mode)


def super_resolve_file(model: nn.Module, src: str | os.PathLike, dst: str | os.PathLike, *, alpha: str = "bicubic",
                       format: str | None = None, quality: int = 95, max_pixels: int | None = MAX_IMAGE_PIXELS,
                       output_size: OutputSize | None = None, **kwargs) -> LoadedImage:
    """Read `src` (any mode of read_image_file, at most max_pixels pixels), upscale it (super_resolve_image, to
    output_size when given) and write `dst` (write_image_file: PNG, or JPEG by suffix or `format`). Returns the
    image read. max_memory: the bytes the call may add, the images it reads and writes included (run())."""
    img = read_image_file(src, max_pixels)
    kwargs = _less_decoded(kwargs, img)
    out = super_resolve_image(model, img, alpha=alpha, output_size=output_size, **kwargs)
    write_image_file(dst, out, format=format, quality=quality)
    return img


def restore_file(model: nn.Module, src: str | os.PathLike, dst: str | os.PathLike, *, format: str | None = None,
                 quality: int = 95, max_pixels: int | None = MAX_IMAGE_PIXELS, **kwargs) -> LoadedImage:
    """Read `src` (at most max_pixels pixels), restore it (restore_image) and write `dst` (write_image_file).
    Returns the image read. max_memory: as super_resolve_file's."""
    img = read_image_file(src, max_pixels)
    kwargs = _less_decoded(kwargs, img)
    write_image_file(dst, restore_image(model, img, **kwargs), format=format, quality=quality)
    return img


def _less_decoded(kwargs: dict, img: LoadedImage) -> dict:
    """kwargs with max_memory less the decoded image (its arrays and the decoder's copy)."""
    if kwargs.get("max_memory") is None:
        return kwargs
    held = img.color.nbytes + (0 if img.alpha is None else img.alpha.nbytes)
    return {**kwargs, "max_memory": kwargs["max_memory"] - 2 * held}
