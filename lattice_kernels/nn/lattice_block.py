"""LatticeBlock: two butterfly units around two residual blocks, run on the fused plan of DESIGN.md."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import ops
from ..contract import autocast_enabled, memory_format_of
from .combination_coefficient import CombinationCoefficient
from .conv import ResidualBlock

# Which coefficients of the general butterfly p = a1*x1 + a2*x2, q = b1*x1 + b2*x2 are learned (the rest are 1).
# Unit 1 combines (x1, x2) = (x, f = RB0(x)); unit 2 combines (g = RB1(p1), q1). A coefficient on a term is the
# CC of that term.
PLACEMENTS: dict[str, tuple[str, ...]] = {
    "cross": ("alpha2", "beta1"),  # the paper: p = x1 + CC(x2) x2, q = CC(x1) x1 + x2
    "parallel": ("alpha1", "beta2"),  # p = CC(x1) x1 + x2, q = x1 + CC(x2) x2
    "serial": ("alpha2",),  # p = x1 + CC(x2) x2, q = x1 + x2
    "both": ("alpha1", "alpha2", "beta1", "beta2"),  # every term weighted
}
# Published parameter names (cross placement: fea_ca{u} is alpha2, x_ca{u} is beta1); the others are new.
_MODULE_NAME = {"alpha1": "x_ca_p{}", "alpha2": "fea_ca{}", "beta1": "x_ca{}", "beta2": "fea_ca_q{}"}
_TERM = {"alpha1": 0, "alpha2": 1, "beta1": 0, "beta2": 1}  # which input of the unit the coefficient weights
_STAT_NAMES = {1: ("x", "f"), 2: ("g", "q1")}  # the statistics of each unit's inputs, as statistics_hook names them


def residual_block(channels: int, diff: int, backend: str | None = None) -> ResidualBlock:
    """conv3x3 C -> C-d, LeakyReLU(0.05), conv3x3 C-d -> C-d, LeakyReLU, conv3x3 C-d -> C, LeakyReLU."""
    return ResidualBlock(channels, diff, 0.05, backend)


def _placement(placement: str | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(placement, str):
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)} or a tuple of coefficient names, "
                             f"got {placement!r}")
        return PLACEMENTS[placement]
    names = tuple(placement)
    bad = [n for n in names if n not in _MODULE_NAME]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"placement coefficients must be distinct names among alpha1, alpha2, beta1, beta2, "
                         f"got {names}")
    return names


class LatticeBlock(nn.Module):
    """The Lattice Block (x: (N, C, H, W) -> (N, C, H, W)):
        f = RB0(x); p1 = x + CC_fea1(f) f; q1 = f + CC_x1(x) x; g = RB1(p1);
        p3 = g + CC_fea2(q1) q1; q3 = q1 + CC_x2(g) g; out = compress(cat(p3, q3))   (the 'cross' placement)
    State-dict keys as published (conv_block{0,1}.{0,2,4}, fea_ca1, x_ca1, fea_ca2, x_ca2, compress).

    The non-conv work runs the fused plan: the coefficients of x, f and g each from one combination_coefficients
    op (statistics and MLP), q1's from butterfly 1's own statistics pass; butterfly 2 and the compress conv are
    one 1x1 conv over g and q1 with per-sample folded weights (fold_compress), so p3 and q3 are never formed. The
    3x3 convs (with their LeakyReLU) are ops.conv3x3: the library's convolution on the cpu backend (Winograd; bf16 on
    AMX tiles where the CPU has them), torch's convolution on the others."""

    def __init__(self, channels: int = 64, diff: int = 16, reduction: int = 16,
                 placement: str | tuple[str, ...] = "cross", backend: str | None = None):
        super().__init__()
        if not 0 < diff < channels:
            raise ValueError(f"diff must be in (0, channels={channels}), got {diff}")
        self.placement = _placement(placement)
        self.backend = backend
        # Registered in the published order (conv_block0, fea_ca1, x_ca1, conv_block1, fea_ca2, x_ca2, compress).
        for u in (1, 2):
            self.add_module(f"conv_block{u - 1}", residual_block(channels, diff, backend))
            for name in self.placement:
                self.add_module(_MODULE_NAME[name].format(u), CombinationCoefficient(channels, reduction, backend))
        self.compress = nn.Conv2d(2 * channels, channels, 1)

    def _coefficients(self, unit: int, inputs: tuple[Tensor, Tensor], needed: tuple[str, ...],
                      given: tuple[tuple[Tensor, Tensor] | None, ...] = (None, None)) -> dict[str, Tensor]:
        """The unit's coefficients, each from the statistics of the butterfly input it weights (inputs: the first
        and second). Statistics given (q1's, from butterfly 1's own pass) feed the coefficient MLP; an input whose
        statistics no other coefficient needs goes through ops.combination_coefficients, statistics and MLP in one
        op (on a GPU 2-3 launches instead of a dozen); otherwise (two coefficients on one input, or the whole-image
        statistics of tiled inference) its statistics are computed once and fed to each MLP."""
        users = [sum(_TERM[n] == t for n in self.placement) for t in (0, 1)]
        fused = [given[t] is None and users[t] == 1 and self.statistics_hook is None for t in (0, 1)]
        # x before f: the order in which tiled inference gathers them (q1 comes given, before g)
        stats = [given[t] if given[t] is not None or fused[t] else self._stats(inputs[t], _STAT_NAMES[unit][t], needed)
                 for t in (0, 1)]
        out = {}
        for name in self.placement:
            t = _TERM[name]
            cc = getattr(self, _MODULE_NAME[name].format(unit))
            out[name] = cc.coefficients(inputs[t]) if fused[t] else cc.from_stats(*stats[t])
        return out

    def needed_statistics(self) -> tuple[str, ...]:
        """The statistics the block's coefficients use, in the order forward needs them: 'x', 'f' (unit 1),
        'q1', 'g' (unit 2)."""
        terms = {_TERM[n] for n in self.placement}
        return tuple(s for s, t in (("x", 0), ("f", 1), ("q1", 1), ("g", 0)) if t in terms)

    # Tiled inference (lattice_kernels.inference) sets this to a callable (block, name, tensor) -> (mean, std)
    # that supplies whole-image statistics instead of the tile's own.
    statistics_hook = None

    def _stats(self, t: Tensor, name: str, needed: tuple[str, ...]) -> tuple[Tensor, Tensor] | None:
        if name not in needed:
            return None
        if self.statistics_hook is not None:
            return self.statistics_hook(self, name, t)
        return ops.channel_stats(t, backend=self.backend)

    def forward(self, x: Tensor) -> Tensor:
        c = self.compress.out_channels
        if x.dim() != 4 or x.shape[1] != c:
            raise ValueError(f"LatticeBlock({c}) takes (N, {c}, H, W), got {tuple(x.shape)}")
        # The scope ends after _forward's frame is gone, so its intermediate buffers return to the workspace.
        with ops.workspace(x):
            return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        needed = self.needed_statistics()
        f = self.conv_block0(x)
        x, f = _common_dtype(x, f)
        coefs1 = self._coefficients(1, (x, f), needed)
        fused_q_stats = "q1" in needed and self.statistics_hook is None
        p1, q1, *q1_stats = ops.butterfly(x, f, **coefs1, q_stats=fused_q_stats, backend=self.backend)
        del x, f  # f's buffer is free for conv_block1 (one LR-sized buffer less at the forward's peak)
        # tiled inference's whole-image statistics of q1 are gathered before g exists (needed_statistics' order)
        s_q1 = tuple(q1_stats) if fused_q_stats else (
            self._stats(q1, "q1", needed) if self.statistics_hook is not None else None)
        g = self.conv_block1(p1)
        del p1
        g, q1 = _common_dtype(g, q1)
        coefs2 = self._coefficients(2, (g, q1), needed, given=(None, s_q1))
        return fold_compress(g, q1, coefs2, self.compress.weight, self.compress.bias)


