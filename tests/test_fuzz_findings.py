"""What the property-based tests (tests/test_fuzz_ops.py) found, as regular tests on every available backend."""

from __future__ import annotations

import pytest
import torch

import lattice_kernels as lk
from lattice_kernels.ops import reference as ref

from .conftest import assert_close_to_reference

INF, NAN = float("inf"), float("nan")


def test_a_row_with_an_infinity_has_nan_statistics(backend_device):
    """Found: the triton channel_stats gave a NaN mean for a row holding +inf where torch.mean gives +inf (its
    values are shifted by the row's first one: inf - inf). The cpu kernels did the same. The contract (ops/reference.py)
    now says it: a row with a NaN or an infinity has NaN mean and std on every backend; other rows are exact."""
    backend, device = backend_device
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).float()
    x[0, 0, 0, 0] = INF
    x[0, 1, 2, 3] = -INF
    x[1, 2, 1, 1] = NAN
    mean, std = lk.ops.channel_stats(x.to(device), backend=backend)
    bad = torch.zeros(2, 3, dtype=torch.bool)
    bad[0, 0] = bad[0, 1] = bad[1, 2] = True
    assert torch.isnan(mean.cpu()[bad]).all() and torch.isnan(std.cpu()[bad]).all()
    rm, rs = ref.channel_stats(x.double())
    assert torch.isnan(rm[bad]).all(), "the spec itself says NaN"
    assert_close_to_reference(mean.cpu()[~bad], rm[~bad], torch.float32, what="mean")
    assert_close_to_reference(std.cpu()[~bad], rs[~bad], torch.float32, what="std")


@pytest.mark.parametrize("shared", ["x1", "x2", "alpha2"])
def test_butterfly_out_sharing_memory_with_an_input_is_refused(backend_device, shared):
    """Found: the triton backend wrote p into an out whose q half was x1 (p and q then silently wrong); the cpu one
    raised torch's unnamed 'unsupported operation' RuntimeError. Now every backend raises the named ValueError."""
    backend, device = backend_device
    n, c, h, w = 2, 3, 4, 5
    out = torch.zeros(n, 2 * c, h, w, device=device)
    x1, x2 = torch.randn(n, c, h, w, device=device), torch.randn(n, c, h, w, device=device)
    alpha2 = torch.rand(n, c, device=device)
    if shared == "alpha2":
        alpha2 = out.view(-1)[: n * c].view(n, c)
    else:
        half = out[:, c:]
        half.copy_(x1)
        x1, x2 = (half, x2) if shared == "x1" else (x1, half)
    with torch.no_grad(), pytest.raises(ValueError, match=f"out shares memory with {shared}; pass a separate"):
        lk.ops.butterfly(x1, x2, alpha2=alpha2, out=out, backend=backend)


def test_butterfly_out_next_to_an_input_in_one_buffer_is_accepted(backend_device):
    """Disjoint parts of one buffer do not share memory: out may be rows [0, N) and x1 rows [N, 2N) of it."""
    backend, device = backend_device
    n, c, h, w = 2, 3, 4, 5
    big = torch.randn(2 * n, 2 * c, h, w, device=device)
    out, x1 = big[:n], big[n:, :c]
    x2 = torch.randn(n, c, h, w, device=device)
    want_p, want_q = ref.butterfly(x1.double(), x2.double())
    with torch.no_grad():
        p, q = lk.ops.butterfly(x1, x2, out=out, backend=backend)
    assert_close_to_reference(p, want_p, torch.float32, what="p")
    assert_close_to_reference(q, want_q, torch.float32, what="q")


def test_statistics_beyond_float32_range_are_not_finite_or_right(backend_device):
    """Values near float32's largest (3.4e38) overflow the float32 sums the contract prescribes. Each statistic
    must then be non-finite or right, never a finite wrong number (probing found NaN mean and std on cpu and
    triton; torch's float32 reductions give an infinite mean and the right std)."""
    backend, device = backend_device
    x = torch.tensor([3e38, 3e38, -3e38, 1.0]).view(1, 1, 2, 2)
    x = torch.cat([x, torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)], dim=1).to(device)
    mean, std = lk.ops.channel_stats(x, backend=backend)
    rm, rs = ref.channel_stats(x.double().cpu())
    for got, want in ((mean.cpu()[0, 0], rm[0, 0]), (std.cpu()[0, 0], rs[0, 0])):
        if torch.isfinite(got):
            assert_close_to_reference(got, want, torch.float32, scale=abs(want.item()))
    assert_close_to_reference(mean.cpu()[0, 1:], rm[0, 1:], torch.float32)
    assert_close_to_reference(std.cpu()[0, 1:], rs[0, 1:], torch.float32)


def test_conv3x3_nan_input_stays_within_its_winograd_tiles(backend_device):
    """A NaN input gives NaN wherever the spec does. The cpu backend's Winograd F(4x4, 3x3) may also make NaN the
    rest of the 4x4 output tiles whose 6x6 input patch holds it (documented in ops.conv3x3); every output of the
    other tiles equals the spec."""
    backend, device = backend_device
    x = torch.randn(1, 2, 12, 12, dtype=torch.float64).float()
    x[0, 1, 5, 6] = NAN  # rows 4..8 of tile row 1 (inputs 3..8), tile cols 1 (inputs 3..8)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64).float() / 4
    y = lk.ops.conv3x3(x.to(device), w.to(device), backend=backend).cpu()
    want = ref.conv3x3(x.double(), w.double())
    assert torch.isnan(y[torch.isnan(want)]).all()
    allowed = torch.zeros(12, 12, dtype=torch.bool)
    allowed[4:8, 4:8] = True  # the tile whose 6x6 input patch (3..8) holds (5, 6)
    allowed |= torch.isnan(want[0, 0])
    outside = ~allowed.expand(1, 3, 12, 12)
    assert torch.isfinite(y[outside]).all()
    assert_close_to_reference(y[outside], want[outside], torch.float32, scale=want[outside].abs().max().item())
