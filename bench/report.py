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


RANGE = "{0[0]:.2f}-{0[1]:.2f}x"  # format_table's format of a [min, max] ratio range


def add_copy_fraction(row: dict, copy_gbps: float | None) -> None:
    """pct_copy_bw: the row's bytes per second as a percentage of the measured copy bandwidth."""
    if copy_gbps and "GBps" in row:
        row["pct_copy_bw"] = 100 * row["GBps"] / copy_gbps


def ratio_cell(value: float | None, rng: list[float] | None = None) -> str:
    """'1.23x', or '1.23x (1.10-1.31)' with its spread over rounds; '-' without a value."""
    if value is None:
        return "-"
    return f"{value:.2f}x" + (f" ({rng[0]:.2f}-{rng[1]:.2f})" if rng else "")


def ratio_text(row: dict, field: str) -> str:
    """ratio_cell of row[field] with its spread row[field + '_range'] (when the row has one)."""
    return ratio_cell(row.get(field), row.get(f"{field}_range"))


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


# One color per backend in every plot (the plain model's baselines in greys/oranges, the library's in blues/greens,
# the deployment runtimes in browns/pinks).
BACKEND_COLORS = {"eager": "#8c8c8c", "compile": "#f28e2b", "compile-max": "#f28e2b", "cpu": "#1f77b4",
                  "compile+cpu": "#76b7e5", "cuda": "#2ca02c", "compile+cuda": "#98df8a", "triton": "#d62728",
                  "compile+triton": "#ff9896", "torch": "#9467bd", "onnxruntime": "#8c564b",
                  "onnxruntime-cuda": "#8c564b", "openvino": "#e377c2"}
BACKEND_ORDER = list(BACKEND_COLORS)
FIG_WIDTH_IN, DPI = 9.0, 100  # 900 px: the README's width, so text is drawn at the size it is read


def _color(backend: str) -> str:
    return BACKEND_COLORS.get(backend, "#bcbd22")


def _ordered(backends) -> list[str]:
    return sorted(set(backends), key=lambda b: (BACKEND_ORDER.index(b) if b in BACKEND_ORDER else 99, b))


def _grouped_barh(ax, groups: list[str], backends: list[str], value, label, *,
                  ref_line: float | None = None, spread=None) -> None:
    """Horizontal bars: one block per group (top to bottom), one bar per backend in it, each annotated;
    spread(group, backend) -> [lo, hi] or None draws a whisker (the range over rounds of a ratio)."""
    height = 0.8 / max(1, len(backends))
    finite = [v for g in groups for b in backends if (v := value(g, b)) is not None and v == v]
    if spread is not None:
        finite += [rng[1] for g in groups for b in backends if (rng := spread(g, b))]
    vmax = max(finite) if finite else 1.0
    for bi, b in enumerate(backends):
        ys, vals, errs = [], [], []
        for gi, g in enumerate(groups):
            v = value(g, b)
            if v is not None and v == v:
                ys.append(gi + (bi - (len(backends) - 1) / 2) * height)
                vals.append(v)
                errs.append((spread and spread(g, b)) or [v, v])
        xerr = [[v - e[0] for v, e in zip(vals, errs)], [e[1] - v for v, e in zip(vals, errs)]]
        ax.barh(ys, vals, height * 0.92, color=_color(b), label=b,
                **({"xerr": xerr, "error_kw": {"elinewidth": 0.6, "capsize": 1.5}} if spread else {}))
        for y, v, e in zip(ys, vals, errs):
            ax.text(max(v, e[1]) + 0.01 * vmax, y, label(v), va="center", fontsize=7)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels(groups, fontsize=8)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xlim(0, vmax * 1.22)
    if ref_line is not None:
        ax.axvline(ref_line, color="k", lw=0.7, ls="--")
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="x", labelsize=8)


def _title_and_legend(fig, title: str, backends: list[str]) -> None:
    """The title on top, the backends' legend under it, and the panels laid out below both."""
    import matplotlib.patches as mpatches

    h = fig.get_figheight()
    fig.suptitle(title, fontsize=11, y=1 - 0.08 / h, va="top")
    fig.legend(handles=[mpatches.Patch(color=_color(b), label=b) for b in backends], loc="upper center",
               ncol=len(backends), fontsize=9, frameon=False, bbox_to_anchor=(0.5, 1 - 0.36 / h))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / h))


