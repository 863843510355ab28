"""Model benchmarks: a whole LatticeBlock (and its convolutions alone, for scale), LatticeNet x4 inference and a
training step, plain model (eager, torch.compile) against the fused model (eager, torch.compile).

Times and ratios: per case, every backend in one process, in interleaved rounds (bench/interleaved.py,
bench/rounds.py); each ratio is the median of the per-round ratios, with their range. Peak memory: per
(case, backend) in a fresh process of its own, so that it is that backend's alone (bench/model_case.py): CUDA
max_memory_allocated on GPU; on CPU the peak resident set during the measured calls (VmHWM, reset after warm-up)
minus the resident set before the first call. Those processes provide no time and no time ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from . import report
from .rounds import speedup_fields, time_fields


@dataclass
class Case:
    name: str            # row label
    model: str           # "block", "block_convs", "latticenet"
    mode: str            # "infer" or "train"
    shape: tuple         # input (N, C, H, W)
    dtype: str = "float32"
    layout: str = "nchw"
    cudagraphs: bool = False
    rounds: int | None = None  # interleaved rounds; None: the run's repeats (block cases) or a third of them


MEMORY_REPEATS = 2  # calls measured in each memory process (after its warm-up)


def cases_for(device: str, quick: bool) -> list[Case]:
    # (on GPU the LatticeNet cases come first, see below)
    out = [Case("lattice_block 1x64x180x320 fwd", "block", "infer", (1, 64, 180, 320)),
           Case("lattice_block 1x64x180x320 fwd", "block_convs", "infer", (1, 64, 180, 320)),
           Case("lattice_block 1x64x180x320 fwd+bwd", "block", "train", (1, 64, 180, 320)),
           Case("lattice_block 1x64x180x320 fwd+bwd", "block_convs", "train", (1, 64, 180, 320))]
    if device == "cpu":
        # The headline cases: 12 rounds of inference (~1.7 s each), 8 of the training step (~4 s each).
        out += [Case("LatticeNet x4 infer LR 320x180", "latticenet", "infer", (1, 3, 180, 320), rounds=12),
                Case("LatticeNet x4 infer LR 320x180 channels_last", "latticenet", "infer", (1, 3, 180, 320),
                     layout="nhwc", rounds=12),
                Case("LatticeNet x4 train step b16 LR 48", "latticenet", "train", (16, 3, 48, 48), rounds=8)]
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
    """eager / compile: the plain model; <lib> / compile+<lib>: the fused model. The convolutions alone: torch's
    (eager, compile) and the library's conv3x3 on each backend (on GPUs that is torch's convolution again)."""
    if case.model == "block_convs":
        return ["eager", "compile", *(b for b in lib if device == "cpu")]
    if device == "cuda":  # one compiled fused model (the first GPU backend) to keep the run short
        return ["eager", "compile", *lib, f"compile+{lib[0]}"] if lib else ["eager", "compile"]
    return ["eager", "compile"] + lib + [f"compile+{b}" for b in lib]


def run(device: torch.device, names: list[str] | None, quick: bool, repeats: int,
        lib: list[str] | None = None, deadline: float | None = None, skipped: list[str] | None = None,
        on_rows: Callable[[list[dict]], object] | None = None) -> list[dict]:
    """One row per (case, backend): times and paired ratios from the case's interleaved process, peak memory from
    the backend's own process; then the deployment runtimes (CPU, not --quick). With a `deadline`
    (time.monotonic()), no case starts after it, a case's rounds stop there (after three), and the memory
    processes of a case that ends past it are skipped. on_rows(rows) after each case, for a partial report."""
    import time

    from .common import library_backends

    lib = lib if lib is not None else library_backends(device, None)
    rows = []
    for case in cases_for(device.type, quick):
        if names and not any(n in case.name for n in names):
            continue
        label = case.name + (" (convs only)" if case.model == "block_convs" else "")
        backends = backends_for(device.type, case, lib)
        if deadline and time.monotonic() > deadline:
            if skipped is not None:
                skipped.append(f"{label} ({', '.join(backends)})")
            continue
        rounds = 3 if quick else case.rounds or (repeats if case.model != "latticenet" else max(3, repeats // 3))
        case_rows = case_rows_interleaved(case, backends, device, rounds, deadline)
        for row in case_rows:
            if deadline and time.monotonic() > deadline:
                row.update(peak_mem_MB=None)
                if skipped is not None:
                    skipped.append(f"{label} {row['backend']}: peak memory")
            else:
                row.update(_run_memory(case, row["backend"], device))
            peak = "-" if row["peak_mem_MB"] is None else f"{row['peak_mem_MB']:.0f}"
            print(f"  {label:58s} {row['backend']:14s} {row['median_ms']:10.1f} ms  "
                  f"{report.ratio_text(row, 'vs_eager')} vs eager, {report.ratio_text(row, 'vs_compile')} vs "
                  f"compile; peak {peak:>8s} MiB", flush=True)
            row.update(kind="model", case=label)
        eager_mem = next((r["peak_mem_MB"] for r in case_rows if r["backend"] == "eager"), None)
        for row in case_rows:
            if eager_mem and eager_mem > 0 and row["peak_mem_MB"] is not None:
                row["peak_mem_vs_eager"] = row["peak_mem_MB"] / eager_mem
        rows.extend(case_rows)
        if on_rows is not None:
            on_rows(rows)
    if not quick and not (names and not any(n in DEPLOY_CASE for n in names)):
        if deadline and time.monotonic() > deadline:
            if skipped is not None:
                skipped.append(DEPLOY_CASE)
        else:
            rows.extend(run_deploy(device.type))
    return rows


def case_rows_interleaved(case: Case, backends: list[str], device: torch.device, rounds: int,
                          deadline: float | None = None) -> list[dict]:
    """Every backend of `case` timed in `rounds` interleaved rounds in one fresh process (bench/interleaved.py):
    one row per backend with the median time (p10, p90) and vs_eager / vs_compile (the plain model's eager and
    compiled time over this backend's, median and range of the per-round ratios; a fused compiled model is compared
    with the compiled plain one as every other backend is)."""
    import time

    cfg = {"case": asdict(case), "backends": backends, "device": device.type, "rounds": rounds,
           "warmup": 2 if case.model == "latticenet" else 3}
    if deadline is not None:
        cfg["seconds_left"] = deadline - time.monotonic()
    r = subprocess.run([sys.executable, "-m", "bench.interleaved", json.dumps(cfg)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"model benchmark {case.name} ({', '.join(backends)}) failed:\n{r.stderr[-4000:]}")
    samples = json.loads(r.stdout.strip().splitlines()[-1])["samples_ms"]
    comp = "compile-max" if "compile-max" in samples else "compile"
    taken = len(samples[backends[0]])
    cut = {"rounds_cut": f"{taken} of {rounds} rounds (--max-minutes)"} if taken < rounds else {}
    return [{"backend": b, **time_fields(samples[b]), "timing": f"{taken} interleaved rounds in one process", **cut,
             "samples_ms": samples[b], **speedup_fields(samples, b, {"vs_eager": "eager", "vs_compile": comp})}
            for b in backends]


# The deployment runtimes against the library (bench/deploy.py): CPU float32 at LR 320x180, a batch of 8 at LR
# 128x128 (without torch.compile: its compilation alone would take ~1 min) and LR 1280x720 (the library tiled with
# the exact whole-image statistics, ~30 s a call on the 2-core VMs; the runtimes on the whole frame, ~8 s; no plain
# model), which add ~3-4 minutes to make bench; GPU (make gpu-check's benchmark stage) at LR 256x256 float32 and
# float16.
DEPLOY_CASE = "deployment runtimes"
DEPLOY = {"cpu": {"device": "cpu", "cases": [
              {"shape": [1, 3, 180, 320], "rounds": 10, "prime": 1, "peer_defaults": True},
              {"shape": [8, 3, 128, 128], "rounds": 6, "prime": 1, "plain": ["eager"], "peer_defaults": True},
              {"shape": [1, 3, 720, 1280], "rounds": 2, "warmup": 1, "tile": 512, "plain": []},
              # The same frame with the library untiled too: exact tiling costs several passes over the tiles
              # (the coefficients need whole-image statistics), which this row separates from the kernels' speed.
              {"shape": [1, 3, 720, 1280], "rounds": 2, "warmup": 1, "plain": []}]},
          "cuda": {"device": "cuda", "cases": [{"shape": [1, 3, 256, 256], "rounds": 20}],
                   "dtypes": ["float32", "float16"]}}


def deploy_case_label(res: dict, device: str) -> str:
    """'LatticeNet x4 infer [batch N of ]LR WxH[ tiled T] DTYPE DEVICE, deployment runtimes'."""
    if "shape" not in res:
        return f"LatticeNet x4 infer {device}, deployment runtimes"
    n, _, h, w = res["shape"]
    batch = f"batch {n} of " if n > 1 else ""
    tiled = f" tiled {res['tile']}" if res.get("tile") else ""
    tiled += f" (stats {res['stats']})" if res.get("stats", "global") != "global" else ""
    return f"LatticeNet x4 infer {batch}LR {w}x{h}{tiled} {res.get('dtype', '')} {device}, deployment runtimes"


def run_deploy(device: str, cases: list[dict] | None = None) -> list[dict]:
    """One row (kind "deploy") per case and dtype; a row with only "skipped" when the case cannot run here."""
    cfg = {**DEPLOY[device], **({"cases": cases} if cases else {})}
    r = subprocess.run([sys.executable, "-m", "bench.deploy", json.dumps(cfg)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"deployment benchmark failed:\n{r.stderr[-4000:]}")
    rows = []
    for line in r.stdout.strip().splitlines():
        res = json.loads(line)
        res.update(kind="deploy", case=deploy_case_label(res, device))
        for what, why in res.get("skipped", {}).items():
            print(f"  {res['case']}: {what} skipped: {why}", flush=True)
        if res.get("ratio_to_library"):
            print(f"  {res['case']} ({res['rounds']} interleaved rounds, time / {res['baseline']}): " + ", ".join(
                f"{n} {res['median_ms'][n]:.1f} ms {res['ratio_to_library'][n]:.2f}x "
                f"[{res['ratio_range'][n][0]:.2f}-{res['ratio_range'][n][1]:.2f}] "
                f"max|diff| {res['max_abs_diff_vs_eager'][n]:.1e}" for n in res["median_ms"]), flush=True)
        rows.append(res)
    return rows


def _run_memory(case: Case, backend: str, device: torch.device) -> dict:
    """peak_mem_MB and memory_method of (case, backend), measured in a fresh process of its own."""
    cfg = {"case": asdict(case), "backend": backend, "device": device.type, "repeats": MEMORY_REPEATS}
    r = subprocess.run([sys.executable, "-m", "bench.model_case", json.dumps(cfg)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"memory run of {case.name} / {backend} failed:\n{r.stderr[-4000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return {"peak_mem_MB": res["peak_mem_MB"], "memory_method": res["memory_method"]}
