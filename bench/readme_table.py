"""Markdown from a recorded benchmark JSON, so that every number the README quotes comes from a file:
the full report (bench/results/<device>.md: every op, model and deployment table) and the README's short headline
table, which sits between `<!-- headline: bench/results/<device>.json -->` and `<!-- /headline -->` in README.md
or a page of docs/
(tests/test_readme_results.py fails when either disagrees with the JSON).

    python -m bench.readme_table bench/results/<device>.json            # print the full report
    python -m bench.readme_table bench/results/<device>.json --write    # write <device>.md, update its headline block
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from .report import ratio_cell, ratio_text
from .rounds import per_round_ratios, ratio_summary


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def op_table(rows: list[dict]) -> str:
    ops = [r for r in rows if r.get("kind") == "op"]
    lib = sorted({r["backend"] for r in ops} - {"eager", "compile", "compile-max"})
    head = "| op | pass | shape | layout | dtype | eager ms | compile ms | " + " | ".join(
        f"{b} ms | {b} % copy BW (conv: GFLOP/s) | {b} vs eager | {b} vs compile" for b in lib) + " |"
    lines = [head, "|" + "---|" * (6 + 4 * len(lib) + 1)]
    keys = []
    for r in ops:
        k = (r["op"], r["pass"], "x".join(map(str, r["shape"])), r.get("layout", "nchw"), r["dtype"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        group = {r["backend"]: r for r in ops if (r["op"], r["pass"], "x".join(map(str, r["shape"])),
                                                    r.get("layout", "nchw"), r["dtype"]) == k}
        comp = group.get("compile-max") or group.get("compile")
        cells = [*k, _fmt(group.get("eager", {}).get("median_ms"), ".3f"), _fmt(comp and comp["median_ms"], ".3f")]
        for b in lib:
            r = group.get(b, {})
            rate = (_fmt(r["GFLOPs"], ".0f") + " GFLOP/s") if "GFLOPs" in r else _fmt(r.get("pct_copy_bw"), ".0f") + "%"
            cells += [_fmt(r.get("median_ms"), ".3f"), rate, ratio_text(r, "vs_eager"), ratio_text(r, "vs_compile")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_table(rows: list[dict]) -> str:
    models = [r for r in rows if r.get("kind") == "model"]
    if any("peak_mem_vs_eager" in r for r in models):  # runs with interleaved model cases
        lines = ["| case | backend | median ms (p10-p90) | peak MiB | peak / eager's | vs eager plain | "
                 "vs compiled plain |", "|---|---|---|---|---|---|---|"]
        for r in models:
            lines.append(f"| {r['case']} | {r['backend']} | {r['median_ms']:.1f} ({r['p10_ms']:.1f}-{r['p90_ms']:.1f}) "
                         f"| {_fmt(r.get('peak_mem_MB'), '.0f')} | {ratio_cell(r.get('peak_mem_vs_eager'))} | "
                         f"{ratio_text(r, 'vs_eager')} | {ratio_text(r, 'vs_compile')} |")
        return "\n".join(lines)
    lines = ["| case | backend | median ms | peak MiB | vs eager plain | vs compiled plain |",
             "|---|---|---|---|---|---|"]
    for r in models:
        lines.append(f"| {r['case']} | {r['backend']} | {r['median_ms']:.1f} | {_fmt(r.get('peak_mem_MB'), '.0f')} | "
                     f"{ratio_text(r, 'vs_eager')} | {ratio_text(r, 'vs_compile')} |")
    return "\n".join(lines)


def interleaved_table(rows: list[dict]) -> str:
    lines = []
    for r in (r for r in rows if r.get("kind") == "interleaved"):
        med, pr = r["median_ms"], r["paired_ratio"]
        lines += [*([""] if lines else []), f"{r['case']} ({r['rounds']} rounds):", "",
                  "| backend | median ms | vs eager plain (paired) | vs compiled plain (paired) |", "|---|---|---|---|"]
        for b in med:
            ve = 1.0 if b == "eager" else pr.get(f"eager/{b}")
            vc = 1.0 if b == "compile" else pr.get(f"compile/{b}")
            lines.append(f"| {b} | {med[b]:.1f} | {_fmt(ve, '.2f')}x | {_fmt(vc, '.2f')}x |")
    return "\n".join(lines)


def deploy_table(rows: list[dict]) -> str:
    """The deployment runtimes: each one's time as a ratio to this library's (median and range of the per-round
    ratios; > 1 is slower than the library) and the max |difference| of its output from the eager plain model."""
    lines = []
    for r in (r for r in rows if r.get("kind") == "deploy"):
        if not r.get("ratio_to_library"):
            why = "; ".join(f"{k}: {v}" for k, v in r.get("skipped", {}).items())
            lines += [*([""] if lines else []), f"{r['case']}: skipped ({why})"]
            continue
        versions = ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items())
        how = "".join(f"; {what}: {r[key]}" for what, key in (("library", "library"), ("runtimes", "runtimes_input"))
                      if key in r)
        how += "".join(f"; {k}: {v}" for k, v in r.get("not_timed", {}).items())
        lines += [*([""] if lines else []),
                  f"{r['case']} ({r['rounds']} interleaved rounds in one process"
                  + (f", {r['sample']}" if r.get("sample") else "") + f", {r['threads']} threads"
                  + (f"; {versions}" if versions else "") + how + "):", "",
                  f"| runtime | median ms | time / {r['baseline']} (median) | range over rounds | "
                  "max abs diff from eager (0..255) |", "|---|---|---|---|---|"]
        for n, ms in r["median_ms"].items():
            lo, hi = r["ratio_range"][n]
            diff = "-" if n == "eager" else f"{r['max_abs_diff_vs_eager'][n]:.1e}"
            lines.append(f"| {n} | {ms:.1f} | {r['ratio_to_library'][n]:.2f}x | {lo:.2f}-{hi:.2f}x | {diff} |")
        for what, why in r.get("skipped", {}).items():
            lines.append(f"\n({what} skipped: {why})")
    return "\n".join(lines)


def environment_line(run: dict) -> str:
    env = run["environment"]
    return (f"Measured on {env['device']}, {env['date']}: torch {env['torch']}, triton {env.get('triton')}, "
            f"CPU ISA {env.get('cpu_isa')}, copy bandwidth {env.get('copy_bandwidth_GBps', 0):.1f} GB/s, malloc "
            f"{env.get('malloc', 'default').split(' ')[0]}.")


def spread_line(run: dict) -> str:
    """How a run's ratios were measured, for runs that record it (key "ratio_spread"; older runs: '')."""
    if not run.get("ratio_spread"):
        return ""
    return ("Every time is the median of interleaved rounds in one process (the compared backends alternating, in a "
            "rotated order); every ratio is the median of the per-round ratios, in parentheses the "
            f"{run['ratio_spread']}. Peak memory: each (case, backend) in its own process.")


