"""Weights files: what read_state_dict says about files that are not checkpoints (never torch's weights_only
advice, no chained second traceback), and LatticeNet.from_pretrained finding the published weights on disk."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import lattice_kernels as lk
from lattice_kernels.models import CheckpointError, WeightsNotFoundError, cache_dir, read_state_dict, weights_dirs
from lattice_kernels.models.checkpoint import weights_format

from .conftest import weights_dir

WEIGHTS = weights_dir()
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason="published checkpoints not found (LATTICE_WEIGHTS_DIR)")


def _raises_clean(path: Path, pattern: str) -> CheckpointError:
    with pytest.raises(CheckpointError, match=pattern) as exc:
        read_state_dict(path)
    e = exc.value
    assert "weights_only" not in str(e) and "trust" not in str(e)
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__), \
        "the original error would print a second traceback"
    return e


def test_files_that_are_not_checkpoints(tmp_path):
    for name, data in [("junk.pt", b"hello, I am text"), ("empty.pt", b""), ("photo.safetensors", b"\xff\xd8\xff")]:
        (tmp_path / name).write_bytes(data)
        _raises_clean(tmp_path / name, rf"{name} is neither a PyTorch checkpoint \(torch.save\) nor a safetensors file")


def test_pickled_objects_are_refused_without_unsafe_advice(tmp_path):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "whole.pt")
    _raises_clean(tmp_path / "whole.pt", "holding Python objects other than tensors .* cannot be loaded safely")


def test_truncated_files_are_named(tmp_path):
    buf = io.BytesIO()
    torch.save({"w": torch.arange(1000.0)}, buf)
    (tmp_path / "zip.pt").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _raises_clean(tmp_path / "zip.pt", "cannot read torch weights from .*zip.pt")
    buf = io.BytesIO()
    torch.save({"w": torch.arange(1000.0)}, buf, _use_new_zipfile_serialization=False)
    for cut in (40, len(buf.getvalue()) // 2):  # inside the pickle / inside the tensor data
        (tmp_path / "legacy.pt").write_bytes(buf.getvalue()[:cut])
        _raises_clean(tmp_path / "legacy.pt", "torch weights from .*legacy.pt")
    save_file({"w": torch.zeros(8)}, str(tmp_path / "ok.safetensors"))
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "ok.safetensors").read_bytes()[:-5])
    _raises_clean(tmp_path / "cut.safetensors", "cannot read safetensors weights from .*cut.safetensors")


def test_format_is_read_from_the_content_not_the_suffix(tmp_path):
    w = {"w": torch.arange(6.0).reshape(2, 3)}
    save_file(w, str(tmp_path / "really_safetensors.pt"))
    torch.save(w, tmp_path / "really_torch.safetensors")
    torch.save(w, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    for name, kind in [("really_safetensors.pt", "safetensors"), ("really_torch.safetensors", "torch"),
                       ("legacy.bin", "torch")]:
        assert weights_format(tmp_path / name) == kind
        assert torch.equal(read_state_dict(tmp_path / name)["w"], w["w"])


def test_weights_dirs_and_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("LATTICE_WEIGHTS_DIR", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert cache_dir() == tmp_path / "xdg" / "lattice_kernels"
    assert weights_dirs() == [tmp_path / "a", tmp_path / "b", tmp_path / "xdg" / "lattice_kernels"]
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("LATTICE_WEIGHTS_DIR")
    assert weights_dirs() == [Path(os.path.expanduser("~")) / ".cache" / "lattice_kernels"]


def test_from_pretrained_missing_says_where_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("LATTICE_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsNotFoundError) as exc:
        lk.LatticeNet.from_pretrained(4)
    msg = str(exc.value)
    for part in ("LatticeNet_x4.pt not found", str(tmp_path / "lattice_kernels"), "$LATTICE_WEIGHTS_DIR is not set",
                 "https://github.com/ymff0592/super-resolution", "premodel/", "--checkpoint PATH"):
        assert part in msg, (part, msg)
    assert isinstance(exc.value, FileNotFoundError)
    with pytest.raises(ValueError, match="scale 2, 3 or 4, got 5"):
        lk.LatticeNet.from_pretrained(5)


@needs_weights
def test_from_pretrained_finds_env_dir_then_cache(monkeypatch, tmp_path):
    """The files are linked (never copied) into temporary folders standing for the two places searched."""
    src = Path(WEIGHTS).resolve()
    cache = tmp_path / "xdg" / "lattice_kernels"
    cache.mkdir(parents=True)
    (cache / "LatticeNet_x3.pt").symlink_to(src / "LatticeNet_x3.pt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LATTICE_WEIGHTS_DIR", raising=False)
    net = lk.LatticeNet.from_pretrained(3)
    want = read_state_dict(src / "LatticeNet_x3.pt")
    assert net.scale == 3 and all(torch.equal(v, want[k]) for k, v in net.state_dict().items())
    monkeypatch.setenv("LATTICE_WEIGHTS_DIR", str(src))
    assert lk.LatticeNet.from_pretrained(2).scale == 2
    # a file under the wrong name holds other weights: said, not used
    (cache / "LatticeNet_x2.pt").symlink_to(src / "LatticeNet_x4.pt")
    monkeypatch.delenv("LATTICE_WEIGHTS_DIR")
    with pytest.raises(CheckpointError, match=r"LatticeNet_x2.pt, found for LatticeNet x2, holds x4 weights"):
        lk.LatticeNet.from_pretrained(2)
