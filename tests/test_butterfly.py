"""butterfly / butterfly_stacked / butterfly(out=) and their backward on every available backend, against the
float64 spec (ops/reference.py)."""

from __future__ import annotations

import itertools

import pytest
import torch

import lattice_kernels as lk
from lattice_kernels.ops import reference as ref

from .conftest import (
    assert_close_to_reference,
    assert_format,
    expected_format,
    interpreted,
    make_input,
    skip_if_unsupported,
)

SHAPES = [(2, 5, 7, 13), (1, 64, 1, 1), (3, 4, 1, 1), (2, 3, 1, 2), (2, 19, 6, 5), (2, 3, 70, 70)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LAYOUTS = ["nchw", "nhwc", "strided"]
NAMES = ("alpha1", "alpha2", "beta1", "beta2")
PLACEMENTS = {
    "paper": ("alpha2", "beta1"),  # p = x1 + a*x2, q = b*x1 + x2: the Lattice Block's cross coefficients
    "all": NAMES,
    "none": (),
    "serial": ("alpha2",),
}


def _coefs(shape, device, present, seed=5, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in NAMES:
        c = torch.rand(shape[:2], generator=g, dtype=torch.float64) + 0.25
        out[name] = c.to(device).requires_grad_(requires_grad) if name in present else None
    return out


def _cast(coefs, dtype):
    return {k: (None if v is None else v.detach().to(dtype).requires_grad_(v.requires_grad)) for k, v in coefs.items()}


def _eager_half(x1, x2, c):
    """What eager PyTorch computes in the half dtype itself (coefficients rounded to it)."""
    def term(k, v):
        return v if c[k] is None else c[k].to(v.dtype)[:, :, None, None] * v
    return term("alpha1", x1) + term("alpha2", x2), term("beta1", x1) + term("beta2", x2)


def _check_forward(backend, device, shape, dtype, layout, present, mode):
    x1 = make_input(shape, dtype, device, layout, seed=1)
    x2 = make_input(shape, dtype, device, layout, seed=2)
    c64 = _coefs(shape, device, present)
    st = torch.float64 if dtype == torch.float64 else torch.float32
    c = _cast(c64, st)
    n, ch = shape[:2]
    if mode == "plain":
        p, q, mq, sq = lk.ops.butterfly(x1, x2, **c, q_stats=True, backend=backend)
    elif mode == "stacked":
        pq, mq, sq = lk.ops.butterfly_stacked(x1, x2, **c, q_stats=True, backend=backend)
        assert pq.shape == (n, 2 * ch, *shape[2:])
        assert_format(pq, expected_format(x1), "pq")
        p, q = pq[:, :ch], pq[:, ch:]
    else:
        fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
        out = torch.full((n, 2 * ch, *shape[2:]), float("nan"), dtype=dtype, device=device).contiguous(
            memory_format=fmt)
        p, q, mq, sq = lk.ops.butterfly(x1, x2, **c, out=out, q_stats=True, backend=backend)
        assert p.data_ptr() == out.data_ptr() and q.data_ptr() == out[:, ch:].data_ptr(), "p, q must view out"
    assert p.dtype == dtype and q.dtype == dtype and mq.dtype == st
    if mode == "plain":
        assert_format(p, expected_format(x1), "p")
        assert_format(q, expected_format(x1), "q")
    rp, rq = ref.butterfly(x1.double(), x2.double(), **{k: None if v is None else v.double() for k, v in c.items()})
    eager_p = eager_q = None
    if dtype in (torch.float16, torch.bfloat16):
        eager_p, eager_q = _eager_half(x1, x2, c)
    scale = max(rp.abs().max().item(), rq.abs().max().item())
    assert_close_to_reference(p, rp, dtype, scale=scale, eager=eager_p, what="p")
    assert_close_to_reference(q, rq, dtype, scale=scale, eager=eager_q, what="q")
    # q's statistics are those of q as returned (rounded to its dtype).
    rmq, rsq = ref.channel_stats(q.double())
    assert_close_to_reference(mq, rmq, st, scale=scale, what="mean_q")
    assert_close_to_reference(sq, rsq, st, scale=scale, what="std_q")


@pytest.mark.parametrize("mode", ["plain", "stacked", "out"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape_i", range(len(SHAPES)))
def test_forward_matches_reference(backend_device, shape_i, dtype, layout, mode):
    backend, device = backend_device
    skip_if_unsupported(backend, device, dtype)
    _check_forward(backend, device, SHAPES[shape_i], dtype, layout, PLACEMENTS["paper"], mode)


@pytest.mark.parametrize("present", [p for r in range(5) for p in itertools.combinations(NAMES, r)],
                         ids=lambda p: "+".join(p) or "none")
def test_every_placement(backend_device, present):
    backend, device = backend_device
    for layout in ("nchw", "nhwc"):
        _check_forward(backend, device, (2, 5, 7, 13), torch.float32, layout, present, "plain")


def _backward_case(backend, device, shape, dtype, layout, present, stacked, use_stats):
    x1 = make_input(shape, dtype, device, layout, seed=1).requires_grad_()
    x2 = make_input(shape, dtype, device, layout, seed=2).requires_grad_()
    st = torch.float64 if dtype == torch.float64 else torch.float32
    c = _cast(_coefs(shape, device, present), st)
    for v in c.values():
        if v is not None:
            v.requires_grad_()
    g = torch.Generator().manual_seed(9)
    wp = torch.randn(shape, generator=g, dtype=torch.float64).to(device)
    wq = torch.randn(shape, generator=g, dtype=torch.float64).to(device)
    wm = torch.randn(shape[:2], generator=g, dtype=torch.float64).to(device)
    ws = torch.randn(shape[:2], generator=g, dtype=torch.float64).to(device)

    def loss(p, q, mq, sq):
        total = (p.double() * wp).sum() + (q.double() * wq).sum()
        if use_stats:
            total = total + (mq.double() * wm).sum() + (sq.double() * ws).sum()
        return total

    ch = shape[1]
    if stacked:
        pq, mq, sq = lk.ops.butterfly_stacked(x1, x2, **c, q_stats=True, backend=backend)
        loss(pq[:, :ch], pq[:, ch:], mq, sq).backward()
    else:
        loss(*lk.ops.butterfly(x1, x2, **c, q_stats=True, backend=backend)).backward()

    x1r = x1.detach().double().requires_grad_()
    x2r = x2.detach().double().requires_grad_()
    cr = {k: None if v is None else v.detach().double().requires_grad_() for k, v in c.items()}
    rp, rq = ref.butterfly(x1r, x2r, **cr)
    rmq, rsq = ref.channel_stats(rq)
    loss(rp, rq, rmq, rsq).backward()

    eager = {}
    if dtype in (torch.float16, torch.bfloat16):
        x1e = x1.detach().clone().requires_grad_()
        x2e = x2.detach().clone().requires_grad_()
        ce = {k: None if v is None else v.detach().clone().requires_grad_() for k, v in c.items()}
        ep, eq = _eager_half(x1e, x2e, ce)
        loss(ep, eq, eq.mean(dim=(2, 3)), eq.std(dim=(2, 3))).backward()
        eager = {"x1": x1e.grad, "x2": x2e.grad, **{k: v.grad for k, v in ce.items() if v is not None}}

    for name, got, want in [("x1", x1.grad, x1r.grad), ("x2", x2.grad, x2r.grad)] + [
        (k, c[k].grad, cr[k].grad) for k in NAMES if c[k] is not None
    ]:
        assert got is not None, f"no gradient for {name}"
        assert got.dtype == (dtype if name in ("x1", "x2") else st)
        if name in ("x1", "x2"):
            assert_format(got, expected_format(x1), f"grad {name}")
        scale = want.abs().max().item()
        # Coefficient gradients are float32 sums over H*W; for half inputs they still carry the rounding of the
        # half-precision q in the statistics, so they are held to eager's error like the rest.
        assert_close_to_reference(got, want, got.dtype if name in ("x1", "x2") else dtype, scale=scale,
                                  eager=eager.get(name), what=f"grad {name} {shape} {layout}")


@pytest.mark.parametrize("stacked", [False, True], ids=["plain", "stacked"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_matches_reference(backend_device, dtype, layout, stacked):
    backend, device = backend_device
    skip_if_unsupported(backend, device, dtype)
    shapes = [(2, 5, 7, 13), (2, 19, 6, 5), (2, 3, 70, 70)]
    for shape in shapes:
        _backward_case(backend, device, shape, dtype, layout, PLACEMENTS["paper"], stacked, use_stats=True)


@pytest.mark.parametrize("present", [(), ("alpha1",), ("alpha2", "beta1"), ("beta2",), NAMES],
                         ids=lambda p: "+".join(p) or "none")
def test_backward_placements(backend_device, present):
    backend, device = backend_device
    for use_stats in (False, True):
        _backward_case(backend, device, (2, 5, 7, 13), torch.float32, "nchw", present, False, use_stats)
        _backward_case(backend, device, (2, 5, 7, 13), torch.float32, "nhwc", present, True, use_stats)


def test_gradcheck_float64(backend_device):
    backend, device = backend_device
    skip_if_unsupported(backend, device, torch.float64)
    for layout in ("nchw", "nhwc"):
        x1 = make_input((2, 3, 3, 4), torch.float64, device, layout, seed=1).requires_grad_()
        x2 = make_input((2, 3, 3, 4), torch.float64, device, layout, seed=2).requires_grad_()
        c = _coefs((2, 3), device, NAMES, requires_grad=True)

        def f(a, b, a1, a2, b1, b2):
            return lk.ops.butterfly(a, b, a1, a2, b1, b2, q_stats=True, backend=backend)

        assert torch.autograd.gradcheck(f, (x1, x2, *c.values()))

        def g(a, b, a2, b1):
            return lk.ops.butterfly_stacked(a, b, None, a2, b1, None, q_stats=True, backend=backend)

        assert torch.autograd.gradcheck(g, (x1, x2, c["alpha2"], c["beta1"]))


def test_out_refuses_autograd(backend_device):
    backend, device = backend_device
    x1 = make_input((1, 2, 3, 3), torch.float32, device, "nchw").requires_grad_()
    out = torch.empty(1, 4, 3, 3, device=device)
    with pytest.raises(RuntimeError, match="does not support autograd.*butterfly_stacked"):
        lk.ops.butterfly(x1, x1.detach(), out=out, backend=backend)
    with torch.no_grad():
        p, q = lk.ops.butterfly(x1, x1, out=out, backend=backend)
    torch.testing.assert_close(p, 2 * x1.detach())
    torch.testing.assert_close(q, 2 * x1.detach())


def test_accuracy_large_mean_q_stats(backend_device):
    backend, device = backend_device
    shape = (1, 3, 40, 40) if interpreted(backend, device) else (2, 8, 90, 90)
    for layout in ("nchw", "nhwc"):
        x1 = make_input(shape, torch.float32, device, layout, seed=1, offset=0.0) * 1e-2 + 1e4
        x2 = make_input(shape, torch.float32, device, layout, seed=2) * 1e-2
        if layout == "nhwc":
            x1, x2 = (t.contiguous(memory_format=torch.channels_last) for t in (x1, x2))
        _, q, _, sq = lk.ops.butterfly(x1, x2, q_stats=True, backend=backend)
        _, rs = ref.channel_stats(q.double())
        rel = ((sq.double() - rs).abs() / rs).max().item()
        assert rel < 1e-3, f"relative std_q error {rel:.2e}"


def test_deterministic(backend_device, thread_count):
    backend, device = backend_device
    shape = (2, 5, 7, 13) if interpreted(backend, device) else (2, 16, 90, 90)
    for layout in ("nchw", "nhwc"):
        x1 = make_input(shape, torch.float32, device, layout, seed=1).requires_grad_()
        x2 = make_input(shape, torch.float32, device, layout, seed=2).requires_grad_()
        c = _coefs(shape, device, NAMES, requires_grad=False)
        c = {k: v.float().requires_grad_() for k, v in c.items()}
        runs = []
        for threads in (1, 2, 1):
            thread_count(threads)
            for t in (x1, x2, *c.values()):
                t.grad = None
            p, q, mq, sq = lk.ops.butterfly(x1, x2, **c, q_stats=True, backend=backend)
            ((p * 2).sum() + (q * q).sum() + mq.sum() + sq.sum()).backward()
            runs.append([t.detach().clone() for t in (p, q, mq, sq)] + [t.grad.clone() for t in (x1, x2, *c.values())])
        for r in runs[1:]:
            for a, b in zip(runs[0], r):
                assert torch.equal(a, b), "two runs differ bitwise"
