"""Interleaved rounds: the one timer behind every ratio the benchmarks report (op cases, model cases, deployment
runtimes). The compared callables are built once in one process and warmed (compilation, autotuning and graph
optimisation happen there), then timed in rounds of one sample each, the order rotated by one per round, so that a
slow phase of a shared machine (seconds to minutes on this project's VMs) hits every callable alike, and each
per-round ratio compares samples taken moments apart.

A callable's time is the median of its samples with their p10 and p90; a ratio between two callables is the median
of the per-round ratios, with their range (min-max over the rounds) as its spread."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

from .timing import summarize

SPREAD = "min-max of the per-round ratios"


def rotated(names: Sequence[str], r: int) -> list[str]:
    """The order of round r: names rotated left by r (round 0 in the given order, round 1 from the second, ...)."""
    k = r % len(names)
    return [*names[k:], *names[:k]]


def run_rounds(calls: Mapping[str, Callable[[int], object]], rounds: int, *, warmup: int = 2, reps: int = 1,
               pause_s: float = 0.0, prime: int = 0, sync: Callable[[], object] | None = None,
               clock: Callable[[], float] = time.perf_counter, deadline: float | None = None,
               min_rounds: int = 3, monotonic: Callable[[], float] = time.monotonic) -> dict[str, list[float]]:
    """Warm each callable (`warmup` calls), then time `rounds` rounds; each round takes one sample of every callable,
    in the order rotated(names, round). A sample is `reps` calls between two `sync()`s, in ms per call; each sample
    is preceded by a pause of `pause_s` (so worker threads a runtime leaves spinning after its call go to sleep
    before the next one runs) and by `prime` untimed calls of the same callable (which absorb what the previous
    callable left behind, spinning worker threads included, and the slow start a 2-vCPU VM makes after an idle
    pause: LatticeNet x4 at LR 320x180 on the 2-core Xeon, 2026-11-29, 192 ms back to back, 220 ms after a 0.2 s
    pause, 250-330 ms after 1 s, with no page faults). calls[name](i) makes one call; i counts every call made,
    warm-up and priming included, so a callable that picks its input set as i % k (k = timing.rotation_count)
    never reads the set the call before it read, whichever callable made that one. With a `deadline` (a
    monotonic() time), no round starts after it once `min_rounds` rounds are done: every callable keeps the same
    number of samples, so the per-round ratios stay paired.
    Returns {name: [ms per call, one per round]}."""
    if rounds < 1 or not calls:
        raise ValueError(f"need at least one round and one callable, got {rounds} rounds, {len(calls)} callables")
    names = list(calls)
    i = 0
    for name in names:
        for _ in range(warmup):
            calls[name](i)
            i += 1
    if sync is not None:
        sync()
    gc.collect()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in rotated(names, r):
            if pause_s:
                time.sleep(pause_s)
            for _ in range(prime):
                calls[name](i)
                i += 1
            if sync is not None:
                sync()
            t0 = clock()
            for _ in range(reps):
                calls[name](i)
                i += 1
            if sync is not None:
                sync()
            samples[name].append((clock() - t0) * 1e3 / reps)
        if deadline is not None and r + 1 >= min_rounds and monotonic() > deadline:
            break
    return samples


def per_round_ratios(samples: Mapping[str, Sequence[float]], num: str, den: str) -> list[float]:
    """samples[num][r] / samples[den][r] for every round r."""
    a, b = samples[num], samples[den]
    if len(a) != len(b):
        raise ValueError(f"{num} has {len(a)} rounds and {den} {len(b)}: ratios need the same rounds")
    return [x / y for x, y in zip(a, b)]


def ratio_summary(per_round: Sequence[float]) -> tuple[float, list[float]]:
    """(median, [min, max]) of per-round ratios."""
    return statistics.median(per_round), [min(per_round), max(per_round)]


def time_fields(samples_ms: Sequence[float]) -> dict:
    """median_ms, p10_ms, p90_ms and runs (the number of rounds) of one callable's samples."""
    return summarize(samples_ms).as_dict()


def speedup_fields(samples: Mapping[str, Sequence[float]], name: str, baselines: Mapping[str, str | None]) -> dict:
    """For each (field, baseline) in `baselines` present in `samples`: field = the median over rounds of
    baseline's time / name's time (> 1: `name` is faster), field_range = their [min, max]."""
    out = {}
    for field, base in baselines.items():
        if base is not None and base in samples:
            out[field], out[f"{field}_range"] = ratio_summary(per_round_ratios(samples, base, name))
    return out
