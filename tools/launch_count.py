"""The GPU kernel launches of one LatticeNet forward, counted on the CPU (no GPU needed).

The forward runs on meta tensors (shapes, strides and dtypes, no data, no device), with every op of the library
resolved to the `cuda` backend's op set as on a GPU, under a dispatch mode that sees every ATen op and every op of
the library:

- an ATen op is one launch, except views, allocations (empty*) and the other ops that launch nothing (NO_LAUNCH),
  and a convolution with a bias or a one-row addmm, two (launches_of_aten; cuDNN may use more kernels for a
  convolution, which this does not see);
- an op of the library is the launches its backend's launcher makes at that shape: for `cuda`, those the real
  launchers of csrc/cuda/kernels.h make, recorded by the CPU execution harness in its dry mode
  (tools/cuda_emu); for `triton`, the kernel launches of lattice_kernels/triton's launchers (called with a
  recording `wrap` in place of wrap_triton) plus the ATen ops they call;
- a read of a device value on the host (`.item()`, `aten._local_scalar_dense`) is counted apart, as a sync, and so
  is every op whose output is a CPU tensor (a host tensor): a forward with neither can be captured in a CUDA graph
  (lattice_kernels.inference replays one per input shape on CUDA).

The plain model (lattice_kernels/models/reference.py) is counted the same way, as eager PyTorch runs it. What the
count does not say: how long a launch takes, and whether cuDNN picks one kernel or several for a convolution.

    python -m tools.launch_count [--lr 256] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from collections import Counter
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

NO_LAUNCH = {"empty", "empty_strided", "empty_like", "empty_permuted", "new_empty", "new_empty_strided", "resize_",
             "set_", "lift_fresh", "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel",
             "sym_storage_offset", "is_contiguous", "_unsafe_view"}
LIBRARY_NAMESPACES = ("lattice_kernels", "lattice_kernels_triton")
EMU_DTYPE = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def launches_of_aten(func, args: tuple) -> int:
    """The kernels an ATen op runs on a CUDA device: 0 for views, allocations and metadata; 2 for a convolution
    with a bias (cuDNN's kernel, then ATen adds the bias) and for addmm of a single row (cuBLAS: the bias copied
    into the output, then the GEMM; the bias epilogue of cuBLASLt needs more than one row); 1 otherwise."""
    name = func._schema.name.split("::")[-1]
    if func.is_view or name in NO_LAUNCH:
        return 0
    if name == "convolution":
        return 2 if len(args) > 2 and args[2] is not None else 1
    if name == "addmm":
        return 2 if args[1].shape[0] == 1 else 1
    return 1


@dataclasses.dataclass
class Count:
    """What one forward launches: the ATen launches by op, the library's launches by op, host syncs, and the ops
    whose output is a CPU tensor (host tensors: a CUDA graph could not capture their work, and moving them to the
    device is a host-to-device copy)."""

    aten: Counter = dataclasses.field(default_factory=Counter)
    library: Counter = dataclasses.field(default_factory=Counter)
    syncs: int = 0
    host_tensors: int = 0

    @property
    def total(self) -> int:
        return sum(self.aten.values()) + sum(self.library.values())

    def as_dict(self) -> dict:
        return {"launches": self.total, "aten_launches": sum(self.aten.values()),
                "library_launches": sum(self.library.values()), "host_syncs": self.syncs,
                "host_tensors": self.host_tensors,
                "aten_by_op": dict(sorted(self.aten.items())), "library_by_op": dict(sorted(self.library.items()))}


class _Recorder:
    """Stands in for wrap_triton: kernel[grid](...) records the launch instead of running it."""

    def __init__(self) -> None:
        self.launches: list[tuple[str, tuple]] = []

    def __call__(self, kernel):
        recorder = self

        class Launch:
            def __getitem__(self, grid):
                def run(*args, **kwargs):
                    g = grid(kwargs) if callable(grid) else grid
                    recorder.launches.append((getattr(kernel, "__name__", str(kernel)), tuple(g)))
                return run

        return Launch()


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _shape(x: torch.Tensor) -> tuple[int, int, int, bool]:
    n, c, h, w = x.shape
    return int(n), int(c), int(h * w), _channels_last(x)


class _CudaLaunches:
    """Launches of the `cuda` backend's ops, from the CPU execution harness's dry mode."""

    def __init__(self) -> None:
        import tools.cuda_emu as emu

        self.emu = emu.load("plain")

    def __call__(self, op: str, args: tuple) -> int:
        x = args[0]
        if op == "coefficients_from_stats":  # (N, C) statistics: the launcher reads N and C only
            n, c = x.shape
            return len(self.emu.dry(op, EMU_DTYPE[x.dtype], (int(n), int(c), 1, False), True, int(args[2].shape[0])))
        launcher = {"channel_stats": "channel_stats", "combination_coefficients": "combination_coefficients",
                    "butterfly": "butterfly", "butterfly_stacked": "butterfly", "butterfly_out": "butterfly"}[op]
        q_stats = bool(args[6]) if launcher == "butterfly" else True
        r = int(args[1].shape[0]) if op == "combination_coefficients" else 4
        return len(self.emu.dry(launcher, EMU_DTYPE[x.dtype], _shape(x), q_stats, r))


class _TritonLaunches:
    """Launches of the `triton` backend's ops: its launchers run with a recording wrap (kernels), under a counting
    mode (the ATen ops they call)."""

    def __call__(self, op: str, args: tuple) -> int:
        from lattice_kernels.triton import butterfly as bf
        from lattice_kernels.triton import channel_stats as cs
        from lattice_kernels.triton import combination_coefficients as cc

        rec = _Recorder()
        inner = Count()
        with _Counting(inner, library=None):
            if op == "channel_stats":
                cs.channel_stats(args[0], rec)
            elif op == "combination_coefficients":
                cc.combination_coefficients(args[0], tuple(args[1:9]), rec)
            elif op == "coefficients_from_stats":
                cc.coefficients_from_stats(args[0], args[1], tuple(args[2:10]), rec)
            elif op in ("butterfly", "butterfly_stacked"):
                fn = bf.butterfly if op == "butterfly" else bf.butterfly_stacked
                fn(args[0], args[1], tuple(args[2:6]), bool(args[6]), rec)
            elif op == "butterfly_out":
                c = args[0].shape[1]
                bf.butterfly_into(args[0], args[1], tuple(args[2:6]), bool(args[6]), args[7][:, :c], args[7][:, c:],
                                  rec)
            else:
                raise NotImplementedError(f"launch count of the triton op {op}")
        if inner.syncs:
            raise RuntimeError(f"the triton launcher of {op} reads a device value on the host")
        return len(rec.launches) + inner.total


class _Counting(TorchDispatchMode):
    def __init__(self, count: Count, library) -> None:
        super().__init__()
        self.count, self.library = count, library

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        namespace = func.namespace
        name = func._schema.name.split("::")[-1]
        if namespace == "prim":  # prim::device and the like: metadata
            pass
        elif namespace in LIBRARY_NAMESPACES:
            if self.library is None:
                raise RuntimeError(f"an op of the library ({name}) inside a launcher")
            self.count.library[name] += self.library(name, args)
        elif name == "_local_scalar_dense":
            self.count.syncs += 1
        if name == "_local_scalar_dense":  # a meta tensor has no value: any number lets the forward go on
            return 0
        out = func(*args, **kwargs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        host = sum(isinstance(o, torch.Tensor) and o.device.type == "cpu" for o in outs)
        self.count.host_tensors += host
        if namespace not in ("prim", *LIBRARY_NAMESPACES) and not host:  # work on the host launches nothing
            n = launches_of_aten(func, args)
            if n:
                self.count.aten[name] += n
        if name == "convolution" and _channels_last(args[0]):
            # cuDNN keeps a channels_last input's layout; the meta convolution returns NCHW
            out = out.contiguous(memory_format=torch.channels_last)
        return out


@contextlib.contextmanager
def _library_ops_of_cuda() -> Iterator[None]:
    """Every op of the library resolved to the `cuda` backend's op set (the C++ ops: on meta tensors their
    registered fake implementations run), as on a GPU; each call is then priced by the counted backend."""
    from lattice_kernels import backends

    saved = backends._resolve_constant
    backends._resolve_constant = lambda name, device_type, device_index, op: "cuda"
    try:
        yield
    finally:
        backends._resolve_constant = saved


def count_forward(model: str, lr: int = 256, dtype: torch.dtype = torch.float32, scale: int = 4) -> Count:
    """The launches of one inference forward of LatticeNet x`scale` on a (1, 3, lr, lr) CUDA input, the model cast
    to `dtype` (model.to(dtype): autocast, the library's reduced-precision mode, cannot run on meta tensors):
    model "eager" (the plain model, eager PyTorch), "cuda" or "triton" (lattice_kernels on that backend)."""
    import lattice_kernels as lk
    from lattice_kernels.models.reference import PlainLatticeNet

    count = Count()
    library = {"eager": None, "cuda": _CudaLaunches, "triton": _TritonLaunches}[model]
    # Meta tensors stand in for CUDA ones (shapes, strides and dtypes; torch's fake CUDA tensors cannot be copied
    # into another memory format without a CUDA build). The ATen ops run the same way on either device.
    with torch.device("meta"):
        net = PlainLatticeNet(scale) if model == "eager" else lk.LatticeNet(scale=scale, backend=model)
        net = net.to(dtype=dtype).eval()
        x = torch.empty(1, 3, lr, lr, dtype=dtype)
    with _library_ops_of_cuda(), torch.no_grad(), _Counting(count, library() if library is not None else None):
        net(x)
    return count


MODELS = ("eager", "cuda", "triton")


def count_all(lr: int, dtypes: tuple[str, ...] = ("float32", "bfloat16")) -> dict:
    """{dtype: {model: Count.as_dict()}} for LatticeNet x4 at LR lr x lr, batch 1."""
    return {d: {m: count_forward(m, lr, getattr(torch, d)).as_dict() for m in MODELS} for d in dtypes}


def table(record: dict) -> str:
    """Markdown: launches per forward for each model and dtype, and the ratio to eager plain."""
    lines = [f"LatticeNet x4 forward, LR {record['lr']}x{record['lr']}, batch 1, the model cast to each dtype "
             "(model.to(dtype)): GPU kernel launches counted on the CPU (tools/launch_count.py; a count, not a "
             "measurement on a GPU)", "",
             "| dtype | model | launches | of eager plain | ATen ops | library ops | host syncs | host tensors |",
             "|---|---|---|---|---|---|---|---|"]
    for dtype, counts in record["counts"].items():
        eager = counts["eager"]["launches"]
        for m, c in counts.items():
            lines.append(f"| {dtype} | {m} | {c['launches']} | {c['launches'] / eager:.2f} | {c['aten_launches']} "
                         f"| {c['library_launches']} | {c['host_syncs']} | {c['host_tensors']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lr", type=int, default=256, help="the LR input's side (default 256)")
    p.add_argument("--json", default=None, help="write the counts here")
    a = p.parse_args(argv)
    record = {"model": "LatticeNet x4", "lr": a.lr, "batch": 1, "torch": torch.__version__, "counts": count_all(a.lr)}
    print(table(record))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
