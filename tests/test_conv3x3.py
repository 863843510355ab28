"""conv3x3 (3x3 conv, padding 1, optional LeakyReLU) and its backward on every available backend, against the
float64 spec (ops/reference.py). The cpu backend computes it by Winograd F(4x4, 3x3); the GPU backends and torch
use torch's convolution."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import lattice_kernels as lk
from lattice_kernels._extension import C as _C
from lattice_kernels.ops import reference as ref

from .conftest import assert_close_to_reference, assert_format, expected_format, make_input, skip_if_unsupported

# (x shape, Cout): tiles cut by the right and bottom edges (H, W not multiples of 4), H*W = 1, H = 1, W = 1,
# channels not a multiple of the vector width (3, 5, 19), and the LatticeNet widths 64 -> 48.
CASES = [((2, 5, 7, 13), 3), ((1, 64, 9, 17), 48), ((1, 3, 1, 1), 8), ((2, 19, 4, 4), 19), ((1, 8, 1, 30), 5),
         ((3, 16, 23, 1), 16)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LAYOUTS = ["nchw", "nhwc", "strided"]


def make_conv(cin: int, cout: int, dtype: torch.dtype, device: str, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, cin, 3, 3, generator=g, dtype=torch.float64) / (3 * cin**0.5)
    b = torch.randn(cout, generator=g, dtype=torch.float64) * 0.1
    return w.to(dtype).to(device), b.to(dtype).to(device)


def scale_of(t: torch.Tensor) -> float:
    return max(t.abs().max().item(), 1e-30)


@pytest.mark.parametrize("slope", [None, 0.05], ids=["linear", "leaky"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_forward_matches_reference(backend_device, case, dtype, layout, slope):
    backend, device = backend_device
    skip_if_unsupported(backend, device, dtype)
    shape, cout = CASES[case]
    x = make_input(shape, dtype, device, layout)
    w, b = make_conv(shape[1], cout, dtype, device)
    for bias in (b, None):
        y = lk.ops.conv3x3(x, w, bias, negative_slope=slope, backend=backend)
        assert y.dtype == dtype and y.shape == (shape[0], cout, *shape[2:])
        assert_format(y, expected_format(x), "conv3x3")
        b64 = None if bias is None else bias.double()
        want = ref.conv3x3(x.double(), w.double(), b64, slope)
        eager = ref.conv3x3(x, w, bias, slope)
        # Max-relative: the float32 rule (1e-5) at the scale of the output.
        assert_close_to_reference(y, want, dtype, scale=scale_of(want), eager=eager, what=f"conv3x3 {backend}")


@pytest.mark.parametrize("slope", [None, 0.05], ids=["linear", "leaky"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_backward_matches_reference(backend_device, dtype, layout, slope):
    backend, device = backend_device
    skip_if_unsupported(backend, device, dtype)
    for shape, cout in (CASES[0], CASES[1]):
        x = make_input(shape, dtype, device, layout).requires_grad_()
        w, b = (t.requires_grad_() for t in make_conv(shape[1], cout, dtype, device))
        gy = make_input((shape[0], cout, *shape[2:]), torch.float64, "cpu", "nchw", seed=7)
        y = lk.ops.conv3x3(x, w, b, negative_slope=slope, backend=backend)
        (y * gy.to(y)).sum().backward()
        x64, w64, b64 = (t.detach().double().cpu().requires_grad_() for t in (x, w, b))
        y64 = ref.conv3x3(x64, w64, b64, slope)
        (y64 * gy).sum().backward()
        # The LeakyReLU mask comes from y's sign: the inputs are random, so no output sits at the kink.
        for got, want, name in ((x.grad, x64.grad, "x"), (w.grad, w64.grad, "weight"), (b.grad, b64.grad, "bias")):
            assert_close_to_reference(got, want, dtype, scale=scale_of(want), what=f"grad {name} {backend}")


def test_gradcheck_float64(backend_device):
    backend, device = backend_device
    skip_if_unsupported(backend, device, torch.float64)
    x = make_input((2, 3, 5, 6), torch.float64, device, "nhwc").requires_grad_()
    w, b = (t.requires_grad_() for t in make_conv(3, 4, torch.float64, device))
    for slope in (None, 0.05):
        assert torch.autograd.gradcheck(
            lambda x, w, b, s=slope: lk.ops.conv3x3(x, w, b, negative_slope=s, backend=backend), (x, w, b)
        )


@pytest.mark.parametrize("trained", ["x+bias", "weight only", "no bias"])
def test_gradients_of_a_subset_float64(backend_device, trained):
    """A frozen weight with a trained bias (the bias gradient without the weight's), a frozen bias, no bias: first
    and second order."""
    backend, device = backend_device
    skip_if_unsupported(backend, device, torch.float64)
    x = make_input((1, 3, 5, 6), torch.float64, device, "nhwc").requires_grad_(trained != "weight only")
    w, b = make_conv(3, 2, torch.float64, device)
    w.requires_grad_(trained != "x+bias")
    b = None if trained == "no bias" else b.requires_grad_(trained == "x+bias")
    inputs = tuple(t for t in (x, w, b) if t is not None and t.requires_grad)

    def fn(*args):
        it = iter(args)
        xx, ww, bb = (next(it) if t is not None and t.requires_grad else t for t in (x, w, b))
        return lk.ops.conv3x3(xx, ww, bb, negative_slope=0.05, backend=backend)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_second_order_gradients_float64(backend_device):
    """gradgradcheck: conv3x3's backward (LeakyReLU mask, input gradient, conv3x3_weight_grad) is differentiable."""
    backend, device = backend_device
    skip_if_unsupported(backend, device, torch.float64)
    x = make_input((1, 3, 5, 6), torch.float64, device, "nhwc").requires_grad_()
    w, b = (t.requires_grad_() for t in make_conv(3, 2, torch.float64, device))
    assert torch.autograd.gradgradcheck(
        lambda x, w, b: lk.ops.conv3x3(x, w, b, negative_slope=0.05, backend=backend), (x, w, b)
    )


def test_deterministic(backend_device, thread_count):
    backend, device = backend_device
    x = make_input((2, 16, 19, 21), torch.float32, device, "nhwc")
    w, b = make_conv(16, 24, torch.float32, device)
    y1 = lk.ops.conv3x3(x, w, b, negative_slope=0.05, backend=backend)
    y2 = lk.ops.conv3x3(x, w, b, negative_slope=0.05, backend=backend)
    assert torch.equal(y1, y2)
    if backend == "cpu":  # the library's kernel sums in a fixed order: the thread count does not matter either
        thread_count(1)
        y3 = lk.ops.conv3x3(x, w, b, negative_slope=0.05, backend=backend)
        assert torch.equal(y1, y3)


# conv3x3_weight_grad (the cpu backend's weight gradient, the adjoint of its Winograd forward): partial tiles,
# batches, channel tails; 2x64x40x40 is 200 tiles, several chunks of partial sums.
WGRAD_CASES = [((2, 5, 7, 13), 3), ((1, 19, 4, 4), 21), ((3, 16, 23, 1), 16), ((2, 64, 40, 40), 48)]


@pytest.mark.skipif(_C is None, reason="the compiled extension did not load")
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", range(len(WGRAD_CASES)))
def test_weight_grad_matches_reference(case, dtype, layout):
    shape, cout = WGRAD_CASES[case]
    x = make_input(shape, dtype, "cpu", layout)
    gy = make_input((shape[0], cout, *shape[2:]), dtype, "cpu", layout, seed=7)
    got, got_b = torch.ops.lattice_kernels.conv3x3_weight_grad(x, gy)
    assert got.dtype == dtype and got.shape == (cout, shape[1], 3, 3)
    assert got_b.dtype == dtype and got_b.shape == (cout,)
    want = torch.nn.grad.conv2d_weight(x.double(), (cout, shape[1], 3, 3), gy.double(), padding=1)
    eager = torch.nn.grad.conv2d_weight(x.float(), (cout, shape[1], 3, 3), gy.float(), padding=1).to(dtype)
    assert_close_to_reference(got, want, dtype, scale=scale_of(want), eager=eager, what="conv3x3_weight_grad")
    # the bias gradient: the sum of gy over (N, H, W), eager's in the same dtype (half types: summed in float32)
    want_b, eager_b = gy.double().sum((0, 2, 3)), gy.sum((0, 2, 3))
    assert_close_to_reference(got_b, want_b, dtype, scale=gy.double().abs().sum((0, 2, 3)).max().item(),
                              eager=eager_b, what="conv3x3_weight_grad bias")


def test_weight_grad_does_not_depend_on_thread_count(thread_count):
    if _C is None:
        pytest.skip("the compiled extension did not load")
    x = make_input((2, 64, 40, 40), torch.float32, "cpu", "nhwc")
    gy = make_input((2, 48, 40, 40), torch.float32, "cpu", "nhwc", seed=7)
    thread_count(2)
    a, a_b = torch.ops.lattice_kernels.conv3x3_weight_grad(x, gy)
    thread_count(1)
    b, b_b = torch.ops.lattice_kernels.conv3x3_weight_grad(x, gy)
    assert torch.equal(a, b) and torch.equal(a_b, b_b)


@pytest.mark.skipif(_C is None, reason="the compiled extension did not load")
@pytest.mark.parametrize(("grad_shape", "dtype", "match"), [
    ((2, 4, 7, 12), torch.float32, r"grad must be \(N, Cout, H, W\)"),
    ((3, 4, 7, 13), torch.float32, r"grad must be \(N, Cout, H, W\)"),
    ((2, 4, 7, 13), torch.float64, "grad must have x's dtype"),
])
def test_weight_grad_bad_arguments_are_clear_errors(grad_shape, dtype, match):
    x = torch.randn(2, 5, 7, 13)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.lattice_kernels.conv3x3_weight_grad(x, torch.randn(grad_shape, dtype=dtype))


@pytest.mark.skipif(_C is None, reason="the compiled extension did not load")
def test_weight_grad_opcheck():
    x = make_input((2, 5, 7, 13), torch.float64, "cpu", "nhwc")
    gy = make_input((2, 3, 7, 13), torch.float64, "cpu", "nhwc", seed=7)
    torch.library.opcheck(torch.ops.lattice_kernels.conv3x3_weight_grad.default, (x, gy))
    torch.library.opcheck(torch.ops.lattice_kernels.conv3x3_weight_grad.default,
                          (x.requires_grad_(), gy.requires_grad_()))


def test_autocast_casts_like_conv2d(backend_device):
    backend, device = backend_device
    if device != "cpu":
        pytest.skip("CPU autocast")
    if backend == "triton":
        pytest.skip("the Triton interpreter has no bfloat16; conv3x3 on triton is torch's convolution anyway")
    x = make_input((1, 8, 9, 10), torch.float32, device, "nchw")
    w, b = make_conv(8, 8, torch.float32, device)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lk.ops.conv3x3(x, w, b, negative_slope=0.05, backend=backend)
        eager = F.leaky_relu(F.conv2d(x, w, b, padding=1), 0.05)
    assert y.dtype == eager.dtype == torch.bfloat16
    want = ref.conv3x3(x.double(), w.double(), b.double(), 0.05)
    assert_close_to_reference(y, want, torch.bfloat16, scale=scale_of(want), eager=eager, what="autocast")


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"x": torch.randn(2, 3, 4)}, "4-D"),
        ({"x": torch.randn(0, 3, 4, 4)}, "empty"),
        ({"x": torch.randn(1, 3, 4, 4).int()}, "float32"),
        ({"weight": torch.randn(4, 5, 3, 3)}, r"\(Cout, Cin, 3, 3\) with Cin = 3"),
        ({"weight": torch.randn(4, 3, 5, 5)}, r"\(Cout, Cin, 3, 3\)"),
        ({"weight": torch.randn(4, 3, 3, 3, dtype=torch.float64)}, "weight must have x's dtype"),
        ({"bias": torch.randn(5)}, r"bias must have shape \(Cout,\) = \(4,\)"),
        ({"bias": torch.randn(4, dtype=torch.float64)}, "bias must have x's dtype"),
        ({"negative_slope": -0.1}, "negative_slope must be None or a finite number >= 0"),
        ({"negative_slope": float("nan")}, "negative_slope"),
        ({"weight": torch.randn(4, 3, 3, 3, device="meta")}, "weight is on meta but x is on cpu"),
    ],
)
def test_bad_arguments_are_clear_errors(backend_device, bad, match):
    backend, device = backend_device
    if device != "cpu":
        pytest.skip("argument checks are the same on every device; run once on CPU")
    args = {"x": torch.randn(1, 3, 4, 4), "weight": torch.randn(4, 3, 3, 3), "bias": torch.randn(4),
            "negative_slope": 0.05}
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        lk.ops.conv3x3(args["x"], args["weight"], args["bias"], negative_slope=args["negative_slope"],
                       backend=backend)


