"""Timers. CPU: a warmed, repeated wall-clock timer with rotating inputs (so data that would fit in the last-level
cache comes from memory, as it does inside a network). GPU: triton.testing.do_bench when triton is importable
(it flushes L2 between runs), else CUDA events around repeated calls. Compilation and autotuning happen in the
warm-up calls, never inside a timed region. Every compared time of the benchmarks is taken in interleaved rounds
(bench/rounds.py); these timers serve single measurements (the copy bandwidth, the model cases' memory runs)."""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int

    def as_dict(self) -> dict:
        return {"median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms, "runs": self.runs}


def last_level_cache_bytes() -> int:
    """Size of the CPU's largest cache (from sysfs); 32 MiB when unknown."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            with open(os.path.join(base, entry, "size")) as f:
                text = f.read().strip()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
            best = max(best, int(text.rstrip("KMG")) * mult)
    except OSError:
        pass
    return best or 32 << 20


def rotation_count(bytes_per_call: int, device: torch.device) -> int:
    """How many input sets to cycle so that consecutive calls never find their inputs in the caches (the CPU's
    last-level cache; a GPU's L2, 50 MiB when unknown)."""
    if device.type == "cuda":
        cache = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 50 << 20
    elif device.type == "cpu":
        cache = last_level_cache_bytes()
    else:
        return 1
    return max(1, min(8, -(-2 * cache // max(1, bytes_per_call))))


def summarize(samples_ms: Sequence[float]) -> Timing:
    """Median, p10 and p90 (statistics.quantiles, n=10) of samples in ms."""
    s = sorted(samples_ms)
    q = statistics.quantiles(s, n=10) if len(s) >= 2 else [s[0]] * 9
    return Timing(statistics.median(s), q[0], q[-1], len(s))


def time_cpu(fn: Callable[[int], object], *, repeats: int, warmup: int, rotations: int = 1,
             min_time_s: float = 0.0) -> Timing:
    """fn(i) runs call i (i selects the input set, i % rotations). Each sample is one call."""
    for i in range(warmup):
        fn(i % rotations)
    gc.collect()
    samples = []
    start = time.perf_counter()
    i = 0
    while i < repeats or time.perf_counter() - start < min_time_s:
        t0 = time.perf_counter()
        fn(i % rotations)
        samples.append((time.perf_counter() - t0) * 1e3)
        i += 1
        if i >= 50 * repeats:
            break
    return summarize(samples)


def time_gpu(fn: Callable[[int], object], *, repeats: int, warmup: int) -> Timing:
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    try:
        import triton.testing

        q = triton.testing.do_bench(lambda: fn(0), warmup=25, rep=max(100, 4 * repeats), quantiles=[0.5, 0.1, 0.9],
                                    return_mode="median")
        return Timing(q[0], q[1], q[2], repeats)
    except ImportError:
        pass
    samples = []
    for i in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn(i)
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b))
    return summarize(samples)


def measure(fn: Callable[[int], object], device: torch.device, *, repeats: int, warmup: int,
            rotations: int = 1) -> Timing:
    if device.type == "cuda":
        return time_gpu(fn, repeats=repeats, warmup=warmup)
    return time_cpu(fn, repeats=repeats, warmup=warmup, rotations=rotations)


def copy_bandwidth_gbps(device: torch.device, nbytes: int | None = None, repeats: int = 20) -> float:
    """Measured device copy bandwidth: bytes read + bytes written per second by dst.copy_(src), over a buffer
    several times the last-level cache (CPU) or 1 GiB (GPU)."""
    if nbytes is None:
        nbytes = (1 << 30) if device.type == "cuda" else 8 * last_level_cache_bytes()
    n = nbytes // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    t = measure(lambda i: dst.copy_(src), device, repeats=repeats, warmup=3)
    return 2 * nbytes / (t.median_ms * 1e-3) / 1e9