def full_report(run: dict) -> str:
    """Every table of a recorded run (the content of bench/results/<device>.md)."""
    parts = [environment_line(run), spread_line(run), op_table(run["rows"]), model_table(run["rows"]),
             interleaved_table(run["rows"]), deploy_table(run["rows"])]
    return "\n\n".join(p for p in parts if p) + "\n"


def _is_default_deploy(r: dict) -> bool:
    """The deployment case the LR 320x180 inference row quotes: batch 1, LR 320x180 (older runs: the only one)."""
    return r.get("shape", [1, 3, 180, 320]) == [1, 3, 180, 320] and not r.get("tile")


def headline(run: dict) -> str:
    """The README's short table: LatticeNet x4 inference against eager and torch.compile of the plain model and
    against the deployment runtimes, and the training step; each ratio with its spread over rounds where the run
    records one (runs with "ratio_spread"; older runs quote the recorded interleaved rows without it)."""
    rows = run["rows"]
    spread = bool(run.get("ratio_spread"))
    lines = [environment_line(run), "", "| case | this library | vs eager | vs torch.compile | vs ONNX Runtime | "
             "vs OpenVINO, f32 forced | vs OpenVINO, its defaults |", "|---|---|---|---|---|---|---|"]
    # The deployment cases (the plain model exported to ONNX) run from an NCHW float32 input on CPU.
    deploys = [r for r in rows if r.get("kind") == "deploy" and r.get("ratio_to_library")
               and r.get("dtype", "float32") == "float32" and r.get("device", "cpu") == "cpu"]
    deploy = next((r for r in deploys if _is_default_deploy(r)), None)

    def runtimes(d: dict | None) -> list[str]:
        return [ratio_cell(d["ratio_to_library"].get(n), d["ratio_range"].get(n) if spread else None)
                if d and n in d["ratio_to_library"] else "-" for n in PEERS]

    if spread:  # the inference rows are the model cases, measured in interleaved rounds
        infer = [r for r in rows if r.get("kind") == "model" and r.get("backend") == "cpu"
                 and r["case"].startswith("LatticeNet") and "infer" in r["case"]]
        for r in infer:
            d = deploy if "channels_last" not in r["case"] and "LR 320x180" in r["case"] else None
            lines.append(f"| {r['case']} ({r['runs']} rounds) | {r['median_ms']:.1f} ms | "
                         f"{ratio_text(r, 'vs_eager')} | "
                         f"{ratio_text(r, 'vs_compile')} | " + " | ".join(runtimes(d))
                         + " |")
        for d in (d for d in deploys if not _is_default_deploy(d)):
            base, ratio, rng = d["baseline"], d["ratio_to_library"], d["ratio_range"]
            plain = [ratio_cell(ratio[n], rng[n]) if n in ratio else "-" for n in ("eager", "compile")]
            lines.append(f"| {d['case'].removesuffix(', deployment runtimes')} ({d['rounds']} rounds) | "
                         f"{d['median_ms'][base]:.1f} ms | {' | '.join(plain)} | {' | '.join(runtimes(d))} |")
        for d in (d for d in deploys if BF16 in d.get("samples_ms", {})):
            lines.append(bf16_row(d))
    for r in (r for r in rows if r.get("kind") == "interleaved"):
        med, pr = r["median_ms"], r["paired_ratio"]
        d = deploy if "channels_last" not in r["case"] else None
        lines.append(f"| {r['case']} ({r['rounds']} rounds) | {med['cpu']:.1f} ms | "
                     f"{_fmt(pr.get('eager/cpu'), '.2f')}x | {_fmt(pr.get('compile/cpu'), '.2f')}x | "
                     + " | ".join(runtimes(d)) + " |")
    for r in (r for r in rows if r.get("kind") == "model" and r.get("backend") == "cpu" and "train" in r["case"]):
        mem = _fmt(r.get("peak_mem_MB"), ".0f") + " MiB"
        if r.get("peak_mem_vs_eager") is not None:
            mem += f" ({r['peak_mem_vs_eager']:.2f}x eager's)"
        rounds = f" ({r['runs']} rounds)" if spread else ""
        lines.append(f"| {r['case']}{rounds} | {r['median_ms']:.1f} ms, {mem} | "
                     f"{ratio_text(r, 'vs_eager')} | "
                     f"{ratio_text(r, 'vs_compile')} | - | - | - |")
    lines += ["", "Ratios are the other's time over this library's (> 1: the library is faster); the ONNX Runtime and "
              "OpenVINO ratios are from the deployment case's own interleaved rounds (NCHW input)."
              + (f" Each ratio is the median of the per-round ratios of backends alternating in rounds in one "
                 f"process, in parentheses the {run['ratio_spread']}; peak memory is each backend's in its own "
                 "process." if spread else "")]
    return "\n".join(lines)


