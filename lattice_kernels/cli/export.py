"""Export a LatticeNet or LatticeRestorer checkpoint to ONNX, then check it in ONNX Runtime when installed.

examples:
  lattice-export --checkpoint LatticeNet_x4.pt --out latticenet_x4.onnx
  lattice-export --checkpoint x4.safetensors --out x4_fp16.onnx --dtype float16

The graph has one input "input" (N, C, H, W) and one output "output"; N, H and W are dynamic unless --static.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

import lattice_kernels as lk
from lattice_kernels.export import DEFAULT_OPSET, check_onnx, export_onnx
from lattice_kernels.models import read_state_dict

from . import HelpFormatter, command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lattice-export", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="LatticeNet (published .pt or .safetensors) or LatticeRestorer weights")
    p.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="float16: a half graph for GPU runtimes (ONNX Runtime CUDA, TensorRT)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                   help="example input height and width used for tracing (default 64 64)")
    p.add_argument("--static", action="store_true", help="fix batch 1 and --size instead of dynamic N, H, W")
    p.add_argument("--no-check", action="store_true", help="skip the check run in ONNX Runtime")
    return p


def load_model(path: Path) -> tuple[torch.nn.Module, int, float]:
    """The model of a checkpoint file, its input channels and its input range (255 for LatticeNet, 1 else)."""
    keys = read_state_dict(path).keys()
    if "head.0.0.weight" in keys:
        model = lk.LatticeRestorer.from_checkpoint(path).eval()
        return model, model.channels, 1.0
    if "tail.1.weight" in keys:
        return lk.LatticeNet.from_checkpoint(path).eval(), 3, 255.0
    raise ValueError(f"{path} holds neither LatticeNet weights ('tail.1.weight') nor LatticeRestorer weights "
                     "('head.0.0.weight')")


def run(args: argparse.Namespace) -> int:
    h, w = args.size
    if h < 2 or w < 2:
        raise ValueError(f"--size must be at least 2 2, got {h} {w}")
    model, channels, value_range = load_model(args.checkpoint)
    dtype = getattr(torch, args.dtype)
    example = torch.rand(1, channels, h, w, generator=torch.Generator().manual_seed(0)) * value_range
    path = export_onnx(model, example, args.out, dynamic_hw=not args.static, dynamic_batch=not args.static,
                       opset=args.opset, dtype=dtype)
    axes = f"static 1x{channels}x{h}x{w}" if args.static else "dynamic N, H, W"
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, opset {args.opset}, {args.dtype}, {axes})")
    if args.no_check:
        return 0
    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime is not installed: no check run (pip install 'lattice_kernels[deploy]')")
        return 0
    # A size other than the example's shows the dynamic axes at work.
    size = (1, channels, h, w) if args.static else (2, channels, h + 7, w + 3)
    x = torch.rand(size, generator=torch.Generator().manual_seed(1)) * value_range
    err = check_onnx(path, model, x)  # a float16 graph against the float32 model
    # On uniform noise (harder than a photograph, where tests/test_export.py holds the published x4 to 1e-3 on
    # 0..255) float32 through ~30 convolutions, Winograd's on the cpu backend, differs by ~5e-6 of the range (seen
    # 1.2e-3 on 0..255): allow 2e-5. float16 keeps ~3 significant digits: allow 1% (seen ~0.2%).
    tolerance = value_range * (2e-5 if dtype == torch.float32 else 1e-2)
    verdict = "ok" if err <= tolerance else "FAILED"
    print(f"ONNX Runtime check at {'x'.join(map(str, size))}: max |ONNX - PyTorch| = {err:.2e} "
          f"(tolerance {tolerance:.0e}): {verdict}")
    return 0 if err <= tolerance else 1


main = command("lattice-export", build_parser, run)


if __name__ == "__main__":
    raise SystemExit(main())
