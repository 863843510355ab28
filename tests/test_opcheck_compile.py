"""torch.library.opcheck of every compiled op, and torch.compile(fullgraph=True) of a small module built from the
ops, compared with eager, on every available backend."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing
from torch import nn

import lattice_kernels as lk
from lattice_kernels._extension import C as _C

from .conftest import BACKEND_DEVICES, make_input, make_weights

needs_ext = pytest.mark.skipif(_C is None, reason="the compiled extension did not load")
COMPILED_DEVICES = [d for b, d in BACKEND_DEVICES if b in ("cpu", "cuda")]


def _opcheck(op, args, kwargs=None):
    torch.library.opcheck(op, args, kwargs or {})


@needs_ext
@pytest.mark.parametrize("device", COMPILED_DEVICES)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_opcheck(device, layout, dtype):
    ops = torch.ops.lattice_kernels
    st = dtype
    for grad in (False, True):
        x = make_input((2, 16, 5, 6), dtype, device, layout, seed=1).requires_grad_(grad)
        y = make_input((2, 16, 5, 6), dtype, device, layout, seed=2).requires_grad_(grad)
        _opcheck(ops.channel_stats.default, (x,))
        w = [t.requires_grad_(grad) for t in make_weights(16, 1, st, conv_layout=False, device=device)]
        _opcheck(ops.combination_coefficients.default, (x, *w))
        stats = [(torch.rand(2, 16, dtype=st, device=device) + 0.1).requires_grad_(grad) for _ in range(2)]
        _opcheck(ops.coefficients_from_stats.default, (*stats, *w))
        a = torch.rand(2, 16, dtype=st, device=device).requires_grad_(grad)
        b = torch.rand(2, 16, dtype=st, device=device).requires_grad_(grad)
        for coefs in ((None, a, b, None), (a, None, None, b), (None, None, None, None)):
            for q_stats in (False, True):
                _opcheck(ops.butterfly.default, (x, y, *coefs, q_stats))
                _opcheck(ops.butterfly_stacked.default, (x, y, *coefs, q_stats))
        if device == "cpu":  # conv3x3 has a CPU kernel only (cuDNN's convolution on GPUs)
            w3 = (torch.randn(8, 16, 3, 3, dtype=dtype, device=device) / 12).requires_grad_(grad)
            b3 = torch.randn(8, dtype=dtype, device=device).requires_grad_(grad)
            for bias, slope in ((b3, 0.05), (None, None), (b3, None)):
                _opcheck(ops.conv3x3.default, (x, w3, bias, slope))
    x = make_input((2, 16, 5, 6), dtype, device, layout, seed=1)
    y = make_input((2, 16, 5, 6), dtype, device, layout, seed=2)
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    out = torch.empty(2, 32, 5, 6, dtype=dtype, device=device).contiguous(memory_format=fmt)
    _opcheck(ops.butterfly_out.default, (x, y, None, a.detach(), b.detach(), None, True, out))
    # The backward ops themselves (plain tensors, no autograd of their own).
    m, s = ops.channel_stats(x)
    gm, gs = torch.randn_like(m), torch.randn_like(s)
    _opcheck(ops.channel_stats_backward.default, (gm, gs, x, m, s))
    w = make_weights(16, 1, st, conv_layout=False, device=device)
    cc, m, s = ops.combination_coefficients(x, *w)
    _opcheck(ops.combination_coefficients_backward.default, (torch.randn_like(cc), x, m, s, *w))
    _opcheck(ops.coefficients_from_stats_backward.default, (torch.randn_like(cc), m, s, *w))
    p, q, mq, sq = ops.butterfly(x, y, None, a.detach(), b.detach(), None, True)
    _opcheck(ops.butterfly_backward.default,
             (torch.randn_like(p), torch.randn_like(q), torch.randn_like(mq), torch.randn_like(sq), x, y, None,
              a.detach(), b.detach(), None, mq, sq))


class TinyLatticeUnit(nn.Module):
    """A miniature of the Lattice Block's non-conv work, built from the public ops."""

    def __init__(self, c: int, backend: str):
        super().__init__()
        self.backend = backend
        self.conv = lk.nn.Conv3x3(c, c, 0.05, backend=backend)
        self.w_f = nn.ParameterList(make_weights(c, c // 16, torch.float32, seed=1))
        self.w_x = nn.ParameterList(make_weights(c, c // 16, torch.float32, seed=2))
        self.w_q = nn.ParameterList(make_weights(c, c // 16, torch.float32, seed=3))
        self.compress = nn.Conv2d(2 * c, c, 1)

    def forward(self, x):
        f = self.conv(x)
        a = lk.ops.combination_coefficients(f, *self.w_f, backend=self.backend)
        b = lk.ops.combination_coefficients(x, *self.w_x, backend=self.backend)
        p, q, mq, sq = lk.ops.butterfly(x, f, alpha2=a, beta1=b, q_stats=True, backend=self.backend)
        m, s = lk.ops.channel_stats(p, backend=self.backend)
        c = lk.ops.coefficients_from_stats(mq, sq, *self.w_q)
        (pq,) = lk.ops.butterfly_stacked(p, q, alpha2=c, beta1=torch.sigmoid(m + s), backend=self.backend)
        return self.compress(pq)


@pytest.mark.slow
def test_compile_fullgraph_matches_eager(backend_device):
    backend, device = backend_device
    if backend == "triton" and device == "cpu":
        pytest.skip("torch.compile of the Triton ops needs a GPU (see DESIGN.md)")
    torch.manual_seed(0)
    m = TinyLatticeUnit(32, backend).to(device)
    x = make_input((2, 32, 12, 10), torch.float32, device, "nchw").requires_grad_()
    eager = m(x)
    eager.square().sum().backward()
    g_eager = [p.grad.clone() for p in m.parameters()] + [x.grad.clone()]
    m.zero_grad()
    x.grad = None
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True)
    out = compiled(x)
    out.square().sum().backward()
    g_comp = [p.grad.clone() for p in m.parameters()] + [x.grad.clone()]
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_compile_dynamic_shapes(backend_device):
    """torch.compile(dynamic=True, fullgraph=True) over the ops and a LatticeBlock: sizes stay symbolic in the fake
    implementations; one graph serves several image sizes and batch sizes, with the eager results. The Triton
    launchers compare H*W with constants to pick the tile (triton/_common.py tiling): the first three sizes are in
    one range (256 < H*W <= 512), the fourth in another, which costs the triton backend exactly one recompile
    (tests/test_triton_dynamic_shapes.py checks on the CPU that no size is specialised)."""
    backend, device = backend_device
    if backend == "triton" and device == "cpu":
        pytest.skip("torch.compile of the Triton ops needs a GPU (see DESIGN.md); "
                    "tests/test_triton_dynamic_shapes.py checks their launchers' guards on the CPU")
    torch.manual_seed(0)
    unit = TinyLatticeUnit(32, backend).to(device)
    block = lk.LatticeBlock(32, diff=8, backend=backend).to(device)
    expected = 2 if backend == "triton" else 1
    for module in (unit, block):
        torch._dynamo.reset()
        counter = torch._dynamo.testing.CompileCounter()
        compiled = torch.compile(module, fullgraph=True, dynamic=True, backend=counter)
        # sizes 0 and 1 are always specialised, and equal sizes share a symbol at first (so H != W here)
        for shape in ((2, 32, 21, 20), (3, 32, 17, 19), (2, 32, 16, 30), (2, 32, 12, 10)):
            x = make_input(shape, torch.float32, device, "nchw")
            torch.testing.assert_close(compiled(x), module(x), rtol=1e-5, atol=1e-5)
        assert counter.frame_count == expected, \
            f"{type(module).__name__}: {counter.frame_count} graphs for four sizes in two tile ranges"


@pytest.mark.slow
@needs_ext
def test_compile_fullgraph_under_bf16_autocast():
    """A LatticeBlock on the cpu backend compiles in one graph under bf16 autocast (the library asks whether
    autocast is on through contract.autocast_enabled, which dynamo must fold to a constant), with eager's result
    under the same autocast (the compiled graph may round differently in bf16: within 2x eager bf16's own error
    against float32)."""
    torch.manual_seed(0)
    block = lk.LatticeBlock(32, diff=8, backend="cpu").eval()
    x = make_input((1, 32, 14, 12), torch.float32, "cpu", "nhwc")
    with torch.no_grad():
        ref = block(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            eager = block(x).float()
            torch._dynamo.reset()
            counter = torch._dynamo.testing.CompileCounter()
            compiled = torch.compile(block, fullgraph=True, backend=counter)(x).float()
    assert counter.frame_count == 1
    eager_err = (eager - ref).abs().max().item()
    assert (compiled - ref).abs().max().item() <= 2 * eager_err + 1e-6, (eager_err,)
