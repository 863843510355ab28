"""The deployment runtimes as anchors, measured side by side in one process in interleaved rounds (one call of each
per round, in a rotated order, so that a slow phase of a shared machine hits every runtime alike).

CPU (LatticeNet x4 inference, float32; cases: LR 320x180, a batch of 8 at LR 128x128, LR 1280x720 with the library
tiled and untiled): this
library's ``cpu`` backend; torch eager and torch.compile of the plain model (lattice_kernels/models/reference.py);
the plain model exported to ONNX (lattice_kernels.export_onnx, static shape: the case's) run by ONNX Runtime (all
graph optimisations, intra-op threads = torch's) and by OpenVINO (CPU, f32, latency hint, the same threads). In the
tiled case the library runs lattice_kernels.inference.run in tiles with the whole-image statistics (the exact
result), the runtimes the whole frame untiled (they fit in memory here); the plain model there, and torch.compile
of it at batch 8, are left out of the timed rounds for time (eager runs once, for the reference output).
GPU (LR 256x256, float32 and float16): the library's ``cuda`` and ``triton`` backends and torch eager against the
exported model in ONNX Runtime's CUDA execution provider (inputs and outputs bound on the GPU),
skipped with the reason when there is no CUDA device or no CUDA provider.

Reported per runtime: the median time, its time as a ratio to this library's (median and range of the per-round
ratios: > 1 is slower than the library) and the max |difference| of its output from the eager plain model's.

    python -m bench.deploy '{"device": "cpu", "cases": [{"shape": [1, 3, 180, 320], "rounds": 10},
                                                        {"shape": [1, 3, 720, 1280], "rounds": 2, "tile": 512,
                                                         "plain": []}]}'
    python -m bench.deploy '{"device": "cpu", "shape": [1, 3, 180, 320], "rounds": 10}'     # one case
    python -m bench.deploy '{"device": "cpu", "cases": [{"shape": [1, 3, 180, 320], "rounds": 10, "prime": 1,
        "peer_defaults": true}], "record": "bench/results/deploy-peers-<cpu>.json"}'   # a peers record
(run by models_bench; prints one JSON line per case and dtype)."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

import lattice_kernels as lk
from lattice_kernels import inference, ops
from lattice_kernels.export import export_onnx
from lattice_kernels.models.reference import PlainLatticeNet

from .rounds import per_round_ratios, ratio_summary, run_rounds


def _plain_and_library(backends: list[str], device: str, dtype: torch.dtype):
    torch.manual_seed(0)
    plain = PlainLatticeNet(4).eval()
    models = {"eager": plain}
    for b in backends:
        net = lk.LatticeNet(4, backend=b).eval()
        net.load_state_dict(plain.state_dict())
        models[b] = net
    return {k: m.to(device, dtype) for k, m in models.items()}


def _onnxruntime(path: Path, x: torch.Tensor, threads: int, cuda: bool):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    providers = [("CUDAExecutionProvider", {"device_id": x.device.index or 0})] if cuda else []
    session = ort.InferenceSession(str(path), opts, providers=[*providers, "CPUExecutionProvider"])
    if cuda and session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"onnxruntime did not take the CUDA execution provider (got {session.get_providers()})")
    name = session.get_inputs()[0].name
    if not cuda:
        return lambda t: torch.from_numpy(session.run(None, {name: t.numpy()})[0])
    import numpy as np

    np_dtype = np.float16 if x.dtype == torch.float16 else np.float32
    out = torch.empty((x.shape[0], 3, 4 * x.shape[2], 4 * x.shape[3]), device=x.device, dtype=x.dtype)
    binding = session.io_binding()
    binding.bind_input(name, "cuda", x.device.index or 0, np_dtype, tuple(x.shape), x.data_ptr())
    binding.bind_output(session.get_outputs()[0].name, "cuda", x.device.index or 0, np_dtype, tuple(out.shape),
                        out.data_ptr())

    def call(t):  # the bound input x (t is x)
        session.run_with_iobinding(binding)
        return out

    return call


def _openvino(path: Path, x: torch.Tensor, threads: int, precision: str | None = "f32"):
    """OpenVINO on the CPU, latency hint, `threads` threads; precision "f32" forced, or None: its own default (bf16
    where the CPU has it, f32 otherwise). Returns (call, the inference precision it compiled with)."""
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()

    def call(t):
        request.infer({0: t.numpy()})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return call, precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))


def precision_name(t) -> str:
    """An OpenVINO element type as its short name ('f32', 'bf16'); its repr was "<Type: 'float32'>"."""
    name = t.get_type_name() if hasattr(t, "get_type_name") else str(t)
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(name.split("'")[1] if "'" in name else name,
                                                                        name)


# The runners' names in the records' tables (peers_table here, bench/peers_memory.py's memory_table).
RUNNER_NAMES = {"cpu": "lattice_kernels `cpu`", "cpu-bf16-autocast": "lattice_kernels `cpu` under bf16 autocast",
                "cpu-no-workspace": "lattice_kernels `cpu`, CPU workspace off",
                "eager": "eager PyTorch (plain model)", "compile": "torch.compile (plain model)",
                "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO, f32 forced",
                "openvino-default": "OpenVINO, its defaults"}


def peers_table(record: dict) -> str:
    """Markdown of a recorded peers run (bench/results/deploy-peers-*.json): per case each runner's median time,
    its time over the library's float32 (median and range of the per-round ratios) and the precision it ran in."""
    env = record["environment"]
    caps = f" (OpenVINO's capabilities here: {', '.join(env['openvino_capabilities'])})" \
        if "openvino_capabilities" in env else ""
    lines = [f"Measured on {env['cpu']}, {env['threads']} threads, {env['date']}: torch {env['torch']}, ONNX "
             f"Runtime {env['onnxruntime']}, OpenVINO {env['openvino']}{caps}, {env['malloc']}"
             + (f", the library's CPU workspace {env['cpu_workspace']}" if "cpu_workspace" in env else "") + ".", "",
             "| case | runner | precision | median | time / library float32 |", "|---|---|---|---|---|"]
    for row in record["rows"]:
        n, _, h, w = row["shape"]
        case = (f"batch {n} of " if n > 1 else "") + f"LR {w}x{h} ({row['rounds']} rounds)"
        for k, ms in row["median_ms"].items():
            lo, hi = row["ratio_range"][k]
            prec = row["precision"].get(k, row["dtype"])
            lines.append(f"| {case} | {RUNNER_NAMES.get(k, k)} | {precision_name(prec)} | {ms:.1f} ms | "
                         f"{row['ratio_to_library'][k]:.2f}x ({lo:.2f}-{hi:.2f}) |")
    return "\n".join(lines)


