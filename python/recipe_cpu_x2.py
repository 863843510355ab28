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

import lattice_kernels as lk
from lattice_kernels.evaluation import evaluate_folder, image_files
from lattice_kernels.train import TrainConfig, Trainer

HERE = Path(__file__).parent


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
    summary: dict = {"train_images": [f.stem for f in image_files(train)],
                     "val_images": [f.stem for f in image_files(val)],
                     "protocol": "LR by MATLAB-bicubic imresize (training and evaluation); PSNR/SSIM on Y, 2 pixels "
                                 "shaved (lattice_kernels.evaluation)"}

    t = time.perf_counter()
    s1 = TrainConfig(data=str(train), out_dir=str(a.out / "stage1"), scale=2, patch=48, batch_size=16,
                     steps=a.steps, lr=2e-4, lr_milestones=[int(a.steps * 0.75)], repeat=64, checkpoint_every=200,
                     log_every=20, seed=0)
    Trainer(s1).run()
    summary["stage1_minutes"] = (time.perf_counter() - t) / 60
    summary["stage1_steps"] = a.steps
    net = lk.LatticeNet.from_checkpoint(a.out / "stage1" / "model.safetensors")
    res = evaluate_folder(net, val)
    summary["bicubic_psnr"], summary["bicubic_ssim"] = res.mean("baseline_psnr"), res.mean("baseline_ssim")
    summary["stage1_psnr"], summary["stage1_ssim"] = res.mean("psnr"), res.mean("ssim")

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
    res = evaluate_folder(net, val)
    summary["stage2_psnr"], summary["stage2_ssim"] = res.mean("psnr"), res.mean("ssim")
    out = a.summary
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
