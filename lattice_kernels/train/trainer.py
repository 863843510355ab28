"""The two-stage trainer: stage 1 (L1) and stage 2 (L1 + lambda * contrastive, negatives from the frozen stage-1
network), on one CPU/GPU or several GPUs/processes under torchrun (DistributedDataParallel), resumable.

Checkpoints (rank 0, every `checkpoint_every` steps and at the end, each written to a temporary file and renamed):
  model.safetensors   the weights (EMA weights in ema.safetensors when ema is on)
  state.pt            step, weights, optimizer, scheduler, EMA, RNG states and the config; written last, so a
                      checkpoint that failed part-way leaves the previous state.pt whole
A run started on an out_dir that holds state.pt resumes from it and continues with the same losses as an
uninterrupted run (the data of a step is a function of seed, epoch and index; see data.py). One run at a time uses
a folder (a lock); damaged or incomplete run files are a RunFolderError, never a silent fresh start (see
run_folder.py)."""

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

from .._files import atomic_write
from ..backends import BACKENDS
from ..models import LatticeNet, LatticeRestorer, read_state_dict, save_safetensors
from .data import DenoiseDataset, EpochSampler, SRDataset
from .losses import VGG_WEIGHTS, ContrastiveLoss, PixelFeatures, VGG19Features
from .run_folder import load_state, lock_run_folder, trim_metrics, unlock_run_folder


