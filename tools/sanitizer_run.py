"""A short run of every CUDA op, forward and backward, both memory formats, odd shapes: the program that
`make gpu-check` runs under compute-sanitizer --tool memcheck."""

import torch

import lattice_kernels as lk

for shape in ((2, 19, 7, 13), (1, 64, 33, 47)):
    for fmt in (torch.contiguous_format, torch.channels_last):
        for dtype in (torch.float32, torch.bfloat16):
            x1 = torch.randn(shape, device="cuda").to(dtype).contiguous(memory_format=fmt).requires_grad_()
            x2 = torch.randn(shape, device="cuda").to(dtype).contiguous(memory_format=fmt).requires_grad_()
            a = torch.rand(shape[:2], device="cuda", requires_grad=True)
            c, r = shape[1], max(1, shape[1] // 16)
            w = [torch.randn(s, device="cuda", requires_grad=True) for s in [(r, c), (r,), (c, r), (c,)] * 2]
            p, q, mq, sq = lk.ops.butterfly(x1, x2, alpha2=a, beta1=a, q_stats=True, backend="cuda")
            (pq,) = lk.ops.butterfly_stacked(p, q, alpha1=a, beta2=a, backend="cuda")
            m, s = lk.ops.channel_stats(pq, backend="cuda")
            cc = lk.ops.combination_coefficients(q, *w, backend="cuda")
            (pq.float().sum() + mq.sum() + sq.sum() + m.sum() + s.sum() + cc.sum()).backward()
torch.cuda.synchronize()
print("sanitizer run done")
