"""The cases the CPU execution harness runs through the real CUDA launchers (torch-free: also run in the sanitizer
child processes, which import numpy and the harness only).

A case fixes a launcher and its mode, a dtype, a shape (N, C, H*W) and a layout; its inputs are drawn from a seed
derived from its id, so the parent (which computes the float64 reference with torch) and a child get the same
bits. Every tensor lives in a 1-D buffer of exactly the size its view spans; elements outside the view are NaN
and must come back unchanged (no write outside a view).

Layouts: ``nchw``; ``nhwc`` (channels_last); ``strided``: planar rows with padding between channels and samples
and a one-element offset (so never 16-byte aligned: the scalar path); ``strided_nhwc``: interleaved with padded
pixels. The kernels see (sn, sc, sp) strides only (the torch binding copies tensors whose H, W do not flatten).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

DTYPE_CODE = {"f32": 0, "f64": 1, "f16": 2, "bf16": 3}
STORAGE = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "bf16": np.uint16}
LAYOUTS = ("nchw", "nhwc", "strided", "strided_nhwc")
INTERLEAVED = {"nhwc", "strided_nhwc"}

# (N, C, H*W): a generic odd shape; H*W = 1 (NaN std); H*W = 2; H*W = 128 (the 16-byte vector path of every
# dtype); C = 33 (not a multiple of 32: one valid lane in the second channel block); H*W = 9216 (two planar splits
# of 8192, 36 interleaved splits of 256); C = 16 and C = 80 (the vectorised interleaved path of every dtype: C a
# multiple of 8; idle channel lanes; at C = 80 in float64, 40 vectors over two blocks of 32 lanes); C = 64 with
# H*W = 300 (the vectorised path's 4-pixel steps, its remainder and two splits). N > 1 in four.
SHAPES = ((2, 5, 91), (2, 3, 1), (3, 4, 2), (1, 3, 128), (1, 33, 55), (1, 2, 9216), (2, 16, 37), (1, 80, 23),
          (1, 64, 300))

# launcher -> modes. butterfly: q_stats (plain outputs), no_stats, stacked (p, q the two halves of one 2C
# tensor: out= / butterfly_stacked), partial (alpha1 and beta2 absent = 1). backward: q_grad (gradients of q's
# statistics), plain (none), partial (alpha2, beta1 absent).
MODES = {
    "channel_stats": ("plain",),
    "combination_coefficients": ("plain",),
    "channel_stats_backward": ("plain",),
    "butterfly": ("q_stats", "no_stats", "stacked", "partial"),
    "butterfly_backward": ("q_grad", "plain", "partial"),
}


@dataclass(frozen=True)
class Case:
    launcher: str
    mode: str
    dtype: str
    shape: tuple[int, int, int]
    layout: str

    @property
    def id(self) -> str:
        n, c, p = self.shape
        return f"{self.launcher}-{self.mode}-{self.dtype}-{n}x{c}x{p}-{self.layout}"

    @property
    def interleaved(self) -> bool:
        return self.layout in INTERLEAVED

    @property
    def stats_dtype(self) -> type:
        return np.float64 if self.dtype == "f64" else np.float32

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(zlib.crc32(self.id.encode()))


def all_cases() -> list[Case]:
    return [Case(launcher, mode, dt, shape, layout)
            for launcher, modes in MODES.items() for mode in modes for dt in DTYPE_CODE
            for shape in SHAPES for layout in LAYOUTS]


def sanitizer_cases(variant: str) -> list[Case]:
    """The subset a sanitizer build runs (ASan 2x, TSan 5x slower than the plain build): every launcher and mode,
    over the layouts and the shapes that select different paths, with the largest shape in one layout pair only;
    every dtype under ASan, float32 and float64 (the two accumulation types the shared memory holds) under TSan."""
    dtypes = list(DTYPE_CODE) if variant == "asan" else ["f32", "f64"]
    out = []
    for launcher, modes in MODES.items():
        for mode in modes:
            for dt in dtypes:
                for i, layout in enumerate(LAYOUTS):
                    out.append(Case(launcher, mode, dt, SHAPES[(i + len(mode)) % 5], layout))
                out.append(Case(launcher, mode, dt, SHAPES[3], "nchw"))  # the vector path
    out += [Case(lch, MODES[lch][0], "f32", SHAPES[5], lay) for lch in MODES for lay in ("nchw", "nhwc")]
    out += [Case(lch, mode, dt, SHAPES[6 + i % 3], "nhwc") for lch, modes in MODES.items()
            for i, mode in enumerate(modes) for dt in dtypes]  # the vectorised interleaved path
    return out


# ---- dtype storage ------------------------------------------------------------------------------------------------
def to_storage(v: np.ndarray, dt: str) -> np.ndarray:
    """float64 values -> the dtype's storage (bfloat16 as uint16 bits, rounded to nearest even via float32)."""
    if dt != "bf16":
        return v.astype(STORAGE[dt])
    u = v.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(v), np.uint16(0x7FC0), bits).astype(np.uint16)


