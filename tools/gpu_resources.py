"""Registers, spills and shared memory of every GPU kernel, compiled for sm_80 and sm_90 without a GPU.

    python -m tools.gpu_resources [--json FILE] [--only cuda|triton] [--quick]

CUDA: every csrc/cuda/*.cu by ``nvcc -Xptxas -v`` (one row per kernel instantiation). Triton: every kernel of
lattice_kernels/triton with every constexpr specialization its launchers choose over SHAPES x dtypes x layouts,
found by calling the launchers on meta tensors with a recording ``wrap`` (nothing is allocated or run), compiled
by ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``; registers and spills from the wheel's
``ptxas -v`` on the generated PTX, shared memory from the compiled kernel's metadata. Exit status 1 when a kernel
fails to compile, spills, or needs more shared memory than the target has (each named with its specialization).

Run it with TRITON_INTERPRET unset: the AOT compile needs the real JIT functions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHS = (80, 90)
SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}  # opt-in maximum per block (A100, H100/H200)
STATIC_SMEM_LIMIT = 48 * 1024  # without the opt-in (CUDA kernels: static shared memory)

# The launch shapes: the benchmarks' largest, a 4K frame, and small shapes that select the other block sizes
# (C < 4 planar, C not a power of two, H*W = 1 and 2).
SHAPES = [(1, 64, 540, 960), (16, 64, 64, 64), (1, 64, 2160, 3840), (2, 5, 7, 13), (1, 3, 1, 1), (2, 33, 1, 2),
          (1, 2, 16, 16), (4, 16, 32, 32)]
QUICK_SHAPES = [(1, 64, 540, 960), (16, 64, 64, 64), (1, 64, 2160, 3840)]


@dataclass
class Row:
    kind: str  # cuda | triton
    kernel: str
    spec: str  # the specialization (template arguments / constexprs and argument types)
    arch: int
    registers: int
    spill_bytes: int  # stores + loads
    shared_bytes: int
    problem: str = ""


# ---- CUDA ----------------------------------------------------------------------------------------------------------
def _nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME")
    return shutil.which("nvcc") or (os.path.join(home, "bin", "nvcc") if home else None)


def _demangle(names: list[str]) -> list[str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt:
        return names
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return out if len(out) == len(names) else names


def parse_ptxas_verbose(text: str) -> list[tuple[str, int, int, int]]:
    """(mangled kernel name, registers, spill bytes (stores + loads), static shared memory bytes) per entry
    function of ``ptxas -v`` output."""
    entries: list[list] = []
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\w+)' for 'sm_(\d+)", line)
        if m:
            entries.append([m.group(1), 0, 0, 0])
        elif entries and (m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)):
            entries[-1][2] = int(m.group(1)) + int(m.group(2))
        elif entries and (m := re.search(r"Used (\d+) registers", line)):
            entries[-1][1] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            entries[-1][3] = int(s.group(1)) if s else 0
    return [tuple(e) for e in entries]


def cuda_rows(arch: int) -> list[Row]:
    nvcc = _nvcc()
    if nvcc is None or not os.path.exists(nvcc):
        raise FileNotFoundError("nvcc not found (set CUDA_HOME or put nvcc on PATH) for the CUDA resource table")
    rows: list[Row] = []
    for cu in sorted((ROOT / "csrc" / "cuda").glob("*.cu")):
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([nvcc, "-c", "-std=c++17", "-O2", f"-arch=sm_{arch}", "-Xptxas", "-v", "-o",
                                str(Path(tmp) / "k.o"), str(cu)], capture_output=True, text=True)
        if r.returncode != 0:
            rows.append(Row("cuda", cu.name, "", arch, 0, 0, 0, f"nvcc failed: {r.stderr[-500:]}"))
            continue
        entries = parse_ptxas_verbose(r.stderr)
        for (_, regs, spills, smem), name in zip(entries, _demangle([e[0] for e in entries])):
            base, _, rest = name.partition("<")
            spec = ("<" + rest.split(">(")[0] + ">") if rest else ""
            problem = []
            if spills:
                problem.append(f"{spills} bytes of spills")
            if smem > STATIC_SMEM_LIMIT:
                problem.append(f"{smem} bytes of static shared memory > 48 KiB")
            kernel = base.split("(")[0].removeprefix("void ").replace("lk::cuda::", "")
            rows.append(Row("cuda", kernel, spec, arch, regs, spills, smem,
                            "; ".join(problem)))
    return rows


# ---- Triton --------------------------------------------------------------------------------------------------------
_TYPE = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16", "torch.float64": "fp64",
         "torch.int32": "i32", "torch.int64": "i64"}


@dataclass(frozen=True)
class Specialization:
    kernel: str
    signature: tuple  # ((name, type), ...)
    constexprs: tuple  # ((name, value), ...)
    divisible16: tuple  # indices of arguments specialised as divisible by 16

    def describe(self) -> str:
        c = ",".join(f"{k}={v}" for k, v in self.constexprs)
        t = ",".join(f"{k}:{v}" for k, v in self.signature if v.startswith("*"))
        return f"{c} [{t}]"


class Recorder:
    """A ``wrap`` for the launchers: records each launch's specialization, as Triton's JIT would make it (pointer
    dtypes, i32/i64 by value, integers equal to 1 as constexprs, 16-divisible integers and 16-aligned pointers as
    such), and runs nothing."""

    def __init__(self):
        self.specs: dict[Specialization, object] = {}
        self.num_warps: dict[Specialization, int | None] = {}  # a launch's num_warps (None: Triton's default, 4)
        self.grids: list[tuple[str, tuple]] = []
        self.arguments: list[dict] = []  # each launch's arguments by name, in launch order

    def __call__(self, kernel):
        recorder = self

        class Launch:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    recorder.record(kernel, tuple(grid), args, kwargs)
                return launch

        return Launch()

    def record(self, kernel, grid, args, kwargs) -> None:
        import torch

        names = kernel.arg_names
        kwargs = dict(kwargs)
        num_warps = kwargs.pop("num_warps", None)
        values = dict(zip(names, args))
        values.update(kwargs)
        self.arguments.append(values)
        # The interpreter's functions have no params: there the launchers' keyword arguments are the constexprs.
        const_names = ({p.name for p in kernel.params if p.is_constexpr} if hasattr(kernel, "params")
                       else set(kwargs))
        sig, consts, div = [], [], []
        for i, name in enumerate(names):
            v = values[name]
            if name in const_names or v is None:
                sig.append((name, "constexpr"))
                consts.append((name, v))
            elif isinstance(v, torch.Tensor):
                sig.append((name, "*" + _TYPE[str(v.dtype)]))
                if (v.storage_offset() * v.element_size()) % 16 == 0:
                    div.append(i)
            elif isinstance(v, bool):
                sig.append((name, "i1"))
            elif isinstance(v, int):
                if v == 1:
                    sig.append((name, "constexpr"))
                    consts.append((name, 1))
                else:
                    sig.append((name, "i32" if -2**31 <= v < 2**31 else "i64"))
                    if v % 16 == 0:
                        div.append(i)
            elif isinstance(v, float):
                sig.append((name, "fp32"))
            else:
                raise TypeError(f"{kernel.__name__}: cannot specialise argument {name} = {v!r}")
        spec = Specialization(kernel.__name__, tuple(sig), tuple(consts), tuple(div))
        self.specs.setdefault(spec, kernel)
        self.num_warps[spec] = num_warps
        self.grids.append((kernel.__name__, grid))


def record_triton_launches(shapes=SHAPES) -> Recorder:
    """Every launch of every Triton launcher over shapes x (float32, float16, bfloat16) x (NCHW, channels_last),
    on meta tensors."""
    import torch

    from lattice_kernels.triton import butterfly as bf
    from lattice_kernels.triton import channel_stats as cs
    from lattice_kernels.triton import combination_coefficients as cc

    rec = Recorder()
    for shape in shapes:
        n, c = shape[:2]
        r = max(1, c // 16)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for fmt in (torch.contiguous_format, torch.channels_last):
                x, x2 = (torch.empty(shape, dtype=dtype, device="meta").contiguous(memory_format=fmt)
                         for _ in range(2))
                st = torch.empty((n, c), device="meta")
                w = (torch.empty((r, c), device="meta"), torch.empty(r, device="meta"),
                     torch.empty((c, r), device="meta"), torch.empty(c, device="meta")) * 2
                cs.channel_stats(x, rec)
                cs.channel_stats_backward(st, st, x, st, st, rec)
                cc.combination_coefficients(x, w, rec)
                cc.coefficients_from_stats(st, st, w, rec)
                full, partial = (st, st, st, st), (None, st, st, None)
                for coefs in (full, partial):
                    for q_stats in (True, False):
                        bf.butterfly(x, x2, coefs, q_stats, rec)
                    bf.butterfly_stacked(x, x2, coefs, True, rec)
                    bf.butterfly_backward(x, x2, st, st, x, x2, coefs, st, st, rec)
                    bf.butterfly_backward(x, x2, None, None, x, x2, coefs, None, None, rec)
    return rec


def _cuobjdump() -> str:
    import triton

    p = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(p) if p.exists() else (shutil.which("cuobjdump") or "cuobjdump")


def compile_triton(spec: Specialization, fn, arch: int, num_warps: int | None = None) -> Row:
    """Compile one specialization; registers, local memory (spills: any STACK or LOCAL bytes) and static shared
    memory from ``cuobjdump -res-usage`` of the cubin, plus the dynamic shared memory Triton launches with."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    # triton >= 3.3 (3.6 and 3.9 alike): the signature by argument name with "constexpr" entries, constexprs by
    # name, attrs by argument index path.
    src = ASTSource(fn, dict(spec.signature), constexprs=dict(spec.constexprs),
                    attrs={(i,): [["tt.divisibility", 16]] for i in spec.divisible16})
    try:
        k = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                           options=None if num_warps is None else {"num_warps": num_warps})
    except Exception as e:
        return Row("triton", spec.kernel, spec.describe(), arch, 0, 0, 0, f"compile failed: {str(e)[-400:]}")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(k.asm["cubin"])
        r = subprocess.run([_cuobjdump(), "-res-usage", str(cubin)], capture_output=True, text=True)
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", r.stdout)
    if m is None:
        return Row("triton", spec.kernel, spec.describe(), arch, 0, 0, 0, f"cuobjdump failed: {r.stderr[-300:]}")
    regs, stack, static_smem, local = (int(g) for g in m.groups())
    shared = static_smem + int(k.metadata.shared)
    problem = []
    if stack or local:
        problem.append(f"local memory (spills): stack {stack} B, local {local} B")
    if shared > SMEM_LIMIT[arch]:
        problem.append(f"{shared} bytes of shared memory > {SMEM_LIMIT[arch]}")
    return Row("triton", spec.kernel, spec.describe(), arch, regs, stack + local, shared, "; ".join(problem))


