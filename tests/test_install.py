"""The install paths of docs/install.md, as a user types them, each in a fresh virtual environment that sees only an
installed torch: `pip install .`, `pip install -e .` and `pip install <sdist>`, with and without
--no-build-isolation, from a copy of the checkout's files (what a fresh clone holds). Afterwards the package imports
with the `cpu` backend, an op equals the float64 spec, and `lattice-upscale` runs.

The environments share this process's build folder (LATTICE_KERNELS_BUILD_DIR): a build is named after the torch,
the options and a hash of the sources it reads, so an installed copy whose kernel sources differ in any byte from the
checkout's (a file missing from the wheel or the sdist, say) would compile anew, and the test fails on that."""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lattice_kernels import _extension

from .images import crop, photo

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """The checkout's tracked and not-ignored files (no .venv, no build folders, no compiled extension)."""
    files = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout
    clone = tmp_path_factory.mktemp("clone")
    for name in filter(None, files.split("\0")):
        src = ROOT / name
        if src.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            (clone / name).write_bytes(src.read_bytes())
    return clone


def _link_distribution(name: str, target: Path, done: set[str]) -> None:
    """Hard-link (copy across file systems) the installed files of distribution `name` and of what it requires."""
    from packaging.requirements import Requirement

    dist = importlib.metadata.distribution(name)
    key = dist.metadata["Name"].lower().replace("_", "-")
    if key in done:
        return
    done.add(key)
    for f in dist.files or []:
        src, dst = Path(dist.locate_file(f)), target / f
        if f.parts[0] == ".." or not src.is_file():
            continue  # console scripts outside site-packages
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            _link_distribution(req.name, target, done)


@pytest.fixture(scope="module")
def torch_only(tmp_path_factory) -> Path:
    """A folder holding this process's torch and what it requires, nothing else; each environment sees it through a
    .pth file, as a system torch would be seen."""
    target = tmp_path_factory.mktemp("torch-site")
    _link_distribution("torch", target, set())
    return target


@pytest.fixture(scope="module")
def sdist(fresh_clone, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    _run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", out, fresh_clone])
    (tarball,) = out.glob("lattice_kernels-*.tar.gz")
    return tarball


@pytest.fixture(scope="module")
def checkpoint_and_image(tmp_path_factory) -> tuple[Path, Path]:
    from lattice_kernels import LatticeNet

    d = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    LatticeNet(scale=2).save_safetensors(d / "x2.safetensors")
    Image.fromarray(crop(photo("astronaut"), 24, 24, 100, 100)).save(d / "a.png")
    return d / "x2.safetensors", d / "a.png"


CHECK = r"""
import sys, torch, lattice_kernels as lk
from lattice_kernels.ops import reference
print(lk.__file__)
assert "cpu" in lk.available_backends(), lk.available_backends()
x = torch.randn(2, 5, 7, 9)
mean, std = lk.ops.channel_stats(x, backend="cpu")
want_mean, want_std = reference.channel_stats(x.double())
torch.testing.assert_close(mean.double(), want_mean, rtol=1e-5, atol=1e-6)
torch.testing.assert_close(std.double(), want_std, rtol=1e-5, atol=1e-6)
"""


CASES = [(how, isolation) for how in ("pip install .", "pip install -e .", "pip install sdist")
         for isolation in (True, False)]


def test_install_paths(fresh_clone, torch_only, sdist, checkpoint_and_image, tmp_path):
    """The six cases, two at a time (they wait on pip and interpreter starts more than on the CPU), each building
    in a folder of its own."""
    def case(i: int) -> str | None:
        how, isolation = CASES[i]
        try:
            install_and_use(how, isolation, fresh_clone, torch_only, sdist, checkpoint_and_image, tmp_path / str(i))
        except AssertionError as e:
            return f"{how} ({'isolated' if isolation else '--no-build-isolation'}): {e}"
        return None

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(case, range(len(CASES))) if f is not None]
    assert not failures, "\n\n".join(failures)


def install_and_use(how: str, isolation: bool, fresh_clone: Path, torch_only: Path, sdist: Path,
                    checkpoint_and_image: tuple[Path, Path], tmp_path: Path) -> None:
    tmp_path.mkdir()
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "torch_only.pth").write_text(f"{torch_only}\n")
    pip = [*PIP, "--python", py, "install", "-q"]
    if not isolation:  # docs/install.md: --no-build-isolation needs setuptools and wheel in the environment
        _run([*pip, "setuptools>=64", "wheel"])
    # Each case builds in a copy of its own: setuptools writes build/ (and the egg-info) into the source folder,
    # and two builds of one folder at once collided there (CI sim of 2026-12-08: "No such file or directory:
    # 'build/lib/lattice_kernels/csrc/cpu/kernels_baseline.cpp'").
    source = tmp_path / "source"
    if how != "pip install sdist":
        shutil.copytree(fresh_clone, source)
    target = sdist if how == "pip install sdist" else source
    _run([*pip, *([] if isolation else ["--no-build-isolation"]), *(["-e"] if "-e" in how else []), target])
    assert _run([py, "-c", "import torch; print(torch.__file__)"]).stdout.startswith(str(torch_only)), \
        "the environment's torch must be the installed one, not one pip put there"

    env = {**os.environ, "LATTICE_KERNELS_BUILD_DIR": str(_extension.BUILD.folder.parent), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    r = _run([py, "-c", CHECK], env=env, cwd=tmp_path)
    where = Path(r.stdout.splitlines()[0])
    assert where.is_relative_to(source if "-e" in how else site), where
    assert "compiling" not in r.stderr, f"the installed kernel sources differ from the checkout's:\n{r.stderr}"

    ckpt, image = checkpoint_and_image
    _run([venv / "bin" / "lattice-upscale", "-c", ckpt, image, "-o", tmp_path / "out", "-q"], env=env, cwd=tmp_path)
    out = np.asarray(Image.open(tmp_path / "out" / "a_x2.png"))
    assert out.shape == (48, 48, 3)
