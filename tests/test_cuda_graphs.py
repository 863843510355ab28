"""CUDA graphs in inference (lattice_kernels/cuda_graphs.py): inference.run replays a graph captured per input shape
on CUDA. That the forward can be captured (no host sync, no host tensor) is counted on the CPU by
tests/test_launch_count.py; capture and replay themselves run on a GPU (make gpu-check's tests stage)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lattice_kernels as lk
from lattice_kernels import cuda_graphs, inference
from lattice_kernels.cli import images, upscale

ON_GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device (runs on the GPU machine)")


def test_graphed_call_refuses_a_cpu_input():
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA input"):
        cuda_graphs.graphed_call(nn.Identity(), lambda t: t, torch.zeros(1))


def test_the_cli_switch_reaches_run():
    p = upscale.build_parser()
    on = images.run_options(p.parse_args(["in.png", "-o", "out"]))
    off = images.run_options(p.parse_args(["in.png", "-o", "out", "--no-cuda-graphs"]))
    assert on["cuda_graphs"] is True and off["cuda_graphs"] is False


@needs_gpu
def test_replayed_forward_equals_the_eager_one_and_is_cached_per_shape():
    torch.manual_seed(0)
    net = lk.LatticeNet(scale=2).cuda().eval()
    cuda_graphs.release()
    x = torch.rand(1, 3, 40, 56) * 255
    eager = inference.run(net, x, scale=2, cuda_graphs=False)
    assert cuda_graphs.cached_graphs(net) == 0
    first = inference.run(net, x, scale=2)
    second = inference.run(net, x.flip(-1), scale=2)
    assert cuda_graphs.cached_graphs(net) == 1
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(second, inference.run(net, x.flip(-1), scale=2, cuda_graphs=False), rtol=1e-5,
                               atol=1e-3)
    inference.run(net, torch.rand(1, 3, 24, 32) * 255, scale=2)
    assert cuda_graphs.cached_graphs(net) == 2
    with torch.no_grad():  # weights changed in place: the graph reads them where they are
        net.conv1.bias.add_(1.0)
    torch.testing.assert_close(inference.run(net, x, scale=2), inference.run(net, x, scale=2, cuda_graphs=False),
                               rtol=1e-5, atol=1e-3)
    cuda_graphs.release(net)
    assert cuda_graphs.cached_graphs(net) == 0


@needs_gpu
def test_a_forward_that_syncs_says_how_to_run_without_graphs():
    class Syncs(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, t):
            return t * self.w * float(t.sum().item() > 0)

    with pytest.raises(cuda_graphs.CudaGraphCaptureError, match="cuda_graphs=False"):
        inference.run(Syncs().cuda(), torch.rand(1, 3, 8, 8), scale=1)
