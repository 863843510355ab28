"""LatticeNet, LatticeBlock and the restoration model against the plain-PyTorch implementation
(lattice_kernels/models/reference.py, which shares no code with the fused modules), with the published
checkpoints on real photographs, on every available backend."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

import lattice_kernels as lk
from lattice_kernels.models import CheckpointError
from lattice_kernels.models.reference import PlainCC, PlainLatticeNet, plain_rb
from lattice_kernels.nn import PLACEMENTS

from .conftest import BACKEND_DEVICES, interpreted, weights_dir
from .images import crop, photo

WEIGHTS = weights_dir()
needs_weights = pytest.mark.skipif(
    WEIGHTS is None, reason="published checkpoints not found: set LATTICE_WEIGHTS_DIR or put ../shared/weights beside "
    "the repository")


def ckpt(scale: int) -> str:
    return os.path.join(WEIGHTS, f"LatticeNet_x{scale}.pt")


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float()


@needs_weights
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_published_checkpoint_matches_plain_model(backend_device, scale):
    backend, device = backend_device
    sd = torch.load(ckpt(scale), map_location="cpu", weights_only=True)
    plain = PlainLatticeNet(scale)
    plain.load_state_dict(sd)
    net = lk.LatticeNet(scale=scale, backend=backend)
    net.load_state_dict(sd)  # strict: the published keys are the drop-in contract
    plain, net = plain.to(device).eval(), net.to(device).eval()
    # Odd sizes, four photographs; the interpreter (15 s per crop and scale) gets one small crop.
    crops = [("astronaut", 33, 41, 100, 180)]
    if not interpreted(backend, device):
        crops += [("coffee", 29, 37, 120, 200), ("chelsea", 61, 77, 50, 120), ("rocket", 47, 93, 200, 100)]
    for name, h, w, top, left in crops:
        x = to_tensor(crop(photo(name), h, w, top, left)).to(device)
        with torch.no_grad():
            want = plain(x)
            got = net(x)
        assert got.shape == (1, 3, h * scale, w * scale)
        err = (got - want).abs().max().item()
        assert err <= 1e-3, f"x{scale} {name} {h}x{w}: max abs error {err:.2e} on 0..255"


@needs_weights
def test_from_checkpoint_infers_scale_and_roundtrips_safetensors(tmp_path):
    for scale in (2, 3, 4):
        net = lk.LatticeNet.from_checkpoint(ckpt(scale))
        assert net.scale == scale
    path = tmp_path / "x3.safetensors"
    lk.LatticeNet.from_checkpoint(ckpt(3)).save_safetensors(path)
    again = lk.LatticeNet.from_checkpoint(path)
    assert again.scale == 3
    ref = torch.load(ckpt(3), map_location="cpu", weights_only=True)
    for k, v in again.state_dict().items():
        assert torch.equal(v, ref[k]), k


@needs_weights
def test_mismatching_checkpoint_says_what_is_wrong(tmp_path):
    sd = torch.load(ckpt(4), map_location="cpu", weights_only=True)
    net = lk.LatticeNet(scale=2)
    from lattice_kernels.models.checkpoint import check_state_dict

    with pytest.raises(CheckpointError, match=r"shape mismatches \(2\): tail.1.weight: file \(48, 64, 3, 3\) vs model "
                                              r"\(12, 64, 3, 3\)"):
        check_state_dict(net, sd, "x4 file")
    bad = dict(sd)
    bad["body_unit1.extra"] = bad.pop("body_unit1.compress.bias")
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): body_unit1.compress.bias[\s\S]*unexpected keys "
                                              r"\(1\): body_unit1.extra"):
        lk.LatticeNet.from_checkpoint(tmp_path / "bad.pt")


def test_missing_and_unreadable_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found: .*nope.pt"):
        lk.LatticeNet.from_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt is neither a PyTorch checkpoint .* nor a safetensors file"):
        lk.LatticeNet.from_checkpoint(tmp_path / "junk.pt")
    torch.save({"tail.1.weight": torch.zeros(5, 64, 3, 3)}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="cannot infer the scale"):
        lk.LatticeNet.from_checkpoint(tmp_path / "odd.pt")


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="scale must be 2, 3 or 4, got 5"):
        lk.LatticeNet(scale=5)
    with pytest.raises(ValueError, match=r"LatticeNet takes \(N, 3, H, W\)"):
        lk.LatticeNet(scale=2)(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="placement must be one of cross, parallel, serial, both"):
        lk.LatticeBlock(64, placement="diagonal")
    with pytest.raises(ValueError, match=r"LatticeBlock\(64\) takes \(N, 64, H, W\)"):
        lk.LatticeBlock(64)(torch.rand(1, 32, 8, 8))
    with pytest.raises(ValueError, match="preset must be one of small, large"):
        lk.LatticeRestorer(3, "huge")


class PlainGeneralLB(torch.nn.Module):
    """The general butterfly block of DESIGN.md, plain: the coefficient on a term is the CC of that term."""

    def __init__(self, block: lk.LatticeBlock):
        super().__init__()
        self.block = block
        names = {"alpha1": "x_ca_p{}", "alpha2": "fea_ca{}", "beta1": "x_ca{}", "beta2": "fea_ca_q{}"}
        self.ccs = torch.nn.ModuleDict()  # a plain dict would hide them from .to() (test_reference_models_move)
        for u in (1, 2):
            for n in block.placement:
                m = getattr(block, names[n].format(u))
                plain = PlainCC(64)
                plain.load_state_dict(m.state_dict())
                self.ccs[f"{u}{n}"] = plain
        self.rb0, self.rb1 = plain_rb(64, 16), plain_rb(64, 16)
        self.rb0.load_state_dict(block.conv_block0.state_dict())
        self.rb1.load_state_dict(block.conv_block1.state_dict())

    def unit(self, u, x1, x2):
        def c(n, t):
            return self.ccs[f"{u}{n}"](t) * t if f"{u}{n}" in self.ccs else t
        return c("alpha1", x1) + c("alpha2", x2), c("beta1", x1) + c("beta2", x2)

    def forward(self, x):
        p1, q1 = self.unit(1, x, self.rb0(x))
        p3, q3 = self.unit(2, self.rb1(p1), q1)
        return self.block.compress(torch.cat((p3, q3), 1))


class _FloatDtypes(TorchFunctionMode):
    """Records the dtype of every floating-point tensor passed to a torch function."""

    def __init__(self):
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for a in tree_flatten((args, kwargs))[0]:
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                self.seen.add(a.dtype)
        return func(*args, **kwargs)


def _dtypes_touched(model: torch.nn.Module, x: torch.Tensor) -> set[torch.dtype]:
    rec = _FloatDtypes()
    with torch.no_grad(), rec, contextlib.suppress(RuntimeError):  # mixed dtypes may fail in an op: seen before
        model(x)
    return rec.seen


class _PlainDictLB(PlainGeneralLB):
    """The defect this test is for: CCs kept in a plain dict, which .to() does not move."""

    def __init__(self, block):
        super().__init__(block)
        ccs = dict(self.ccs.items())
        del self.ccs
        self.ccs = ccs


def test_reference_models_move_every_tensor_with_to():
    """Every tensor a reference model's forward touches moves with .to(float64) (and so with .to("cuda")): a
    module held outside nn.Module's registries would stay float32 here and on the CPU under .to("cuda")."""
    torch.manual_seed(0)
    block = lk.LatticeBlock(64, placement="both")
    x = torch.randn(1, 64, 6, 7, dtype=torch.float64)
    for model in (PlainGeneralLB(block), PlainLatticeNet(2)):
        inp = x if isinstance(model, PlainGeneralLB) else x[:, :3]
        assert _dtypes_touched(model.to(torch.float64), inp) == {torch.float64}, type(model).__name__
    planted = _PlainDictLB(block).to(torch.float64)
    assert torch.float32 in _dtypes_touched(planted, x), "the check must catch modules that .to() does not move"


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_lattice_block_placements(backend_device, placement):
    backend, device = backend_device
    torch.manual_seed(0)
    block = lk.LatticeBlock(64, placement=placement, backend=backend)
    plain = PlainGeneralLB(block)
    img = to_tensor(crop(photo("chelsea"), 13, 17, 100, 100)) / 255
    x = torch.cat([img.repeat(1, 21, 1, 1), img[:, :1]], 1).repeat(2, 1, 1, 1)  # a 64-channel real-image input
    block, plain = block.to(device), plain.to(device)
    x = x.to(device)
    for fmt in (torch.contiguous_format, torch.channels_last):
        xi = x.detach().clone().contiguous(memory_format=fmt).requires_grad_()
        out = block(xi)
        assert out.is_contiguous(memory_format=fmt)
        xr = x.detach().clone().requires_grad_()
        want = plain(xr)
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
        out.square().sum().backward()
        want.square().sum().backward()
        torch.testing.assert_close(xi.grad, xr.grad, rtol=1e-4, atol=1e-5)


