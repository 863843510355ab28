"""python -m bench [--quick] [--ops ...] [--models ...] [--shapes ...] [--dtypes ...] [--backends ...]

Runs the op micro-benchmarks and the model benchmarks on the default device (CUDA when available), prints tables,
and writes JSON and PNG plots named by the device under bench/results/ (or --out)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from . import ops_bench, report
from .common import library_backends
from .rounds import SPREAD
from .timing import copy_bandwidth_gbps

DEFAULT_SHAPES = {"cpu": ["1x64x180x320", "16x64x48x48"],
                  # largest first: with --max-minutes the shape that matters most is measured before the budget ends
                  "cuda": ["1x64x540x960", "1x64x180x320", "16x64x64x64"]}
DEFAULT_LAYOUTS = {"cpu": ["nchw", "nhwc"], "cuda": ["nchw"]}
DEFAULT_DTYPES = {"cpu": ["float32"], "cuda": ["float32", "bfloat16"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats and one shape: a smoke run")
    p.add_argument("--ops", nargs="*", default=None, help=f"ops to run (default all: {', '.join(ops_bench.OPS)}); "
                   "pass no names to skip the op benchmarks")
    p.add_argument("--models", nargs="*", default=None, help="model cases to run (default all); none to skip")
    p.add_argument("--shapes", nargs="+", default=None, help="op shapes as NxCxHxW")
    p.add_argument("--dtypes", nargs="+", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--backends", nargs="+", default=None,
                   help="library backends to compare (default: every available one for the device)")
    p.add_argument("--layouts", nargs="+", default=None, choices=["nchw", "nhwc"],
                   help="memory formats of the op inputs (nhwc = channels_last)")
    p.add_argument("--passes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    p.add_argument("--device", default=None, choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=None,
                   help="interleaved rounds per op case and per block case (default 15 on CPU, 50 on GPU, 5 quick)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                   help="folder for JSON and PNG (default bench/results)")
    p.add_argument("--name", default=None, help="file name stem (default: the device's name)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop starting new measurements after this long (the rest are listed as skipped)")
    p.add_argument("--compile-max", choices=["auto", "yes", "no"], default="auto",
                   help="a second pass of the op groups against torch.compile(mode='max-autotune-no-cudagraphs') "
                        "after the default-mode one (auto: on GPUs)")
    p.add_argument("--malloc", choices=["default", "tuned"], default="default",
                   help="default: glibc's defaults, what a user's process has (no headline may depend on a setting "
                        "users must know). tuned: glibc keeps freed large buffers for reuse instead of unmapping "
                        "them (see TUNED_MALLOC), applied to every backend alike, as the records before 2026-12-07 "
                        "ran.")
    return p.parse_args(argv)


# glibc: serve every allocation from the heap (MALLOC_MMAP_MAX_=0; the 32 MiB threshold applies where mmap stays
# allowed, e.g. a thread arena's allocations too large for its heap) and never trim it, so a freed activation-sized
# buffer is reused by the next allocation instead of being unmapped and faulted in again (measured on the 2-core EPYC:
# butterfly forward+backward at 1x64x180x320 fp32, 478K -> 152K page faults per run and 9.3 -> 3.6 ms).
# jemalloc/tcmalloc (PyTorch's CPU performance guide) have the same effect. Buffers above 32 MiB (glibc's largest
# mmap threshold) would still be mapped fresh on every allocation, zeroed and faulted in by the kernel:
# MALLOC_MMAP_MAX_=0 serves them from the heap too, so they are reused like the others (LatticeNet x4 on the
# library's cpu backend at LR 1280x720, 2-core Xeon, 2026-11-29, three processes of each kind alternating, since glibc
# reads these at start-up; 2nd and 3rd calls: 5.0-6.8 s per call with 236 MB activations mapped fresh, 3.0-4.8 s
# without; the first calls 5.2-7.5 s either way, as the heap grows; at LR 320x180,
# whose activations are under 32 MiB, no change). glibc.malloc.hugetlb=1 (glibc >= 2.35) backs the heap with
# transparent huge pages (2 MiB faults instead of 4 KiB ones when it grows). ONNX Runtime and OpenVINO allocate from
# arenas of their own; every backend runs under the same settings.
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_MMAP_MAX_": "0",
                "MALLOC_TRIM_THRESHOLD_": str(1 << 36), "MALLOC_TOP_PAD_": str(256 << 20),
                "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def _ensure_malloc(mode: str) -> None:
    """glibc reads its tunables at start-up: re-exec this process with them when needed."""
    if mode != "tuned" or os.environ.get("LATTICE_BENCH_MALLOC") == "tuned":
        return
    env = {**os.environ, **TUNED_MALLOC, "LATTICE_BENCH_MALLOC": "tuned"}
    if os.environ.get("GLIBC_TUNABLES"):  # keep the caller's tunables
        env["GLIBC_TUNABLES"] = f"{os.environ['GLIBC_TUNABLES']}:{TUNED_MALLOC['GLIBC_TUNABLES']}"
    os.execve(sys.executable, [sys.executable, "-m", "bench", *sys.argv[1:]], env)


def main(argv=None) -> int:
    args = parse_args(argv)
    _ensure_malloc(args.malloc)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dev = device.type
    repeats = args.repeats or (5 if args.quick else (50 if dev == "cuda" else 15))
    warmup = 2 if args.quick else 3
    shapes = args.shapes or (DEFAULT_SHAPES[dev][:1] if args.quick else DEFAULT_SHAPES[dev])
    shapes = [tuple(int(v) for v in s.lower().split("x")) for s in shapes]
    dtypes = [getattr(torch, d) for d in (args.dtypes or DEFAULT_DTYPES[dev])]
    lib = library_backends(device, args.backends)
    # The torch.compile peer of the ops is the default mode; on a GPU max-autotune-no-cudagraphs ("compile-max",
    # minutes of autotuning per op group) follows in a second pass when the budget leaves time (--compile-max).
    baselines = ["eager", "compile"]
    layouts = args.layouts or DEFAULT_LAYOUTS[dev]
    import time

    deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else None
    skipped: list[str] = []
    env = report.environment(device)
    env["malloc"] = args.malloc if args.malloc == "default" else f"tuned {TUNED_MALLOC}"
    print(f"# lattice_kernels benchmarks on {env['device']}: torch {env['torch']}, triton {env['triton']}, "
          f"CPU ISA {env['cpu_isa']}", flush=True)
    copy_gbps = copy_bandwidth_gbps(device)
    env["copy_bandwidth_GBps"] = copy_gbps
    print(f"# measured copy bandwidth (read + write): {copy_gbps:.1f} GB/s; malloc: {env['malloc']}", flush=True)

    stem = args.name or report.slug(f"{device.type}-{env['device']}") + ("-quick" if args.quick else "")
    path = args.out / f"{stem}.json"
    rows: list[dict] = []

    def save(partial: bool) -> None:
        """The report so far (after every case: a run stopped from outside keeps what it measured)."""
        report.write_json(path, {"environment": env, "rows": rows, "argv": sys.argv[1:], "skipped": skipped,
                                 "ratio_spread": SPREAD, "complete": not partial})

    # The model cases first: they are the figures users compare, and the op groups fill the budget that is left.
    if args.models is None or args.models:
        from . import models_bench

        def on_model_rows(model_rows: list[dict]) -> None:
            rows[:] = model_rows
            save(True)

        rows[:] = models_bench.run(device, args.models, quick=args.quick, repeats=repeats, lib=lib,
                                   deadline=deadline, skipped=skipped, on_rows=on_model_rows)
        save(True)

    op_names = ops_bench.OPS if args.ops is None else args.ops
    compile_max = args.compile_max if args.compile_max != "auto" else ("yes" if dev == "cuda" else "no")
    op_passes = [baselines + lib] + ([["eager", "compile-max", *lib]] if compile_max == "yes" else [])
    for pass_backends in op_passes:
        for shape in shapes if op_names else []:
            for layout in layouts:
                for dtype in dtypes:
                    for case in ops_bench.make_cases(shape, dtype, device, layout):
                        if case.name not in op_names:
                            continue
                        for pass_ in args.passes:
                            what = f"{case.name} {pass_} {shape} {layout} {dtype} ({', '.join(pass_backends)})"
                            if deadline and time.monotonic() > deadline:
                                skipped.append(what)
                                continue
                            group = ops_bench.bench_op(case, pass_backends, shape, dtype, device,
                                                       pass_ == "fwd+bwd", repeats, warmup, layout, deadline)
                            for row in group:
                                row["kind"] = "op" if "compile" in pass_backends else "op-compile-max"
                                report.add_copy_fraction(row, copy_gbps)
                                print(f"  {case.name:26s} {pass_:7s} {'x'.join(map(str, shape)):14s} {layout} "
                                      f"{row['dtype']:8s} {row['backend']:12s} {row['median_ms']:9.3f} ms  "
                                      f"{report.ratio_text(row, 'vs_eager')} vs eager, "
                                      f"{report.ratio_text(row, 'vs_compile')} vs {row.get('compile_baseline')}",
                                      flush=True)
                            rows.extend(group)
                            save(True)

    for kind in ("op", "op-compile-max"):
        op_rows = [r for r in rows if r["kind"] == kind]
        if not op_rows:
            continue
        print()
        print(report.format_table(op_rows, [
            ("op", "op", ""), ("pass", "pass", ""), ("shape", "shape", ""), ("layout", "layout", ""),
            ("dtype", "dtype", ""),
            ("backend", "backend", ""), ("median ms", "median_ms", "{:.3f}"), ("p10", "p10_ms", "{:.3f}"),
            ("p90", "p90_ms", "{:.3f}"), ("GB/s", "GBps", "{:.1f}"), ("% copy", "pct_copy_bw", "{:.0f}%"),
            ("GFLOP/s", "GFLOPs", "{:.0f}"),
            ("vs eager", "vs_eager", "{:.2f}x"), ("range", "vs_eager_range", report.RANGE),
            ("vs compile", "vs_compile", "{:.2f}x"), ("range", "vs_compile_range", report.RANGE),
            ("compiled peer", "compile_baseline", ""), ("cut", "rounds_cut", "")]))
    model_rows = [r for r in rows if r["kind"] == "model"]
    if model_rows:
        print()
        print(report.format_table(model_rows, [
            ("case", "case", ""), ("backend", "backend", ""), ("median ms", "median_ms", "{:.1f}"),
            ("p10", "p10_ms", "{:.1f}"), ("p90", "p90_ms", "{:.1f}"), ("peak MiB", "peak_mem_MB", "{:.0f}"),
            ("mem / eager", "peak_mem_vs_eager", "{:.2f}x"),
            ("vs eager", "vs_eager", "{:.2f}x"), ("range", "vs_eager_range", report.RANGE),
            ("vs compile", "vs_compile", "{:.2f}x"), ("range", "vs_compile_range", report.RANGE)]))
        print(f"# times: median (p10, p90) over interleaved rounds in one process; ratios: median and {SPREAD}")
        for note in sorted({r["memory_method"] for r in model_rows if r.get("memory_method")}):
            print(f"# peak memory: {note}")

    if skipped:
        print(f"\n# {len(skipped)} measurements skipped (--max-minutes {args.max_minutes}): first {skipped[0]}")
    save(False)
    print(f"\n# wrote {path}")
    if not args.no_plots:
        for p in report.plot(rows, args.out / stem, env["device"]):
            print(f"# wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
