"""The first-use build of lattice_kernels._C (lattice_kernels/_build.py): the CUDA toolchain decision with each
piece of the toolchain faked (nvcc, CUDA_HOME, the headers, the versions), the flags, the build folder's name (a new
torch or a changed source is a new build), a failed compile that is recorded and named, and lattice-kernels-build."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
import torch

from lattice_kernels import _build
from lattice_kernels._build import ExtensionBuildError, find_cuda_toolchain, options

from .test_cli import cli


def fake_toolkit(root: Path, release: str = "13.0", headers: bool = True, nvcc: bool = True) -> Path:
    """A folder shaped like a CUDA toolkit: bin/nvcc (a script printing `release`), include/cuda_runtime_api.h."""
    (root / "bin").mkdir(parents=True)
    if nvcc:
        exe = root / "bin" / "nvcc"
        exe.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    if headers:
        (root / "include").mkdir()
        (root / "include" / "cuda_runtime_api.h").write_text("/* fake */\n")
    return root


def test_a_complete_toolchain(tmp_path):
    home = fake_toolkit(tmp_path / "cuda")
    tc = find_cuda_toolchain("13.0", {"CUDA_HOME": str(home), "PATH": ""})
    assert tc.problem is None and tc.home == str(home) and tc.version == "13.0"
    assert tc.nvcc == str(home / "bin" / "nvcc")


def test_nvcc_on_path_without_headers_beside_it(tmp_path, monkeypatch):
    """The case of a wrapper nvcc in /usr/local/bin: torch's guess (the folder above bin/) has no headers."""
    wrapper = fake_toolkit(tmp_path / "usr-local", headers=False)
    toolkit = fake_toolkit(tmp_path / "cuda")
    monkeypatch.setattr(_build, "DEFAULT_CUDA_HOME", str(toolkit))
    tc = find_cuda_toolchain("13.0", {"PATH": str(wrapper / "bin")})
    assert tc.home == str(wrapper)
    assert "has no include/cuda_runtime_api.h, the CUDA headers: set CUDA_HOME" in tc.problem, tc.problem
    assert f"the folder of {wrapper / 'bin' / 'nvcc'}" in tc.problem
    assert f"({toolkit} has them: CUDA_HOME={toolkit})" in tc.problem


@pytest.mark.parametrize("case, torch_cuda, env, needle", [
    ("cpu torch", None, {}, "this torch is a CPU build"),
    ("no nvcc", "13.0", {"PATH": ""}, "no nvcc (nvcc is not on PATH, CUDA_HOME is unset"),
    ("home without nvcc", "13.0", {"CUDA_HOME": "{nonvcc}"}, "has no bin/nvcc"),
    ("major mismatch", "12.8", {"CUDA_HOME": "{cuda}"}, "is CUDA 13.0 but torch was built with CUDA 12.8"),
])
def test_what_is_missing_is_named(tmp_path, monkeypatch, case, torch_cuda, env, needle):
    monkeypatch.setattr(_build, "DEFAULT_CUDA_HOME", str(tmp_path / "no-default-cuda"))
    paths = {"cuda": fake_toolkit(tmp_path / "cuda"), "nonvcc": fake_toolkit(tmp_path / "nonvcc", nvcc=False)}
    env = {k: v.format(**paths) for k, v in env.items()}
    tc = find_cuda_toolchain(torch_cuda, env)
    assert tc.problem is not None and needle in tc.problem, tc.problem


def test_the_cuda_flag(tmp_path):
    good = {"CUDA_HOME": str(fake_toolkit(tmp_path / "cuda")), "PATH": ""}
    bad = {"CUDA_HOME": str(tmp_path / "nowhere"), "PATH": ""}
    # auto: the CUDA kernels when the toolchain is complete, else none and the reason for the warning
    assert options(good, torch_cuda="13.0").cuda
    o = options(bad, torch_cuda="13.0")
    assert not o.cuda and "has no bin/nvcc" in o.cuda_skipped
    assert options(bad, torch_cuda=None) == options({}, torch_cuda=None)  # a CPU torch: nothing to warn about
    assert options(bad, torch_cuda=None).cuda_skipped is None
    # 1: fails where the CUDA kernels cannot be built; 0: never builds them
    assert options({**good, "LATTICE_KERNELS_CUDA": "1"}, torch_cuda="13.0").cuda
    with pytest.raises(ExtensionBuildError, match="LATTICE_KERNELS_CUDA=1 but the CUDA kernels cannot be built: "
                                                   "CUDA_HOME .*nowhere"):
        options({**bad, "LATTICE_KERNELS_CUDA": "1"}, torch_cuda="13.0")
    with pytest.raises(ExtensionBuildError, match="this torch is a CPU build"):
        options({"LATTICE_KERNELS_CUDA": "1"}, torch_cuda=None)
    assert not options({**good, "LATTICE_KERNELS_CUDA": "0"}, torch_cuda="13.0").cuda
    with pytest.raises(ExtensionBuildError, match="LATTICE_KERNELS_CUDA must be auto, 1 or 0, got 'yes'"):
        options({"LATTICE_KERNELS_CUDA": "yes"}, torch_cuda=None)
    # the chosen architectures and the debug flag are part of the build
    o = options({**good, "TORCH_CUDA_ARCH_LIST": "9.0", "LATTICE_KERNELS_DEBUG": "1"}, torch_cuda="13.0")
    assert o.arch_list == "9.0" and o.debug and "-O0" in o.flags()["nvcc"] and "-DLK_WITH_CUDA" in o.flags()["cxx"]