def test_lattice_block_autocast_bf16():
    torch.manual_seed(0)
    block = lk.LatticeBlock(64)
    plain = PlainGeneralLB(block)
    x = torch.randn(1, 64, 12, 14)
    with torch.no_grad():
        ref = plain(x.double().float())  # float32 truth
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = block(x)
            eager = plain(x)
    assert got.dtype == torch.bfloat16
    err = (got.float() - ref).abs().max().item()
    eager_err = (eager.float() - ref).abs().max().item()
    assert err <= 2 * eager_err, f"autocast bf16 error {err:.3g} vs eager's {eager_err:.3g}"


@pytest.mark.parametrize("channels", [1, 3])
def test_restorer_runs_and_trains(channels):
    torch.manual_seed(0)
    net = lk.LatticeRestorer(channels, "small")
    x = to_tensor(crop(photo("coffee"), 24, 20, 50, 50))[:, :channels] / 255
    out = net(x)
    assert out.shape == x.shape
    out.sub(x).abs().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    n = sum(p.numel() for p in net.parameters())
    assert 400_000 < n < 410_000


def test_training_gradients_match_plain_model(backend_device):
    backend, device = backend_device
    torch.manual_seed(0)
    net = lk.LatticeNet(scale=2, backend=backend)
    plain = PlainLatticeNet(2)
    plain.load_state_dict(net.state_dict())
    net, plain = net.to(device), plain.to(device)
    lr = to_tensor(crop(photo("astronaut"), 14, 18, 200, 200)).to(device)
    hr = to_tensor(crop(photo("astronaut"), 28, 36, 400, 400)).to(device)
    for m in (net, plain):
        (m(lr) - hr).abs().mean().backward()
    plain_params = dict(plain.named_parameters())
    for name, a in net.named_parameters():
        if not a.requires_grad:
            continue
        b = plain_params[name]
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6 * b.grad.abs().max().item() + 1e-7,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.slow
def test_compile_fullgraph_model_matches_eager():
    backend, device = next((b, d) for b, d in BACKEND_DEVICES if b in ("cuda", "cpu"))
    torch.manual_seed(0)
    net = lk.LatticeNet(scale=2, backend=backend).to(device).eval()
    x = to_tensor(crop(photo("rocket"), 20, 22, 100, 100)).to(device)
    with torch.no_grad():
        eager = net(x)
        torch._dynamo.reset()
        compiled = torch.compile(net, fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-3)