def _library_call(model, tile: int | None, stats: str):
    """The library's call on an input: the fused model itself, or lattice_kernels.inference.run in tiles of `tile`
    input pixels with `stats` ("global": the whole-image statistics, the exact result, the inference API's default;
    "tile": each tile's own, one pass, blended overlaps, approximate)."""
    if tile is None:
        return model
    # float32 here; the bf16 runner wraps this call in autocast (run's float32 leaves the caller's autocast on)
    return lambda t: inference.run(model, t, scale=4, tile=tile, stats=stats, dtype=torch.float32)


def run_one(device: str, case: dict, dtype: torch.dtype, tmp: Path) -> dict:
    """case: shape (N, 3, H, W), rounds, warmup (default 2), peer_defaults (also OpenVINO at its own default
    precision and the library under bf16 autocast; default False), prime (untimed calls right before each timed one,
    default 0: a 0.2 s pause instead on CPU; see run_rounds), tile (the library's tile size; None: the whole input),
    stats (of the tiles, default "global"; see _library_call), workspace_off (also the library with its CPU
    workspace turned off, default False), plain: which of "eager" and "compile" (the plain
    model; compile on CPU only) are timed too (default both; an untimed eager runs once, for the reference output)."""
    shape, rounds, tile = case["shape"], case["rounds"], case.get("tile")
    threads = torch.get_num_threads()
    dev = torch.device(device)
    lib = [b for b in (["cpu"] if device == "cpu" else ["cuda", "triton"]) if b in lk.available_backends()]
    models = _plain_and_library(lib, device, dtype)
    x = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 255).to(device, dtype)
    # CPU: calls alternate between x and a second input of the same shape, so that a timed call never repeats the
    # call before it (with priming, its own runtime's) on the same data; call 0, compared, is on x. GPU: x alone
    # (ONNX Runtime's inputs are bound to it).
    inputs = [x] + ([(torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 255).to(dtype)]
                    if device == "cpu" else [])

    def on_input(fn):
        return lambda i: fn(inputs[i % len(inputs)])
    plain = case.get("plain", ["eager", "compile"])
    stats = case.get("stats", "global")
    calls = {b: on_input(_library_call(models[b], tile, stats)) for b in lib}
    precision = {b: str(dtype).replace("torch.", "") for b in lib}
    if case.get("peer_defaults") and device == "cpu" and "cpu" in lib and dtype == torch.float32:
        # the library's reduced-precision mode: the same model under bf16 autocast
        library_call = _library_call(models["cpu"], tile, stats)

        def bf16(t):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return library_call(t)

        calls["cpu-bf16-autocast"] = on_input(bf16)
        default = inference.default_dtype(models["cpu"], "cpu") == torch.bfloat16
        precision["cpu-bf16-autocast"] = "bf16 autocast" + (" (the inference default on this CPU)" if default else "")
    if case.get("workspace_off") and device == "cpu" and "cpu" in lib:
        # the library with its CPU workspace turned off: every buffer from torch's allocator (ops/cpu_workspace.py)
        library_call = _library_call(models["cpu"], tile, stats)

        def no_workspace(t):
            ops.set_cpu_workspace(False)
            try:
                return library_call(t)
            finally:
                ops.set_cpu_workspace(True)

        calls["cpu-no-workspace"] = on_input(no_workspace)
        precision["cpu-no-workspace"] = str(dtype).replace("torch.", "")
    if "eager" in plain:
        calls["eager"] = on_input(models["eager"])
    if "compile" in plain and device == "cpu":
        torch._dynamo.reset()  # compiled for this case's shape alone (no automatic dynamic shapes)
        compiled = torch.compile(models["eager"])
        calls["compile"] = on_input(compiled)
    left_out = [n for n in ("eager", "compile") if n not in plain]
    not_timed = {", ".join(left_out): "not timed in this case (make bench's time budget)"
                 + ("; eager ran once, for the reference output" if "eager" in left_out else "")} if left_out else {}
    skipped = {}
    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None:
        skipped["onnx export"] = "onnx/onnxscript not installed (pip install 'lattice_kernels[deploy]')"
    else:
        path = export_onnx(models["eager"].cpu(), x.cpu(), tmp / f"plain_x4_{'x'.join(map(str, shape))}_{dtype}.onnx"
                           .replace("torch.", ""), dynamic_batch=False, dynamic_hw=False, dtype=dtype)
        models["eager"].to(device)
        if importlib.util.find_spec("onnxruntime") is None:
            skipped["onnxruntime"] = "onnxruntime not installed (pip install 'lattice_kernels[deploy]')"
        else:
            import onnxruntime as ort

            if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
                skipped["onnxruntime-cuda"] = ("onnxruntime has no CUDA execution provider here (pip install "
                                               "onnxruntime-gpu)")
            else:
                run = _onnxruntime(path, x, threads, device == "cuda")
                calls["onnxruntime-cuda" if device == "cuda" else "onnxruntime"] = on_input(run)
        if device == "cpu":
            if importlib.util.find_spec("openvino") is None:
                skipped["openvino"] = "openvino not installed (pip install 'lattice_kernels[deploy]')"
            else:
                run, precision["openvino"] = _openvino(path, x, threads)
                calls["openvino"] = on_input(run)
                if case.get("peer_defaults"):
                    run, precision["openvino-default"] = _openvino(path, x, threads, None)
                    calls["openvino-default"] = on_input(run)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize(dev)

    warmup = case.get("warmup", 2)
    prime = case.get("prime", 0)
    with torch.no_grad():
        # the outputs compared (each call's own, before the timed rounds; its first call is also a warm-up)
        outputs = {n: call(0) for n, call in calls.items()}
        ref = (outputs["eager"] if "eager" in outputs else models["eager"](x)).float().cpu()
        max_diff = {n: (o.float().cpu() - ref).abs().max().item() for n, o in outputs.items()}
        del outputs
        # CPU: before each sample either `prime` untimed calls of the same runtime (the steady state of calls made
        # back to back, as a video or a batch of files runs; the untimed call absorbs the previous runtime's
        # spinning worker threads and the slow start a VM's idle vCPU makes) or, where a call takes seconds and two
        # would not fit make bench's time, a 0.2 s pause so that those threads (ONNX Runtime's, OpenVINO's,
        # OpenMP's) have gone to sleep and take no core from this one. GPU: several calls per sample, a ms-scale
        # call is too short alone.
        samples = run_rounds(calls, rounds, warmup=max(0, warmup - 1), reps=1 if device == "cpu" else 10,
                             pause_s=0.2 if device == "cpu" and not prime else 0.0, prime=prime, sync=sync)
    base = lib[0] if lib else "eager"
    ratio, spread = {}, {}
    for n in samples:
        ratio[n], spread[n] = ratio_summary(per_round_ratios(samples, n, base))
    versions = {m: str(getattr(__import__(m), "__version__", None)).split("-")[0] for m in ("onnxruntime", "openvino")
                if importlib.util.find_spec(m) is not None}
    out = {"device": device, "shape": shape, "dtype": str(dtype).replace("torch.", ""), "rounds": rounds,
           "threads": threads, "baseline": base, "median_ms": {n: statistics.median(s) for n, s in samples.items()},
           "ratio_to_library": ratio, "ratio_range": spread, "max_abs_diff_vs_eager": max_diff,
           "samples_ms": samples, "skipped": skipped, "versions": versions, "precision": precision,
           "sample": (f"each timed call right after {prime} untimed one(s) of the same runtime, calls alternating "
                      "between two inputs" if prime else
                      "each timed call after a 0.2 s pause" if device == "cpu" else "10 calls per sample")}
    if tile is not None:
        how = ("plus the receptive halo, whole-image statistics gathered in passes over the tiles, the same output "
               "as untiled" if stats == "global" else "overlapping, each with its own statistics, the overlaps "
               "blended (approximate)")
        out.update(tile=tile, stats=stats, runtimes_input="the whole frame, untiled",
                   library=f"lattice_kernels.inference.run(tile={tile}, stats='{stats}'): tiles of {tile} input "
                           f"pixels {how}")
    if not_timed:
        out["not_timed"] = not_timed
    return out


