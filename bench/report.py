"""Tables, JSON and PNG plots of benchmark rows."""

from __future__ import annotations

import json
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

import torch


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def environment(device: torch.device) -> dict:
    env = {
        "device": device_name(device),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    try:
        from lattice_kernels._extension import C as _C

        env["cpu_isa"] = _C.cpu_isa() if _C is not None else None
    except ImportError:
        env["cpu_isa"] = None
    return env


def add_ratios(rows: list[dict], key_fields: tuple[str, ...], copy_gbps: float | None = None) -> None:
    """vs_eager / vs_compile: the baseline's median over this row's median, same key (op, shape, dtype, pass...)."""
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault(tuple(str(r.get(k)) for k in key_fields), {})[r["backend"]] = r
    for group in by_key.values():
        eager = group.get("eager")
        comp = group.get("compile-max") or group.get("compile")
        for r in group.values():
            if eager:
                r["vs_eager"] = eager["median_ms"] / r["median_ms"]
            if comp:
                r["vs_compile"] = comp["median_ms"] / r["median_ms"]
                r["compile_baseline"] = comp["backend"]
            if copy_gbps and "GBps" in r:
                r["pct_copy_bw"] = 100 * r["GBps"] / copy_gbps


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (header, key, format)."""
    cells = [[h for h, _, _ in columns]]
    for r in rows:
        line = []
        for _, key, fmt in columns:
            v = r.get(key)
            line.append("-" if v is None else (fmt.format(v) if fmt else str(v)))
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    out = []
    for j, line in enumerate(cells):
        out.append("  ".join(c.rjust(w) if j and i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def plot(rows: list[dict], path_prefix: Path, title: str) -> list[Path]:
    """time per backend, speedup over eager (op rows), and peak memory (model rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    op_rows = [r for r in rows if r.get("kind") == "op"]
    if op_rows:
        def gkey(r):
            return (r["op"], r["pass"], "x".join(map(str, r["shape"])), r.get("layout", ""), r["dtype"])

        groups = sorted({gkey(r) for r in op_rows})
        backends = sorted({r["backend"] for r in op_rows}, key=lambda b: ["eager", "compile", "compile-max"].index(b)
                          if b in ("eager", "compile", "compile-max") else 3 + hash(b) % 7)
        for what, key, ylabel, log in (("time", "median_ms", "median time (ms)", True),
                                       ("speedup", "vs_eager", "speedup over eager (x)", False)):
            fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(groups) * len(backends) / 2), 5))
            width = 0.8 / max(1, len(backends))
            for bi, b in enumerate(backends):
                vals = []
                for g in groups:
                    match = [r for r in op_rows if gkey(r) == g and r["backend"] == b]
                    vals.append(match[0].get(key, float("nan")) if match else float("nan"))
                ax.bar([i + bi * width for i in range(len(groups))], vals, width, label=b)
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
            ax.set_xticklabels([f"{g[0]}\n{g[1]} {g[2]}\n{g[3]} {g[4]}" for g in groups], fontsize=6, rotation=90)
            ax.set_ylabel(ylabel)
            if log:
                ax.set_yscale("log")
            else:
                ax.axhline(1.0, color="k", lw=0.5)
            ax.set_title(f"{title}: ops, {what}")
            ax.legend(fontsize=7)
            fig.tight_layout()
            p = path_prefix.with_name(path_prefix.name + f"-ops-{what}.png")
            fig.savefig(p, dpi=110)
            plt.close(fig)
            written.append(p)
    model_rows = [r for r in rows if r.get("kind") == "model"]
    if model_rows:
        labels = [f"{r['case']}\n{r['backend']}" for r in model_rows]
        fig, axes = plt.subplots(1, 2, figsize=(max(10, 0.35 * len(model_rows)), 6))
        axes[0].barh(labels, [r["median_ms"] for r in model_rows])
        axes[0].set_xlabel("median time (ms)")
        axes[1].barh(labels, [r.get("peak_mem_MB") or 0 for r in model_rows])
        axes[1].set_xlabel("peak memory (MiB)")
        for ax in axes:
            ax.tick_params(axis="y", labelsize=6)
            ax.invert_yaxis()
        fig.suptitle(f"{title}: models")
        fig.tight_layout()
        p = path_prefix.with_name(path_prefix.name + "-models.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written
