"""Triton launch geometry: the grids of every launcher at photograph sizes (2K, 1440p, 4K, 8K) against the CUDA
launch limits without allocating the images (meta tensors, the recording `wrap` of tools.gpu_resources), the split
growth and the multi-level merge of split partials through the interpreter against the spec, and the device guard
of multi-GPU launches."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from lattice_kernels.ops import reference as ref
from lattice_kernels.triton import _common
from lattice_kernels.triton import butterfly as bf
from lattice_kernels.triton import channel_stats as cs
from lattice_kernels.triton import combination_coefficients as cc
from lattice_kernels.triton import ops as triton_ops_module
from tools.gpu_resources import Recorder

from .conftest import assert_close_to_reference, make_input, make_weights

FRAMES = {"1080p": (1080, 1920), "1440p": (1440, 2560), "4K": (2160, 3840), "8K": (4320, 7680)}


def _every_launcher(x: torch.Tensor, wrap) -> None:
    n, c = x.shape[:2]
    stats = torch.empty((n, c), device=x.device)
    coef = torch.empty((n, c), device=x.device)
    w = [t.float().to(x.device) for t in make_weights(c, c // 16, torch.float32, conv_layout=False)]
    cs.channel_stats(x, wrap)
    cs.channel_stats_backward(stats, stats, x, stats, stats, wrap)
    cc.combination_coefficients(x, tuple(w), wrap)
    cc.coefficients_from_stats(stats, stats, tuple(w), wrap)
    bf.butterfly(x, x, (None, coef, coef, None), True, wrap)
    bf.butterfly_stacked(x, x, (coef, coef, coef, coef), False, wrap)
    bf.butterfly_backward(x, x, stats, stats, x, x, (None, coef, coef, None), stats, stats, wrap)


@pytest.mark.parametrize("frame", list(FRAMES))
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_grids_fit_the_launch_limits_at_photo_sizes(frame, layout, dtype):
    h, w = FRAMES[frame]
    x = torch.empty((1, 64, h, w), dtype=dtype, device="meta")
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    rec = Recorder()
    _every_launcher(x, rec)
    names = {name for name, _ in rec.grids}
    assert {"stats_partial_kernel", "stats_backward_kernel", "butterfly_kernel", "butterfly_backward_kernel",
            "stats_finalize_kernel", "cc_finalize_kernel", "cc_from_stats_kernel"} <= names
    for name, grid in rec.grids:
        assert 1 <= grid[0] < 2**31 and all(1 <= g <= 65535 for g in grid[1:]), f"{name}: grid {grid}"
    # The splits of a channel are merged in a tree: a finalize kernel's serial loop sees at most MERGE_GROUP of them.
    for (name, _), args in zip(rec.grids, rec.arguments):
        if name in ("stats_finalize_kernel", "cc_finalize_kernel"):
            assert args["S"] <= _common.MERGE_GROUP, f"{name} merges {args['S']} splits serially"


@pytest.mark.parametrize("p, interleaved", [(4096 * 4096 + 1, True), (16384 * 16384, False), (7680 * 4320, True)])
def test_split_grows_to_fit_axis_1(p, interleaved):
    t = _common.tiling(64, p, interleaved)
    base = t.block_p * _common.TILES_PER_SPLIT
    assert t.split_p % base == 0 and t.split_p > base  # grown, in whole multiples of the base length
    assert t.splits <= 65535 and t.splits * t.split_p >= p > (t.splits - 1) * t.split_p


def test_grid_check_names_the_kernel():
    with pytest.raises(ValueError, match="butterfly_kernel: grid \\(4, 70000\\) is outside the CUDA launch limits"):
        _common.check_grid("butterfly_kernel", (4, 70000))
    with pytest.raises(ValueError, match="stats_finalize_kernel"):
        _common.check_grid("stats_finalize_kernel", (0,))


@pytest.fixture
def interpreter():
    import os

    if os.environ.get("TRITON_INTERPRET") != "1" or torch.cuda.is_available():
        pytest.skip("runs the Triton interpreter on CPU tensors (TRITON_INTERPRET=1, no GPU)")
    from torch.library import wrap_triton

    return wrap_triton


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_grown_splits_and_merge_levels_match_the_spec(interpreter, monkeypatch, layout):
    """A small launch limit and merge group force what only huge frames reach on a GPU: grown splits and several
    merge levels, run for real in the interpreter and compared with the float64 spec."""
    monkeypatch.setattr(_common, "MAX_GRID_YZ", 3)
    monkeypatch.setattr(_common, "MERGE_GROUP", 2)
    x = make_input((2, 5, 100, 300), torch.float32, "cpu", layout, seed=3, offset=100.0)
    t = _common.tiling(5, 100 * 300, layout == "nhwc")
    assert t.splits == 3 and t.split_p > t.block_p * _common.TILES_PER_SPLIT
    rec = Recorder()
    cs.channel_stats(x.to("meta"), rec)
    assert sum(name == "merge_partials_kernel" for name, _ in rec.grids) >= 1
    mean, std = cs.channel_stats(x, interpreter)
    em, es = ref.channel_stats(x.double())
    assert_close_to_reference(mean, em, torch.float32, scale=100.0, what="mean")
    assert_close_to_reference(std, es, torch.float32, what="std")
    c = torch.rand((2, 5), dtype=torch.float32) + 0.5
    p, q, mq, sq = bf.butterfly(x, x * 0.5, (None, c, c, None), True, interpreter)
    ep, eq = ref.butterfly(x.double(), x.double() * 0.5, None, c.double(), c.double(), None)
    assert_close_to_reference(p, ep, torch.float32, scale=100.0, what="p")
    assert_close_to_reference(q, eq, torch.float32, scale=100.0, what="q")
    em, es = ref.channel_stats(eq)
    assert_close_to_reference(mq, em, torch.float32, scale=100.0, what="mean_q")
    assert_close_to_reference(sq, es, torch.float32, what="std_q")
    gm, gs = torch.randn(2, 5), torch.rand(2, 5)
    dx = cs.channel_stats_backward(gm, gs, x, mean, std, interpreter)
    xd = x.double().requires_grad_()
    m64, s64 = ref.channel_stats(xd)
    (m64 * gm.double() + s64 * gs.double()).sum().backward()
    assert_close_to_reference(dx, xd.grad, torch.float32, what="dx")


def test_many_splits_merge_in_levels(interpreter):
    """Channels_last with 64 channels: 256-pixel splits, 40 of them here, merged in two levels."""
    x = make_input((1, 64, 80, 128), torch.float32, "cpu", "nhwc", seed=5, offset=10.0)
    assert _common.tiling(64, 80 * 128, True).splits > _common.MERGE_GROUP
    mean, std = cs.channel_stats(x, interpreter)
    em, es = ref.channel_stats(x.double())
    assert_close_to_reference(mean, em, torch.float32, scale=10.0, what="mean")
    assert_close_to_reference(std, es, torch.float32, what="std")
    again = cs.channel_stats(x, interpreter)
    assert torch.equal(again[0], mean) and torch.equal(again[1], std), "not bitwise reproducible"


def test_launches_run_on_the_inputs_device(monkeypatch):
    """Triton launches on the current CUDA device: every launcher makes its inputs' device current first."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    entered: list[torch.device] = []

    class RecordingDevice:
        def __init__(self, device):
            self.device = torch.device(device)

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "device", RecordingDevice)
    with FakeTensorMode():
        x = torch.empty((1, 4, 3, 3), device="cuda:1")
    seen = []
    launcher = triton_ops_module.on_input_device(lambda a, b=None: seen.append(a.device))
    launcher(x)
    assert entered == [torch.device("cuda:1")] and seen == [torch.device("cuda:1")]
    launcher(torch.zeros(1))  # CPU tensors (the interpreter): no device switch
    assert entered == [torch.device("cuda:1")]
    assert all(getattr(fn, "on_input_device", False) for fn in triton_ops_module._IMPLS.values())
