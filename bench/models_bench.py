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
    rounds: int = 1      # runs per backend, interleaved; the lower median is kept (see run)


# The headline ratio, also measured side by side in one process (bench/interleaved.py).
INTERLEAVED = [{"case": f"LatticeNet x4 infer LR 320x180{suffix}, interleaved in one process",
                "shape": [1, 3, 180, 320], "layout": layout, "rounds": 12}
               for suffix, layout in (("", "nchw"), (" channels_last", "nhwc"))]


def cases_for(device: str, quick: bool) -> list[Case]:
    # (on GPU the LatticeNet cases come first, see below)
    out = [Case("lattice_block 1x64x180x320 fwd", "block", "infer", (1, 64, 180, 320)),
           Case("lattice_block 1x64x180x320 fwd", "block_convs", "infer", (1, 64, 180, 320)),
           Case("lattice_block 1x64x180x320 fwd+bwd", "block", "train", (1, 64, 180, 320)),
           Case("lattice_block 1x64x180x320 fwd+bwd", "block_convs", "train", (1, 64, 180, 320))]
    if device == "cpu":
        # The headline cases run twice per backend (interleaved, lower median kept); the rest once, which
        # keeps make bench under 10 minutes.
        out += [Case("LatticeNet x4 infer LR 320x180", "latticenet", "infer", (1, 3, 180, 320), rounds=2),
                Case("LatticeNet x4 infer LR 320x180 channels_last", "latticenet", "infer", (1, 3, 180, 320),
                     layout="nhwc", rounds=2),
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
    """eager / compile: the plain model; <lib> / compile+<lib>: the fused model. The convolutions alone: torch's
    (eager, compile) and the library's conv3x3 on each backend (on GPUs that is torch's convolution again)."""
    if case.model == "block_convs":
        return ["eager", "compile", *(b for b in lib if device == "cpu")]
    if device == "cuda":  # one compiled fused model (the first GPU backend) to keep the run short
        return ["eager", "compile", *lib, f"compile+{lib[0]}"] if lib else ["eager", "compile"]
    return ["eager", "compile"] + lib + [f"compile+{b}" for b in lib]


def run(device: torch.device, names: list[str] | None, quick: bool, repeats: int,
        lib: list[str] | None = None, deadline: float | None = None, skipped: list[str] | None = None) -> list[dict]:
    """Each (case, backend) runs in its own process, case.rounds times with the backends interleaved (eager,
    compile, ..., eager, compile, ...), and the run with the lower median is kept: the shared CPU of a VM has
    phases of seconds where everything runs up to ~1.8x slower (seen in plain sgemm), and a phase that hits one
    backend's only run would decide its ratio."""
    import time

    from .common import library_backends

    lib = lib if lib is not None else library_backends(device, None)
    rows = []
    for case in cases_for(device.type, quick):
        if names and not any(n in case.name for n in names):
            continue
        label = case.name + (" (convs only)" if case.model == "block_convs" else "")
        best: dict[str, dict] = {}
        for _ in range(1 if quick else case.rounds):
            for backend in backends_for(device.type, case, lib):
                if deadline and time.monotonic() > deadline:
                    if skipped is not None and backend not in best:
                        skipped.append(f"{case.name} {backend}")
                    continue
                row = _run_case(case, backend, device, repeats)
                prev = best.get(backend)
                medians = [*(prev["round_medians_ms"] if prev else []), row["median_ms"]]
                if prev is None or row["median_ms"] < prev["median_ms"]:
                    best[backend] = row
                best[backend]["round_medians_ms"] = medians
                print(f"  {label:58s} {backend:14s} {row['median_ms']:10.1f} ms  peak {row['peak_mem_MB']:8.0f} MiB",
                      flush=True)
        for backend, row in best.items():
            row.update(kind="model", case=label, backend=backend)
            rows.append(row)
    _ratios(rows)
    for cfg in INTERLEAVED if device.type == "cpu" and not quick else []:
        if names and not any(n in cfg["case"] for n in names):
            continue
        if deadline and time.monotonic() > deadline:
            if skipped is not None:
                skipped.append(cfg["case"])
            continue
        rows.append(_run_interleaved(cfg, lib))
    if not quick and not (names and not any(n in DEPLOY_CASE for n in names)):
        if deadline and time.monotonic() > deadline:
            if skipped is not None:
                skipped.append(DEPLOY_CASE)
        else:
            rows.extend(run_deploy(device.type))
    return rows


# The deployment runtimes against the library (bench/deploy.py): CPU at LR 320x180 float32; GPU (make gpu-check's
# benchmark stage) at LR 256x256 float32 and float16.
DEPLOY_CASE = "deployment runtimes"
DEPLOY = {"cpu": {"device": "cpu", "shape": [1, 3, 180, 320], "rounds": 10},
          "cuda": {"device": "cuda", "shape": [1, 3, 256, 256], "rounds": 20, "dtypes": ["float32", "float16"]}}


def run_deploy(device: str, rounds: int | None = None) -> list[dict]:
    """One row (kind "deploy") per dtype; a row with only "skipped" when the case cannot run here."""
    cfg = {**DEPLOY[device], **({"rounds": rounds} if rounds else {})}
    r = subprocess.run([sys.executable, "-m", "bench.deploy", json.dumps(cfg)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"deployment benchmark failed:\n{r.stderr[-4000:]}")
    rows = []
    for line in r.stdout.strip().splitlines():
        res = json.loads(line)
        h, w = cfg["shape"][2:]
        res.update(kind="deploy", case=f"LatticeNet x4 infer LR {w}x{h} {res.get('dtype', '')} "
                                       f"{device}, deployment runtimes".replace("  ", " "))
        for what, why in res.get("skipped", {}).items():
            print(f"  {res['case']}: {what} skipped: {why}", flush=True)
        if res.get("ratio_to_library"):
            print(f"  {res['case']} ({res['rounds']} interleaved rounds, time / {res['baseline']}): " + ", ".join(
                f"{n} {res['median_ms'][n]:.1f} ms {res['ratio_to_library'][n]:.2f}x "
                f"[{res['ratio_range'][n][0]:.2f}-{res['ratio_range'][n][1]:.2f}] "
                f"max|diff| {res['max_abs_diff_vs_eager'][n]:.1e}" for n in res["median_ms"]), flush=True)
        rows.append(res)
    return rows


def _run_interleaved(case: dict, lib: list[str]) -> dict:
    backends = ["eager", "compile", *lib, *(f"compile+{b}" for b in lib)]
    cfg = {**case, "backends": backends}
    r = subprocess.run([sys.executable, "-m", "bench.interleaved", json.dumps(cfg)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"interleaved benchmark failed:\n{r.stderr[-4000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    med, pr = res["median_ms"], res["paired_ratio"]
    print(f"  {cfg['case']} ({cfg['rounds']} rounds): "
          + ", ".join(f"{b} {med[b]:.1f} ms" for b in backends), flush=True)
    for b in backends[2:]:
        plain = "compile" if b.startswith("compile") else "eager"
        print(f"    {b} vs {plain} plain (median of per-round ratios): {pr[f'{plain}/{b}']:.2f}x", flush=True)
    return {"kind": "interleaved", "case": cfg["case"], "rounds": cfg["rounds"], "median_ms": med,
            "paired_ratio": pr, "samples_ms": res["samples_ms"]}


def _run_case(case: Case, backend: str, device: torch.device, repeats: int) -> dict:
    cfg = {"case": asdict(case), "backend": backend, "device": device.type,
           "repeats": max(3, repeats // 3) if case.model == "latticenet" else repeats}
    r = subprocess.run([sys.executable, "-m", "bench.model_case", json.dumps(cfg)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"model benchmark {case.name} / {backend} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


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