def test_module_keeps_conv2d_parameters_and_keys():
    from lattice_kernels.nn import Conv3x3, ResidualBlock

    conv = Conv3x3(8, 4, 0.05, backend="torch")
    assert set(conv.state_dict()) == {"weight", "bias"}
    assert conv.weight.shape == (4, 8, 3, 3) and conv.padding == (1, 1)
    rb = ResidualBlock(64, 16, backend="torch")
    assert list(rb.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    x = torch.randn(1, 64, 6, 7)
    want = x
    for i in ("0", "2", "4"):
        c = getattr(rb, i)
        want = F.leaky_relu(F.conv2d(want, c.weight, c.bias, padding=1), 0.05)
    torch.testing.assert_close(rb(x), want)


CHECK = r"""
import itertools, torch, lattice_kernels as lk
from lattice_kernels._extension import C as _C
from lattice_kernels.ops import reference as ref
assert _C.cpu_isa() == ISA, _C.cpu_isa()
g = torch.Generator().manual_seed(0)
# 20x12 -> 5x3 tiles per image, 30 in all; LATTICE_KERNELS_WINOGRAD_TILES=7 makes work items of 7 tiles that cross
# tile rows and images, and a partial last one (2 tiles); 1 makes one tile per item.
# GEMM column blocks per output width (vectors of 8 floats / 4 doubles with AVX2, 16 / 8 with AVX-512):
#   6: AVX2 float half+2, double 1+2; AVX-512 float scalars only, double half+2.
#   40: AVX2 float 3+2, double 3x3+1; AVX-512 float 2+half, double 4+1.
#   91: AVX2 float 3x3+2+3, double 3x7+1+half+1; AVX-512 float 4+1+half+3, double 4x2+3+3.
# The weight gradient (conv3x3_weight_grad) runs the same blocks over Cout with rows = Cin; with 7 tiles per group,
# the 30 tiles make a chunk of 28 (4 groups: the accumulating GEMM) and one of 2.
for dtype, fmt, cin, cout in itertools.product((torch.float32, torch.float64, torch.bfloat16),
                                           (torch.contiguous_format, torch.channels_last), (8, 21), (6, 40, 91)):
    x = torch.randn(2, cin, 20, 12, generator=g).to(dtype).contiguous(memory_format=fmt)
    w = (torch.randn(cout, cin, 3, 3, generator=g) / (3 * cin ** 0.5)).to(dtype)
    b = torch.randn(cout, generator=g).to(dtype)
    y = lk.ops.conv3x3(x, w, b, negative_slope=0.05, backend="cpu")
    want = ref.conv3x3(x.double(), w.double(), b.double(), 0.05)
    eager = ref.conv3x3(x, w, b, 0.05)
    err = ((y.double() - want).abs().max() / want.abs().max()).item()
    eager_err = ((eager.double() - want).abs().max() / want.abs().max()).item()
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}.get(dtype, 2 * eager_err)
    assert err <= tol, (dtype, fmt, cin, cout, err, tol)
    gy = torch.randn(2, cout, 20, 12, generator=g).to(dtype).contiguous(memory_format=fmt)
    dw, db = torch.ops.lattice_kernels.conv3x3_weight_grad(x, gy)
    db_err = ((db.double() - gy.double().sum((0, 2, 3))).abs().max() / gy.double().abs().sum((0, 2, 3)).max()).item()
    assert db_err <= {torch.float32: 1e-6, torch.float64: 1e-14}.get(dtype, 2 ** -9), ("bias grad", dtype, db_err)
    dw_want = torch.nn.grad.conv2d_weight(x.double(), w.shape, gy.double(), padding=1)
    dw_eager = torch.nn.grad.conv2d_weight(x.float(), w.shape, gy.float(), padding=1).to(dtype)
    err = ((dw.double() - dw_want).abs().max() / dw_want.abs().max()).item()
    eager_err = ((dw_eager.double() - dw_want).abs().max() / dw_want.abs().max()).item()
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}.get(dtype, max(2 * eager_err, 2 ** -9))
    assert err <= tol, ("weight grad", dtype, fmt, cin, cout, err, tol)
print("ok")
"""


@pytest.mark.skipif(_C is None, reason="the compiled extension did not load")
@pytest.mark.parametrize(("isa", "group"), [("baseline", "7"), ("avx2", "7"), ("avx2", "1"), ("avx512", "7"),
                                            ("avx512", "1"), ("amx", "7")],
                         ids=["baseline-groups-of-7", "avx2-groups-of-7", "avx2-one-tile-groups",
                              "avx512-groups-of-7", "avx512-one-tile-groups", "amx-groups-of-7"])
def test_instruction_sets_and_tile_groups_match_reference(isa, group):
    if isa not in _C.cpu_isas():
        pytest.skip(f"this CPU or build has no {isa} kernels (it runs {', '.join(_C.cpu_isas())})")
    r = subprocess.run([sys.executable, "-c", f"ISA = {isa!r}\n" + CHECK], capture_output=True, text=True,
                       env={**os.environ, "LATTICE_KERNELS_CPU_ISA": isa,
                            "LATTICE_KERNELS_WINOGRAD_TILES": group}, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


AMX_CHECK = r"""
import itertools, torch, lattice_kernels as lk
from lattice_kernels._extension import C as _C
from lattice_kernels.ops import reference as ref
assert _C.cpu_isa() == "amx", _C.cpu_isa()
g = torch.Generator().manual_seed(0)
# Widths around the 32-pixel blocks (1, 31, 33, 70), channel counts around the 32-channel K blocks and the 16- and
# 32-channel output tiles (3, 32, 48, 65 in; 7, 32, 48, 70 out), one-row and taller images (bands of up to 8 rows).
shapes = [(2, 3, 7, 5, 1), (1, 32, 32, 9, 31), (2, 48, 48, 3, 33), (1, 65, 70, 11, 70), (1, 64, 48, 1, 40)]
for (n, cin, cout, h, w), fmt, slope in itertools.product(shapes, (torch.contiguous_format, torch.channels_last),
                                                         (None, 0.05)):
    x = torch.randn(n, cin, h, w, generator=g).bfloat16().contiguous(memory_format=fmt)
    wt = (torch.randn(cout, cin, 3, 3, generator=g) / (3 * cin ** 0.5)).bfloat16()
    b = torch.randn(cout, generator=g).bfloat16() if cin != 32 else None
    y = lk.ops.conv3x3(x, wt, b, negative_slope=slope, backend="cpu")
    assert y.is_contiguous(memory_format=fmt) and y.dtype == torch.bfloat16
    want = ref.conv3x3(x.double(), wt.double(), None if b is None else b.double(), slope)
    eager = ref.conv3x3(x, wt, b, slope)
    err = ((y.double() - want).abs().max() / want.abs().max()).item()
    eager_err = ((eager.double() - want).abs().max() / want.abs().max()).item()
    assert err <= 2 * eager_err, ((n, cin, cout, h, w), fmt, slope, err, eager_err)
    if slope is None:  # the weight and bias gradients (bf16 x and dy), once per shape and layout
        gy = torch.randn(n, cout, h, w, generator=g).bfloat16().contiguous(memory_format=fmt)
        dw, db = torch.ops.lattice_kernels.conv3x3_weight_grad(x, gy)
        want = torch.nn.grad.conv2d_weight(x.double(), wt.shape, gy.double(), padding=1)
        eager = torch.nn.grad.conv2d_weight(x.float(), wt.shape, gy.float(), padding=1).bfloat16()
        err = ((dw.double() - want).abs().max() / want.abs().max()).item()
        eager_err = ((eager.double() - want).abs().max() / want.abs().max()).item()
        assert err <= max(2 * eager_err, 2 ** -9), ("weight grad", (n, cin, cout, h, w), fmt, err, eager_err)
        sums = gy.double().sum((0, 2, 3))
        assert ((db.double() - sums).abs().max() / gy.double().abs().sum((0, 2, 3)).max()).item() <= 2 ** -9
# Weight gradients over several bands of rows per image (halo rows inside the image) and over more bands than
# chunks (several bands summed into one chunk's partials).
for n, cin, cout, h, w in ((1, 48, 48, 90, 200), (40, 16, 16, 5, 6)):
    x = torch.randn(n, cin, h, w, generator=g).bfloat16().contiguous(memory_format=torch.channels_last)
    gy = torch.randn(n, cout, h, w, generator=g).bfloat16().contiguous(memory_format=torch.channels_last)
    dw, db = torch.ops.lattice_kernels.conv3x3_weight_grad(x, gy)
    want = torch.nn.grad.conv2d_weight(x.double(), (cout, cin, 3, 3), gy.double(), padding=1)
    eager = torch.nn.grad.conv2d_weight(x.float(), (cout, cin, 3, 3), gy.float(), padding=1).bfloat16()
    err = ((dw.double() - want).abs().max() / want.abs().max()).item()
    eager_err = ((eager.double() - want).abs().max() / want.abs().max()).item()
    assert err <= max(2 * eager_err, 2 ** -9), ("weight grad, bands", (n, cin, cout, h, w), err, eager_err)
# A channel slice of a channels_last tensor (pixel stride 2 * C) reads only its own channels, forward and weight
# gradient.
big = torch.randn(1, 96, 6, 20, generator=g).bfloat16().contiguous(memory_format=torch.channels_last)
wt = (torch.randn(16, 48, 3, 3, generator=g) / 20).bfloat16()
y = lk.ops.conv3x3(big[:, 48:], wt, backend="cpu")
own = big[:, 48:].contiguous(memory_format=torch.channels_last)
assert torch.equal(y, lk.ops.conv3x3(own, wt, backend="cpu"))
gy = torch.randn(1, 16, 6, 20, generator=g).bfloat16().contiguous(memory_format=torch.channels_last)
sliced, copied = (torch.ops.lattice_kernels.conv3x3_weight_grad(t, gy) for t in (big[:, 48:], own))
assert all(torch.equal(a, b) for a, b in zip(sliced, copied))
# A direct convolution: a NaN input pixel makes NaN its 3x3 neighbourhood of outputs and nothing else.
x = torch.randn(1, 40, 12, 40, generator=g).bfloat16().contiguous(memory_format=torch.channels_last)
x[0, 5, 6, 33] = float("nan")
y = lk.ops.conv3x3(x, (torch.randn(24, 40, 3, 3, generator=g) / 20).bfloat16(), backend="cpu")
nan = y.isnan().any(1)[0]
assert nan[5:8, 32:35].all() and nan.sum() == 9, nan.nonzero()
# The sums' order is fixed by the shape: one thread and two give the same bits.
x = torch.randn(2, 48, 21, 37, generator=g).bfloat16()
wt = (torch.randn(64, 48, 3, 3, generator=g) / 20).bfloat16()
gy = torch.randn(2, 64, 21, 37, generator=g).bfloat16()
torch.set_num_threads(1)
y1 = lk.ops.conv3x3(x, wt, backend="cpu")
dw1, db1 = torch.ops.lattice_kernels.conv3x3_weight_grad(x, gy)
torch.set_num_threads(2)
assert torch.equal(y1, lk.ops.conv3x3(x, wt, backend="cpu"))
dw2, db2 = torch.ops.lattice_kernels.conv3x3_weight_grad(x, gy)
assert torch.equal(dw1, dw2) and torch.equal(db1, db2)
print("ok")
"""


@pytest.mark.skipif(_C is None, reason="the compiled extension did not load")
def test_bf16_direct_convolution_on_amx_matches_reference():
    """The "amx" kernel set's bf16 conv3x3 and its weight and bias gradients (direct convolutions on AMX tiles)
    against the float64 reference, at shapes that leave partial pixel, channel and row blocks, both layouts, a
    channel slice, NaN locality and the thread count."""
    if "amx" not in _C.cpu_isas():
        pytest.skip(f"this CPU has no AMX-BF16 (it runs {', '.join(_C.cpu_isas())})")
    r = subprocess.run([sys.executable, "-c", AMX_CHECK], capture_output=True, text=True,
                       env={**os.environ, "LATTICE_KERNELS_CPU_ISA": "amx"}, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
