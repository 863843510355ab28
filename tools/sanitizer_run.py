"""A short run of every op of one backend, forward and backward, that `make gpu-check` runs under compute-sanitizer
(memcheck with the caching allocator off, racecheck, synccheck). The shapes select every path of the kernels: odd
H*W (scalar path), H*W a multiple of 8 with aligned rows (16-byte vectors), several splits, C not a multiple of 32,
N > 1; both memory formats; out= and stacked outputs; float32, bfloat16, float16 and float64 (cpu/cuda).

    python tools/sanitizer_run.py [--device cuda] [--backend cuda] [--short]
"""

from __future__ import annotations

import argparse

import torch

import lattice_kernels as lk

SHAPES = [(2, 19, 7, 13), (1, 64, 33, 47), (2, 16, 16, 32), (1, 40, 64, 130)]
SHORT = [(2, 19, 7, 13), (1, 40, 16, 32)]


def run(shape, fmt, dtype, device, backend) -> None:
    def t(*s):
        return torch.randn(s, device=device)

    x1 = t(*shape).to(dtype).contiguous(memory_format=fmt).requires_grad_()
    x2 = t(*shape).to(dtype).contiguous(memory_format=fmt).requires_grad_()
    a = torch.rand(shape[:2], device=device, requires_grad=True)
    c, r = shape[1], max(1, shape[1] // 16)
    st = torch.float64 if dtype == torch.float64 else torch.float32
    w = [t(*s).to(st).requires_grad_() for s in [(r, c), (r,), (c, r), (c,)] * 2]
    p, q, mq, sq = lk.ops.butterfly(x1, x2, alpha2=a, beta1=a, q_stats=True, backend=backend)
    (pq,) = lk.ops.butterfly_stacked(p, q, alpha1=a, beta2=a, backend=backend)
    m, s = lk.ops.channel_stats(pq, backend=backend)
    cc = lk.ops.combination_coefficients(q, *w, backend=backend)
    (pq.float().sum() + mq.sum() + sq.sum() + m.sum() + s.sum() + cc.sum()).backward()
    with torch.no_grad():
        out = torch.empty((shape[0], 2 * shape[1], *shape[2:]), device=device, dtype=dtype, memory_format=fmt)
        lk.ops.butterfly(x1, x2, alpha1=a, beta2=a, out=out, q_stats=True, backend=backend)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--short", action="store_true", help="two small shapes (racecheck and synccheck are slow)")
    a = ap.parse_args(argv)
    dtypes = [torch.float32, torch.bfloat16, torch.float16]
    if a.backend != "triton":
        dtypes.append(torch.float64)
    for shape in SHORT if a.short else SHAPES:
        for fmt in (torch.contiguous_format, torch.channels_last):
            for dtype in dtypes:
                run(shape, fmt, dtype, a.device, a.backend)
    if a.device == "cuda":
        torch.cuda.synchronize()
    print("sanitizer run done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
