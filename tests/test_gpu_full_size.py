"""GPU only: every op over the GPU backends at full size, float32 and bfloat16, against the float64 spec, bitwise
reproducible; and the published LatticeNet on a 256x256 photograph. Skipped without a CUDA device."""

from __future__ import annotations

import os

import pytest
import torch

import lattice_kernels as lk
from lattice_kernels.ops import reference as ref

from .conftest import allow_tf32, assert_close_to_reference, make_weights, weights_dir
from .images import crop, photo

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
GPU_BACKENDS = [b for b in ("cuda", "triton") if b in lk.available_backends()]
SHAPES = [(16, 64, 64, 64), (1, 64, 180, 320), (1, 64, 540, 960)]


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_ops_full_size(backend, shape, dtype, layout):
    g = torch.Generator(device="cuda").manual_seed(0)
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format

    def rand(*s):
        return torch.randn(s, device="cuda", generator=g).to(dtype).contiguous(memory_format=fmt)

    x1, x2 = rand(*shape).requires_grad_(), rand(*shape).requires_grad_()
    a = torch.rand(shape[:2], device="cuda", generator=g).requires_grad_()
    b = torch.rand(shape[:2], device="cuda", generator=g).requires_grad_()
    w = [t.requires_grad_() for t in make_weights(shape[1], shape[1] // 16, torch.float32, device="cuda")]

    def run():
        for t in (x1, x2, a, b, *w):
            t.grad = None
        p, q, mq, sq = lk.ops.butterfly(x1, x2, alpha2=a, beta1=b, q_stats=True, backend=backend)
        m, s = lk.ops.channel_stats(p, backend=backend)
        cc = lk.ops.combination_coefficients(q, *w, backend=backend)
        loss = p.float().square().mean() + q.float().mean() + mq.sum() + sq.sum() + m.sum() + s.sum() + cc.sum()
        loss.backward()
        return [t.detach().clone() for t in (p, q, mq, sq, m, s, cc)] + [t.grad.clone() for t in (x1, x2, a, b, *w)]

    first, second = run(), run()
    for u, v in zip(first, second):
        assert torch.equal(u, v), "two runs differ bitwise"
    # The forward results against the float64 spec.
    x1d, x2d, ad, bd = (t.detach().double() for t in (x1, x2, a, b))
    rp, rq = ref.butterfly(x1d, x2d, alpha2=ad, beta1=bd)
    p, q, mq, sq, m, s, cc = first[:7]
    eager_p = (x1.detach() + a.detach().to(dtype)[:, :, None, None] * x2.detach()) if dtype != torch.float32 else None
    eager_q = (b.detach().to(dtype)[:, :, None, None] * x1.detach() + x2.detach()) if dtype != torch.float32 else None
    scale = rp.abs().max().item()
    assert_close_to_reference(p, rp, dtype, scale=scale, eager=eager_p, what="p")
    assert_close_to_reference(q, rq, dtype, scale=scale, eager=eager_q, what="q")
    rmq, rsq = ref.channel_stats(q.double())
    assert_close_to_reference(mq, rmq, torch.float32, scale=scale, what="mean_q")
    assert_close_to_reference(sq, rsq, torch.float32, scale=scale, what="std_q")
    rm, rs = ref.channel_stats(p.double())
    assert_close_to_reference(m, rm, torch.float32, scale=scale, what="mean")
    assert_close_to_reference(s, rs, torch.float32, scale=scale, what="std")
    rcc = ref.combination_coefficients(q.double(), *[t.detach().double().flatten(1) if t.dim() == 4 else
                                                     t.detach().double() for t in w])
    assert_close_to_reference(cc, rcc, torch.float32, what="cc")


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_published_model_256(backend):
    d = weights_dir()
    if d is None:
        pytest.skip("published checkpoints not found (LATTICE_WEIGHTS_DIR)")
    from lattice_kernels.models.reference import PlainLatticeNet

    sd = torch.load(os.path.join(d, "LatticeNet_x4.pt"), map_location="cpu", weights_only=True)
    plain = PlainLatticeNet(4)
    plain.load_state_dict(sd)
    net = lk.LatticeNet(4, backend=backend)
    net.load_state_dict(sd)
    x = torch.from_numpy(crop(photo("astronaut"), 256, 256, 100, 100)).permute(2, 0, 1)[None].float().cuda()
    with torch.no_grad():
        want = plain.cuda().eval()(x)
        got = net.cuda().eval()(x)
    assert (got - want).abs().max().item() <= 1e-3


def test_tf32_error_of_float32_convolutions():
    """What the float32 rules meet under torch's default, TF32 cuDNN convolutions: a Lattice Block's 3x3
    convolution (64 -> 64 channels) in float32 against float64, with TF32 on and off. The suite runs with it off
    (conftest.py); users who keep torch's default get the TF32 error in every convolution of the model."""
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, 64, 128, 128, device="cuda", generator=g)
    w = torch.randn(64, 64, 3, 3, device="cuda", generator=g) * 0.05
    want = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)

    def rel_error() -> float:
        got = torch.nn.functional.conv2d(x, w, padding=1).double()
        return ((got - want).abs().max() / want.abs().max()).item()

    try:
        allow_tf32(True)
        tf32 = rel_error()
    finally:
        allow_tf32(False)
    ieee = rel_error()
    print(f"conv3x3 float32 max relative error vs float64 on {torch.cuda.get_device_name()}: TF32 {tf32:.2e}, "
          f"IEEE {ieee:.2e}")
    assert ieee < 1e-5, ieee
    assert tf32 > 10 * ieee, "TF32 was expected to be in use for float32 convolutions when allowed"
