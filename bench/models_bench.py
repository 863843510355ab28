"""Model benchmarks: a whole LatticeBlock (and its convolutions alone, for scale), LatticeNet x4 inference and a
training step, plain model (eager, torch.compile) against the fused model (eager, torch.compile). Each case runs
in a fresh process so that its peak memory is its own: CUDA max_memory_allocated on GPU; on CPU the peak resident
set during the timed calls (VmHWM, reset after warm-up) minus the resident set before the first call."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass

import torch


@dataclass
class Case:
    name: str            # row label
    model: str           # "block", "block_convs", "latticenet"
    mode: str            # "infer" or "train"
    shape: tuple         # input (N, C, H, W)
    dtype: str = "float32"
    layout: str = "nchw"
    cudagraphs: bool = False


def cases_for(device: str, quick: bool) -> list[Case]:
    # (on GPU the LatticeNet cases come first, see below)
    out = [Case("lattice_block 1x64x180x320 fwd", "block", "infer", (1, 64, 180, 320)),
           Case("lattice_block 1x64x180x320 fwd", "block_convs", "infer", (1, 64, 180, 320)),
           Case("lattice_block 1x64x180x320 fwd+bwd", "block", "train", (1, 64, 180, 320)),
           Case("lattice_block 1x64x180x320 fwd+bwd", "block_convs", "train", (1, 64, 180, 320))]
    if device == "cpu":
        out += [Case("LatticeNet x4 infer LR 320x180", "latticenet", "infer", (1, 3, 180, 320)),
                Case("LatticeNet x4 infer LR 320x180 channels_last", "latticenet", "infer", (1, 3, 180, 320),
                     layout="nhwc"),
                Case("LatticeNet x4 train step b16 LR 48", "latticenet", "train", (16, 3, 48, 48))]
    else:  # in order of priority (see --max-minutes): the figures users compare first
        out += [Case("LatticeNet x4 infer LR 256x256 bfloat16", "latticenet", "infer", (1, 3, 256, 256), "bfloat16"),
                Case("LatticeNet x4 train step b16 LR 48", "latticenet", "train", (16, 3, 48, 48)),
                Case("LatticeNet x4 infer LR 256x256 float32", "latticenet", "infer", (1, 3, 256, 256)),
                Case("LatticeNet x4 infer LR 320x180 bfloat16", "latticenet", "infer", (1, 3, 180, 320), "bfloat16"),
                Case("LatticeNet x4 infer LR 320x180 float32", "latticenet", "infer", (1, 3, 180, 320)),
                Case("LatticeNet x4 infer LR 256x256 bfloat16 channels_last", "latticenet", "infer",
                     (1, 3, 256, 256), "bfloat16", "nhwc"),
                Case("LatticeNet x4 infer LR 256x256 float32 channels_last", "latticenet", "infer", (1, 3, 256, 256),
                     layout="nhwc"),
                Case("LatticeNet x4 infer LR 256x256 bfloat16 cudagraphs", "latticenet", "infer", (1, 3, 256, 256),
                     "bfloat16", cudagraphs=True),
                Case("LatticeNet x4 train step b16 LR 48 bfloat16", "latticenet", "train", (16, 3, 48, 48),
                     "bfloat16")]
    if device == "cuda":
        out = out[4:] + out[:4]
    if quick:
        out = [c for c in out if c.model != "latticenet" or c.mode == "infer"][:6]
    return out


def backends_for(device: str, case: Case, lib: list[str]) -> list[str]:
    """eager / compile: the plain model; <lib> / compile+<lib>: the fused model. The convolutions alone have no
    fused form (they are the same convolutions)."""
    if case.model == "block_convs":
        return ["eager", "compile"]
    if device == "cuda":  # one compiled fused model (the first GPU backend) to keep the run short
        return ["eager", "compile", *lib, f"compile+{lib[0]}"] if lib else ["eager", "compile"]
    return ["eager", "compile"] + lib + [f"compile+{b}" for b in lib]


def run(device: torch.device, names: list[str] | None, quick: bool, repeats: int,
        lib: list[str] | None = None, deadline: float | None = None, skipped: list[str] | None = None) -> list[dict]:
    import time

    from . import __main__ as cli

    lib = lib if lib is not None else cli.library_backends(device, None)
    rows = []
    for case in cases_for(device.type, quick):
        if names and not any(n in case.name for n in names):
            continue
        for backend in backends_for(device.type, case, lib):
            if deadline and time.monotonic() > deadline:
                if skipped is not None:
                    skipped.append(f"{case.name} {backend}")
                continue
            cfg = {"case": asdict(case), "backend": backend, "device": device.type,
                   "repeats": max(3, repeats // 3) if case.model == "latticenet" else repeats}
            r = subprocess.run([sys.executable, "-m", "bench.model_case", json.dumps(cfg)], capture_output=True,
                               text=True)
            if r.returncode != 0:
                raise RuntimeError(f"model benchmark {case.name} / {backend} failed:\n{r.stderr[-4000:]}")
            row = json.loads(r.stdout.strip().splitlines()[-1])
            label = case.name + (" (convs only)" if case.model == "block_convs" else "")
            row.update(kind="model", case=label, backend=backend)
            rows.append(row)
            print(f"  {label:58s} {backend:14s} {row['median_ms']:10.1f} ms  peak {row['peak_mem_MB']:8.0f} MiB",
                  flush=True)
    _ratios(rows)
    return rows


def _ratios(rows: list[dict]) -> None:
    """vs_eager and vs_compile against the plain model's eager and torch.compile rows of the same case; fused
    compiled rows are compared with the plain compiled row. (The "(convs only)" rows are reported as measured; a
    difference of two such medians is too noisy on a shared CPU to stand for the block's non-conv work.)"""
    by_case: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[r["backend"]] = r
    for group in by_case.values():
        eager, comp = group.get("eager"), group.get("compile-max") or group.get("compile")
        for r in group.values():
            if eager:
                r["vs_eager"] = eager["median_ms"] / r["median_ms"]
            if comp:
                r["vs_compile"] = comp["median_ms"] / r["median_ms"]
