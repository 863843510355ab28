"""The run folder of a training run: damaged or incomplete run files are a named error (never a silent fresh
start), a checkpoint whose writing fails part-way leaves the previous one resumable to the same losses and weights,
and a second run on a folder in use refuses (a lock) instead of interleaving checkpoints."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lattice_kernels.models import read_state_dict
from lattice_kernels.train import DataError, RunFolderError, Trainer
from lattice_kernels.train.run_folder import lock_run_folder, unlock_run_folder

from .test_cli import assert_user_error, cli
from .test_train import cfg, photos  # noqa: F401  (photos is a fixture)

RUN = dict(steps=4, checkpoint_every=2)


@pytest.fixture(scope="module")
def finished_run(photos, tmp_path_factory) -> Path:  # noqa: F811
    """A run folder after 4 steps (checkpoints at steps 2 and 4)."""
    out = tmp_path_factory.mktemp("run")
    Trainer(cfg(photos, out, **RUN)).run()
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _assert_unlocked(folder: Path) -> None:
    unlock_run_folder(lock_run_folder(folder))  # raises RunFolderError while a run still holds the folder


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _cut_last_line(path: Path) -> None:
    path.write_text(path.read_text()[:-9])


def _garble_line_2(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = '{"step": 2, "loss": 0.1\n'
    path.write_text("".join(lines))


DAMAGE = {
    "state.pt truncated": (lambda d: _truncate(d / "state.pt"), "state.pt: the file is damaged or truncated"),
    "state.pt garbage": (lambda d: (d / "state.pt").write_bytes(b"\x00not a checkpoint" * 64),
                         "state.pt: the file is damaged or truncated"),
    "state.pt of something else": (lambda d: torch.save({"weights": torch.ones(2)}, d / "state.pt"),
                                   "is not a training state written by this trainer (no step, optimizer"),
    "state.pt deleted": (lambda d: (d / "state.pt").unlink(), "but no state.pt"),
    "model.safetensors truncated": (lambda d: _truncate(d / "model.safetensors"),
                                    "delete model.safetensors to resume"),
    "metrics.jsonl cut short": (lambda d: _cut_last_line(d / "metrics.jsonl"),
                                "line 4 of", "is cut short (the file is truncated)"),
    "metrics.jsonl garbled line": (lambda d: _garble_line_2(d / "metrics.jsonl"),
                                   "line 2 of", "is not a JSON object with a step"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_run_files_are_named_errors(finished_run, photos, tmp_path, damage):  # noqa: F811
    """Each damaged file is a RunFolderError naming it; the run writes nothing and releases the folder."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    harm, *needles = DAMAGE[damage]
    harm(out)
    before = _files(out)
    with pytest.raises(RunFolderError) as e:
        Trainer(cfg(photos, out, steps=6, checkpoint_every=2)).run()
    for n in needles:
        assert n in str(e.value), str(e.value)
    assert _files(out) == before, "a refused resume must leave the run folder as it was"
    _assert_unlocked(out)


def test_damaged_state_through_the_command(finished_run, photos, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    _truncate(out / "state.pt")
    r = cli("lattice-train", "--data", photos, "--out-dir", out, "--steps", "6", "--patch", "16", "--batch-size",
            "4", "--no-progress")
    assert_user_error(r, "lattice-train", "state.pt: the file is damaged or truncated", "another out_dir")


@pytest.mark.parametrize("target", ["model.safetensors", "ema.safetensors", "state.pt"])
def test_failed_checkpoint_write_leaves_the_previous_one(photos, tmp_path, monkeypatch, target):  # noqa: F811
    """The step-4 checkpoint's write of `target` fails with ENOSPC after half the file reached the disk (the
    temporary file is cut, then the file layer raises). The run stops with that OSError; no temporary file is
    left; resuming continues from step 2 to the same losses and final weights as an uninterrupted run."""
    kw = dict(steps=6, checkpoint_every=2, ema=target == "ema.safetensors")
    whole = Trainer(cfg(photos, tmp_path / "whole", **kw)).run()
    out = tmp_path / "broken"
    real_replace = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        if Path(dst).name == target:
            calls["n"] += 1
            if calls["n"] == 2:
                _truncate(Path(src))
                raise OSError(errno.ENOSPC, "No space left on device", str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError) as e:
        Trainer(cfg(photos, out, **kw)).run()
    assert e.value.errno == errno.ENOSPC
    monkeypatch.setattr(os, "replace", real_replace)
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name], "a temporary file was left behind"
    _assert_unlocked(out)
    assert torch.load(out / "state.pt", weights_only=False)["step"] == 2

    resumed = Trainer(cfg(photos, out, **kw)).run()
    assert [h["step"] for h in resumed] == [3, 4, 5, 6]
    assert [h["loss"] for h in resumed] == [h["loss"] for h in whole[2:]]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows] == [h["loss"] for h in whole]
    for name in ("model.safetensors", "ema.safetensors") if kw["ema"] else ("model.safetensors",):
        want, got = read_state_dict(tmp_path / "whole" / name), read_state_dict(out / name)
        for key, v in want.items():
            assert torch.equal(v, got[key]), f"{name}: {key}"


HOLD_SCRIPT = r"""
import json, sys, time
from pathlib import Path
from lattice_kernels.train import TrainConfig, Trainer
cfg, flags = TrainConfig(**json.loads(sys.argv[1])), Path(sys.argv[2])
def hold(step, metrics):
    if step == 1:
        (flags / "ready").touch()
        while not (flags / "go").exists():
            time.sleep(0.05)
Trainer(cfg, callbacks=[hold]).run()
"""


def test_a_second_run_on_a_folder_in_use_refuses(photos, tmp_path):  # noqa: F811
    """A run holds the folder at step 1; `lattice-train` on the same folder refuses with one line naming the holder
    and changes nothing; the first run then ends normally, and a later run resumes from its last checkpoint."""
    out = tmp_path / "run"
    c = cfg(photos, out, steps=2, checkpoint_every=1)
    first = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, json.dumps(dataclasses.asdict(c)), str(tmp_path)],
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "ready").exists():
            assert first.poll() is None, first.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the first run did not reach step 1"
            time.sleep(0.1)
        before = _files(out)
        r = cli("lattice-train", "--data", photos, "--out-dir", out, "--steps", "4", "--patch", "16",
                "--batch-size", "4", "--no-progress")
        assert_user_error(r, "lattice-train", "is in use by another training run (pid", "another out_dir")
        assert _files(out) == before, "the refused run changed the folder"
    finally:
        (tmp_path / "go").touch()
        _, err = first.communicate(timeout=240)
    assert first.returncode == 0, err[-3000:]
    assert torch.load(out / "state.pt", weights_only=False)["step"] == 2
    hist = Trainer(cfg(photos, out, steps=3, checkpoint_every=1)).run()
    assert [h["step"] for h in hist] == [3]


def test_the_folder_is_released_after_a_setup_error(photos, tmp_path):  # noqa: F811
    empty = tmp_path / "no-images"
    empty.mkdir()
    out = tmp_path / "run"
    with pytest.raises(DataError):
        Trainer(cfg(photos, out, data=str(empty))).run()
    _assert_unlocked(out)
    with pytest.raises(ValueError, match="batch_size 400 exceeds"):
        Trainer(cfg(photos, out, batch_size=400)).run()
    _assert_unlocked(out)