# The deployment runtimes of the headline's columns, and the library's bf16 runner of the deployment cases.
PEERS = ("onnxruntime", "openvino", "openvino-default")
BF16 = "cpu-bf16-autocast"


def bf16_row(d: dict) -> str:
    """A headline row for the library under bf16 autocast in deployment case d: the runtimes' time over its time,
    per round of the case's own interleaved rounds (median and range)."""
    s = d["samples_ms"]
    cells = [ratio_cell(*ratio_summary(per_round_ratios(s, n, BF16))) if n in s else "-" for n in PEERS]
    label = d["case"].removesuffix(", deployment runtimes").replace(" float32 ", " bf16 autocast ")
    default = " (the inference default on this CPU)" if "default" in d.get("precision", {}).get(BF16, "") else ""
    return (f"| {label}{default} ({d['rounds']} rounds) | {statistics.median(s[BF16]):.1f} ms | - | - | "
            + " | ".join(cells) + " |")


HEADLINE_START = "<!-- headline: {} -->"
HEADLINE_END = "<!-- /headline -->"


def replace_headline(readme: str, results: str, table: str) -> str:
    """README text with the block that names `results` replaced by `table`."""
    start = HEADLINE_START.format(results)
    i = readme.index(start) + len(start)
    j = readme.index(HEADLINE_END, i)
    return readme[:i] + "\n" + table + "\n" + readme[j:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path)
    p.add_argument("--write", action="store_true",
                   help="write <results>.md and the headline block of the page that holds it")
    p.add_argument("--page", type=Path, action="append", default=None,
                   help="a Markdown page to update (default: README.md and docs/*.md)")
    a = p.parse_args(argv)
    run = json.loads(a.results.read_text())
    if not a.write:
        print(full_report(run))
        return 0
    a.results.with_suffix(".md").write_text(full_report(run))
    for page in a.page or doc_pages():
        text = page.read_text()
        if HEADLINE_START.format(a.results.as_posix()) in text:
            page.write_text(replace_headline(text, a.results.as_posix(), headline(run)))
    return 0


def doc_pages(root: Path = Path(".")) -> list[Path]:
    """The pages that may hold headline blocks: the README (the front page) and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


if __name__ == "__main__":
    raise SystemExit(main())
