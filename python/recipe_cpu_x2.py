"""The CPU recipe: train LatticeNet x2 from scratch on four scikit-image photographs, compare with bicubic on two
held-out ones, then fine-tune with the contrastive loss (stage 2) and compare again. Writes a JSON summary.

    python python/recipe_cpu_x2.py --out runs/recipe-x2 [--steps 1200] [--stage2-steps 150]

On the 2-core CPU of this project stage 1 takes about 1.1 s per step (batch 16, LR patch 48). Stage 2 contrasts in
pixel space here (--cl-features pixel): VGG-19 weights cannot be downloaded on this machine; with a local
torchvision VGG-19 file pass --vgg-weights.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import lattice_kernels as lk
from lattice_kernels.train import TrainConfig, Trainer, evaluate
from lattice_kernels.train.data import bicubic_downscale, list_images, load_rgb
from lattice_kernels.train.metrics import psnr_y, ssim_y

HERE = Path(__file__).parent


def bicubic_scores(folder: Path, scale: int) -> tuple[float, float]:
    from PIL import Image

    ps, ss = [], []
    for f in list_images(folder):
        hr = load_rgb(f)
        hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
        lr = bicubic_downscale(hr, scale)
        up = np.asarray(Image.fromarray(lr).resize((hr.shape[1], hr.shape[0]), Image.BICUBIC))
        ps.append(psnr_y(up, hr, scale))
        ss.append(ssim_y(up, hr, scale))
    return float(np.mean(ps)), float(np.mean(ss))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/recipe-x2"))
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--stage2-steps", type=int, default=150)
    p.add_argument("--vgg-weights", default=None)
    p.add_argument("--summary", type=Path, default=Path("bench/results/train-recipe-cpu-x2.json"),
                   help="JSON summary (recorded results live in bench/results/)")
    a = p.parse_args(argv)
    import subprocess
    import sys

    data = a.out / "photos"
    subprocess.run([sys.executable, str(HERE / "prepare_photos.py"), str(data)], check=True)
    train, val = data / "train", data / "val"
    summary: dict = {"train_images": [f.stem for f in list_images(train)],
                     "val_images": [f.stem for f in list_images(val)]}
    summary["bicubic_psnr"], summary["bicubic_ssim"] = bicubic_scores(val, 2)

    t = time.perf_counter()
    s1 = TrainConfig(data=str(train), out_dir=str(a.out / "stage1"), scale=2, patch=48, batch_size=16,
                     steps=a.steps, lr=2e-4, lr_milestones=[int(a.steps * 0.75)], repeat=64, checkpoint_every=200,
                     log_every=20, seed=0)
    Trainer(s1).run()
    summary["stage1_minutes"] = (time.perf_counter() - t) / 60
    summary["stage1_steps"] = a.steps
    net = lk.LatticeNet.from_checkpoint(a.out / "stage1" / "model.safetensors")
    summary["stage1_psnr"], summary["stage1_ssim"] = evaluate(net, str(val), "sr", 2)

    t = time.perf_counter()
    s2 = TrainConfig(data=str(train), out_dir=str(a.out / "stage2"), scale=2, patch=48, batch_size=16,
                     steps=a.stage2_steps, lr=2e-5, repeat=64, checkpoint_every=50, log_every=10, seed=1, stage=2,
                     stage1_checkpoint=str(a.out / "stage1" / "model.safetensors"), cl_weight=1.0,
                     cl_features="vgg19" if a.vgg_weights else "pixel", vgg_weights=a.vgg_weights, negatives=3)
    Trainer(s2).run()
    summary["stage2_minutes"] = (time.perf_counter() - t) / 60
    summary["stage2_steps"] = a.stage2_steps
    summary["stage2_features"] = s2.cl_features
    net = lk.LatticeNet.from_checkpoint(a.out / "stage2" / "model.safetensors")
    summary["stage2_psnr"], summary["stage2_ssim"] = evaluate(net, str(val), "sr", 2)
    out = a.summary
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
