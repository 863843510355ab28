"""Train LatticeNet (x2/x3/x4) or the restoration model on a folder of images, stage 1 (L1) or stage 2
(contrastive fine-tuning from a stage-1 checkpoint); resumes by itself when --out already holds a run.

    python python/train.py --data DIV2K/HR --out runs/x2 --scale 2 --steps 300000 --milestones 200000
    python python/train.py --data DIV2K/HR --out runs/x2-cl --stage 2 --stage1 runs/x2/model.safetensors \\
        --cl-features vgg19 --vgg-weights vgg19-dcbb9e9d.pth --steps 50000
    torchrun --nproc_per_node 4 python/train.py ...           # DistributedDataParallel, one process per GPU
    python python/train.py --task denoise --data clean/ --sigma 15 50 --out runs/dn --preset large
"""

from __future__ import annotations

import argparse
import json

from lattice_kernels.train import TrainConfig, Trainer


def parse(argv=None) -> TrainConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of HR (sr) or clean (denoise) images")
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics.jsonl")
    p.add_argument("--task", choices=["sr", "denoise"], default="sr")
    p.add_argument("--scale", type=int, default=2, choices=[2, 3, 4])
    p.add_argument("--lr-data", default=None, help="paired LR folder (default: bicubic downscaling on the fly)")
    p.add_argument("--val-data", default=None)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--milestones", type=int, nargs="*", default=[], help="halve the learning rate at these steps")
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--grad-clip", type=float, default=None)
    p.add_argument("--ema", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--val-every", type=int, default=0)
    p.add_argument("--tensorboard", action="store_true")
    p.add_argument("--backend", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--stage", type=int, choices=[1, 2], default=1)
    p.add_argument("--stage1", default=None, help="stage-1 weights (stage 2)")
    p.add_argument("--cl-weight", type=float, default=1.0)
    p.add_argument("--cl-features", choices=["vgg19", "pixel"], default="vgg19")
    p.add_argument("--vgg-weights", default=None, help="local torchvision VGG-19 state dict")
    p.add_argument("--negatives", type=int, default=3)
    p.add_argument("--snapshots", nargs="*", default=[])
    p.add_argument("--sigma", type=float, nargs="+", default=[25.0], help="noise sigma, or a range lo hi")
    p.add_argument("--channels", type=int, choices=[1, 3], default=3)
    p.add_argument("--preset", choices=["small", "large"], default="small")
    a = p.parse_args(argv)
    return TrainConfig(
        data=a.data, out_dir=a.out, task=a.task, scale=a.scale, lr_data=a.lr_data, val_data=a.val_data,
        patch=a.patch, batch_size=a.batch_size, steps=a.steps, lr=a.lr, lr_milestones=a.milestones, amp=a.amp,
        channels_last=a.channels_last, grad_clip=a.grad_clip, ema=a.ema, seed=a.seed, workers=a.workers,
        repeat=a.repeat, on_error=a.on_error, checkpoint_every=a.checkpoint_every, log_every=a.log_every,
        val_every=a.val_every, tensorboard=a.tensorboard, backend=a.backend, device=a.device,
        progress=not a.no_progress, stage=a.stage, stage1_checkpoint=a.stage1, cl_weight=a.cl_weight,
        cl_features=a.cl_features, vgg_weights=a.vgg_weights, negatives=a.negatives, snapshots=a.snapshots,
        sigma=a.sigma[0] if len(a.sigma) == 1 else (a.sigma[0], a.sigma[1]), channels=a.channels, preset=a.preset)


def main(argv=None) -> int:
    cfg = parse(argv)
    history = Trainer(cfg).run()
    if history:
        print(json.dumps(history[-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
