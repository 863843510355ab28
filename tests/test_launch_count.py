"""tools/launch_count.py: the GPU kernel launches of a forward, counted on the CPU (meta tensors, the library's
ops priced by their launchers). Planted modules with a known number of launches and syncs prove the counter; the
LatticeNet counts are checked against their structure and recorded in bench/results/launch-count-cpu.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import lattice_kernels as lk
from tools import launch_count as L

ROOT = Path(__file__).resolve().parent.parent


def count_module(module: nn.Module, x_shape=(1, 8, 4, 4), library=None) -> L.Count:
    count = L.Count()
    x = torch.empty(x_shape, device="meta")
    with L._library_ops_of_cuda(), torch.no_grad(), L._Counting(count, library):
        module(x)
    return count


class _Planted(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x):
        y = (x + 1).relu()  # 2 launches
        y = y.permute(0, 2, 3, 1)  # a view: none
        if self.kind == "copy":
            y = y.contiguous()  # a hidden copy: 1 launch
        if self.kind == "sync" and y.sum().item() != 0:  # 1 launch (sum) and a host sync (the counter reads 0)
            y = y * 2
        if self.kind == "host":  # a CPU tensor made in the forward (1 host tensor), then copied over (1 launch)
            y = y * torch.ones(1).to(y.device)
        return y


@pytest.mark.parametrize("kind, launches, syncs, host", [("plain", 2, 0, 0), ("copy", 3, 0, 0), ("sync", 3, 1, 0),
                                                         ("host", 4, 0, 1)])
def test_planted_launches_and_syncs_are_counted(kind, launches, syncs, host):
    c = count_module(_Planted(kind))
    assert (c.total, c.syncs, c.host_tensors) == (launches, syncs, host), c.as_dict()


def test_a_library_op_is_priced_by_its_launcher():
    """channel_stats on the cuda backend: the launches the CUDA launcher makes at that shape (the harness's dry
    mode), not one per op; on triton: the Triton launcher's kernels."""
    emu = pytest.importorskip("tools.cuda_emu").load("plain")
    x_shape = (2, 64, 48, 40)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.empty(x_shape, device="meta").contiguous(memory_format=layout)
        want = len(emu.dry("channel_stats", 0, (2, 64, 48 * 40, layout == torch.channels_last), True, 4))
        assert L._CudaLaunches()("channel_stats", (x,)) == want >= 1
        assert L._TritonLaunches()("channel_stats", (x,)) >= 2  # partials, then the finalize kernel

    class Stats(nn.Module):
        def forward(self, t):
            return lk.ops.channel_stats(t, backend="cuda")

    c = count_module(Stats(), x_shape, L._CudaLaunches())
    assert dict(c.library) == {"channel_stats": len(emu.dry("channel_stats", 0, (2, 64, 1920, False), True, 4))}
    assert c.total == c.library["channel_stats"], c.as_dict()


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads((ROOT / "bench" / "results" / "launch-count-cpu.json").read_text())


@pytest.fixture(scope="module")
def counts(record) -> dict[str, dict]:
    return L.count_all(record["lr"])


def test_latticenet_counts_follow_the_structure(record, counts):
    """LatticeNet x4: 4 blocks, each 2 residual blocks of 3 convs with LeakyReLU; the library computes the
    coefficients of x, f and g by one combination_coefficients op each (3 per block), one butterfly per block with
    q1's statistics (the second butterfly is folded into the compress conv) and q1's coefficient from them by one
    coefficients_from_stats op, each priced exactly as its launcher launches at that shape, and never syncs with
    the host."""
    emu = pytest.importorskip("tools.cuda_emu").load("plain")
    shape = (1, 64, record["lr"] ** 2, True)  # channels_last, as the model runs
    per_call = {"combination_coefficients": len(emu.dry("combination_coefficients", 0, shape, True, 4)),
                "butterfly": len(emu.dry("butterfly", 0, shape, True, 4)),
                "coefficients_from_stats": len(emu.dry("coefficients_from_stats", 0, (1, 64, 1, False), True, 4))}
    for dtype, by_model in counts.items():
        cuda, eager = by_model["cuda"], by_model["eager"]
        assert cuda["aten_by_op"]["leaky_relu"] == eager["aten_by_op"]["leaky_relu"] == 4 * 2 * 3, dtype
        assert cuda["library_by_op"] == {"combination_coefficients": 12 * per_call["combination_coefficients"],
                                         "butterfly": 4 * per_call["butterfly"],
                                         "coefficients_from_stats": 4 * per_call["coefficients_from_stats"]}, \
            (dtype, cuda)
        assert per_call["coefficients_from_stats"] == 1
        assert all(c["host_syncs"] == 0 for c in by_model.values()), by_model
        # nothing made on the host inside the forward either: the forward can be captured in a CUDA graph
        assert all(c["host_tensors"] == 0 for c in by_model.values()), by_model
        # the plain model's coefficient MLPs are 1x1 convolutions with biases; the library's run as linear layers
        assert eager["aten_by_op"]["convolution"] > cuda["aten_by_op"]["convolution"]


def test_butterfly_pricing_follows_q_stats():
    """A butterfly without q statistics launches only its elementwise kernel; with them, the split merge too."""
    emu = pytest.importorskip("tools.cuda_emu").load("plain")
    x = torch.empty(1, 64, 96, 96, device="meta").contiguous(memory_format=torch.channels_last)
    a = torch.empty(1, 64, device="meta")
    for q_stats in (False, True):
        want = len(emu.dry("butterfly", 0, (1, 64, 96 * 96, True), q_stats, 4))
        assert L._CudaLaunches()("butterfly", (x, x, None, a, a, None, q_stats)) == want
    assert len(emu.dry("butterfly", 0, (1, 64, 96 * 96, True), False, 4)) < \
        len(emu.dry("butterfly", 0, (1, 64, 96 * 96, True), True, 4))


def test_biased_convolutions_and_single_row_addmm_count_two():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.nobias = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(self.nobias(self.conv(x)).mean(dim=(2, 3)))

    with torch.device("meta"):
        m = M()
    c = count_module(m)
    assert c.aten == {"convolution": 3, "mean": 1, "addmm": 2}, c.as_dict()


def test_the_recorded_counts_are_the_tools(record, counts):
    assert record["counts"] == counts, ("bench/results/launch-count-cpu.json differs from a count made now: "
                                        "python -m tools.launch_count --json bench/results/launch-count-cpu.json")


def test_the_gpu_page_shows_the_recorded_table(record):
    assert L.table(record) in (ROOT / "docs" / "gpu.md").read_text(), \
        "docs/gpu.md's launch table differs from bench/results/launch-count-cpu.json"
