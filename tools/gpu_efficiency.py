"""Predicted efficiency of every streaming GPU kernel, computed on the CPU: a model, not a measurement.

    python -m tools.gpu_efficiency [--json FILE] [--only cuda|triton] [--card h100|h200]
    python -m tools.gpu_efficiency --readme FILE.json    # README.md's table from a recorded JSON

One record per kernel x layout (NCHW, channels_last) x dtype (float32, bfloat16) x benchmark shape:

- **Sector efficiency** (bytes used over 32-byte sectors moved, over every warp-level request). CUDA: from the
  CPU execution harness, which records each global access (LK_LOAD / LK_STORE) with its address; the lanes of a
  warp with the same source line and per-thread sequence number make one request. The trace runs at a sample
  shape with the benchmark's channels, layout, dtype and alignment (a warp's pattern does not depend on H*W).
  Triton: from the register layout (``#ttg.blocked``) that the compiler gave each 2-D tile load and store in the
  TTGIR, applied to the operand's strides in that layout (tiles are [channels, pixels]).
- **Access width in the main loop**: the global load/store instructions (LDG/STG and their width) inside the
  loop of the sm_90 SASS (``cuobjdump -sass``; nvcc's cubin for CUDA, Triton's for Triton) that holds the most
  of them.
- **Occupancy**: registers and shared memory (``cuobjdump -res-usage``) and the block size give the resident warps
  per SM; the grid at the benchmark shape may give fewer (its blocks spread over the SMs).
- **Bytes in flight per SM** = warps per SM x the main loop's loads x their useful bytes per request, held against
  Little's law: sustaining a fraction f of copy bandwidth B needs f x B x (reads / all traffic) x latency / SMs.
- **Predicted fraction of copy bandwidth** = min(sector efficiency, bytes in flight / bytes needed).

Assumptions (CARDS): bandwidth from NVIDIA's datasheets (H100 SXM5 3.35 TB/s, H200 4.8 TB/s; 132 SMs), of which a
copy kernel reaches COPY_FRACTION; a loaded DRAM latency of LATENCY_NS (an assumption: unloaded latencies measured
on Hopper are a few hundred ns, Luo et al., arXiv:2402.13499, and queueing at full bandwidth adds to them). A
device run replaces all of these with measurements (``make gpu-check`` benchmarks).

Exit status 1 when a kernel misses a target (TARGETS); each miss is named.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTOR = 32
LATENCY_NS = 700.0
COPY_FRACTION = 0.9


@dataclass(frozen=True)
class Card:
    name: str
    sms: int
    bandwidth: float  # bytes/s, datasheet
    latency_ns: float = LATENCY_NS
    registers: int = 65536  # per SM
    max_warps: int = 64
    max_blocks: int = 32
    shared_bytes: int = 228 * 1024  # per SM; 1 KiB of it reserved per resident block

    def bytes_needed_per_sm(self, read_share: float) -> float:
        """Bytes of loads in flight per SM that sustain copy bandwidth (Little's law)."""
        return COPY_FRACTION * self.bandwidth * read_share * self.latency_ns * 1e-9 / self.sms


CARDS = {"h100": Card("H100 SXM5", 132, 3.35e12), "h200": Card("H200 SXM", 132, 4.8e12)}

# The benchmark shapes of issue #27 and their targets (predicted fraction of copy bandwidth).
BENCH_SHAPES = ((1, 64, 540, 960), (16, 64, 64, 64))
TARGET_FRACTION = {(1, 64, 540, 960): 0.8, (16, 64, 64, 64): 0.6}
TARGET_SECTOR_EFFICIENCY = 0.9
TARGET_WIDTH = 16  # bytes per lane per main-loop access
SMALL_SHAPE = (16, 64, 64, 64)
TRITON_PROGRAMS_PER_SM = 4  # at SMALL_SHAPE
TRITON_BACKWARD_REGISTERS = 128
DTYPES = ("f32", "bf16")
LAYOUTS = ("nchw", "nhwc")
ELEM_BYTES = {"f32": 4, "f64": 8, "f16": 2, "bf16": 2}
SAMPLE_P = 8192  # at most this H*W in the CUDA trace: one whole planar split, 32 interleaved splits


# ---- sectors per warp request -----------------------------------------------------------------------------------
@dataclass
class Traffic:
    """Requests of one kernel: bytes used, 32-byte sectors moved, request counts, split into loads and stores."""

    requests: int = 0
    sectors: int = 0
    used: int = 0
    load_requests: int = 0
    load_used: int = 0
    store_used: int = 0

    def add(self, other: Traffic) -> None:
        for k in asdict(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    @property
    def efficiency(self) -> float:
        return self.used / (self.sectors * SECTOR) if self.sectors else 1.0

    @property
    def read_share(self) -> float:
        total = self.load_used + self.store_used
        return self.load_used / total if total else 1.0

    @property
    def load_bytes_per_request(self) -> float:
        return self.load_used / self.load_requests if self.load_requests else 0.0


def row_ids(*columns: np.ndarray) -> np.ndarray:
    """One int64 per row of the given equal-length integer columns, equal exactly where the rows are equal (a dense
    rank per column, combined in mixed radix and re-ranked before it could overflow): np.unique on it is a 1-D sort,
    several times faster than np.unique(..., axis=1) on the stacked columns."""
    key = np.zeros(len(columns[0]), dtype=np.int64)
    radix = 1
    for col in columns:
        values, rank = np.unique(col, return_inverse=True)
        if radix * len(values) >= 2 ** 62:
            radix_values, key = np.unique(key, return_inverse=True)
            radix = len(radix_values)
        key = key * len(values) + rank.ravel()
        radix *= len(values)
    return key


def traffic(request: np.ndarray, address: np.ndarray, nbytes: np.ndarray, store: np.ndarray) -> Traffic:
    """request: an integer id per access (accesses with one id are one warp-level request); address, nbytes per
    access; store: 1 for a store. A request moves every 32-byte sector its accesses touch; it uses the distinct
    bytes they name (lanes reading one address share it)."""
    if len(request) == 0:
        return Traffic()
    address = address.astype(np.int64)
    nbytes = nbytes.astype(np.int64)
    first, last = address // SECTOR, (address + nbytes - 1) // SECTOR
    req_s, sec = [request], [first]
    for k in range(1, int((last - first).max()) + 1):  # accesses that straddle sectors
        m = last - first >= k
        req_s.append(request[m])
        sec.append(first[m] + k)
    sectors = len(np.unique(row_ids(np.concatenate(req_s), np.concatenate(sec))))
    _, idx = np.unique(row_ids(request, address), return_index=True)
    used_b, st = nbytes[idx], store[idx].astype(bool)
    req_ids, first_idx = np.unique(request, return_index=True)
    is_load_req = ~store[first_idx].astype(bool)
    return Traffic(requests=len(req_ids), sectors=sectors, used=int(used_b.sum()),
                   load_requests=int(is_load_req.sum()), load_used=int(used_b[~st].sum()),
                   store_used=int(used_b[st].sum()))


# ---- SASS ---------------------------------------------------------------------------------------------------------
_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_BRANCH = re.compile(r"\bBRA(?:\.[A-Z.]+)?\s+(?:`\(\.L_x_\d+\)|(0x[0-9a-f]+))")


@dataclass
class MainLoop:
    loads: list[int] = field(default_factory=list)  # bytes per lane of each global load in the loop body
    stores: list[int] = field(default_factory=list)
    waits: int = 0  # instructions per iteration that wait for a load still in flight (in-order issue stalls)

    @property
    def loads_in_flight(self) -> float:
        """Loads a warp keeps in flight: the iteration's loads over the stalls that wait for them."""
        return len(self.loads) / max(1, self.waits)


_REG = re.compile(r"\bR(\d+)(\.64)?\b")


def _registers(operand: str) -> set[int]:
    out = set()
    for m in _REG.finditer(operand):
        out.update((int(m.group(1)), int(m.group(1)) + 1) if m.group(2) else (int(m.group(1)),))
    return out


def _opcode_and_operands(text: str) -> tuple[str, list[str]]:
    parts = text.split(None, 1)
    if parts[0].startswith("@"):
        parts = parts[1].split(None, 1)
    return parts[0], [o.strip() for o in (parts[1] if len(parts) > 1 else "").split(",")]


def _is_global(opcode: str, kind: str) -> bool:
    """Whether an opcode is a global load (kind LDG) or store (STG): LDG.E..., not LDGSTS (global to shared) or
    LDGDEPBAR."""
    return opcode == kind or opcode.startswith(kind + ".")


def count_waits(body: list[str]) -> int:
    """In one steady-state iteration of a loop body (run twice, the second counted), the instructions that read a
    register a global load of this or the previous iteration writes and that no instruction has waited for yet:
    each stalls the warp for a memory latency (in-order issue), and the loads issued before it overlap."""
    pending: set[int] = set()
    waits = 0
    for it in range(2):
        for text in body:
            op, operands = _opcode_and_operands(text)
            writes_first = not op.startswith(("ST", "RED", "ATOM", "BRA", "BAR", "ISETP", "FSETP", "DSETP",
                                              "HSETP", "EXIT"))
            reads = set().union(*(_registers(o) for o in operands[1 if writes_first else 0:]))
            if pending & reads:
                waits += it
                pending.clear()  # loads issued before a stall have arrived by its end
            if _is_global(op, "LDG"):
                width = max(1, access_width(op) // 4)
                first = min(_registers(operands[0]) or {0})
                pending.update(range(first, first + width))
    return waits


def access_width(opcode: str) -> int:
    """Bytes per lane of an LDG/STG opcode (LDG.E.128 -> 16, LDG.E.U16 -> 2, LDG.E -> 4)."""
    parts = opcode.split(".")
    for p, w in (("128", 16), ("64", 8), ("U16", 2), ("S16", 2), ("U8", 1), ("S8", 1)):
        if p in parts:
            return w
    return 4


def sass_functions(cubin: Path) -> dict[str, list[tuple[int, str]]]:
    """Mangled kernel name -> [(address, instruction text)] of ``cuobjdump -sass``."""
    from tools.gpu_resources import _cuobjdump

    text = subprocess.run([_cuobjdump(), "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    out: dict[str, list[tuple[int, str]]] = {}
    current: list[tuple[int, str]] | None = None
    for line in text.splitlines():
        if "Function : " in line:
            current = out.setdefault(line.split("Function : ")[1].strip(), [])
        elif current is not None and (m := _INSTR.search(line)):
            current.append((int(m.group(1), 16), m.group(2)))
    return out


def main_loop(instrs: list[tuple[int, str]]) -> MainLoop:
    """The global accesses of the loop (a backward branch's range) that loads the most bytes per lane (then
    stores): the streaming loop, not a remainder loop or the epilogue's loop over partial results; the innermost
    such range on a tie. Predicated
    accesses count (they issue when their predicate holds)."""
    loops = []
    for addr, text in instrs:
        m = _BRANCH.search(text)
        if m and m.group(1) and int(m.group(1), 16) <= addr:
            loops.append((int(m.group(1), 16), addr))
    # Innermost loops only: an enclosing loop holds the accesses of the loops inside it.
    loops = [(lo, hi) for lo, hi in loops
             if not any((lo2, hi2) != (lo, hi) and lo <= lo2 and hi2 <= hi for lo2, hi2 in loops)]
    best: tuple[tuple[int, int], int, MainLoop] | None = None
    for lo, hi in loops:
        ml = MainLoop()
        body = [text for addr, text in instrs if lo <= addr <= hi]
        for text in body:
            op, _ = _opcode_and_operands(text)
            if _is_global(op, "LDG"):
                ml.loads.append(access_width(op))
            elif _is_global(op, "STG"):
                ml.stores.append(access_width(op))
        ml.waits = count_waits(body)
        n = (sum(ml.loads), sum(ml.stores))
        if best is None or n > best[0] or (n == best[0] and hi - lo < best[1]):
            best = (n, hi - lo, ml)
    return best[2] if best else MainLoop()


def resource_usage(cubin: Path) -> dict[str, tuple[int, int]]:
    """Mangled kernel name -> (registers, static shared bytes) of ``cuobjdump -res-usage``."""
    from tools.gpu_resources import _cuobjdump

    text = subprocess.run([_cuobjdump(), "-res-usage", str(cubin)], capture_output=True, text=True, check=True).stdout
    out, name = {}, None
    for line in text.splitlines():
        if m := re.match(r"\s*Function (\S+):", line):
            name = m.group(1)
        elif name and (m := re.search(r"REG:(\d+) STACK:\d+ SHARED:(\d+)", line)):
            out[name] = (int(m.group(1)), int(m.group(2)))
    return out


def nvcc_cubin(source: Path, out: Path, arch: int = 90) -> Path:
    """The cubin of one .cu file as the extension compiles it (-O3, C++17)."""
    from tools.gpu_resources import _nvcc

    nvcc = _nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set CUDA_HOME or put nvcc on PATH): the CUDA SASS needs it")
    subprocess.run([nvcc, "-cubin", "-O3", "-std=c++17", f"-arch=sm_{arch}", "-I", str(ROOT / "csrc" / "cuda"),
                    "-o", str(out), str(source)], check=True, capture_output=True, text=True)
    return out


def nvcc_version() -> str | None:
    """nvcc's CUDA release (e.g. "13.0"), None without nvcc."""
    from lattice_kernels._build import nvcc_release
    from tools.gpu_resources import _nvcc

    nvcc = _nvcc()
    return nvcc_release(nvcc) if nvcc and os.path.exists(nvcc) else None


def demangle(names: Iterable[str]) -> dict[str, str]:
    """Mangled -> 'lk::cuda::kernel<args>' (the harness's kernel names: no return type, no parameters)."""
    from tools.gpu_resources import _demangle

    names = list(names)
    out = {}
    for mangled, d in zip(names, _demangle(names)):
        d = d.removeprefix("void ")
        depth, cut = 0, len(d)
        for i, ch in enumerate(d):  # the parameter list: the first '(' outside template brackets
            depth += ch == "<"
            depth -= ch == ">"
            if ch == "(" and depth == 0:
                cut = i
                break
        out[mangled] = d[:cut]
    return out


# ---- the model ----------------------------------------------------------------------------------------------------
@dataclass
class Record:
    backend: str
    kernel: str
    layout: str
    dtype: str
    shape: tuple[int, ...]
    traced_at: str  # where the sector efficiency comes from
    sector_efficiency: float
    requests: int
    load_bytes_per_request: float
    read_share: float
    loop_load_widths: list[int]
    loop_store_widths: list[int]
    registers: int
    shared_bytes: int
    threads_per_block: int
    blocks: int
    resident_warps_per_sm: int  # what registers, shared memory and threads allow
    warps_per_sm: float  # what the grid gives (at most the resident warps)
    bytes_in_flight_per_sm: float
    bytes_needed_per_sm: float
    predicted_fraction: float
    card: str
    misses: list[str] = field(default_factory=list)
    reductions_in_loop: int = 0  # Triton: tt.reduce ops inside the loop (target 0: reduce once after it)
    programs_per_sm: float = 0.0  # blocks (programs) over SMs


def resident_blocks(card: Card, registers: int, threads: int, shared: int) -> int:
    warps = math.ceil(threads / 32)
    per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256  # registers are allocated per warp in units of 256
    by_regs = card.registers // (per_warp * warps)
    by_threads = card.max_warps // warps
    by_smem = card.shared_bytes // (shared + 1024) if shared else card.max_blocks
    return max(0, min(by_regs, by_threads, by_smem, card.max_blocks))


def predict(card: Card, t: Traffic, loop: MainLoop, registers: int, shared: int, threads: int,
            blocks: int) -> dict:
    warps_per_block = math.ceil(threads / 32)
    res_blocks = resident_blocks(card, registers, threads, shared)
    warps = min(res_blocks, blocks / card.sms) * warps_per_block
    # A warp keeps loop.loads_in_flight requests in flight, each of the useful bytes a load request moves.
    in_flight = warps * loop.loads_in_flight * t.load_bytes_per_request
    needed = card.bytes_needed_per_sm(t.read_share)
    frac = min(t.efficiency, in_flight / needed if needed else 1.0)
    return dict(resident_warps_per_sm=res_blocks * warps_per_block, warps_per_sm=round(warps, 2),
                bytes_in_flight_per_sm=round(in_flight), bytes_needed_per_sm=round(needed),
                predicted_fraction=round(frac, 3))


def misses(r: Record) -> list[str]:
    out = []
    if r.sector_efficiency < TARGET_SECTOR_EFFICIENCY:
        out.append(f"sector efficiency {r.sector_efficiency:.0%} < {TARGET_SECTOR_EFFICIENCY:.0%}")
    narrow = sorted({w for w in r.loop_load_widths + r.loop_store_widths if w < TARGET_WIDTH})
    if narrow:
        out.append(f"{'/'.join(map(str, narrow))}-byte accesses in the main loop (target {TARGET_WIDTH})")
    target = TARGET_FRACTION.get(tuple(r.shape))
    if target is not None and r.predicted_fraction < target:
        out.append(f"predicted {r.predicted_fraction:.0%} of copy bandwidth < {target:.0%}")
    if r.backend == "triton":
        if r.reductions_in_loop:
            out.append(f"{r.reductions_in_loop} reductions inside the loop (target: once after it)")
        if tuple(r.shape) == SMALL_SHAPE and r.programs_per_sm < TRITON_PROGRAMS_PER_SM:
            out.append(f"{r.programs_per_sm:.1f} programs per SM < {TRITON_PROGRAMS_PER_SM}")
        if "backward" in r.kernel and r.registers > TRITON_BACKWARD_REGISTERS:
            out.append(f"{r.registers} registers > {TRITON_BACKWARD_REGISTERS}")
    return out


# ---- CUDA ---------------------------------------------------------------------------------------------------------
# (launcher, mode) of tools/cuda_emu/cases.py whose kernels stream the (N, C, H*W) tensors.
CUDA_LAUNCHERS = (("channel_stats", "plain"), ("channel_stats_backward", "plain"), ("butterfly", "q_stats"),
                  ("butterfly_backward", "q_grad"))
# Kernels that move O(N*C) bytes (the merges of split results, the coefficient MLP): reported, no targets.
TAIL_KERNELS = ("merge_splits", "sum_splits", "coefficient_mlp")


def trace_traffic(m, run) -> dict[str, Traffic]:
    """Kernel name -> its requests, from running `run()` with the harness's access trace on."""
    m.set_tracing(True)
    try:
        run()
    finally:
        m.set_tracing(False)
    t = m.take_trace()
    kernels = t["kernels"]
    warp = t["thread"].astype(np.int64) // 32
    _, request = np.unique(row_ids(t["launch"], t["block"], warp, t["site"], t["seq"]), return_inverse=True)
    request = request.ravel()
    out: dict[str, Traffic] = {}
    for li, name in enumerate(kernels):
        sel = t["launch"] == li
        out.setdefault(name, Traffic()).add(traffic(request[sel], t["address"][sel], t["bytes"][sel], t["store"][sel]))
    return out


def cuda_sass() -> tuple[dict[str, MainLoop], dict[str, tuple[int, int]]]:
    """Harness kernel name -> main loop and (registers, shared bytes), from nvcc's sm_90 cubins."""
    loops, res = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for cu in sorted((ROOT / "csrc" / "cuda").glob("*.cu")):
            cubin = nvcc_cubin(cu, Path(tmp) / f"{cu.stem}.cubin")
            funcs, usage = sass_functions(cubin), resource_usage(cubin)
            names = demangle(funcs)
            for mangled, instrs in funcs.items():
                loops[names[mangled]] = main_loop(instrs)
                res[names[mangled]] = usage.get(mangled, (0, 0))
    return loops, res


def cuda_records(card: Card, shapes=BENCH_SHAPES, dtypes=DTYPES, layouts=LAYOUTS) -> list[Record]:
    from tools import cuda_emu
    from tools.cuda_emu import cases as C

    m = cuda_emu.load("plain")
    loops, res = cuda_sass()
    records = []
    traces: dict[C.Case, dict[str, Traffic]] = {}  # shapes of one C and at least SAMPLE_P pixels share a sample
    for launcher, mode in CUDA_LAUNCHERS:
        for dt in dtypes:
            for layout in layouts:
                for shape in shapes:
                    n, c, h, w = shape
                    sample = (1, c, min(h * w, SAMPLE_P))
                    case = C.Case(launcher, mode, dt, sample, layout)
                    if case not in traces:
                        traces[case] = trace_traffic(m, lambda case=case: C.run(m, case))
                    traffic_of = traces[case]
                    launches = m.dry(launcher, C.DTYPE_CODE[dt], (n, c, h * w, layout == "nhwc"), True, c // 16)
                    for kernel, grid, block, smem in launches:
                        base = kernel.split("<")[0].removeprefix("lk::cuda::")
                        if base in TAIL_KERNELS:
                            continue
                        t = traffic_of[kernel]
                        loop = loops.get(kernel, MainLoop())
                        regs, static_smem = res.get(kernel, (0, 0))
                        threads = block[0] * block[1] * block[2]
                        blocks = grid[0] * grid[1] * grid[2]
                        r = Record("cuda", kernel.removeprefix("lk::cuda::"), layout, dt, shape,
                                   f"harness trace at (N, C, H*W) = {sample}", round(t.efficiency, 3), t.requests,
                                   round(t.load_bytes_per_request, 1), round(t.read_share, 3), loop.loads,
                                   loop.stores, regs, static_smem + smem, threads, blocks, 0, 0, 0, 0, 0, card.name)
                        for k, v in predict(card, t, loop, regs, static_smem + smem, threads, blocks).items():
                            setattr(r, k, v)
                        r.programs_per_sm = round(blocks / card.sms, 2)
                        r.misses = misses(r)
                        records.append(r)
    return records


# ---- Triton -------------------------------------------------------------------------------------------------------
_BLOCKED = re.compile(r"#(blocked\d*) = #ttg\.blocked<\{sizePerThread = \[([\d, ]+)\], threadsPerWarp = \[([\d, ]+)\], "
                      r"warpsPerCTA = \[([\d, ]+)\], order = \[([\d, ]+)\]")
_TILE_ACCESS = re.compile(r"tt\.(load|store) .*: tensor<(\d+)x(\d+)x!tt\.ptr<(\w+)>, #(blocked\d*)>")


@dataclass(frozen=True)
class Blocked:
    size_per_thread: tuple[int, ...]
    threads_per_warp: tuple[int, ...]
    order: tuple[int, ...]


def ttgir_loop_reductions(ttgir: str) -> int:
    """The tt.reduce ops inside a loop (scf.for) of a TTGIR module."""
    n, depth, loops = 0, 0, []
    for line in ttgir.splitlines():
        code = line.split(" loc(")[0]
        if loops and "tt.reduce" in code and "tt.reduce.return" not in code:
            n += 1
        if "scf.for" in code and code.rstrip().endswith("{"):
            loops.append(depth)
        depth += code.count("{") - code.count("}")
        while loops and depth <= loops[-1]:
            loops.pop()
    return n


def ttgir_tile_accesses(ttgir: str) -> list[tuple[bool, tuple[int, int], Blocked]]:
    """(is_store, tile shape, layout) of every 2-D tile load/store inside a loop (scf.for) of a TTGIR module: the
    accesses that repeat per tile; those before and after the loop run once per program."""
    layouts = {}
    for m in _BLOCKED.finditer(ttgir):
        nums = [tuple(int(v) for v in g.split(",")) for g in m.groups()[1:]]
        layouts[m.group(1)] = Blocked(nums[0], nums[1], nums[3])
    out = []
    depth, loops = 0, []  # brace depth; depths at which an scf.for region opened
    for line in ttgir.splitlines():
        code = line.split(" loc(")[0]
        if loops and (m := _TILE_ACCESS.search(code)):
            out.append((m.group(1) == "store", (int(m.group(2)), int(m.group(3))), layouts[m.group(5)]))
        if "scf.for" in code and code.rstrip().endswith("{"):
            loops.append(depth)
        depth += code.count("{") - code.count("}")
        while loops and depth <= loops[-1]:
            loops.pop()
    return out


def warp_request(shape: tuple[int, int], lay: Blocked, strides: tuple[int, int], elem: int,
                 vector_bytes: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(addresses, bytes) of the first warp-level request of warp 0 on a [dim0, dim1] tile with this blocked
    layout and element strides: each lane's first vector (up to vector_bytes of elements contiguous in memory along
    the layout's fastest dimension, when that dimension has stride 1), lanes spread over threadsPerWarp in the
    layout's order; coordinates past the tile wrap (Triton replicates them)."""
    fast, slow = lay.order[0], lay.order[1]
    vec = lay.size_per_thread[fast] if strides[fast] == 1 else 1
    vec = max(1, min(vec, vector_bytes // elem))
    addrs, nbytes = [], []
    for lane in range(32):
        coord = [0, 0]
        coord[fast] = (lane % lay.threads_per_warp[fast]) * lay.size_per_thread[fast] % shape[fast]
        coord[slow] = (lane // lay.threads_per_warp[fast]) * lay.size_per_thread[slow] % shape[slow]
        addrs.append((coord[0] * strides[0] + coord[1] * strides[1]) * elem)
        nbytes.append(vec * elem)
    return np.array(addrs), np.array(nbytes)


def tile_traffic(accesses, strides: tuple[int, int], elem: int, base: int = 1 << 20) -> Traffic:
    """One request of each tile access (every request of a tile has the same pattern, shifted)."""
    total = Traffic()
    for i, (is_store, shape, lay) in enumerate(accesses):
        a, b = warp_request(shape, lay, strides, elem)
        total.add(traffic(np.full(len(a), i), a + base, b, np.full(len(a), int(is_store))))
    return total


def _meta_operands(shape, dt: str, layout: str):
    import torch

    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dt]
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    n, c = shape[:2]
    r = max(1, c // 16)
    x, x2 = (torch.empty(shape, dtype=dtype, device="meta").contiguous(memory_format=fmt) for _ in range(2))
    st = torch.empty((n, c), device="meta")
    w = (torch.empty((r, c), device="meta"), torch.empty(r, device="meta"),
         torch.empty((c, r), device="meta"), torch.empty(c, device="meta")) * 2
    return x, x2, st, w


def triton_launches(shape, dt: str, layout: str):
    """The Recorder of gpu_resources after the streaming Triton launchers ran on meta tensors of this case."""
    from lattice_kernels.triton import butterfly as bf
    from lattice_kernels.triton import channel_stats as cs
    from tools.gpu_resources import Recorder

    rec = Recorder()
    x, x2, st, _ = _meta_operands(shape, dt, layout)
    coefs = (st, st, st, st)
    cs.channel_stats(x, rec)
    cs.channel_stats_backward(st, st, x, st, st, rec)
    bf.butterfly(x, x2, coefs, True, rec)
    bf.butterfly_backward(x, x2, st, st, x, x2, coefs, st, st, rec)
    return rec


TRITON_STREAMING = ("stats_partial_kernel", "stats_backward_kernel", "butterfly_kernel", "butterfly_backward_kernel")


def triton_records(card: Card, shapes=BENCH_SHAPES, dtypes=DTYPES, layouts=LAYOUTS) -> list[Record]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tools.gpu_resources import Specialization

    compiled: dict[Specialization, tuple] = {}
    records = []
    for shape in shapes:
        c, p = shape[1], shape[2] * shape[3]
        for dt in dtypes:
            for layout in layouts:
                rec = triton_launches(shape, dt, layout)
                specs = {s.kernel: (s, fn) for s, fn in rec.specs.items()}
                grids = dict(rec.grids)
                strides = (1, c) if layout == "nhwc" else (p, 1)
                for name in TRITON_STREAMING:
                    spec, fn = specs[name]
                    if spec not in compiled:
                        src = ASTSource(fn, dict(spec.signature), constexprs=dict(spec.constexprs),
                                        attrs={(i,): [["tt.divisibility", 16]] for i in spec.divisible16})
                        warps = rec.num_warps.get(spec)
                        k = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                           options=None if warps is None else {"num_warps": warps})
                        with tempfile.TemporaryDirectory() as tmp:
                            cubin = Path(tmp) / "k.cubin"
                            cubin.write_bytes(k.asm["cubin"])
                            funcs, usage = sass_functions(cubin), resource_usage(cubin)
                        (mangled, instrs), = funcs.items()
                        compiled[spec] = (k, main_loop(instrs), usage.get(mangled, (0, 0)))
                    k, loop, (regs, static_smem) = compiled[spec]
                    t = tile_traffic(ttgir_tile_accesses(k.asm["ttgir"]), strides, ELEM_BYTES[dt])
                    threads = 32 * k.metadata.num_warps
                    smem = static_smem + int(k.metadata.shared)
                    grid = grids[name]
                    blocks = int(np.prod(grid))
                    tiles = {kv[0]: kv[1] for kv in spec.constexprs if kv[0].startswith("BLOCK")}
                    r = Record("triton", f"{name}[{','.join(f'{a}={b}' for a, b in tiles.items())}]", layout, dt,
                               shape, "TTGIR layouts of the loop's tiles", round(t.efficiency, 3), t.requests,
                               round(t.load_bytes_per_request, 1), round(t.read_share, 3), loop.loads, loop.stores,
                               regs, smem, threads, blocks, 0, 0, 0, 0, 0, card.name)
                    for kk, v in predict(card, t, loop, regs, smem, threads, blocks).items():
                        setattr(r, kk, v)
                    r.reductions_in_loop = ttgir_loop_reductions(k.asm["ttgir"])
                    r.programs_per_sm = round(blocks / card.sms, 2)
                    r.misses = misses(r)
                    records.append(r)
    return records


# ---- the table ----------------------------------------------------------------------------------------------------
def table(records: list[Record]) -> list[str]:
    lines = [f"{'backend':7} {'kernel':48} {'layout':6} {'dtype':5} {'shape':16} {'sectors':>7} {'loop widths':>16} "
             f"{'regs':>4} {'warps/SM':>8} {'in flight':>9} {'needed':>7} {'predicted':>9}"]
    for r in records:
        widths = "L" + "/".join(map(str, sorted(set(r.loop_load_widths)))) + " S" + "/".join(
            map(str, sorted(set(r.loop_store_widths))))
        shape = "x".join(map(str, r.shape))
        lines.append(f"{r.backend:7} {r.kernel[:48]:48} {r.layout:6} {r.dtype:5} {shape:16} "
                     f"{r.sector_efficiency:7.0%} {widths:>16} {r.registers:4d} {r.warps_per_sm:8.1f} "
                     f"{r.bytes_in_flight_per_sm / 1024:8.1f}K {r.bytes_needed_per_sm / 1024:6.1f}K "
                     f"{r.predicted_fraction:9.0%}" + ("  MISS: " + "; ".join(r.misses) if r.misses else ""))
    return lines


README_BEGIN = "<!-- gpu-efficiency: {} -->"
README_END = "<!-- /gpu-efficiency -->"


def markdown(doc: dict) -> str:
    """The README's table of a recorded JSON: per backend x kernel x layout x dtype, the predicted fraction of copy
    bandwidth at each benchmark shape, with what limits it."""
    card = doc["card"]
    lines = [f"Predicted by `python -m tools.gpu_efficiency` on {doc['generated']} (Triton {doc['triton']}), for an "
             f"{card['name']}: {card['bandwidth'] / 1e12:.2f} TB/s, {card['sms']} SMs, an assumed loaded DRAM latency "
             f"of {card['latency_ns']:.0f} ns, copy at {doc['copy_fraction']:.0%} of the datasheet bandwidth. "
             "**Predicted, not measured**: no GPU has run these kernels yet.", "",
             "| backend | kernel | layout | dtype | sectors used | main-loop widths (B/lane) | regs | "
             + " | ".join(f"predicted at {k}" for k in doc["targets"]["fraction"]) + " | misses |",
             "|---|---|---|---|---|---|---|" + "---|" * len(doc["targets"]["fraction"]) + "---|"]
    rows: dict[tuple, list[dict]] = {}
    for r in doc["records"]:
        rows.setdefault((r["backend"], r["kernel"], r["layout"], r["dtype"]), []).append(r)
    for (backend, kernel, layout, dtype), rs in rows.items():
        by_shape = {"x".join(map(str, r["shape"])): r for r in rs}
        widths = "load " + "/".join(map(str, sorted(set(rs[0]["loop_load_widths"])))) + (
            ", store " + "/".join(map(str, sorted(set(rs[0]["loop_store_widths"])))) if rs[0]["loop_store_widths"]
            else "")
        missed = sorted({m for r in rs for m in r["misses"]})
        lines.append(f"| {backend} | `{kernel}` | {layout} | {dtype} | "
                     f"{min(r['sector_efficiency'] for r in rs):.0%} | {widths} | {rs[0]['registers']} | "
                     + " | ".join(f"{by_shape[k]['predicted_fraction']:.0%}" if k in by_shape else "-"
                                  for k in doc["targets"]["fraction"])
                     + f" | {'; '.join(missed) or 'none'} |")
    return "\n".join(lines)


def write_readme(json_path: Path, readme: Path = ROOT / "README.md") -> None:
    """Replace README.md's block for json_path (between its markers) with markdown(json)."""
    rel = json_path.resolve().relative_to(ROOT).as_posix()
    begin = README_BEGIN.format(rel)
    text = readme.read_text()
    if begin not in text:
        raise ValueError(f"{readme} has no {begin!r} ... {README_END!r} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(README_END, 1)
    doc = json.loads(json_path.read_text())
    readme.write_text(f"{head}{begin}\n{markdown(doc)}\n{README_END}{tail}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.gpu_efficiency", description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="also write every record, with the assumptions, as JSON here")
    p.add_argument("--only", choices=["cuda", "triton"], help="one backend only")
    p.add_argument("--card", choices=sorted(CARDS), default="h100", help="the card of the model (default h100)")
    p.add_argument("--readme", type=Path, metavar="JSON", help="only rewrite README.md's table from this JSON")
    return p


def run(args: argparse.Namespace) -> int:
    if args.readme:
        write_readme(args.readme)
        return 0
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("unset TRITON_INTERPRET: the Triton SASS needs Triton's JIT functions, not the interpreter")
    card = CARDS[args.card]
    records: list[Record] = []
    if args.only in (None, "cuda"):
        records += cuda_records(card)
    if args.only in (None, "triton"):
        records += triton_records(card)
    print("\n".join(table(records)))
    if args.json:
        import datetime

        import triton

        doc = {"generated": datetime.date.today().isoformat(), "model": "predicted, not measured",
               "card": asdict(card), "copy_fraction": COPY_FRACTION, "triton": triton.__version__,
               "nvcc": nvcc_version(),
               "targets": {"sector_efficiency": TARGET_SECTOR_EFFICIENCY, "width_bytes": TARGET_WIDTH,
                           "fraction": {"x".join(map(str, k)): v for k, v in TARGET_FRACTION.items()}},
               "records": [asdict(r) for r in records]}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 1 if any(r.misses for r in records) else 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
