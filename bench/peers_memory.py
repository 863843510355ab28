"""Peak memory per call of each CPU inference runner of bench/deploy.py (LatticeNet x4), each in a fresh process of
its own: the library's ``cpu`` backend (float32, bf16 autocast, and with its CPU workspace off), eager PyTorch of
the plain model, ONNX Runtime (float32) and OpenVINO (f32 forced, and its defaults) on the plain model's ONNX export.

Per process: build the runner, read the resident memory (VmRSS), make 2 warm-up calls, reset the peak (VmHWM), make
3 calls; reported: the peak over the calls minus the resident memory before the first call (what the calls add, the
memory a runner keeps between calls included: arenas, workspaces, caches) and the whole process's peak, for each
runner's median process of `processes` (default 3), with the range.

    python -m bench.peers_memory '{"shape": [1, 3, 180, 320], "processes": 3,
                                   "record": "bench/results/peers-memory-<cpu>.json"}'
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from . import deploy
from .model_case import _proc_status_mib, _reset_peak_rss

RUNNERS = ("cpu", "cpu-bf16-autocast", "cpu-no-workspace", "eager", "onnxruntime", "openvino", "openvino-default")
CALLS = 3


def _runner(name: str, x: torch.Tensor, tmp: Path):
    """(call, precision) of one runner on inputs shaped like x."""
    from lattice_kernels import ops
    from lattice_kernels.export import export_onnx

    models = deploy._plain_and_library(["cpu"] if name.startswith("cpu") else [], "cpu", torch.float32)
    if name == "cpu":
        return models["cpu"], "float32"
    if name == "cpu-bf16-autocast":
        net = models["cpu"]

        def bf16(t):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return net(t)
        return bf16, "bf16 autocast"
    if name == "cpu-no-workspace":
        ops.set_cpu_workspace(False)
        return models["cpu"], "float32"
    if name == "eager":
        return models["eager"], "float32"
    path = export_onnx(models["eager"], x, tmp / "plain_x4.onnx", dynamic_batch=False, dynamic_hw=False,
                       dtype=torch.float32)
    del models
    threads = torch.get_num_threads()
    if name == "onnxruntime":
        return deploy._onnxruntime(path, x, threads, cuda=False), "float32"
    return deploy._openvino(path, x, threads, "f32" if name == "openvino" else None)


def measure(name: str, shape: list[int]) -> dict:
    """One runner in this process: the JSON row described in the module docstring."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 255
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        call, precision = _runner(name, x, Path(tmp))
        before = _proc_status_mib("VmRSS")
        for _ in range(2):
            call(x)
        _reset_peak_rss()
        for _ in range(CALLS):
            call(x)
        peak = _proc_status_mib("VmHWM")
    return {"runner": name, "precision": precision, "shape": shape, "rss_before_MiB": before,
            "peak_rss_MiB": peak, "peak_over_before_MiB": peak - before}


def run(shape: list[int], runners: tuple[str, ...] = RUNNERS, processes: int = 3) -> tuple[list[dict], dict]:
    """Each runner in `processes` fresh processes, the runners in turn (a process's added memory varies by +-10%
    from one to the next: 141-178 MiB for the library's float32 in two runs on the 2-core EPYC, 2026-12-07);
    (rows, skipped: runner -> why). A row is a runner's median process (by the memory added) with every process's
    numbers."""
    skipped = {}
    todo = []
    for name in runners:
        module = {"onnxruntime": "onnxruntime", "openvino": "openvino", "openvino-default": "openvino"}.get(name)
        if module and (importlib.util.find_spec(module) is None or importlib.util.find_spec("onnxscript") is None):
            skipped[name] = f"{module} or onnxscript not installed (pip install 'lattice_kernels[deploy]')"
        else:
            todo.append(name)
    samples: dict[str, list[dict]] = {name: [] for name in todo}
    for _ in range(processes):
        for name in todo:
            r = subprocess.run([sys.executable, "-m", "bench.peers_memory",
                                json.dumps({"one": name, "shape": shape})], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"memory run of {name} failed:\n{r.stderr[-4000:]}")
            samples[name].append(json.loads(r.stdout.strip().splitlines()[-1]))
            row = samples[name][-1]
            print(f"  {name:18s} {row['precision']:14s} +{row['peak_over_before_MiB']:7.0f} MiB over the "
                  f"resident memory before the calls (process peak {row['peak_rss_MiB']:.0f} MiB)", flush=True)
    rows = []
    for name in todo:
        ordered = sorted(samples[name], key=lambda r: r["peak_over_before_MiB"])
        rows.append({**ordered[(len(ordered) - 1) // 2],
                     "processes_added_MiB": [r["peak_over_before_MiB"] for r in samples[name]],
                     "processes_peak_MiB": [r["peak_rss_MiB"] for r in samples[name]]})
    return rows, skipped


def memory_table(record: dict) -> str:
    """Markdown of a recorded run (bench/results/peers-memory-*.json)."""
    env = record["environment"]
    n, _, h, w = record["rows"][0]["shape"]
    lines = [f"LatticeNet x4 at {f'batch {n} of ' if n > 1 else ''}LR {w}x{h}, measured on {env['cpu']}, "
             f"{env['threads']} threads, {env['date']}, {env['malloc']}: {env['method']}.", "",
             "| runner | precision | added by the calls | process peak |", "|---|---|---|---|"]
    for r in record["rows"]:
        name = deploy.RUNNER_NAMES.get(r["runner"], r["runner"])
        added = f"{r['peak_over_before_MiB']:.0f} MiB"
        if len(r.get("processes_added_MiB", [])) > 1:  # the median process, then the range over the processes
            added += f" ({min(r['processes_added_MiB']):.0f}-{max(r['processes_added_MiB']):.0f})"
        lines.append(f"| {name} | {deploy.precision_name(r['precision'])} | {added} | {r['peak_rss_MiB']:.0f} MiB |")
    return "\n".join(lines)


def main() -> None:
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    shape = cfg.get("shape", [1, 3, 180, 320])
    if "one" in cfg:
        print(json.dumps(measure(cfg["one"], shape)))
        return
    processes = int(cfg.get("processes", 3))
    rows, skipped = run(shape, tuple(cfg.get("runners", RUNNERS)), processes)
    if cfg.get("record"):
        env = {**deploy.environment(), "command": " ".join(sys.argv),
               "method": f"each runner in {processes} fresh processes, the runners in turn: VmHWM after 2 warm-up "
                         "calls (reset) and 3 calls, minus VmRSS before the first call; the median process and the "
                         "range"}
        Path(cfg["record"]).write_text(json.dumps({"environment": env, "rows": rows, "skipped": skipped},
                                                  indent=1) + "\n")


if __name__ == "__main__":
    main()
