"""fold_compress: the Lattice Block's butterfly 2 and compress conv as one per-sample 1x1 conv, against the unfolded
spec compress(cat(p, q)) with (p, q) = reference.butterfly, in float64, for every coefficient placement, both
memory formats, a batch whose samples have different coefficients, with and without bias; and its gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lattice_kernels.nn.lattice_block import PLACEMENTS, fold_compress
from lattice_kernels.ops import reference as ref


def _inputs(placement: tuple[str, ...], fmt: torch.memory_format, bias: bool, dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(3, 5, 6, 7, generator=g, dtype=dtype).contiguous(memory_format=fmt)
    x2 = torch.randn(3, 5, 6, 7, generator=g, dtype=dtype).contiguous(memory_format=fmt)
    coefs = {name: torch.rand(3, 5, generator=g, dtype=dtype) + 0.5 for name in placement}
    w = torch.randn(4, 10, 1, 1, generator=g, dtype=dtype)
    b = torch.randn(4, generator=g, dtype=dtype) if bias else None
    return x1, x2, coefs, w, b


def _unfolded(x1, x2, coefs, w, b):
    p, q = ref.butterfly(x1, x2, **coefs)
    return F.conv2d(torch.cat((p, q), 1), w, b)


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_fold_compress_equals_compress_of_butterfly(placement, fmt, bias):
    x1, x2, coefs, w, b = _inputs(PLACEMENTS[placement], fmt, bias)
    got = fold_compress(x1, x2, coefs, w, b)
    torch.testing.assert_close(got, _unfolded(x1, x2, coefs, w, b), rtol=1e-12, atol=1e-12)
    assert got.is_contiguous(memory_format=fmt)


def test_fold_compress_float32_within_float32_rounding():
    x1, x2, coefs, w, b = _inputs(PLACEMENTS["cross"], torch.channels_last, True)
    want = _unfolded(x1, x2, coefs, w, b)
    got = fold_compress(x1.float(), x2.float(), {k: v.float() for k, v in coefs.items()}, w.float(), b.float())
    assert got.dtype == torch.float32
    assert ((got.double() - want).abs().max() / want.abs().max()).item() < 1e-5


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_fold_compress_gradients(fmt):
    x1, x2, coefs, w, b = _inputs(PLACEMENTS["both"], fmt, True)
    leaves = [x1, x2, *coefs.values(), w, b]
    for t in leaves:
        t.requires_grad_()
    names = list(coefs)

    def fn(x1, x2, *rest):
        c = dict(zip(names, rest[:len(names)]))
        return fold_compress(x1, x2, c, rest[-2], rest[-1])

    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("inputs_dtype", [torch.float32, torch.bfloat16], ids=["f32-inputs", "bf16-inputs"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_fold_compress_under_autocast_matches_eager_bf16(inputs_dtype, fmt):
    """Under CPU autocast the products run in bfloat16, as the unfolded conv does; output and gradients both within
    2x eager's bf16 error of float64, from float32 inputs (autocast casts them) and from bf16 activations (the
    block's case: its convs' outputs)."""
    x1, x2, coefs, w, b = _inputs(PLACEMENTS["cross"], fmt, True, torch.float32)
    x1, x2 = (t.to(inputs_dtype).requires_grad_() for t in (x1, x2))
    probe = torch.randn(3, 4, 6, 7, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def run(f, *args):
        y = f(*args)
        grads = torch.autograd.grad((y.double() * probe).sum(), (args[0], args[1]))
        return y, *grads

    want = run(_unfolded, *(t.detach().double().requires_grad_() for t in (x1, x2)),
               {k: v.double() for k, v in coefs.items()}, w.double(), b.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run(fold_compress, x1, x2, coefs, w, b)
        eager = run(_unfolded, x1, x2, coefs, w, b)
    assert got[0].dtype == torch.bfloat16 and got[0].is_contiguous(memory_format=fmt)
    for name, g, e, r in zip(("output", "dx1", "dx2"), got, eager, want):
        err = ((g.double() - r).abs().max() / r.abs().max()).item()
        eager_err = ((e.double() - r).abs().max() / r.abs().max()).item()
        assert err <= 2 * eager_err, (name, err, eager_err)
