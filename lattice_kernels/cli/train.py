"""lattice-train: train LatticeNet or the restoration model. Its options are made from the fields of TrainConfig
(name --field-name, type and default from the dataclass, help and choices from the field's metadata), so the
command line and the Python API cannot drift apart."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any

from ..train import TrainConfig, Trainer
from . import HelpFormatter, command

DESCRIPTION = """\
Train LatticeNet (x2/x3/x4) or the restoration model on a folder of images: stage 1 (L1), or stage 2 (contrastive
fine-tuning from a stage-1 checkpoint). A run started on an --out-dir that holds a run resumes it.

examples:
  lattice-train --data DIV2K/HR --out-dir runs/x2 --scale 2 --steps 300000 --lr-milestones 200000
  lattice-train --data DIV2K/HR --out-dir runs/x2-cl --stage 2 --stage1-checkpoint runs/x2/model.safetensors \\
      --cl-features vgg19 --vgg-weights vgg19-dcbb9e9d.pth --steps 50000
  lattice-train --task denoise --data clean/ --sigma 15 50 --out-dir runs/dn --preset large
  torchrun --nproc_per_node 4 -m lattice_kernels.cli.train --data DIV2K/HR --out-dir runs/x2   # one process per GPU

Every option is a field of lattice_kernels.train.TrainConfig (--out-dir is out_dir, ...).
"""


def _option_spec(name: str, hint: Any, default: Any) -> dict:
    """argparse keyword arguments for a TrainConfig field of type `hint` (bool, int, float, str, X | None,
    list[X], tuple[X, ...], X | tuple[X, ...]); TypeError for any other type, so a new field of a type the
    command cannot take fails when the parser is built (tests build it) instead of being left out."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if hint in (int, float, str):
        return {"type": hint}
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:  # X | None
            return _option_spec(name, rest[0], default)
        scalars = [a for a in rest if a in (int, float, str)]
        tuples = [a for a in rest if typing.get_origin(a) is tuple]
        if len(scalars) == 1 and len(tuples) == 1 and set(typing.get_args(tuples[0])) == set(scalars):
            n = len(typing.get_args(tuples[0]))  # X | tuple[X, X]: one value or n of them
            return {"type": scalars[0], "nargs": "+", "metavar": scalars[0].__name__.upper(), "_one_or": n}
    if origin is list and len(args) == 1 and args[0] in (int, float, str):
        return {"type": args[0], "nargs": "*", "metavar": args[0].__name__.upper()}
    if origin is tuple and args and len(set(args)) == 1 and args[0] in (int, float, str):
        return {"type": args[0], "nargs": len(args), "metavar": args[0].__name__.upper(), "_tuple": True}
    raise TypeError(f"TrainConfig.{name}: lattice-train cannot make an option of type {hint}")


def _fields() -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(TrainConfig)
    return [(f, hints[f.name]) for f in dataclasses.fields(TrainConfig)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lattice-train", description=DESCRIPTION, formatter_class=HelpFormatter)
    for f, hint in _fields():
        if "help" not in f.metadata:
            raise TypeError(f"TrainConfig.{f.name} has no help text (field metadata 'help')")
        spec = {k: v for k, v in _option_spec(f.name, hint, f.default).items() if not k.startswith("_")}
        if f.default is not dataclasses.MISSING:
            spec["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            spec["default"] = f.default_factory()
        else:
            spec["required"] = True
        if "choices" in f.metadata:
            spec["choices"] = f.metadata["choices"]
            spec.pop("metavar", None)
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, help=f.metadata["help"], **spec)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed arguments: lists as lists, fixed-length tuples as tuples, `X | tuple[X, ...]`
    fields as one value or a tuple (ValueError for another count)."""
    values = {}
    for f, hint in _fields():
        v = getattr(args, f.name)
        spec = _option_spec(f.name, hint, f.default)
        if spec.get("_tuple") and isinstance(v, list):
            v = tuple(v)
        elif "_one_or" in spec and isinstance(v, list):
            if len(v) == 1:
                v = v[0]
            elif len(v) == spec["_one_or"]:
                v = tuple(v)
            else:
                raise ValueError(f"--{f.name.replace('_', '-')} takes 1 or {spec['_one_or']} values, got {len(v)}")
        values[f.name] = v
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    """Train; print the last step's metrics as one JSON line (from rank 0 only under torchrun: lines printed by
    several processes at once interleave)."""
    trainer = Trainer(config_from_args(args))
    history = trainer.run()
    if history and trainer.rank == 0:
        print(json.dumps(history[-1]), flush=True)
    return 0


main = command("lattice-train", build_parser, run)

if __name__ == "__main__":
    raise SystemExit(main())
