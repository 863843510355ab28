"""Where lattice-evaluate's time goes, per image: the network (plain and x8 self-ensemble) against the protocol's
own steps (the MATLAB-bicubic LR image, the bicubic baseline, PSNR and SSIM on Y of the output and the baseline),
with the published LatticeNet on scikit-image's photographs at the benchmark folders' sizes (Set5/Set14-sized
photographs, and a 1024x768 Urban100-sized one made from a photograph by imresize). Each step is the median of
--repeats timed calls after one untimed call, in this process. The network runs in float32 (lattice-evaluate's
default), whatever inference's default on this CPU.

    python -m bench.evaluation_timing [--scale 4] [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import lattice_kernels as lk
from lattice_kernels import evaluation, inference
from lattice_kernels.imresize import imresize
from lattice_kernels.metrics import psnr_y, ssim_y
from lattice_kernels.train.photos import photo


def images() -> dict[str, np.ndarray]:
    """name -> uint8 (H, W, 3): a Set5-sized, a Set14-sized and an Urban100-sized (1024x768) photograph."""
    return {"astronaut 512x512": photo("astronaut"), "motorcycle_left 740x500": photo("motorcycle_left"),
            "rocket 1024x768": imresize(photo("rocket"), size=(768, 1024))}


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_image(net: torch.nn.Module, hr: np.ndarray, repeats: int) -> dict[str, float]:
    """Seconds per step of evaluation.evaluate_sr on one HR image."""
    s = int(net.scale)
    hr = evaluation.crop_to_scale(hr, s)
    lr = evaluation.make_lr(hr, s)
    sr = inference.super_resolve(net, lr, dtype=torch.float32)
    up = imresize(lr, size=hr.shape[:2])
    t = {
        "lr image": median_seconds(lambda: evaluation.make_lr(hr, s), repeats),
        "bicubic baseline": median_seconds(lambda: imresize(lr, size=hr.shape[:2]), repeats),
        "psnr+ssim (model, baseline)": median_seconds(
            lambda: (psnr_y(sr, hr, s), ssim_y(sr, hr, s), psnr_y(up, hr, s), ssim_y(up, hr, s)), repeats),
        "network": median_seconds(lambda: inference.super_resolve(net, lr, dtype=torch.float32), repeats),
        "network x8 self-ensemble": median_seconds(lambda: inference.super_resolve(net, lr, self_ensemble=True,
                                                                             dtype=torch.float32),
                                                   max(1, repeats // 2)),
    }
    t["protocol"] = t["lr image"] + t["bicubic baseline"] + t["psnr+ssim (model, baseline)"]
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=4, choices=(2, 3, 4))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="write the record to this file")
    a = p.parse_args(argv)
    torch.set_grad_enabled(False)
    net = lk.LatticeNet.from_pretrained(a.scale).eval()
    rows = {}
    print(f"LatticeNet x{a.scale}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("| image | network | x8 self-ensemble | LR image | bicubic | PSNR+SSIM | protocol / network |")
    print("|---|---|---|---|---|---|---|")
    for name, hr in images().items():
        t = time_image(net, hr, a.repeats)
        rows[name] = t
        print(f"| {name} | {t['network'] * 1e3:.0f} ms | {t['network x8 self-ensemble'] * 1e3:.0f} ms | "
              f"{t['lr image'] * 1e3:.1f} ms | {t['bicubic baseline'] * 1e3:.1f} ms | "
              f"{t['psnr+ssim (model, baseline)'] * 1e3:.1f} ms | {t['protocol'] / t['network']:.1%} |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"scale": a.scale, "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
                       "seconds": rows}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
