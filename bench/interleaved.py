"""The times of one model case measured side by side in one process: every backend's model built once (the plain
model eager and compiled, the fused model eager and compiled; bench/model_case.py), warmed (compilation happens
there), then timed in interleaved rounds (bench/rounds.py: one call of each per round, in a rotated order), so that
the seconds-long phases in which a shared CPU runs everything slower hit every backend alike. Prints the samples
(one per round and backend, ms); models_bench turns them into times and paired ratios.

    python -m bench.interleaved '{"case": {...Case...}, "backends": ["eager", "compile", "cpu"], "device": "cpu",
                                  "rounds": 12, "seconds_left": 90}'
(run by models_bench; prints one JSON line). seconds_left: the run's budget (--max-minutes) left, after which no
round starts once three are done."""

from __future__ import annotations

import json
import sys
import time

import torch

from .model_case import build, make_call
from .rounds import run_rounds


def main() -> None:
    cfg = json.loads(sys.argv[1])
    device = torch.device(cfg["device"])
    calls = {}
    for b in cfg["backends"]:
        model, x = build({"case": cfg["case"], "backend": b, "device": device.type})
        calls[b] = make_call(cfg["case"], model, x, device)
    warmup = cfg.get("warmup", 2)
    left = cfg.get("seconds_left")
    samples = run_rounds(calls, cfg["rounds"], warmup=warmup,
                         sync=torch.cuda.synchronize if device.type == "cuda" else None,
                         deadline=None if left is None else time.monotonic() + left)
    print(json.dumps({"samples_ms": samples, "warmup": warmup}))


if __name__ == "__main__":
    main()
