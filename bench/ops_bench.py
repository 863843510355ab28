"""Op micro-benchmarks: each op forward and forward+backward, per backend, against the eager spec and
torch.compile of the spec, all backends of a case timed in interleaved rounds in one process (bench/rounds.py),
with bytes moved over the measured copy bandwidth as the floor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import lattice_kernels as lk
from lattice_kernels.ops import reference as ref

from .rounds import run_rounds, speedup_fields, time_fields
from .timing import rotation_count

OPS = ("channel_stats", "combination_coefficients", "butterfly", "butterfly_q_stats", "conv3x3")


@dataclass
class OpCase:
    """make_inputs(seed) -> tuple of tensors; run(backend, *inputs) -> outputs; `passes` = tensor-sized
    reads + writes of the fused forward and of forward+backward."""

    name: str
    make_inputs: Callable[[int], tuple]
    run: Callable[..., tuple]
    spec: Callable[..., tuple]
    passes_fwd: int
    passes_fwd_bwd: int
    flops_fwd: int = 0  # multiply-adds x 2 of the direct computation (compute-bound ops), per call


def _weights(c: int, device, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = max(1, c // 16)
    return [(torch.randn(s, generator=g) * 0.3).to(device) for s in [(r, c), (r,), (c, r), (c,)] * 2]


def make_cases(shape, dtype, device, layout: str = "nchw") -> list[OpCase]:
    n, c = shape[:2]
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format

    def tensors(seed, k):
        g = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(shape, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=fmt)
                     for _ in range(k))

    def coefs(seed, k):
        g = torch.Generator().manual_seed(seed + 100)
        return tuple((torch.rand((n, c), generator=g) + 0.5).to(device) for _ in range(k))

    cases = [
        OpCase("channel_stats", lambda s: tensors(s, 1),
               lambda b, x: lk.ops.channel_stats(x, backend=b), ref.channel_stats, 1, 3),
        OpCase("combination_coefficients", lambda s: (*tensors(s, 1), *_weights(c, device, s)),
               lambda b, x, *w: (lk.ops.combination_coefficients(x, *w, backend=b),),
               lambda x, *w: (ref.combination_coefficients(x, *w),), 1, 3),
        OpCase("butterfly", lambda s: (*tensors(s, 2), *coefs(s, 2)),
               lambda b, x1, x2, a, bb: lk.ops.butterfly(x1, x2, alpha2=a, beta1=bb, backend=b),
               lambda x1, x2, a, bb: ref.butterfly(x1, x2, alpha2=a, beta1=bb), 4, 10),
        OpCase("butterfly_q_stats", lambda s: (*tensors(s, 2), *coefs(s, 2)),
               lambda b, x1, x2, a, bb: lk.ops.butterfly(x1, x2, alpha2=a, beta1=bb, q_stats=True, backend=b),
               _butterfly_q_stats_spec, 4, 10),
        # A residual-block conv (C -> C with LeakyReLU(0.05)); compute-bound, so GFLOP/s (of the direct conv) is
        # reported besides the bytes. The eager spec is torch's (oneDNN's) convolution.
        OpCase("conv3x3", lambda s: (*tensors(s, 1), *_conv_weights(c, device, dtype, s)),
               lambda b, x, w, bb: (lk.ops.conv3x3(x, w, bb, negative_slope=0.05, backend=b),),
               lambda x, w, bb: (ref.conv3x3(x, w, bb, 0.05),), 2, 6, 2 * 9 * c * c * shape[0] * shape[2] * shape[3]),
    ]
    return cases


def _conv_weights(c: int, device, dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 200)
    w = torch.randn((c, c, 3, 3), generator=g) / (3 * c**0.5)
    return w.to(device=device, dtype=dtype), (torch.randn(c, generator=g) * 0.1).to(device=device, dtype=dtype)


def _butterfly_q_stats_spec(x1, x2, a, b):
    p, q = ref.butterfly(x1, x2, alpha2=a, beta1=b)
    return (p, q, *ref.channel_stats(q))


def _grads_for(outputs, seed):
    g = torch.Generator().manual_seed(seed + 7)
    return [torch.randn(o.shape, generator=g).to(device=o.device, dtype=o.dtype) for o in outputs]


def _callable(case: OpCase, backend: str) -> Callable[..., tuple]:
    """backend: 'eager' (the spec), 'compile' / 'compile-max' (torch.compile of the spec), or a library backend."""
    if backend == "eager":
        return case.spec
    if backend in ("compile", "compile-max"):
        mode = "max-autotune-no-cudagraphs" if backend == "compile-max" else None
        return torch.compile(case.spec, mode=mode, dynamic=False)

    def fn(*a):
        return case.run(backend, *a)

    return fn


def bench_op(case: OpCase, backends: list[str], shape, dtype, device: torch.device, with_backward: bool,
             rounds: int, warmup: int, layout: str = "nchw", deadline: float | None = None) -> list[dict]:
    """One row per backend for one (op case, shape, dtype, layout, pass): every backend's callable built once in
    this process, warmed (compilation happens there), then timed in `rounds` interleaved rounds (bench/rounds.py)
    over rotating input sets shared by all backends, consecutive calls never on the same set. Per row: the median
    time with p10/p90, and vs_eager / vs_compile as the median of the per-round speedups with their range. Past
    `deadline` (time.monotonic()) the group stops after its third round (rounds_cut in the rows)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    numel = 1
    for s in shape:
        numel *= s
    passes = case.passes_fwd_bwd if with_backward else case.passes_fwd
    nbytes = passes * numel * itemsize
    rot = rotation_count(nbytes, device)
    sets = [case.make_inputs(i) for i in range(rot)]
    if any(b.startswith("compile") for b in backends):
        torch._dynamo.reset()  # a fresh cache per group: the spec's code object would hit dynamo's recompile limit
    fns = {b: _callable(case, b) for b in backends}
    grads: dict[tuple, list[list[torch.Tensor]]] = {}  # by output shapes and dtypes, shared by the backends

    def make_call(fn):
        if not with_backward:
            def call(i):
                with torch.no_grad():
                    fn(*sets[i % rot])
            return call

        def call(i):
            inputs = sets[i % rot]
            outs = [o for o in fn(*inputs) if o.requires_grad]
            key = tuple((tuple(o.shape), o.dtype) for o in outs)
            if key not in grads:
                grads[key] = [_grads_for(outs, k) for k in range(rot)]
            torch.autograd.backward(outs, grads[key][i % rot])
            for t in inputs:
                t.grad = None
        return call

    if with_backward:
        sets = [tuple(t.detach().requires_grad_(t.is_floating_point()) for t in s) for s in sets]
    calls = {b: make_call(fn) for b, fn in fns.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    # GPU: 10 calls per sample, so that the synchronisation around a sample is small against a us-scale op
    samples = run_rounds(calls, rounds, warmup=warmup, reps=10 if device.type == "cuda" else 1, sync=sync,
                         deadline=deadline)
    taken = len(samples[backends[0]])
    comp = "compile-max" if "compile-max" in backends else ("compile" if "compile" in backends else None)
    rows = []
    for b in backends:
        t = time_fields(samples[b])
        row = {"op": case.name, "shape": list(shape), "layout": layout, "dtype": str(dtype).replace("torch.", ""),
               "device": device.type, "pass": "fwd+bwd" if with_backward else "fwd", "backend": b, "bytes": nbytes,
               **t, "GBps": nbytes / (t["median_ms"] * 1e-3) / 1e9, "rotations": rot,
               "timing": f"{taken} interleaved rounds", "samples_ms": samples[b],
               **speedup_fields(samples, b, {"vs_eager": "eager", "vs_compile": comp})}
        if comp:
            row["compile_baseline"] = comp
        if taken < rounds:
            row["rounds_cut"] = f"{taken} of {rounds} rounds (--max-minutes)"
        if case.flops_fwd:  # backward of a conv: the input and weight gradients, two more convs' worth
            row["GFLOPs"] = case.flops_fwd * (3 if with_backward else 1) / (t["median_ms"] * 1e-3) / 1e9
        rows.append(row)
    return rows