@dataclass
class TrainConfig:
    """Everything a training run is made of. Each field's metadata holds its help text (and its choices where the
    values are a fixed set): the lattice-train command builds its options from these fields."""

    data: str = field(metadata={"help": "folder of HR (sr) or clean (denoise) images, searched recursively"})
    out_dir: str = field(metadata={"help": "run folder: model.safetensors, state.pt, metrics.jsonl; a run started "
                                           "on a folder holding state.pt resumes it"})
    task: str = field(default="sr", metadata={"help": "super-resolution or denoising", "choices": ("sr", "denoise")})
    scale: int = field(default=2, metadata={"help": "upscaling factor (sr)", "choices": (2, 3, 4)})
    lr_data: str | None = field(default=None, metadata={"help": "paired LR folder (sr); default: bicubic "
                                                                "downscaling of the HR images on the fly"})
    lr_resize: str = field(default="matlab", metadata={"help": (
        "how the LR images are made on the fly when lr_data is not given: 'matlab' (MATLAB's imresize bicubic, "
        "antialiased: the DIV2K and benchmark protocol the published models were trained and scored with) or "
        "'pil' (PIL's bicubic)"), "choices": ("matlab", "pil")})
    val_data: str | None = field(default=None, metadata={"help": "folder of HR/clean images for PSNR/SSIM"})
    patch: int = field(default=48, metadata={"help": "LR patch (sr) or patch (denoise) size in pixels"})
    batch_size: int = field(default=16, metadata={"help": "patches per step, per process"})
    steps: int = field(default=1000, metadata={"help": "optimizer steps in all"})
    lr: float = field(default=2e-4, metadata={"help": "Adam learning rate"})
    lr_milestones: list[int] = field(default_factory=list,
                                     metadata={"help": "halve the learning rate at these steps"})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "Adam betas"})
    eps: float = field(default=1e-8, metadata={"help": "Adam epsilon"})
    amp: str | None = field(default=None, metadata={"help": "automatic mixed precision (default: float32)",
                                                    "choices": ("bf16", "fp16")})
    channels_last: bool = field(default=False, metadata={"help": "run the model in channels_last memory format"})
    grad_clip: float | None = field(default=None, metadata={"help": "clip the gradient norm to this value"})
    ema: float | None = field(default=None, metadata={"help": "EMA decay of the weights, e.g. 0.999 "
                                                              "(ema.safetensors)"})
    seed: int = field(default=0, metadata={"help": "seed of the weights and of the data (crops, flips, noise)"})
    workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    repeat: int = field(default=1, metadata={"help": "passes over the image list per epoch"})
    cache_images: bool = field(default=True, metadata={"help": "keep the decoded images in memory"})
    on_error: str = field(default="fail", metadata={"help": "unreadable images: stop, or warn and skip them",
                                                    "choices": ("fail", "skip")})
    checkpoint_every: int = field(default=500, metadata={"help": "write the checkpoints every N steps"})
    log_every: int = field(default=10, metadata={"help": "write metrics.jsonl every N steps"})
    val_every: int = field(default=0, metadata={"help": "validate every N steps; 0: at the end only (with "
                                                        "val_data)"})
    tensorboard: bool = field(default=False, metadata={"help": "also log to TensorBoard (needs tensorboard)"})
    backend: str | None = field(default=None, metadata={"help": "op backend (default: lattice_kernels' default)",
                                                        "choices": BACKENDS})
    device: str | None = field(default=None, metadata={"help": "e.g. cpu, cuda, cuda:1 (default: the local GPU "
                                                               "if any, else cpu)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    # stage 2
    stage: int = field(default=1, metadata={"help": "1: L1 only; 2: contrastive fine-tuning of a stage-1 network",
                                            "choices": (1, 2)})
    stage1_checkpoint: str | None = field(default=None, metadata={"help": "weights of the stage-1 network "
                                                                          "(.pt/.safetensors; stage 2)"})
    cl_weight: float = field(default=1.0, metadata={"help": "lambda, the weight of the contrastive loss (stage 2)"})
    cl_features: str = field(default="vgg19", metadata={"help": "feature space of the contrastive loss (stage 2)",
                                                        "choices": ("vgg19", "pixel")})
    vgg_weights: str | None = field(default=None, metadata={"help": "local torchvision VGG-19 state dict "
                                                                    "(cl_features vgg19; nothing is downloaded)"})
    negatives: int = field(default=3, metadata={"help": "K, negatives per anchor (stage 2)"})
    snapshots: list[str] = field(default_factory=list,
                                 metadata={"help": "stage-1 snapshots for negatives 2..K (else perturbed inputs)"})
    perturb_sigma: float = field(default=2.0, metadata={"help": "noise (0..255 scale) of the perturbed-input "
                                                                "negatives"})
    # denoising model
    sigma: float | tuple[float, float] = field(default=25.0, metadata={"help": "Gaussian noise sigma (0..255 "
                                                                               "scale), or a range LO HI (denoise)"})
    channels: int = field(default=3, metadata={"help": "1 (gray) or 3 (color) (denoise)", "choices": (1, 3)})
    preset: str = field(default="small", metadata={"help": "size of the denoising model",
                                                   "choices": ("small", "large")})


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
        self._owns_group = False
        self._lock = None
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
        if model is not None and config.val_data and config.task == "sr" and not hasattr(model, "scale"):
            raise ValueError("validation (val_data) of a super-resolution model scores it at its `scale` attribute; "
                             f"the given {type(model).__name__} has none: set model.scale or drop val_data")

    # ------------------------------------------------------------------ setup
    def _distributed(self) -> tuple[int, int]:
        """(rank, world size). Under torchrun (WORLD_SIZE > 1) with no process group yet, the trainer creates one and
        owns it: close() destroys it. A group the caller created stays the caller's to destroy."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            self._owns_group = True
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

    # ------------------------------------------------------------------ the run
    def run(self) -> list[dict]:
        """Train to cfg.steps (resuming from out_dir/state.pt when it exists); returns the per-step metrics."""
        finished = False
        try:
            self.setup()
            while self.step < self.cfg.steps:
                for lr_img, hr_img in self.epoch_batches():
                    self.feed_data(lr_img, hr_img)
                    metrics = self.optimize_parameters()
                    self.after_step(metrics)
                    if self.step >= self.cfg.steps:
                        break  # the loader's iterator (and its worker processes) ends with the loop
            if self.rank == 0 and self.cfg.val_data:
                self.validation()
            finished = True
        finally:
            self.close(finished)
        return self.history

    def setup(self) -> None:
        """Process group, device, model, optimizer, scheduler, EMA, stage-2 negatives and loss, resume, data."""
        c = self.cfg
        self.rank, self.world = self._distributed()
        self.device = self._device(self.rank)
        self.out = Path(c.out_dir)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock = lock_run_folder(self.out)
        torch.manual_seed(c.seed)
        np.random.seed(c.seed)
        random.seed(c.seed)

        model = self._build_model()
        if c.stage == 2 and self._model_override is None:
            model.load_state_dict(read_state_dict(c.stage1_checkpoint, "cpu"))
        self.memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        self.model = model.to(self.device).to(memory_format=self.memory_format)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=c.lr, betas=tuple(c.betas), eps=c.eps)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(c.lr_milestones),
                                                              gamma=0.5)
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if c.ema else None
        self.negative_nets = self._negative_nets(self.model, self.device) if c.stage == 2 else []
        self.cl_loss = self._contrastive(self.device) if c.stage == 2 else None
        self.step = 0
        self.resume()

        self.net = self.model
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        dataset = self._dataset()
        self.sampler = EpochSampler(dataset, c.seed, self.rank, self.world)
        self.steps_per_epoch = len(self.sampler) // c.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size {c.batch_size} exceeds the {len(self.sampler)} samples of an epoch per "
                             "process; lower it or raise repeat")
        self.loader = DataLoader(dataset, batch_size=c.batch_size, sampler=self.sampler, num_workers=c.workers,
                                 drop_last=True, persistent_workers=False)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(c.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self._open_logs()
        self.history: list[dict] = []
        self.t0 = time.perf_counter()

    def resume(self) -> None:
        """Continue from out_dir/state.pt (step, weights, optimizer, scheduler, EMA, RNG states) when it exists;
        rank 0 drops the metrics.jsonl rows logged after it. Raises RunFolderError for damaged run files."""
        st = load_state(self.out)
        if st is None:
            return
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        if self.ema is not None and "ema" in st:
            self.ema.load_state_dict(st["ema"])
        _set_rng_state(st["rng"])
        self.step = st["step"]
        if self.rank == 0:
            trim_metrics(self.out, self.step)

    def _open_logs(self) -> None:
        c = self.cfg
        self.log_file = open(self.out / "metrics.jsonl", "a") if self.rank == 0 else None
        self.tb = None
        if c.tensorboard and self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out / "tensorboard"))
        self.bar = None
        if c.progress and self.rank == 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=c.steps, initial=self.step, desc=f"stage {c.stage}", unit="step")

    def close(self, finished: bool = True) -> None:
        """Close the logs and destroy the process group the trainer created (after a barrier when the run finished,
        so that no rank leaves while rank 0 still writes the last checkpoint). A process that exits holding a gloo
        group dies with SIGABRT ('terminate called without an active exception') in about 1 run in 10."""
        for name in ("bar", "log_file", "tb"):
            handle = getattr(self, name, None)
            if handle is not None:
                handle.close()
                setattr(self, name, None)
        if self._owns_group and dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()
            self._owns_group = False
        unlock_run_folder(self._lock)
        self._lock = None

    def epoch_batches(self):
        """The batches of the current epoch from the current step on (the data of a step depends on it only)."""
        self.epoch, offset = divmod(self.step, self.steps_per_epoch)
        self.sampler.set_epoch(self.epoch, offset * self.cfg.batch_size)
        return self.loader

    # ------------------------------------------------------------------ one step
    def feed_data(self, inp: torch.Tensor, target: torch.Tensor) -> None:
        """The batch (input, target) on the device, in the training memory format."""
        self.inp = inp.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        self.target = target.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def optimize_parameters(self) -> dict:
        """Forward, loss (L1, + lambda * contrastive in stage 2), backward, optimizer and scheduler step, EMA
        update; returns the step's metrics."""
        c = self.cfg
        with self._autocast():
            out = self.net(self.inp).float()
        l1 = F.l1_loss(out, self.target)
        loss = l1
        metrics = {"l1": l1.item()}
        if c.stage == 2:
            cl = self.cl_loss(out, self.target, self._negatives(self.negative_nets, self.inp, self.step))
            loss = l1 + c.cl_weight * cl
            metrics["cl"] = cl.item()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step + 1}; lower the learning rate or "
                                     "disable fp16 (amp='bf16')")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if c.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self._update_ema()
        loss_v = loss.detach()
        if dist.is_initialized():
            dist.all_reduce(loss_v)
            loss_v /= dist.get_world_size()
        metrics["loss"] = loss_v.item()
        return metrics

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.lerp_(p, 1 - self.cfg.ema)
        for e, b in zip(self.ema.buffers(), self.model.buffers()):
            e.copy_(b)

    def after_step(self, metrics: dict) -> None:
        """Count the step, then log, checkpoint and validate when due, and call the callbacks."""
        c = self.cfg
        self.step += 1
        metrics.update(step=self.step, epoch=self.epoch, lr=self.optimizer.param_groups[0]["lr"],
                       seconds=time.perf_counter() - self.t0)
        self.history.append(metrics)
        if self.rank == 0:
            if self.step % c.log_every == 0 or self.step == c.steps:
                self.log(metrics)
            if self.bar is not None:
                self.bar.update()
                self.bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            if self.step % c.checkpoint_every == 0 or self.step == c.steps:
                self.save()
            if c.val_data and c.val_every and self.step % c.val_every == 0:
                self.validation()
        for cb in self.callbacks:
            cb(self.step, metrics)

    def log(self, metrics: dict) -> None:
        self.log_file.write(json.dumps(metrics) + "\n")
        self.log_file.flush()
        if self.tb is not None:
            for k in ("loss", "l1", "cl", "lr"):
                if k in metrics:
                    self.tb.add_scalar(k, metrics[k], self.step)

    def _negatives(self, nets, inp, step) -> list[torch.Tensor]:
        """K images from the frozen stage-1 network (and snapshots, else perturbed inputs), computed once per
        batch without gradients."""
        c = self.cfg
        rng = (255.0 if c.task == "sr" else 1.0)
        g = torch.Generator(device="cpu").manual_seed(c.seed * 7919 + step)
        outs = []
        with torch.no_grad(), self._autocast():
            for k in range(c.negatives):
                if k < len(nets):
                    outs.append(nets[k](inp).float())
                else:
                    noise = torch.randn(inp.shape, generator=g).to(inp) * (c.perturb_sigma * rng / 255.0)
                    outs.append(nets[0](inp + noise).float())
        return outs

    def save(self) -> None:
        """model.safetensors (and ema.safetensors), then state.pt (which holds the weights too), each written
        atomically: state.pt is replaced only once the weights files are, and alone suffices to resume."""
        meta = {"step": str(self.step)}
        save_safetensors(self.model, self.out / "model.safetensors", metadata=meta)
        if self.ema is not None:
            save_safetensors(self.ema, self.out / "ema.safetensors", metadata=meta)
        state = {"step": self.step, "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": _rng_state(), "config": asdict(self.cfg)}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        atomic_write(self.out / "state.pt", lambda tmp: torch.save(state, tmp))

    def validation(self) -> dict:
        """PSNR/SSIM of the EMA (else the trained) weights on val_data, logged."""
        c = self.cfg
        psnr, ssim = evaluate(self.ema or self.model, c.val_data, c.task, c.scale, c.sigma, c.seed)
        row = {"step": self.step, "val_psnr": psnr, "val_ssim": ssim}
        self.log_file.write(json.dumps(row) + "\n")
        self.log_file.flush()
        return row


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