def representative(rec: Recorder) -> dict[Specialization, object]:
    """One specialization per (kernel, tile constexprs, float32 or 16-bit data): the one with the most optional
    operands present (HAS_*, Q_*), the heaviest in registers. Integer-value specialisations are folded."""
    best: dict[tuple, tuple[int, Specialization]] = {}
    for spec in rec.specs:
        tiles = tuple(kv for kv in spec.constexprs if kv[0].startswith(("BLOCK", "SPLIT")))
        ptrs = {t for _, t in spec.signature if t.startswith("*")}
        key = (spec.kernel, tiles, "*fp32" in ptrs and len(ptrs) == 1)
        weight = sum(1 for k, v in spec.constexprs if k.startswith(("HAS", "Q_")) and v is True)
        if key not in best or weight > best[key][0]:
            best[key] = (weight, spec)
    return {spec: rec.specs[spec] for _, spec in best.values()}


def triton_rows(arch: int, shapes=SHAPES, every: bool = False) -> list[Row]:
    rec = record_triton_launches(shapes)
    specs = rec.specs if every else representative(rec)
    return [compile_triton(spec, fn, arch, rec.num_warps.get(spec)) for spec, fn in specs.items()]


# ---- the table -----------------------------------------------------------------------------------------------------
def summarise(rows: list[Row]) -> list[str]:
    """One line per (kind, kernel, arch): the number of specializations, registers (max), spills, shared (max)."""
    groups: dict[tuple[str, str, int], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.kind, r.kernel, r.arch), []).append(r)
    lines = [f"{'kind':7} {'kernel':32} {'arch':>5} {'specs':>5} {'regs(max)':>9} {'spills':>6} {'smem(max) B':>11}"]
    for (kind, kernel, arch), rs in sorted(groups.items()):
        lines.append(f"{kind:7} {kernel:32} {'sm_' + str(arch):>5} {len(rs):>5} {max(r.registers for r in rs):>9} "
                     f"{sum(r.spill_bytes for r in rs):>6} {max(r.shared_bytes for r in rs):>11}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.gpu_resources", description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="also write every row (each specialization) as JSON here")
    p.add_argument("--only", choices=["cuda", "triton"], help="one kind of kernel only")
    p.add_argument("--quick", action="store_true", help="Triton: the three large shapes only")
    return p


def run(args: argparse.Namespace) -> int:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("unset TRITON_INTERPRET: the AOT compile needs Triton's JIT functions, not the interpreter")
    rows: list[Row] = []
    for arch in ARCHS:
        if args.only in (None, "cuda"):
            rows += cuda_rows(arch)
        if args.only in (None, "triton"):
            rows += triton_rows(arch, QUICK_SHAPES if args.quick else SHAPES)
    print("\n".join(summarise(rows)))
    bad = [r for r in rows if r.problem]
    for r in bad:
        print(f"FAIL {r.kind} {r.kernel} {r.spec} sm_{r.arch}: {r.problem}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