def environment() -> dict:
    """What a peers record needs to be read: the CPU and its instruction sets, the allocator settings of this
    process, the versions, OpenVINO's capabilities on this CPU, the date."""
    import datetime
    import os
    import platform

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    flags = set(next((ln.split(":", 1)[1].split() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("flags")), [])) if Path("/proc/cpuinfo").exists() else set()
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile") if f in flags]
    tuning = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    libc = " ".join(platform.libc_ver())
    env = {"cpu": f"{cpu} ({', '.join(isa)})", "threads": torch.get_num_threads(),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "torch": torch.__version__,
           "malloc": (f"{libc} malloc with {tuning}" if tuning else
                      f"{libc}'s default malloc (no allocator settings in the environment)"),
           "cpu_workspace": "on" if ops.cpu_workspace_enabled() else "off"}
    for m in ("onnxruntime", "openvino"):
        if importlib.util.find_spec(m) is not None:
            env[m] = str(__import__(m).__version__).split("-")[0]
    if importlib.util.find_spec("openvino") is not None:
        import openvino as ov

        env["openvino_capabilities"] = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return env


def main() -> None:
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    device = cfg.get("device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"device": "cuda", "skipped": {"all": "no CUDA device (torch.cuda.is_available() is "
                                                               "False)"}}))
        return
    cases = cfg.get("cases") or [{"shape": cfg.get("shape", [1, 3, 180, 320] if device == "cpu" else [1, 3, 256, 256]),
                                  "rounds": cfg.get("rounds", 10)}]
    dtypes = cfg.get("dtypes", ["float32"] if device == "cpu" else ["float32", "float16"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            for d in dtypes:
                rows.append(run_one(device, case, getattr(torch, d), Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    if cfg.get("record"):  # a peers record: bench/results/deploy-peers-*.json, read by peers_table
        Path(cfg["record"]).write_text(json.dumps({"environment": {**environment(), "command": " ".join(sys.argv)},
                                                   "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
