"""The run folder of a training run: one run at a time (a lock), and what a resumed run may trust.

A run folder holds model.safetensors (and ema.safetensors), state.pt and metrics.jsonl. state.pt is written last
at each checkpoint and holds everything a resumed run needs (the weights too), so a checkpoint whose writing failed
part-way leaves the previous state.pt whole. Anything that cannot be trusted is a RunFolderError naming the file:
a run never starts again from scratch over a folder that holds a run's files."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import IO

import torch

from .._files import atomic_write
from ..models import CheckpointError, read_state_dict

LOCK_NAME = ".lattice-train.lock"
RUN_FILES = ("model.safetensors", "ema.safetensors", "metrics.jsonl")
STATE_KEYS = ("step", "optimizer", "scheduler", "rng")


class RunFolderError(ValueError):
    """A run folder that cannot be used: in use by another run, or holding a damaged or incomplete checkpoint."""


def lock_run_folder(out: Path) -> IO[str]:
    """An exclusive lock on `out` (flock on out/.lattice-train.lock, released when the returned file is closed or
    the process ends, however it ends). Raises RunFolderError when another process holds it."""
    import fcntl

    f = open(out / LOCK_NAME, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RunFolderError(f"{out} is in use by another training run ({holder}); two runs on one folder "
                             "would interleave their checkpoints: wait for it to end, or give this run another "
                             "out_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


def unlock_run_folder(f: IO[str] | None) -> None:
    if f is not None:
        f.close()  # closing the file releases the flock; the file stays (removing it would race a new run's open)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def load_state(out: Path) -> dict | None:
    """The training state of `out` (state.pt with the weights under "model"), None for a folder holding no run.

    Raises RunFolderError for a folder holding a run's files without state.pt, a damaged or truncated state.pt,
    or a damaged model.safetensors / ema.safetensors (each would be overwritten at the next checkpoint)."""
    state_path = out / "state.pt"
    if not state_path.exists():
        left = [name for name in RUN_FILES if (out / name).exists()]
        if left:
            raise RunFolderError(f"{out} holds {', '.join(left)} but no state.pt, so the run cannot be resumed and "
                                 "is not started again over them: give this run another out_dir, or delete those "
                                 "files to start from scratch")
        return None
    try:
        st = torch.load(state_path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch.load raises many types for a damaged file (zip, pickle, EOF, runtime errors)
        raise RunFolderError(f"cannot resume from {state_path}: the file is damaged or truncated ({_first_line(e)}); "
                             "restore it, or start from scratch in another out_dir") from None
    missing = [k for k in STATE_KEYS if not isinstance(st, dict) or k not in st]
    if missing:
        raise RunFolderError(f"{state_path} is not a training state written by this trainer (no "
                             f"{', '.join(missing)}); give this run another out_dir")
    for name in ("model.safetensors", "ema.safetensors"):
        path = out / name
        if path.exists():
            try:
                weights = read_state_dict(path)
            except CheckpointError as e:
                raise RunFolderError(f"{e}; the training state (state.pt, step {st['step']}) is whole: delete "
                                     f"{name} to resume from it (it is written again at the next checkpoint)") from None
            if "model" not in st and name == "model.safetensors":
                st["model"] = weights  # a state.pt of an earlier version, which held no weights
    if "model" not in st:
        raise RunFolderError(f"{state_path} holds no weights and {out / 'model.safetensors'} is missing: the run "
                             "cannot be resumed; give this run another out_dir")
    return st


def trim_metrics(out: Path, step: int) -> None:
    """Check out/metrics.jsonl (one JSON object with a "step" per line) and drop the rows logged after `step`, the
    resumed checkpoint's, so that the resumed run logs them once. Raises RunFolderError naming a bad line."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return
    text = path.read_text()
    rows = text.splitlines()
    keep = []
    for i, line in enumerate(rows, 1):
        try:
            row = json.loads(line)
            row_step = int(row["step"])
        except (ValueError, TypeError, KeyError) as e:
            what = "is cut short (the file is truncated)" if i == len(rows) and not text.endswith("\n") else \
                "is not a JSON object with a step"
            raise RunFolderError(f"line {i} of {path} {what}: {_first_line(e)}; repair or delete that line, then "
                                 "resume") from None
        if row_step <= step:
            keep.append(line)
    if len(keep) != len(rows):
        atomic_write(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in keep)))
