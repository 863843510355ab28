"""The [cpu-default] issue's training-quality check: a short from-scratch LatticeNet x2 run (lattice_kernels.train,
L1, on the CPU recipe's four scikit-image training photographs) in float32 and under bf16 autocast, for several
seeds (each seed: the weights and the crops), and how far the bf16 loss curve is from the float32 one against how
far float32 runs of different seeds are from each other (the run-to-run noise).

Reported per run: the mean L1 over consecutive windows of steps and the held-out PSNR/SSIM at the end (the
recipe's two held-out photographs, lattice_kernels.evaluation). Summary: per window, |mean over seeds of bf16 -
mean over seeds of float32| against the spread (max - min) of the float32 seeds.

    python -m bench.train_loss_curve '{"steps": 300, "seeds": [0, 1, 2], "batch": 8,
                                       "record": "bench/results/train-loss-curve-<cpu>.json"}'
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lattice_kernels as lk
from lattice_kernels.evaluation import evaluate_folder
from lattice_kernels.train import TrainConfig, Trainer

from . import deploy

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = {"float32": None, "bf16-autocast": "bf16"}


def _windows(losses: list[float], window: int) -> list[float]:
    return [sum(losses[i:i + window]) / len(losses[i:i + window]) for i in range(0, len(losses), window)]


def run(steps: int, seeds: list[int], batch: int, window: int, work: Path) -> dict:
    subprocess.run([sys.executable, str(ROOT / "python" / "prepare_photos.py"), str(work / "photos")], check=True,
                   capture_output=True)
    runs: dict[str, dict[int, dict]] = {p: {} for p in PRECISIONS}
    for seed in seeds:
        for name, amp in PRECISIONS.items():  # alternating, so that a slow phase of the machine hits both
            out = work / f"{name}-seed{seed}"
            cfg = TrainConfig(data=str(work / "photos" / "train"), out_dir=str(out), scale=2, patch=48,
                              batch_size=batch, steps=steps, lr=2e-4, repeat=64, checkpoint_every=steps,
                              log_every=steps, seed=seed, amp=amp, progress=False, backend="cpu")
            t = time.perf_counter()
            history = Trainer(cfg).run()
            minutes = (time.perf_counter() - t) / 60
            res = evaluate_folder(lk.LatticeNet.from_checkpoint(out / "model.safetensors"), work / "photos" / "val")
            runs[name][seed] = {"minutes": minutes, "loss_windows": _windows([m["l1"] for m in history], window),
                                "val_psnr": res.mean("psnr"), "val_ssim": res.mean("ssim")}
            print(f"{name} seed {seed}: {minutes:.1f} min, last window L1 {runs[name][seed]['loss_windows'][-1]:.5f}, "
                  f"held-out {runs[name][seed]['val_psnr']:.3f} dB", flush=True)
    n_windows = len(runs["float32"][seeds[0]]["loss_windows"])

    def mean(name: str, key: str, i: int | None = None) -> float:
        vals = [r[key] if i is None else r[key][i] for r in runs[name].values()]
        return sum(vals) / len(vals)

    per_window = []
    for i in range(n_windows):
        f32 = [r["loss_windows"][i] for r in runs["float32"].values()]
        per_window.append({"window": i, "bf16_minus_float32": mean("bf16-autocast", "loss_windows", i)
                           - mean("float32", "loss_windows", i), "float32_spread": max(f32) - min(f32)})
    f32_psnr = [r["val_psnr"] for r in runs["float32"].values()]
    return {"steps": steps, "seeds": seeds, "batch": batch, "window": window, "runs": runs,
            "per_window": per_window,
            "val_psnr": {"bf16_minus_float32": mean("bf16-autocast", "val_psnr") - mean("float32", "val_psnr"),
                         "float32_spread": max(f32_psnr) - min(f32_psnr)},
            "windows_within_float32_spread": sum(abs(w["bf16_minus_float32"]) <= w["float32_spread"]
                                                 for w in per_window),
            "method": "LatticeNet x2 from scratch, L1, Adam lr 2e-4, LR patch 48, cpu backend; each seed sets the "
                      "weights and the crops; float32 and bf16 runs of a seed alternate"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = json.loads(argv[0]) if argv else {}
    with tempfile.TemporaryDirectory() as work:
        result = run(int(cfg.get("steps", 300)), list(cfg.get("seeds", [0, 1, 2])), int(cfg.get("batch", 8)),
                     int(cfg.get("window", 50)), Path(work))
    for w in result["per_window"]:
        print(f"steps {w['window'] * result['window']}-: bf16 - float32 mean L1 {w['bf16_minus_float32']:+.5f}, "
              f"float32 seed spread {w['float32_spread']:.5f}")
    v = result["val_psnr"]
    print(f"held-out PSNR: bf16 - float32 {v['bf16_minus_float32']:+.3f} dB, float32 seed spread "
          f"{v['float32_spread']:.3f} dB; {result['windows_within_float32_spread']} of {len(result['per_window'])} "
          "windows within the float32 spread")
    if cfg.get("record"):
        Path(cfg["record"]).write_text(json.dumps({"environment": deploy.environment(), **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
