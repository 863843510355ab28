"""The library's LatticeNet x4 training step in float32 and under bf16 autocast, side by side in one process in
interleaved rounds (bench/rounds.py): the [cpu-default] issue's training target (bf16 >= 1.5x the float32 step).
The step is bench/model_case.py's (forward, L1 loss to a fixed target, backward, Adam), on the ``cpu`` backend.

    python -m bench.train_precision '{"shape": [16, 3, 48, 48], "rounds": 8,
                                      "record": "bench/results/train-precision-<cpu>.json"}'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from . import deploy
from .model_case import build, make_call
from .rounds import per_round_ratios, ratio_summary, run_rounds, time_fields

DTYPES = ("float32", "bfloat16")


def run(shape: list[int], rounds: int, backend: str = "cpu") -> dict:
    """{"times": {dtype: median, p10, p90 in ms}, "bf16_speedup": the median of the per-round float32 / bf16
    times, "bf16_speedup_range": their min-max, ...}."""
    device = torch.device("cpu")
    calls = {}
    for dt in DTYPES:
        case = {"model": "latticenet", "mode": "train", "shape": shape, "dtype": dt, "layout": "nchw"}
        model, x = build({"case": case, "backend": backend, "device": "cpu"})
        calls[dt] = make_call(case, model, x, device)
    samples = run_rounds(calls, rounds, warmup=2, prime=1)
    speedup, spread = ratio_summary(per_round_ratios(samples, "float32", "bfloat16"))
    return {"shape": shape, "backend": backend, "rounds": rounds,
            "times": {dt: time_fields(samples[dt]) for dt in DTYPES},
            "bf16_speedup": speedup, "bf16_speedup_range": spread,
            "method": "interleaved rounds in one process, one untimed call of the same step before each timed one; "
                      "the speedup is the median of the per-round float32 / bf16 times, with their min-max"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = json.loads(argv[0]) if argv else {}
    result = run(cfg.get("shape", [16, 3, 48, 48]), int(cfg.get("rounds", 8)))
    t = result["times"]
    print(f"LatticeNet x4 train step {result['shape']}: float32 {t['float32']['median_ms']:.1f} ms, bf16 autocast "
          f"{t['bfloat16']['median_ms']:.1f} ms: bf16 {result['bf16_speedup']:.2f}x "
          f"({result['bf16_speedup_range'][0]:.2f}-{result['bf16_speedup_range'][1]:.2f})")
    if cfg.get("record"):
        Path(cfg["record"]).write_text(json.dumps({"environment": deploy.environment(), **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
