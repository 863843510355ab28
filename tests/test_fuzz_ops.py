"""Property-based tests of every op (hypothesis) on the cpu backend and, with small sizes, the Triton interpreter.

Each example draws the sizes (1 and odd ones included), the dtype, the memory layout of every tensor (contiguous,
channels_last, sliced, expanded, with a storage offset, permuted), `out=` buffers (good, too small, of another dtype,
strided, overlapping an input), coefficients (None, (N, C), (N, C, 1, 1), expanded, of another dtype, of a wrong
shape) and NaN/inf values. The op must equal the float64 spec within the suite's tolerances or raise the named
error, and must not write outside its output (inputs and the guard rows around an `out=` buffer stay unchanged).

`make test` runs a fixed-seed sample (derandomized, FUZZ_EXAMPLES examples per test). A long random sample:

    LATTICE_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest -q tests/test_fuzz_ops.py

A failure prints the example (and `@reproduce_failure` blob); each one found goes into a regular test
(tests/test_fuzz_findings.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lattice_kernels as lk
from lattice_kernels.ops import reference as ref

from .conftest import BACKEND_DEVICES, assert_close_to_reference, interpreted

_LONG = os.environ.get("LATTICE_FUZZ_EXAMPLES")
FUZZ_EXAMPLES = int(_LONG) if _LONG else 40
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=_LONG is None,  # make test: the same examples on every run; a long run: new ones each time
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FUZZED = [(b, d) for b, d in BACKEND_DEVICES if b in ("cpu", "triton")]
LAYOUTS = ("contiguous", "channels_last", "sliced", "expanded", "offset", "permuted")
SPECIALS = ("finite", "finite", "finite", "nan", "inf", "-inf", "mixed")


def _small(backend: str, device: str) -> bool:
    return interpreted(backend, device)


def _dtypes(backend: str, device: str) -> list[torch.dtype]:
    if backend == "triton":
        # float64 is refused by name (channel_stats draws it to check that); the interpreter has no bfloat16
        return [torch.float32, torch.float16] + ([] if interpreted(backend, device) else [torch.bfloat16])
    return [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@st.composite
def shapes(draw, small: bool) -> tuple[int, int, int, int]:
    """(N, C, H, W): 1 and odd sizes; C up to past two AVX-512 vectors of float32 on cpu."""
    top = (2, 5, 5, 6) if small else (3, 35, 9, 21)
    return tuple(draw(st.integers(1, m)) for m in top)


@dataclass
class Drawn:
    """A tensor as the op receives it, with the settings it was drawn with (shown when an example fails)."""

    t: torch.Tensor
    layout: str
    special: str

    def __repr__(self) -> str:
        return f"<{self.layout} {self.special} {tuple(self.t.shape)} {self.t.dtype} strides {self.t.stride()}>"


@st.composite
def tensors(draw, shape, dtype: torch.dtype, device: str, allow_special: bool = True) -> Drawn:
    layout = draw(st.sampled_from(LAYOUTS))
    special = draw(st.sampled_from(SPECIALS)) if allow_special else "finite"
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    n, c, h, w = shape
    dense_shape = shape
    if layout == "expanded":
        dims = draw(st.sets(st.sampled_from(range(4)), min_size=1))
        dense_shape = tuple(1 if i in dims else s for i, s in enumerate(shape))
    offset = draw(st.sampled_from([0.0, 0.0, 2.5]))
    dense = torch.randn(dense_shape, generator=g, dtype=torch.float64) + offset
    if special != "finite":
        flat = dense.view(-1)
        count = draw(st.integers(1, 3))
        idx = torch.randint(0, flat.numel(), (count,), generator=g)
        values = {"nan": [float("nan")], "inf": [float("inf")], "-inf": [-float("inf")],
                  "mixed": [float("nan"), float("inf"), -float("inf")]}[special]
        for i, j in enumerate(idx.tolist()):
            flat[j] = values[i % len(values)]
    dense = dense.to(dtype)
    if layout == "contiguous":
        t = dense.to(device)
    elif layout == "channels_last":
        t = dense.to(device).contiguous(memory_format=torch.channels_last)
    elif layout == "expanded":
        t = dense.to(device).expand(shape)
    else:
        if layout == "sliced":
            v = torch.zeros(n, c + 1, h, 2 * w, dtype=dtype, device=device)[:, 1:, :, ::2]
        elif layout == "offset":
            k = draw(st.integers(1, 7))
            v = torch.zeros(dense.numel() + k, dtype=dtype, device=device)[k:].view(shape)
        else:  # permuted: strides that fit neither NCHW nor NHWC
            v = torch.zeros(n, w, c, h, dtype=dtype, device=device).permute(0, 2, 3, 1)
        v.copy_(dense)
        t = v
    return Drawn(t, layout, special)


@st.composite
def coefficients(draw, n: int, c: int, device: str, name: str):
    """(kind, tensor or None, the error it must raise or None)."""
    kind = draw(st.sampled_from(["none", "none", "nc", "nc11", "expanded", "transposed", "other_dtype", "special",
                                 "wrong_shape", "integer"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    v = torch.rand(n, c, generator=g, dtype=torch.float64) + 0.25
    if kind == "none":
        return kind, None, None
    if kind == "nc":
        return kind, v.float().to(device), None
    if kind == "nc11":
        return kind, v.float()[:, :, None, None].to(device), None
    if kind == "expanded":
        return kind, v[:1].float().to(device).expand(n, c), None
    if kind == "transposed":
        return kind, v.t().contiguous().t().float().to(device), None
    if kind == "other_dtype":
        return kind, v.to(draw(st.sampled_from([torch.float64, torch.float16, torch.bfloat16]))).to(device), None
    if kind == "special":
        v.view(-1)[draw(st.integers(0, n * c - 1))] = draw(st.sampled_from([float("nan"), float("inf"), -1e30]))
        return kind, v.float().to(device), None
    if kind == "integer":
        return kind, torch.ones(n, c, dtype=torch.int64, device=device), (TypeError, f"{name} must be a floating")
    wrong = draw(st.sampled_from([(n, c + 1), (c,), (n, c, 1, 2), (n + 1, c)]))
    return kind, torch.rand(wrong, dtype=torch.float32).to(device), (ValueError, rf"{name} must have shape \(N, C\)")


def _close(actual, expected64, dtype, what, eager=None, scale=None):
    if scale is None:
        finite = expected64[torch.isfinite(expected64)]
        scale = max(finite.abs().max().item(), 1.0) if finite.numel() else 1.0
    assert_close_to_reference(actual, expected64, dtype, scale=scale, eager=eager, what=what)


def _check_stats(mean, std, x, what):
    """Statistics against the float64 spec. Rows whose float32 sums leave float32's range (sum of squared
    deviations near 3.4e38, or values above 1e37) may come out non-finite: the op computes in float32, as its
    contract says; any finite value it gives there must still be right."""
    st_ = _stats_dtype(x.dtype)
    rm, rs = ref.channel_stats(x.double())
    if st_ == torch.float32:
        hw = x.shape[2] * x.shape[3]
        xd = x.double().flatten(2)
        big = (rs.nan_to_num(0.0) ** 2 * (hw - 1) > 1e37) | (xd.abs().nan_to_num(0.0).amax(2) > 1e37)
        md, sd = mean.double().cpu(), std.double().cpu()
        out_of_range = big.cpu() & (~torch.isfinite(md) | ~torch.isfinite(sd))
        rm = torch.where(out_of_range, md, rm.cpu())
        rs = torch.where(out_of_range, sd, rs.cpu())
    _close(mean, rm, st_, f"{what} mean")
    _close(std, rs, st_, f"{what} std")


def _snapshot(*drawn: torch.Tensor | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(t, t.clone()) for t in drawn if isinstance(t, torch.Tensor)]


def _unchanged(snaps, what: str) -> None:
    for t, before in snaps:
        assert torch.equal(t.nan_to_num(1.5, 2.5, -2.5), before.nan_to_num(1.5, 2.5, -2.5)), f"{what} was written"


def _triton_refuses(backend: str, dtype: torch.dtype):
    return backend == "triton" and dtype == torch.float64


def _expect_error(err):
    kind, pattern = err
    return pytest.raises(kind, match=pattern)


# ---------------------------------------------------------------------------------------------- channel_stats
@pytest.mark.parametrize("backend,device", FUZZED)
@FUZZ
@given(data=st.data())
def test_channel_stats_fuzz(backend, device, data):
    dtype = data.draw(st.sampled_from([*_dtypes(backend, device), torch.float64]), label="dtype")
    shape = data.draw(shapes(_small(backend, device)), label="shape")
    x = data.draw(tensors(shape, dtype, device), label="x")
    if _triton_refuses(backend, dtype):
        with pytest.raises(TypeError, match="backend 'triton' computes in float32"):
            lk.ops.channel_stats(x.t, backend=backend)
        return
    snaps = _snapshot(x.t)
    mean, std = lk.ops.channel_stats(x.t, backend=backend)
    _unchanged(snaps, "x")
    st_ = _stats_dtype(dtype)
    assert mean.dtype == st_ and std.dtype == st_ and mean.shape == shape[:2] and std.shape == shape[:2]
    _check_stats(mean, std, x.t, "channel_stats")


# ---------------------------------------------------------------------------------------------- butterfly
def _butterfly_case(data, backend, device):
    dtype = data.draw(st.sampled_from(_dtypes(backend, device)), label="dtype")
    shape = data.draw(shapes(_small(backend, device)), label="shape")
    n, c = shape[:2]
    x1 = data.draw(tensors(shape, dtype, device), label="x1")
    x2 = data.draw(tensors(shape, dtype, device), label="x2")
    coefs, errors = {}, {}
    for name in ("alpha1", "alpha2", "beta1", "beta2"):
        _kind, coefs[name], errors[name] = data.draw(coefficients(n, c, device, name), label=name)
    return dtype, shape, x1, x2, coefs, errors


def _first(errors: dict):
    """The error the op raises first: its coefficients are checked in the order alpha1, alpha2, beta1, beta2."""
    return next((e for e in errors.values() if e is not None), None)


def _butterfly_reference(x1, x2, coefs, dtype):
    """The spec in float64 (coefficients as the op takes them: in the statistics dtype), and eager PyTorch in the
    half dtype itself (the bound of the half rule)."""
    st_ = _stats_dtype(dtype)
    c64 = {k: None if v is None else v.reshape(v.shape[0], v.shape[1]).to(st_).double() for k, v in coefs.items()}
    p64, q64 = ref.butterfly(x1.double(), x2.double(), **c64)
    # rounded once to the input dtype, as the contract says (an overflow of a half dtype is its infinity)
    p64, q64 = p64.to(dtype).double(), q64.to(dtype).double()
    eager = None
    if dtype in (torch.float16, torch.bfloat16):
        ch = {k: None if v is None else v.to(dtype) for k, v in c64.items()}

        def term(k, v):
            return v if ch[k] is None else ch[k][:, :, None, None] * v
        eager = (term("alpha1", x1) + term("alpha2", x2), term("beta1", x1) + term("beta2", x2))
    return p64, q64, eager


def _check_butterfly(p, q, mq, sq, x1, x2, coefs, dtype, what):
    p64, q64, eager = _butterfly_reference(x1, x2, coefs, dtype)
    assert p.dtype == dtype and q.dtype == dtype and p.shape == x1.shape and q.shape == x1.shape
    _close(p, p64, dtype, f"{what} p", eager=None if eager is None else eager[0])
    _close(q, q64, dtype, f"{what} q", eager=None if eager is None else eager[1])
    # The statistics are of q as returned (rounded to the input dtype).
    _check_stats(mq, sq, q, f"{what} q")


@pytest.mark.parametrize("backend,device", FUZZED)
@FUZZ
@given(data=st.data())
def test_butterfly_fuzz(backend, device, data):
    dtype, shape, x1, x2, coefs, errors = _butterfly_case(data, backend, device)
    error = _first(errors)
    stacked = data.draw(st.booleans(), label="stacked")
    q_stats = data.draw(st.booleans(), label="q_stats")
    op = lk.ops.butterfly_stacked if stacked else lk.ops.butterfly
    if error is not None:
        with _expect_error(error):
            op(x1.t, x2.t, **coefs, q_stats=q_stats, backend=backend)
        return
    snaps = _snapshot(x1.t, x2.t, *coefs.values())
    res = op(x1.t, x2.t, **coefs, q_stats=True, backend=backend)
    _unchanged(snaps, "an input")
    if stacked:
        pq, mq, sq = res
        assert pq.shape == (shape[0], 2 * shape[1], *shape[2:])
        p, q = pq[:, : shape[1]], pq[:, shape[1]:]
    else:
        p, q, mq, sq = res
    _check_butterfly(p, q, mq, sq, x1.t, x2.t, coefs, dtype, "butterfly_stacked" if stacked else "butterfly")


OUT_KINDS = ("contiguous", "channels_last", "too_small", "other_dtype", "strided", "expanded", "overlaps_x1",
             "overlaps_x2", "overlaps_coefficient")


@pytest.mark.parametrize("backend,device", FUZZED)
@FUZZ
@given(data=st.data())
def test_butterfly_out_fuzz(backend, device, data):
    dtype, shape, x1d, x2d, coefs, errors = _butterfly_case(data, backend, device)
    kind = data.draw(st.sampled_from(OUT_KINDS), label="out")
    n, c, h, w = shape
    x1, x2 = x1d.t, x2d.t
    fmt = torch.channels_last if kind == "channels_last" else torch.contiguous_format
    # out is rows 1..N of a NaN-filled guard buffer: rows 0 and N+1 must stay NaN.
    guard = torch.full((n + 2, 2 * c, h, w), float("nan"), dtype=dtype, device=device).contiguous(memory_format=fmt)
    out = guard[1: n + 1]
    if kind == "overlaps_coefficient" and dtype == torch.float32:
        # a float32 (N, C) coefficient stored inside out
        name = data.draw(st.sampled_from(["alpha1", "alpha2", "beta1", "beta2"]), label="inside out")
        inside = out.view(-1)[: n * c].view(n, c)
        inside.fill_(0.5)
        coefs[name], errors[name] = inside, None
    want_error = _first(errors)
    if kind == "overlaps_coefficient" and dtype == torch.float32:
        want_error = want_error or (ValueError, f"out shares memory with {name}")
    if kind == "too_small":
        out = out[:, 1:]
        want_error = want_error or (ValueError, r"out must have shape \(N, 2C, H, W\)")
    elif kind == "other_dtype":
        other = torch.float64 if dtype != torch.float64 else torch.float32
        out = torch.empty(out.shape, dtype=other, device=device)
        want_error = want_error or (TypeError, "out must have the dtype of x1")
    elif kind == "strided":
        out = torch.empty(n, 2 * c, h, 2 * w, dtype=dtype, device=device)[..., ::2]
        want_error = want_error or (ValueError, "out must be contiguous or channels_last")
    elif kind == "expanded":
        out = torch.empty(1, 2 * c, h, w, dtype=dtype, device=device).expand(n, 2 * c, h, w)
        if n > 1:
            want_error = want_error or (ValueError, "out must be contiguous|out has elements that share memory")
    elif kind in ("overlaps_x1", "overlaps_x2"):
        half = out[:, :c] if data.draw(st.booleans(), label="p half") else out[:, c:]
        half.copy_(x1 if kind == "overlaps_x1" else x2)
        if kind == "overlaps_x1":
            x1 = half
        else:
            x2 = half
        want_error = want_error or (ValueError, f"out shares memory with {kind[-2:]}")
    if want_error is not None:
        with torch.no_grad(), _expect_error(want_error):
            lk.ops.butterfly(x1, x2, **coefs, out=out, q_stats=True, backend=backend)
        return
    snaps = _snapshot(x1, x2, *coefs.values())
    with torch.no_grad():
        p, q, mq, sq = lk.ops.butterfly(x1, x2, **coefs, out=out, q_stats=True, backend=backend)
    _unchanged(snaps, "an input")
    if out.data_ptr() == guard[1:].data_ptr():
        assert torch.isnan(guard[0]).all() and torch.isnan(guard[n + 1]).all(), "wrote outside out"
    assert p.data_ptr() == out.data_ptr() and q.data_ptr() == out[:, c:].data_ptr(), "p, q must view out"
    _check_butterfly(p, q, mq, sq, x1, x2, coefs, dtype, f"butterfly(out={kind})")


# ---------------------------------------------------------------------------------------------- coefficients
@st.composite
def mlp_weights(draw, c: int, device: str):
    """The eight CC weights in the conv or 2-D layout, maybe of other float dtypes; (weights, error or None)."""
    r = draw(st.integers(1, 4))
    conv = draw(st.booleans())
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    shapes_ = [(r, c), (r,), (c, r), (c,)] * 2
    ws = [torch.randn(s, generator=g, dtype=torch.float64) * 0.5 for s in shapes_]
    dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float64, torch.float16]))
    ws = [w.to(dtype) for w in ws]
    if conv:
        ws = [w[:, :, None, None] if w.dim() == 2 else w for w in ws]
    error = None
    if draw(st.integers(0, 5)) == 0:
        i = draw(st.integers(0, 7))
        wrong = list(ws[i].shape)
        wrong[1 if ws[i].dim() == 4 else -1] += 1  # one more input channel / hidden unit / bias entry
        ws[i] = torch.randn(wrong, dtype=torch.float64).to(dtype)
        error = (ValueError, r"(w1m|b1m|w2m|b2m|w1s|b1s|w2s|b2s) must have shape")
    return [w.to(device) for w in ws], error


@pytest.mark.parametrize("backend,device", FUZZED)
@FUZZ
@given(data=st.data())
def test_combination_coefficients_fuzz(backend, device, data):
    dtype = data.draw(st.sampled_from(_dtypes(backend, device)), label="dtype")
    shape = data.draw(shapes(_small(backend, device)), label="shape")
    x = data.draw(tensors(shape, dtype, device), label="x")
    ws, error = data.draw(mlp_weights(shape[1], device), label="weights")
    if error is not None:
        with _expect_error(error):
            lk.ops.combination_coefficients(x.t, *ws, backend=backend)
        return
    snaps = _snapshot(x.t, *ws)
    cc = lk.ops.combination_coefficients(x.t, *ws, backend=backend)
    _unchanged(snaps, "an input")
    st_ = _stats_dtype(dtype)
    assert cc.dtype == st_ and cc.shape == shape[:2]
    w64 = [w.to(st_).double().flatten(1) if w.dim() == 4 else w.to(st_).double() for w in ws]
    want = ref.combination_coefficients(x.t.double(), *w64)
    _close(cc, want, st_, "cc", scale=1.0)

    mean, std = ref.channel_stats(x.t)
    got = lk.ops.coefficients_from_stats(mean, std, *ws)
    _close(got, ref.coefficients_from_stats(mean.double(), std.double(), *w64), st_, "coefficients_from_stats",
           scale=1.0)


# ---------------------------------------------------------------------------------------------- conv3x3
SLOPES = [(None, None), (0.0, None), (0.2, None), (1, None), (-0.1, "negative_slope must be None or a finite"),
          (float("nan"), "negative_slope must be None or a finite"),
          (float("inf"), "negative_slope must be None or a finite"), (True, "negative_slope must be None or a finite")]


def _winograd_tiles(bad: torch.Tensor) -> torch.Tensor:
    """(N, H, W) mask of the outputs whose 4x4 Winograd tile reads a non-finite input (its 6x6 input patch, rows
    4i-1 .. 4i+4), from the (N, H, W) mask of non-finite inputs (any channel)."""
    _, h, w = bad.shape
    th, tw = -(-h // 4), -(-w // 4)
    padded = F.pad(bad.double()[:, None], (1, 4 * tw - w + 1, 1, 4 * th - h + 1))
    patch = F.max_pool2d(padded, kernel_size=6, stride=4)[:, 0] > 0  # (N, th, tw)
    return patch.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :h, :w]


@pytest.mark.parametrize("backend,device", FUZZED)
@FUZZ
@given(data=st.data())
def test_conv3x3_fuzz(backend, device, data):
    # float64 included: the triton backend's conv3x3 is torch's convolution (cuDNN on a GPU), which takes it
    dtype = data.draw(st.sampled_from([*_dtypes(backend, device), torch.float64]), label="dtype")
    shape = data.draw(shapes(_small(backend, device)), label="shape")
    n, cin, h, w = shape
    x = data.draw(tensors(shape, dtype, device), label="x")
    cout = data.draw(st.integers(1, 4 if _small(backend, device) else 19), label="cout")
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    wt = (torch.randn(cout, cin, 3, 3, generator=g, dtype=torch.float64) / (3 * cin**0.5)).to(dtype).to(device)
    wlayout = data.draw(st.sampled_from(["contiguous", "channels_last", "permuted"]), label="weight layout")
    if wlayout == "channels_last":
        wt = wt.contiguous(memory_format=torch.channels_last)
    elif wlayout == "permuted":
        wt = wt.transpose(0, 1).contiguous().transpose(0, 1)
    bias_kind = data.draw(st.sampled_from(["none", "bias", "wrong_shape", "other_dtype"]), label="bias")
    bias = None if bias_kind == "none" else torch.randn(cout + (bias_kind == "wrong_shape"), generator=g,
                                                       dtype=torch.float64).to(dtype).to(device) * 0.1
    if bias_kind == "other_dtype":
        bias = bias.to(torch.float64 if dtype != torch.float64 else torch.float32)
    slope, slope_error = data.draw(st.sampled_from(SLOPES), label="negative_slope")
    weight_error = None
    if data.draw(st.integers(0, 9), label="wrong weight") == 0:
        wt = wt[:, :, :, :2]
        weight_error = (ValueError, r"weight must have shape \(Cout, Cin, 3, 3\)")
    error = (weight_error
             or ((ValueError, r"bias must have shape \(Cout,\)") if bias_kind == "wrong_shape" else None)
             or ((TypeError, "bias must have x's dtype") if bias_kind == "other_dtype" else None)
             or ((ValueError, re.escape(slope_error)) if slope_error else None))
    if error is not None:
        with _expect_error(error):
            lk.ops.conv3x3(x.t, wt, bias, negative_slope=slope, backend=backend)
        return
    snaps = _snapshot(x.t, wt, bias)
    y = lk.ops.conv3x3(x.t, wt, bias, negative_slope=slope, backend=backend)
    _unchanged(snaps, "an input")
    assert y.dtype == dtype and y.shape == (n, cout, h, w)
    fslope = None if slope is None else float(slope)
    want = ref.conv3x3(x.t.double(), wt.double(), None if bias is None else bias.double(), fslope)
    eager = ref.conv3x3(x.t, wt, bias, fslope) if dtype in (torch.float16, torch.bfloat16) else None
    bad_in = ~torch.isfinite(x.t.double()).all(1).cpu()
    if bad_in.any():
        # Documented (ops.conv3x3): a non-finite input makes every output the spec makes non-finite non-finite too,
        # and may spread to the rest of the Winograd tiles that read it; every other output equals the spec.
        spread = _winograd_tiles(bad_in)[:, None].expand(n, cout, h, w) if backend == "cpu" else \
            ~torch.isfinite(want)
        yd = y.double().cpu()
        assert (~torch.isfinite(yd))[~torch.isfinite(want)].all(), "a non-finite output of the spec came out finite"
        keep = ~spread & torch.isfinite(want)
        assert torch.isfinite(yd[keep]).all(), "non-finite output outside the tiles that read a non-finite input"
        y, want = yd[keep], want[keep]
        eager = None if eager is None else eager.double().cpu()[keep]
    finite = want[torch.isfinite(want)]
    scale = max(finite.abs().max().item(), 1e-30) if finite.numel() else 1.0
    _close(y, want, dtype, f"conv3x3 {backend}", eager=eager, scale=scale)
