"""The CPU denoising recipe: train the small LatticeRestorer (color, sigma 25) from scratch on four scikit-image
photographs and score it on two held-out ones with the denoising benchmarks' protocol (Gaussian noise of sigma 25 on
the 0..255 scale, seeded, not clipped; PSNR/SSIM on the full RGB image), against the noisy input and against
scikit-image's non-local means with its filter strength h chosen on the training photographs. Writes a JSON summary.

    python python/recipe_cpu_denoise.py --out runs/denoise [--steps 1500] \
        [--summary bench/results/denoise-recipe-cpu.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import lattice_kernels as lk
from lattice_kernels.evaluation import add_noise, evaluate_folder, image_files, noise_rng
from lattice_kernels.inference import read_image
from lattice_kernels.metrics import psnr, ssim
from lattice_kernels.train import TrainConfig, Trainer

HERE = Path(__file__).parent
H_FACTORS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)  # h = factor * sigma, the grid non-local means is tuned on


def nl_means(noisy: np.ndarray, sigma: float, h_factor: float) -> np.ndarray:
    """scikit-image's non-local means (fast mode, 5x5 patches, search distance 6) of a float (H, W, 3) image on the
    0..255 scale, given the true sigma; uint8 result."""
    from skimage.restoration import denoise_nl_means

    out = denoise_nl_means(noisy / 255.0, h=h_factor * sigma / 255.0, sigma=sigma / 255.0, patch_size=5,
                           patch_distance=6, fast_mode=True, channel_axis=-1)
    return np.floor(np.clip(out * 255.0, 0, 255) + 0.5).astype(np.uint8)


def nl_means_scores(folder: Path, sigma: float, seed: int, h_factor: float) -> tuple[float, float]:
    """Mean PSNR/SSIM of non-local means over `folder`, with the noise of evaluation.evaluate_folder (same seed and
    image order, so the same noisy images the network sees)."""
    ps, ss = [], []
    for i, f in enumerate(image_files(folder)):
        clean = read_image(f, "RGB")
        den = nl_means(add_noise(clean, sigma, noise_rng(seed, i)), sigma, h_factor)
        ps.append(psnr(den, clean))
        ss.append(ssim(den, clean))
    return float(np.mean(ps)), float(np.mean(ss))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/denoise"))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--sigma", type=float, default=25.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--summary", type=Path, default=None, help="JSON summary (default: <out>/summary.json)")
    p.add_argument("--nlm-h", type=float, default=None,
                   help="non-local means h / sigma to use instead of tuning it (e.g. what an earlier run chose)")
    p.add_argument("--note", default="", help="recorded in the summary (machine, conditions)")
    a = p.parse_args(argv)

    data = a.out / "photos"
    subprocess.run([sys.executable, str(HERE / "prepare_photos.py"), str(data)], check=True)
    train, val = data / "train", data / "val"
    summary: dict = {"note": a.note, "sigma": a.sigma, "train_images": [f.stem for f in image_files(train)],
                     "val_images": [f.stem for f in image_files(val)],
                     "protocol": "clean + N(0, sigma^2) on 0..255, seeded, not clipped; output rounded to uint8; "
                                 "PSNR/SSIM on the full RGB image"}

    # Non-local means: h chosen on the training photographs (other noise seed), then scored on the held-out ones.
    t = time.perf_counter()
    if a.nlm_h is None:
        tuning = {f"{k:g}": nl_means_scores(train, a.sigma, 1, k)[0] for k in H_FACTORS}
        best = max(tuning, key=tuning.get)
        summary["nlm_h_over_sigma_train_psnr"] = tuning
    else:
        tuning, best = "given (--nlm-h)", a.nlm_h
    summary["nlm_h_over_sigma"] = float(best)
    summary["nlm_psnr"], summary["nlm_ssim"] = nl_means_scores(val, a.sigma, 0, float(best))
    summary["nlm_minutes"] = (time.perf_counter() - t) / 60
    print(f"non-local means: h = {best} sigma (train PSNR {tuning}), held-out {summary['nlm_psnr']:.2f} dB",
          flush=True)

    t = time.perf_counter()
    cfg = TrainConfig(data=str(train), out_dir=str(a.out / "train"), task="denoise", channels=3, preset="small",
                      sigma=a.sigma, patch=a.patch, batch_size=a.batch_size, steps=a.steps, lr=2e-4,
                      lr_milestones=[int(a.steps * 0.75)], repeat=64, checkpoint_every=100, log_every=20, seed=0)
    Trainer(cfg).run()
    summary["train_minutes"] = (time.perf_counter() - t) / 60
    logged = [json.loads(line) for line in (a.out / "train" / "metrics.jsonl").read_text().splitlines()]
    if logged and "seconds" in logged[-1]:  # the trainer's own clock: also right for a resumed run
        summary["train_minutes_logged"] = logged[-1]["seconds"] / 60
    summary["train_steps"] = a.steps
    summary["batch_size"], summary["patch"] = a.batch_size, a.patch
    net = lk.LatticeRestorer.from_checkpoint(a.out / "train" / "model.safetensors").eval()
    summary["parameters"] = sum(q.numel() for q in net.parameters())
    res = evaluate_folder(net, val, task="denoise", sigma=a.sigma, seed=0)
    summary["noisy_psnr"], summary["noisy_ssim"] = res.mean("baseline_psnr"), res.mean("baseline_ssim")
    summary["restorer_psnr"], summary["restorer_ssim"] = res.mean("psnr"), res.mean("ssim")
    summary["per_image"] = [im.__dict__ for im in res.images]
    out = a.summary or a.out / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
