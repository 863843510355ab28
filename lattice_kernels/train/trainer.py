"""The two-stage trainer: stage 1 (L1) and stage 2 (L1 + lambda * contrastive, negatives from the frozen stage-1
network), on one CPU/GPU or several GPUs/processes under torchrun (DistributedDataParallel), resumable.

Checkpoints (rank 0, every `checkpoint_every` steps and at the end, each written to a temporary file and renamed):
  model.safetensors   the weights (EMA weights in ema.safetensors when ema is on)
  state.pt            step, optimizer, scheduler, EMA, RNG states and the config
A run started on an out_dir that holds state.pt resumes from it and continues with the same losses as an
uninterrupted run (the data of a step is a function of seed, epoch and index; see data.py)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..models import LatticeNet, LatticeRestorer, read_state_dict, save_safetensors
from .data import DenoiseDataset, EpochSampler, SRDataset
from .losses import VGG_WEIGHTS, ContrastiveLoss, PixelFeatures, VGG19Features


@dataclass
class TrainConfig:
    data: str                                    # folder of HR (SR) or clean (denoising) images
    out_dir: str
    task: str = "sr"                             # "sr" or "denoise"
    scale: int = 2
    lr_data: str | None = None                   # paired LR folder (SR); default: bicubic downscaling
    lr_resize: str = field(default="matlab", metadata={"help": (
        "how the LR images are made on the fly when lr_data is not given: 'matlab' (MATLAB's imresize bicubic, "
        "antialiased: the DIV2K and benchmark protocol the published models were trained and scored with) or "
        "'pil' (PIL's bicubic)")})
    val_data: str | None = None                  # folder of HR/clean images for PSNR/SSIM
    patch: int = 48                              # LR patch (SR) or patch (denoising)
    batch_size: int = 16                         # per process
    steps: int = 1000
    lr: float = 2e-4
    lr_milestones: list[int] = field(default_factory=list)  # halve the learning rate at these steps
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    amp: str | None = None                       # None, "bf16" or "fp16"
    channels_last: bool = False
    grad_clip: float | None = None
    ema: float | None = None                     # EMA decay of the weights, e.g. 0.999
    seed: int = 0
    workers: int = 0
    repeat: int = 1                              # passes over the image list per epoch
    cache_images: bool = True
    on_error: str = "fail"                       # unreadable images: "fail" or "skip"
    checkpoint_every: int = 500
    log_every: int = 10
    val_every: int = 0                           # 0: validate at the end only (when val_data is set)
    tensorboard: bool = False
    backend: str | None = None
    device: str | None = None
    progress: bool = True
    # stage 2
    stage: int = 1
    stage1_checkpoint: str | None = None         # weights of the stage-1 network (.pt/.safetensors)
    cl_weight: float = 1.0                       # lambda
    cl_features: str = "vgg19"                   # "vgg19" or "pixel"
    vgg_weights: str | None = None               # local torchvision VGG-19 state dict
    negatives: int = 3                           # K
    snapshots: list[str] = field(default_factory=list)  # stage-1 snapshots for negatives 2..K (else perturbed inputs)
    perturb_sigma: float = 2.0                   # noise (0..255 scale) of the perturbed-input negatives
    # denoising model
    sigma: float | tuple[float, float] = 25.0
    channels: int = 3
    preset: str = "small"


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


class Trainer:
    """Trainer(config).run() -> list of per-step metrics. callbacks: f(step, metrics) after each step."""

    def __init__(self, config: TrainConfig, callbacks: list[Callable[[int, dict], None]] | None = None,
                 model: nn.Module | None = None, contrastive_features: nn.Module | None = None):
        self.cfg = config
        self.callbacks = callbacks or []
        self._model_override = model
        self._features_override = contrastive_features
        if config.task not in ("sr", "denoise"):
            raise ValueError(f"task must be 'sr' or 'denoise', got {config.task!r}")
        if config.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {config.stage}")
        if config.stage == 2 and not config.stage1_checkpoint:
            raise ValueError("stage 2 needs stage1_checkpoint (the weights trained by stage 1)")
        if config.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {config.amp!r}")

    # ------------------------------------------------------------------ setup
    def _distributed(self) -> tuple[int, int]:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)

    def _device(self, rank: int) -> torch.device:
        if self.cfg.device:
            return torch.device(self.cfg.device)
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", rank))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device("cpu")

    def _build_model(self) -> nn.Module:
        c = self.cfg
        if self._model_override is not None:
            return self._model_override
        if c.task == "sr":
            return LatticeNet(scale=c.scale, backend=c.backend)
        return LatticeRestorer(channels=c.channels, preset=c.preset, backend=c.backend)

    def _dataset(self):
        c = self.cfg
        if c.task == "sr":
            return SRDataset(c.data, c.scale, c.patch, c.lr_data, repeat=c.repeat, seed=c.seed, on_error=c.on_error,
                             cache=c.cache_images, lr_resize=c.lr_resize)
        return DenoiseDataset(c.data, c.sigma, c.patch, c.channels, repeat=c.repeat, seed=c.seed,
                              on_error=c.on_error, cache=c.cache_images)

    def _contrastive(self, device) -> ContrastiveLoss:
        c = self.cfg
        if self._features_override is not None:
            feats = self._features_override
            weights = None
        elif c.cl_features == "vgg19":
            if not c.vgg_weights:
                raise ValueError("cl_features='vgg19' needs vgg_weights: the path of a local torchvision VGG-19 "
                                 "state dict (or use cl_features='pixel')")
            feats = VGG19Features(c.vgg_weights, rgb_range=255.0 if c.task == "sr" else 1.0)
            weights = VGG_WEIGHTS
        elif c.cl_features == "pixel":
            feats, weights = PixelFeatures(), None
        else:
            raise ValueError(f"cl_features must be 'vgg19' or 'pixel', got {c.cl_features!r}")
        return ContrastiveLoss(feats, weights).to(device)

    def _negative_nets(self, model: nn.Module, device) -> list[nn.Module]:
        c = self.cfg
        frozen = copy.deepcopy(model)
        frozen.load_state_dict(read_state_dict(c.stage1_checkpoint, "cpu"))
        nets = [frozen]
        for p in c.snapshots[: max(0, c.negatives - 1)]:
            snap = copy.deepcopy(model)
            snap.load_state_dict(read_state_dict(p, "cpu"))
            nets.append(snap)
        for n in nets:
            n.to(device).eval().requires_grad_(False)
        return nets

    # ------------------------------------------------------------------ run
    def run(self) -> list[dict]:
        c = self.cfg
        rank, world = self._distributed()
        device = self._device(rank)
        out = Path(c.out_dir)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(c.seed)
        np.random.seed(c.seed)
        random.seed(c.seed)

        model = self._build_model()
        if c.stage == 2 and self._model_override is None:
            model.load_state_dict(read_state_dict(c.stage1_checkpoint, "cpu"))
        fmt = torch.channels_last if c.channels_last else torch.contiguous_format
        model = model.to(device).to(memory_format=fmt)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=c.lr, betas=tuple(c.betas), eps=c.eps)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(c.lr_milestones), gamma=0.5)
        ema = copy.deepcopy(model).requires_grad_(False) if c.ema else None
        negatives = self._negative_nets(model, device) if c.stage == 2 else []
        cl_loss = self._contrastive(device) if c.stage == 2 else None

        step = 0
        state_path = out / "state.pt"
        if state_path.exists():
            st = torch.load(state_path, map_location="cpu", weights_only=False)
            model.load_state_dict(read_state_dict(out / "model.safetensors", "cpu"))
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            if ema is not None and "ema" in st:
                ema.load_state_dict(st["ema"])
            _set_rng_state(st["rng"])
            step = st["step"]

        net = model
        if world > 1:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                      else None)
        dataset = self._dataset()
        sampler = EpochSampler(dataset, c.seed, rank, world)
        per_epoch = len(sampler) // c.batch_size
        if per_epoch == 0:
            raise ValueError(f"batch_size {c.batch_size} exceeds the {len(sampler)} samples of an epoch per process; "
                             "lower it or raise repeat")
        loader = DataLoader(dataset, batch_size=c.batch_size, sampler=sampler, num_workers=c.workers,
                            drop_last=True, persistent_workers=False)
        log = open(out / "metrics.jsonl", "a") if rank == 0 else None
        tb = None
        if c.tensorboard and rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(out / "tensorboard"))
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(c.amp)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        history: list[dict] = []
        bar = None
        if c.progress and rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=c.steps, initial=step, desc=f"stage {c.stage}", unit="step")
        t0 = time.perf_counter()
        try:
            while step < c.steps:
                epoch, offset = divmod(step, per_epoch)
                sampler.set_epoch(epoch, offset * c.batch_size)
                for lr_img, hr_img in loader:
                    metrics = self._step(net, model, opt, sched, scaler, ema, negatives, cl_loss, lr_img, hr_img,
                                         device, fmt, amp_dtype, step)
                    step += 1
                    metrics.update(step=step, epoch=epoch, lr=opt.param_groups[0]["lr"],
                                   seconds=time.perf_counter() - t0)
                    history.append(metrics)
                    if rank == 0:
                        if step % c.log_every == 0 or step == c.steps:
                            log.write(json.dumps(metrics) + "\n")
                            log.flush()
                            if tb is not None:
                                for k in ("loss", "l1", "cl", "lr"):
                                    if k in metrics:
                                        tb.add_scalar(k, metrics[k], step)
                        if bar is not None:
                            bar.update()
                            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                        if step % c.checkpoint_every == 0 or step == c.steps:
                            self._checkpoint(out, model, opt, sched, ema, step)
                        if c.val_data and c.val_every and step % c.val_every == 0:
                            self._log_val(log, step, ema or model)
                    for cb in self.callbacks:
                        cb(step, metrics)
                    if step >= c.steps:
                        break
            if rank == 0 and c.val_data:
                self._log_val(log, step, ema or model)
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
            if tb is not None:
                tb.close()
        return history

    def _step(self, net, model, opt, sched, scaler, ema, negatives, cl_loss, inp, target, device, fmt, amp_dtype,
              step) -> dict:
        c = self.cfg
        inp = inp.to(device, non_blocking=True).contiguous(memory_format=fmt)
        target = target.to(device, non_blocking=True).contiguous(memory_format=fmt)
        ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
        with ctx:
            out = net(inp).float()
        l1 = F.l1_loss(out, target)
        loss = l1
        metrics = {"l1": l1.item()}
        if c.stage == 2:
            negs = self._negatives(negatives, inp, step, ctx)
            cl = cl_loss(out, target, negs)
            loss = l1 + c.cl_weight * cl
            metrics["cl"] = cl.item()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step + 1}; lower the learning rate or disable "
                                     "fp16 (amp='bf16')")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if c.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1 - c.ema)
                for e, b in zip(ema.buffers(), model.buffers()):
                    e.copy_(b)
        loss_v = loss.detach()
        if dist.is_initialized():
            dist.all_reduce(loss_v)
            loss_v /= dist.get_world_size()
        metrics["loss"] = loss_v.item()
        return metrics

    def _negatives(self, nets, inp, step, ctx) -> list[torch.Tensor]:
        """K images from the frozen stage-1 network (and snapshots, else perturbed inputs), computed once per
        batch without gradients."""
        c = self.cfg
        rng = (255.0 if c.task == "sr" else 1.0)
        g = torch.Generator(device="cpu").manual_seed(c.seed * 7919 + step)
        outs = []
        with torch.no_grad(), ctx:
            for k in range(c.negatives):
                if k < len(nets):
                    outs.append(nets[k](inp).float())
                else:
                    noise = torch.randn(inp.shape, generator=g).to(inp) * (c.perturb_sigma * rng / 255.0)
                    outs.append(nets[0](inp + noise).float())
        return outs

    def _checkpoint(self, out: Path, model, opt, sched, ema, step) -> None:
        save_safetensors(model, out / "model.safetensors", metadata={"step": str(step)})
        if ema is not None:
            save_safetensors(ema, out / "ema.safetensors", metadata={"step": str(step)})
        state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": _rng_state(),
                 "config": asdict(self.cfg)}
        if ema is not None:
            state["ema"] = ema.state_dict()
        _atomic_save(state, out / "state.pt")

    def _log_val(self, log, step, model) -> None:
        psnr, ssim = evaluate(model, self.cfg.val_data, self.cfg.task, self.cfg.scale, self.cfg.sigma, self.cfg.seed)
        log.write(json.dumps({"step": step, "val_psnr": psnr, "val_ssim": ssim}) + "\n")
        log.flush()


@torch.no_grad()
def evaluate(model: nn.Module, folder: str, task: str = "sr", scale: int = 2, sigma=25.0, seed: int = 0,
             tile: int | None = None) -> tuple[float, float]:
    """Mean PSNR/SSIM over a folder of HR/clean images with the benchmarks' protocols (lattice_kernels.evaluation):
    SR on the Y channel, border shaved by the model's scale, LR by MATLAB-bicubic downscaling; denoising on the full
    image with seeded unclipped Gaussian noise of `sigma` (the middle of a (lo, hi) range). `scale` is the model's."""
    from ..evaluation import evaluate_folder

    s = sigma if np.isscalar(sigma) else float(np.mean(sigma))
    model.eval()
    try:
        res = evaluate_folder(model, folder, task=task, sigma=s, seed=seed, tile=tile)
    finally:
        model.train()
    return res.mean("psnr"), res.mean("ssim")
