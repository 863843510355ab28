"""The headline comparison measured side by side in one process: LatticeNet x4 inference with every backend
(eager and torch.compile of the plain model; the fused model eager and compiled) built once, warmed, then timed
in interleaved rounds (one call of each per round, in a rotated order), so that the seconds-long phases in which a
shared CPU runs everything slower hit every backend alike. Reported per backend: the median over rounds; per pair:
the median of the per-round ratios (a paired estimate).

    python -m bench.interleaved '{"shape": [1, 3, 180, 320], "layout": "nchw", "backends": [...], "rounds": 12}'
(run by models_bench; prints one JSON line)."""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from .model_case import build


def main() -> None:
    cfg = json.loads(sys.argv[1])
    case = {"model": "latticenet", "mode": "infer", "shape": cfg["shape"], "dtype": "float32",
            "layout": cfg["layout"], "cudagraphs": False}
    models = {}
    for b in cfg["backends"]:
        torch.manual_seed(0)
        model, x = build({"case": case, "backend": b, "device": "cpu"})
        models[b] = (model.eval(), x)
    with torch.no_grad():
        for m, x in models.values():  # compilation happens here
            for _ in range(2):
                m(x)
        names = list(models)
        samples: dict[str, list[float]] = {b: [] for b in names}
        for r in range(cfg["rounds"]):
            for b in names[r % len(names):] + names[: r % len(names)]:
                m, x = models[b]
                t0 = time.perf_counter()
                m(x)
                samples[b].append((time.perf_counter() - t0) * 1e3)
    out = {"median_ms": {b: statistics.median(s) for b, s in samples.items()}, "samples_ms": samples}
    ratios = {}
    for num in names:
        for den in names:
            if num != den:
                per_round = [a / b for a, b in zip(samples[num], samples[den])]
                ratios[f"{num}/{den}"] = statistics.median(per_round)
    out["paired_ratio"] = ratios
    print(json.dumps(out))


if __name__ == "__main__":
    main()
