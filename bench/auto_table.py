"""Record, from a GPU benchmark JSON, which of `cuda` and `triton` is faster per op on that card, into
lattice_kernels/auto_backends.json (what backend 'auto' reads).

    python -m bench.auto_table bench/results/gpu-check/gpu.json [--table lattice_kernels/auto_backends.json]

The choice per op is the backend with the smaller total median time over every shape, dtype, layout and pass of
the run (forward+backward counted as it was measured)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lattice_kernels.backends import AUTO_TABLE as TABLE

OP_GROUPS = {"channel_stats": ("channel_stats",), "combination_coefficients": ("combination_coefficients",),
             "butterfly": ("butterfly", "butterfly_q_stats")}


def choose(rows: list[dict]) -> dict[str, str]:
    out = {}
    for op, names in OP_GROUPS.items():
        totals: dict[str, float] = {}
        keys: dict[str, set] = {}
        for r in rows:
            if r.get("kind") == "op" and r["op"] in names and r["backend"] in ("cuda", "triton"):
                k = (r["op"], str(r["shape"]), r.get("layout"), r["dtype"], r["pass"])
                keys.setdefault(r["backend"], set()).add(k)
                totals[r["backend"]] = totals.get(r["backend"], 0.0) + r["median_ms"]
        if len(totals) == 2 and keys["cuda"] == keys["triton"]:
            out[op] = min(totals, key=totals.get)
        elif len(totals) == 1:
            out[op] = next(iter(totals))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path)
    p.add_argument("--table", type=Path, default=TABLE)
    a = p.parse_args(argv)
    run = json.loads(a.results.read_text())
    device = run["environment"]["device"]
    if run["rows"] and run["rows"][0].get("device") != "cuda":
        raise SystemExit(f"{a.results} is not a GPU run")
    table = json.loads(a.table.read_text()) if a.table.exists() else {"devices": {}}
    table.setdefault("devices", {})[device] = choose(run["rows"])
    table.setdefault("sources", {})[device] = f"{a.results} ({run['environment'].get('date')})"
    a.table.write_text(json.dumps(table, indent=1) + "\n")
    print(json.dumps(table["devices"][device]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