def _plot_ops(op_rows: list[dict], path_prefix: Path, title: str, plt) -> list[Path]:
    """Small multiples, one panel per op: its configurations (pass, shape, layout, dtype) down the side, one bar
    per backend. Two figures: median time, and speedup over eager (eager is the dashed line at 1)."""
    def config(r):
        dtype = "" if r["dtype"] == "float32" else f" {r['dtype']}"
        return f"{r['pass']} {'x'.join(map(str, r['shape']))} {r.get('layout', 'nchw')}{dtype}"

    ops = list(dict.fromkeys(r["op"] for r in op_rows))
    configs = list(dict.fromkeys(config(r) for r in op_rows))
    by_key = {(r["op"], config(r), r["backend"]): r for r in op_rows}
    backends = _ordered(r["backend"] for r in op_rows)
    written = []
    cols, left_configs = 2, None
    rows_n = -(-len(ops) // cols)
    ranged = any("vs_eager_range" in r for r in op_rows)
    for what, key, xlabel, fmt, skip_eager in (
            ("time", "median_ms", "median time (ms; lower is better)", "{:.3g}", False),
            ("speedup", "vs_eager", "speedup over eager (x; higher is better; dashed: eager)", "{:.2f}x", True)):
        shown = [b for b in backends if not (skip_eager and b == "eager")]
        panel_h = 0.13 * len(configs) * len(shown) + 0.6
        fig, axes = plt.subplots(rows_n, cols, figsize=(FIG_WIDTH_IN, panel_h * rows_n + 0.9), squeeze=False)
        for i, op in enumerate(ops):
            ax = axes[i // cols][i % cols]
            op_configs = [c for c in configs if any((op, c, b) in by_key for b in shown)]
            _grouped_barh(ax, op_configs, shown, lambda g, b, op=op, key=key: by_key.get((op, g, b), {}).get(key),
                          fmt.format, ref_line=1.0 if skip_eager else None,
                          spread=(lambda g, b, op=op, key=key: by_key.get((op, g, b), {}).get(f"{key}_range"))
                          if ranged and skip_eager else None)
            ax.set_title(op, fontsize=10, fontweight="bold")
            if i % cols and op_configs == left_configs:  # the same rows as the panel on its left
                ax.set_yticklabels([])
            left_configs = op_configs
            if i // cols == rows_n - 1 or i + cols >= len(ops):
                ax.set_xlabel(xlabel, fontsize=8)
        for j in range(len(ops), rows_n * cols):
            axes[j // cols][j % cols].axis("off")
        note = " (interleaved rounds; whiskers: range of the per-round ratios)" if ranged and skip_eager else ""
        _title_and_legend(fig, f"{title}: ops, {what}{note}", shown)
        p = path_prefix.with_name(path_prefix.name + f"-ops-{what}.png")
        fig.savefig(p, dpi=DPI)
        plt.close(fig)
        written.append(p)
    return written


def _wrap(text: str, width: int = 30) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _plot_models(model_rows: list[dict], path_prefix: Path, title: str, plt) -> Path:
    """Grouped by case: speedup over the eager plain model, and peak memory; one bar per backend."""
    cases = list(dict.fromkeys(r["case"] for r in model_rows))
    by_key = {(r["case"], r["backend"]): r for r in model_rows}
    backends = _ordered(r["backend"] for r in model_rows)
    labels = {c: _wrap(c, 26) for c in cases}
    per_case_h = 0.2 * len(backends) + 0.15
    fig, axes = plt.subplots(1, 2, figsize=(FIG_WIDTH_IN, per_case_h * len(cases) + 1.4), sharey=True,
                             gridspec_kw={"width_ratios": [2, 1]})

    def speed(g, b):
        r = by_key.get((g, b))
        return None if r is None else r.get("vs_eager")

    def time_ms(g, b):
        r = by_key.get((g, b))
        return None if r is None else r["median_ms"]

    def mem(g, b):
        r = by_key.get((g, b))
        return None if r is None else r.get("peak_mem_MB")

    def speed_range(g, b):
        r = by_key.get((g, b))
        return None if r is None else r.get("vs_eager_range")

    ranged = any("vs_eager_range" in r for r in model_rows)
    _grouped_barh(axes[0], cases, backends, speed, lambda v: f"{v:.2f}x", ref_line=1.0,
                  spread=speed_range if ranged else None)
    axes[0].set_xlabel("speedup over the eager plain model (x; higher is better"
                       + ("; whiskers: range over rounds)" if ranged else ")"), fontsize=8)
    _grouped_barh(axes[1], cases, backends, mem, lambda v: f"{v:.0f}")
    axes[1].set_xlabel("peak memory (MiB)", fontsize=8)
    axes[0].set_yticklabels([labels[c] for c in cases], fontsize=8)
    # the absolute times beside the speedups, in the bars' own order
    for ax in axes[:1]:
        height = 0.8 / max(1, len(backends))
        for gi, c in enumerate(cases):
            for bi, b in enumerate(backends):
                t = time_ms(c, b)
                if t is not None:
                    ax.text(0.02 * ax.get_xlim()[1], gi + (bi - (len(backends) - 1) / 2) * height,
                            f"{t:.0f} ms", va="center", fontsize=7, color="white")
    _title_and_legend(fig, f"{title}: models (bars: speedup; in the bars: median time)", backends)
    p = path_prefix.with_name(path_prefix.name + "-models.png")
    fig.savefig(p, dpi=DPI)
    plt.close(fig)
    return p


def _plot_deploy(deploy_rows: list[dict], path_prefix: Path, title: str, plt) -> Path:
    """Per deployment case: each runtime's time as a ratio to this library's (median of per-round ratios, the bar;
    the range over rounds, the whisker), annotated with the ratio and the max |difference| from eager."""
    cases = [r for r in deploy_rows if r.get("ratio_to_library")]
    fig, axes = plt.subplots(len(cases), 1, figsize=(FIG_WIDTH_IN, sum(0.42 * len(r["ratio_to_library"]) + 1.0
                                                                      for r in cases) + 0.3), squeeze=False)
    for ax, r in zip(axes[:, 0], cases):
        names = _ordered(r["ratio_to_library"])
        ratios = [r["ratio_to_library"][n] for n in names]
        lo = [ratios[i] - r["ratio_range"][n][0] for i, n in enumerate(names)]
        hi = [r["ratio_range"][n][1] - ratios[i] for i, n in enumerate(names)]
        ax.barh(range(len(names)), ratios, 0.7, color=[_color(n) for n in names], xerr=[lo, hi],
                error_kw={"elinewidth": 0.8, "capsize": 3})
        xmax = max(r["ratio_range"][n][1] for n in names)
        for i, n in enumerate(names):
            diff = r["max_abs_diff_vs_eager"].get(n)
            note = f"{ratios[i]:.2f}x  ({r['median_ms'][n]:.0f} ms" + (
                "" if n == "eager" or diff is None else f", max |diff| {diff:.1e}") + ")"
            ax.text(r["ratio_range"][n][1] + 0.02 * xmax, i, note, va="center", fontsize=8)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=9)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_xlim(0, xmax * 1.6)
        ax.axvline(1.0, color="k", lw=0.7, ls="--")
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(f"{r['case']} ({r['rounds']} interleaved rounds, {r['threads']} threads)", fontsize=9)
        ax.set_xlabel(f"time / this library's {r['baseline']} backend (x; lower is better; whisker: range over "
                      "rounds)", fontsize=8)
    fig.suptitle(f"{title}: deployment runtimes", fontsize=11)
    fig.tight_layout()
    p = path_prefix.with_name(path_prefix.name + "-deploy.png")
    fig.savefig(p, dpi=DPI)
    plt.close(fig)
    return p


def plot(rows: list[dict], path_prefix: Path, title: str) -> list[Path]:
    """<prefix>-ops-time.png and -ops-speedup.png (small multiples per op), -models.png (grouped by case) and
    -deploy.png (the deployment runtimes against the library), each 900 px wide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    op_rows = [r for r in rows if r.get("kind") == "op"]
    if op_rows:
        written += _plot_ops(op_rows, path_prefix, title, plt)
    model_rows = [r for r in rows if r.get("kind") == "model"]
    if model_rows:
        written.append(_plot_models(model_rows, path_prefix, title, plt))
    deploy_rows = [r for r in rows if r.get("kind") == "deploy" and r.get("ratio_to_library")]
    if deploy_rows:
        written.append(_plot_deploy(deploy_rows, path_prefix, title, plt))
    return written


def main(argv=None) -> int:
    """python -m bench.report RESULTS.json: redraw the plots of a recorded run beside it."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("results", type=Path)
    a = p.parse_args(argv)
    run = json.loads(a.results.read_text())
    for path in plot(run["rows"], a.results.with_suffix(""), run["environment"]["device"]):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