def fold_compress(x1: Tensor, x2: Tensor, coefs: dict[str, Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    """compress(cat(p, q)) for the butterfly p = a1*x1 + a2*x2, q = b1*x1 + b2*x2, without forming p and q.

    x1, x2: (N, C, H, W); coefs: some of alpha1, alpha2, beta1, beta2, each (N, C) (absent ones are 1); weight
    (Cout, 2C, 1, 1) = [W_p, W_q], bias (Cout,). Since W_p p + W_q q = (W_p diag(a1) + W_q diag(b1)) x1 +
    (W_p diag(a2) + W_q diag(b2)) x2, the result is two batched matrix products with per-sample weights (N, Cout, C):
    one pass over x1 and x2 instead of a butterfly pass, a 2C-channel buffer and a conv over it. The weights are
    folded in the coefficients' dtype (float32 for half inputs) and rounded once to x1's dtype. Output in x1's
    memory format."""
    n, c, h, w = x1.shape
    fold_dtype = torch.float64 if x1.dtype == torch.float64 else torch.float32
    wp, wq = weight.reshape(weight.shape[0], 2, c).to(fold_dtype).permute(1, 2, 0)  # each (C, Cout)

    def folded(a: str, b: str) -> Tensor:  # (N, C, Cout): diag(a) W_p^T + diag(b) W_q^T
        ca, cb = (None if coefs.get(k) is None else coefs[k].reshape(n, c) for k in (a, b))
        left = wp.expand(n, *wp.shape) if ca is None else wp * ca[:, :, None]
        right = wq.expand(n, *wq.shape) if cb is None else wq * cb[:, :, None]
        # Row-major: in the channels_last products (x rows times these) ~2x faster than a transposed view.
        return (left + right).to(x1.dtype).contiguous()

    w1, w2 = folded("alpha1", "beta1"), folded("alpha2", "beta2")
    if memory_format_of(x1) == torch.channels_last:  # (N, H*W, C) views; out (N, H*W, Cout)
        rows = [t.permute(0, 2, 3, 1).reshape(n, h * w, c) for t in (x1, x2)]
        return _bmm2(rows[0], w1, rows[1], w2, bias).view(n, h, w, -1).permute(0, 3, 1, 2)
    cols = [t.reshape(n, c, h * w) for t in (x1, x2)]  # (N, C, H*W); out (N, Cout, H*W)
    start = None if bias is None else bias[:, None]
    return _bmm2(w1.transpose(1, 2), cols[0], w2.transpose(1, 2), cols[1], start).view(n, -1, h, w)


def _bmm2(a1: Tensor, b1: Tensor, a2: Tensor, b2: Tensor, start: Tensor | None) -> Tensor:
    """a1 @ b1 + a2 @ b2 + start (batched; start broadcast), in place after the first product (not under autocast,
    whose casts in-place ops skip). start is added last: baddbmm's copy of a broadcast bias into its output cost
    more than the add (1x57600x64 fp32 on the 2-core Xeon, same process: 7.7 against 5.0 ms for the whole fold)."""
    out = torch.bmm(a1, b1)
    if autocast_enabled(a1.device.type):
        out = torch.baddbmm(out, a2, b2)
        return out if start is None else out + start.to(out.dtype)
    out.baddbmm_(a2, b2)
    return out if start is None else out.add_(start.to(out.dtype))


def _common_dtype(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Under autocast a block input may be float32 while its conv outputs are bfloat16: promote like eager."""
    if a.dtype == b.dtype:
        return a, b
    dt = torch.promote_types(a.dtype, b.dtype)
    return a.to(dt), b.to(dt)