def test_the_build_name_holds_what_the_binary_depends_on(tmp_path, monkeypatch):
    csrc = tmp_path / "csrc"
    shutil.copytree(_build.source_dir(), csrc, ignore=shutil.ignore_patterns("cuda_emu"))
    cpu = options({}, torch_cuda=None)
    name = _build.build_name(cpu, csrc)
    assert name.startswith(f"torch{torch.__version__}-cpu-py") and name == _build.build_name(cpu, csrc)
    assert _build.build_name(options({"LATTICE_KERNELS_DEBUG": "1"}, torch_cuda=None), csrc) != name
    (csrc / "cpu" / "kernels.h").write_text((csrc / "cpu" / "kernels.h").read_text() + "\n// changed\n")
    assert _build.build_name(cpu, csrc) != name, "a changed header must give a new build"
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert _build.build_name(cpu, csrc).startswith("torch9.9.9-"), "another torch must give a new build"


def test_a_failed_compile_is_named_recorded_and_retried_only_when_asked(tmp_path, monkeypatch):
    """Every translation unit starts with #error. Also: a CUDA torch without a CUDA toolchain (faked) is warned, in
    one line, that the build has no CUDA kernels, and why."""
    csrc = tmp_path / "csrc"
    shutil.copytree(_build.source_dir(), csrc, ignore=shutil.ignore_patterns("cuda_emu"))
    for unit in _build.sources(csrc, cuda=False):
        unit.write_text("#error planted defect\n" + unit.read_text())
    env = {"LATTICE_KERNELS_BUILD_DIR": str(tmp_path / "builds"), "CUDA_HOME": str(tmp_path / "no-cuda"), "PATH": ""}
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("MAX_JOBS", "1")
    said = []
    with pytest.raises(ExtensionBuildError, match="compiling lattice_kernels._C failed: .*planted defect") as e:
        _build.load_extension(env, csrc=csrc, announce=said.append)
    assert "the whole output: " in str(e.value) and any("compiling the CPU kernels" in s for s in said)
    warning = [s for s in said if "warning" in s]
    assert len(warning) == 1 and "building without the CUDA kernels: CUDA_HOME" in warning[0], said
    assert "the cpu, triton and torch backends are unaffected" in warning[0]
    log = Path(str(e.value).rsplit("the whole output: ", 1)[1].rstrip(")"))
    assert "planted defect" in log.read_text()
    said.clear()
    with pytest.raises(ExtensionBuildError, match="an earlier build failed; .*lattice-kernels-build --force"):
        _build.load_extension(env, csrc=csrc, announce=said.append)
    assert said == [], "a recorded failure is not compiled again"
    with pytest.raises(ExtensionBuildError, match="planted defect"):
        _build.load_extension(env, csrc=csrc, force=True, announce=said.append)
    assert any("compiling" in s for s in said), "--force compiles again"


def test_the_loaded_extension_is_the_build_of_this_torch():
    from lattice_kernels import _extension

    assert _extension.LOAD_ERROR is None, _extension.LOAD_ERROR
    build = _extension.BUILD
    assert build.folder.name == _build.build_name(build.options, _build.source_dir())
    assert Path(_extension.C.__file__) == build.folder / "_C.so"
    assert _build.build_info(build.folder).get("torch", torch.__version__) == torch.__version__


def test_the_build_command(monkeypatch, capsys):
    """The installed command once (it finds this torch's build), then its main() in this process for the rest."""
    from lattice_kernels.cli import build

    r = cli("lattice-kernels-build")
    assert r.returncode == 0, r.stderr
    assert f"lattice_kernels._C for torch {torch.__version__}" in r.stdout and "already built" in r.stdout, r.stdout
    assert build.main(["--check"]) == (0 if _build.find_cuda_toolchain(torch.version.cuda).problem is None else 1)
    out = capsys.readouterr().out
    if torch.version.cuda is None:
        assert "the CUDA kernels cannot be built here: this torch is a CPU build" in out, out
        monkeypatch.setenv("LATTICE_KERNELS_CUDA", "1")
        assert build.main([]) == 2
        assert capsys.readouterr().err.strip() == ("lattice-kernels-build: error: LATTICE_KERNELS_CUDA=1 but the CUDA "
                                                   "kernels cannot be built: this torch is a CPU build (the CUDA "
                                                   "kernels need a CUDA build of torch)")
    monkeypatch.setenv("LATTICE_KERNELS_CUDA", "maybe")
    assert build.main([]) == 2
    assert "LATTICE_KERNELS_CUDA must be auto, 1 or 0, got 'maybe'" in capsys.readouterr().err
