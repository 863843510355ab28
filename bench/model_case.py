"""A model benchmark case: its model, input and call (shared with bench/interleaved.py, which times the backends in
rounds), and, run as a module, its peak memory in a fresh process (run by models_bench): prints one JSON line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import torch
from torch import nn

import lattice_kernels as lk
from lattice_kernels.models.reference import PlainLatticeNet, PlainLB

from .timing import measure


class BlockConvs(nn.Module):
    """The convolutions of a LatticeBlock alone (two residual blocks and the compress conv on a 2C input)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.rb0, self.rb1, self.compress = block.conv_block0, block.conv_block1, block.compress

    def forward(self, x):
        return self.compress(torch.cat((self.rb0(x), self.rb1(x)), 1))


def build(cfg: dict) -> tuple[nn.Module, torch.Tensor]:
    case, backend, device = cfg["case"], cfg["backend"], torch.device(cfg["device"])
    torch.manual_seed(0)
    if "+" in backend:
        lib = backend.split("+", 1)[1]
    else:
        lib = None if backend.startswith(("eager", "compile")) else backend
    if case["model"] in ("block", "block_convs"):
        plain = PlainLB(case["shape"][1])
        model = plain if lib is None else lk.LatticeBlock(case["shape"][1], backend=lib)
        if lib is not None:
            model.load_state_dict(plain.state_dict())
        if case["model"] == "block_convs":  # the plain block's convs, or the library's (conv3x3 on its backend)
            model = BlockConvs(model)
        x = torch.randn(case["shape"])
    else:
        plain = PlainLatticeNet(4)
        model = plain if lib is None else lk.LatticeNet(4, backend=lib)
        if lib is not None:
            model.load_state_dict(plain.state_dict())
        x = torch.rand(case["shape"]) * 255
    fmt = torch.channels_last if case["layout"] == "nhwc" else torch.contiguous_format
    model = model.to(device).to(memory_format=fmt)
    x = x.to(device).contiguous(memory_format=fmt)
    if backend.startswith("compile"):
        if case.get("cudagraphs"):
            model = torch.compile(model, mode="reduce-overhead")
        elif backend == "compile-max":
            model = torch.compile(model, mode="max-autotune-no-cudagraphs")
        else:
            model = torch.compile(model)
    return model, x


def _proc_status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (the peak resident set) to the current RSS
    except OSError:
        pass


def make_call(case: dict, model: nn.Module, x: torch.Tensor, device: torch.device) -> Callable[[int], None]:
    """call(i): one inference (no_grad) or one training step (forward, L1 loss to a fixed target for LatticeNet
    (then Adam) or the mean square of the output for a block (its input gradient included)) of `model` on x;
    float16/bfloat16 cases run under autocast. i is unused (the same input every call)."""
    dtype = getattr(torch, case["dtype"])
    amp = dtype != torch.float32

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=amp)

    if case["mode"] == "infer":
        model.eval()

        def call(i):
            with torch.no_grad(), autocast():
                model(x)
        return call
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4) if case["model"] == "latticenet" else None
    target = None
    if case["model"] == "latticenet":
        n, c, h, w = x.shape
        target = torch.rand((n, c, 4 * h, 4 * w), device=device) * 255
    xg = x.detach().requires_grad_(case["model"] != "latticenet")

    def step(i):
        with autocast():
            y = model(xg)
            loss = (y.float() - target).abs().mean() if target is not None else y.float().square().mean()
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)
            xg.grad = None
    return step


def main() -> None:
    """Peak memory of one (case, backend) in this fresh process: warm-up (compilation), then cfg["repeats"] calls
    with the peak reset before them. Prints one JSON line (its times are its own, not used for any ratio)."""
    cfg = json.loads(sys.argv[1])
    case, device = cfg["case"], torch.device(cfg["device"])
    model, x = build(cfg)
    rss_before = _proc_status_mib("VmRSS")
    call = make_call(case, model, x, device)
    warmup = 2 if case["model"] == "latticenet" else 3
    for i in range(warmup):  # compilation and autotuning happen here, outside the measured calls
        call(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    _reset_peak_rss()
    t = measure(call, device, repeats=cfg["repeats"], warmup=0)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        method = "GPU: CUDA max_memory_allocated during the timed calls minus what was allocated before them"
    else:
        peak = _proc_status_mib("VmHWM") - rss_before
        method = ("CPU: peak resident memory during the measured calls (VmHWM, reset after warm-up) minus the "
                  "resident memory before the first call (model and inputs), each (case, backend) in its own process")
    print(json.dumps({**t.as_dict(), "peak_mem_MB": peak, "memory_method": method}))


if __name__ == "__main__":
    main()