def test_latticenet_output_keeps_the_input_memory_format(backend_device):
    """LatticeNet computes in channels_last whatever the input's format; the output gets the input's format back,
    and both formats give the same result."""
    backend, device = backend_device
    torch.manual_seed(0)
    net = lk.LatticeNet(scale=2, backend=backend).to(device).eval()
    x = torch.rand(1, 3, 9, 11, device=device) * 255
    with torch.no_grad():
        y = net(x)
        y_cl = net(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous()
    assert y_cl.is_contiguous(memory_format=torch.channels_last) and not y_cl.is_contiguous()
    torch.testing.assert_close(y_cl, y, rtol=0, atol=0)


def test_models_run_on_meta_tensors_for_their_shapes():
    """A model built on the meta device gives its output shapes without data (torch.is_autocast_enabled raises
    for meta; the library asks only where autocast exists)."""
    with torch.device("meta"):
        net = lk.LatticeNet(scale=3).eval()
        restorer = lk.LatticeRestorer(channels=1, preset="small").eval()
        y = net(torch.empty(2, 3, 10, 14))
        z = restorer(torch.empty(1, 1, 12, 12))
    assert (y.device.type, tuple(y.shape)) == ("meta", (2, 3, 30, 42))
    assert (z.device.type, tuple(z.shape)) == ("meta", (1, 1, 12, 12))