def to_float64(s: np.ndarray, dt: str) -> np.ndarray:
    if dt != "bf16":
        return s.astype(np.float64)
    return (s.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


@dataclass
class View:
    """A (N, C, P) view into a 1-D buffer: element (n, c, p) at offset + n*sn + c*sc + p*sp."""

    buf: np.ndarray
    offset: int
    sn: int
    sc: int
    sp: int
    shape: tuple[int, int, int]
    dtype: str
    owned: list[np.ndarray] = field(default_factory=list)

    def index(self) -> np.ndarray:
        n, c, p = (np.arange(k) for k in self.shape)
        return self.offset + n[:, None, None] * self.sn + c[None, :, None] * self.sc + p[None, None, :] * self.sp

    def values(self) -> np.ndarray:
        return to_float64(self.buf[self.index()], self.dtype)

    def arg(self) -> tuple:
        return (self.buf, self.offset, self.sn, self.sc, self.sp)


def geometry(shape: tuple[int, int, int], layout: str, channels: int | None = None) -> tuple[int, int, int, int, int]:
    """(offset, sn, sc, sp, buffer size) of a layout; `channels` > C makes the tensor one of the C-channel slices of
    a wider one (the halves of a stacked output)."""
    n, c, p = shape
    cw = channels or c
    if layout == "nchw":
        off, sn, sc, sp = 0, cw * p, p, 1
    elif layout == "nhwc":
        off, sn, sc, sp = 0, cw * p, 1, cw
    elif layout == "strided":
        off, sc, sp = 1, p + 3, 1
        sn = cw * sc + 5
    elif layout == "strided_nhwc":
        off, sc, sp = 1, 1, cw + 2
        sn = p * sp + 1
    else:
        raise ValueError(layout)
    size = off + (n - 1) * sn + (cw - 1) * sc + (p - 1) * sp + 1
    return off, sn, sc, sp, size


def nan_buffer(size: int, dt: str) -> np.ndarray:
    return to_storage(np.full(size, np.nan), dt)


def new_view(shape, layout, dt, values: np.ndarray | None = None) -> View:
    off, sn, sc, sp, size = geometry(shape, layout)
    v = View(nan_buffer(size, dt), off, sn, sc, sp, tuple(shape), dt)
    if values is not None:
        v.buf[v.index()] = to_storage(values, dt)
    return v


def stacked_views(shape, layout, dt) -> tuple[View, View]:
    """p and q as the first and second C channels of one (N, 2C, P) buffer in the layout."""
    c = shape[1]
    off, sn, sc, sp, size = geometry(shape, layout, channels=2 * c)
    buf = nan_buffer(size, dt)
    return (View(buf, off, sn, sc, sp, tuple(shape), dt), View(buf, off + c * sc, sn, sc, sp, tuple(shape), dt))


# ---- inputs and runs ----------------------------------------------------------------------------------------------
def inputs(case: Case) -> dict[str, np.ndarray]:
    """The case's inputs as float64 arrays (already rounded to their dtypes): tensors (N, C, P), per-channel (N, C),
    weights. Absent coefficients are missing from the dict."""
    rng = case.rng()
    n, c, p = case.shape
    st = case.stats_dtype

    def tensor(offset=0.0):
        return to_float64(to_storage(rng.standard_normal((n, c, p)) + offset, case.dtype), case.dtype)

    def per_channel(lo=0.25, hi=1.25):
        return rng.uniform(lo, hi, (n, c)).astype(st).astype(np.float64)

    out: dict[str, np.ndarray] = {}
    if case.launcher in ("channel_stats", "combination_coefficients"):
        out["x"] = tensor(offset=3.0)  # |mean| > std: the shifted sums matter
        if case.launcher == "combination_coefficients":
            r = max(1, c // 16)
            for br in ("m", "s"):
                out[f"w1{br}"] = rng.standard_normal((r, c)).astype(st).astype(np.float64) / np.sqrt(c)
                out[f"b1{br}"] = rng.standard_normal(r).astype(st).astype(np.float64) * 0.1
                out[f"w2{br}"] = rng.standard_normal((c, r)).astype(st).astype(np.float64) / np.sqrt(r)
                out[f"b2{br}"] = rng.standard_normal(c).astype(st).astype(np.float64) * 0.1
    elif case.launcher == "channel_stats_backward":
        out["x"] = tensor(offset=1.0)
        out["grad_mean"] = rng.standard_normal((n, c))
        out["grad_std"] = rng.standard_normal((n, c))
    else:
        out["x1"], out["x2"] = tensor(), tensor()
        absent = {"partial": ("alpha1", "beta2") if case.launcher == "butterfly" else ("alpha2", "beta1")}.get(
            case.mode, ())
        for name in ("alpha1", "alpha2", "beta1", "beta2"):
            if name not in absent:
                out[name] = per_channel()
        if case.launcher == "butterfly_backward":
            out["dp"], out["dq"] = tensor(), tensor()
            if case.mode == "q_grad":
                out["grad_mean_q"] = rng.standard_normal((n, c))
                out["grad_std_q"] = rng.standard_normal((n, c))
    return out


def folded_stats_grads(grad_mean: np.ndarray, grad_std: np.ndarray, x: np.ndarray, st) -> tuple:
    """What the bindings hand the backward kernels: a = grad_mean / P, b = grad_std / ((P - 1) std) (0 where
    grad_std or std is 0), and the mean, in the statistics dtype (from the float64 statistics of x)."""
    p = x.shape[2]
    mean = x.mean(axis=2)
    std = x.std(axis=2, ddof=1) if p > 1 else np.full(mean.shape, np.nan)
    a = grad_mean / p
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where((grad_std == 0) | (std == 0), 0.0, grad_std / (std * (p - 1)))
    return a.astype(st), b.astype(st), mean.astype(st)


def run(m, case: Case) -> dict[str, np.ndarray]:
    """Run the case through the harness module `m`; returns its outputs as float64 arrays, (N, C, P) tensors and
    (N, C) statistics. Raises AssertionError when a write landed outside an output view."""
    inp = inputs(case)
    n, c, p = case.shape
    st = case.stats_dtype
    code = DTYPE_CODE[case.dtype]
    shape = (n, c, p, case.interleaved)
    lay = case.layout

    def stat_buf():
        return np.full(n * c, np.nan, dtype=st)

    def flat(a):
        return np.ascontiguousarray(a, dtype=st).ravel()

    out: dict[str, np.ndarray] = {}
    views: list[View] = []
    if case.launcher == "channel_stats":
        x = new_view(case.shape, lay, case.dtype, inp["x"])
        mean, std = stat_buf(), stat_buf()
        m.channel_stats(code, shape, x.arg(), mean, std)
        out.update(mean=mean.reshape(n, c), std=std.reshape(n, c))
    elif case.launcher == "combination_coefficients":
        x = new_view(case.shape, lay, case.dtype, inp["x"])
        names = ("w1m", "b1m", "w2m", "b2m", "w1s", "b1s", "w2s", "b2s")
        cc, mean, std = stat_buf(), stat_buf(), stat_buf()
        m.combination_coefficients(code, shape, x.arg(), [flat(inp[k]) for k in names], inp["w1m"].shape[0], cc, mean,
                                   std)
        out.update(cc=cc.reshape(n, c), mean=mean.reshape(n, c), std=std.reshape(n, c))
    elif case.launcher == "channel_stats_backward":
        x = new_view(case.shape, lay, case.dtype, inp["x"])
        dx = new_view(case.shape, lay, case.dtype)
        a, b, mean = folded_stats_grads(inp["grad_mean"], inp["grad_std"], inp["x"], st)
        m.channel_stats_backward(code, shape, x.arg(), dx.arg(), flat(a), flat(b), flat(mean))
        out["dx"] = dx.values()
        views.append(dx)
    elif case.launcher == "butterfly":
        x1 = new_view(case.shape, lay, case.dtype, inp["x1"])
        x2 = new_view(case.shape, lay, case.dtype, inp["x2"])
        if case.mode == "stacked":
            pv, qv = stacked_views(case.shape, lay, case.dtype)
        else:
            pv, qv = new_view(case.shape, lay, case.dtype), new_view(case.shape, lay, case.dtype)
        coefs = [flat(inp[k]) if k in inp else None for k in ("alpha1", "alpha2", "beta1", "beta2")]
        q_stats = case.mode != "no_stats"
        mean, std = (stat_buf(), stat_buf()) if q_stats else (None, None)
        m.butterfly(code, shape, x1.arg(), x2.arg(), pv.arg(), qv.arg(), coefs, mean, std)
        out.update(p=pv.values(), q=qv.values())
        if q_stats:
            out.update(mean_q=mean.reshape(n, c), std_q=std.reshape(n, c))
        views += [pv, qv]
    elif case.launcher == "butterfly_backward":
        v = {k: new_view(case.shape, lay, case.dtype, inp[k]) for k in ("dp", "dq", "x1", "x2")}
        dx1, dx2 = new_view(case.shape, lay, case.dtype), new_view(case.shape, lay, case.dtype)
        coefs = [flat(inp[k]) if k in inp else None for k in ("alpha1", "alpha2", "beta1", "beta2")]
        gm = bs = mq = None
        if case.mode == "q_grad":
            ones = np.ones((n, c))
            q = inp.get("beta1", ones)[:, :, None] * inp["x1"] + inp.get("beta2", ones)[:, :, None] * inp["x2"]
            gm, bs, mq = (flat(t) for t in folded_stats_grads(inp["grad_mean_q"], inp["grad_std_q"], q, st))
        sums = np.full(4 * n * c, np.nan, dtype=st)
        m.butterfly_backward(code, shape, v["dp"].arg(), v["dq"].arg(), v["x1"].arg(), v["x2"].arg(), dx1.arg(),
                             dx2.arg(), coefs, gm, bs, mq, sums)
        out.update(dx1=dx1.values(), dx2=dx2.values(), sums=sums.reshape(4, n, c).astype(np.float64))
        views += [dx1, dx2]
    else:
        raise ValueError(case.launcher)
    # Nothing but the views may change in an output buffer.
    for buf in {id(v.buf): v.buf for v in views}.values():
        inside = np.zeros(buf.shape, dtype=bool)
        for v in views:
            if v.buf is buf:
                inside[v.index().ravel()] = True
        outside = to_float64(buf[~inside], views[0].dtype)
        assert np.isnan(outside).all(), f"{case.id}: a write landed outside the output view"
    return {k: np.asarray(val, dtype=np.float64) for k, val in out.items()}
