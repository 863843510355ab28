"""The CUDA sources compile on machines without a GPU: every csrc/cuda/*.cu with nvcc -c for sm_80 and sm_90
(host warnings as errors), and the binding ops_cuda.cpp syntax-checked against torch's headers when nvcc's CUDA
headers are present. Nothing here runs a kernel: that needs the GPU (make gpu-check)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CU_FILES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
NVCC = shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc") if "CUDA_HOME" in os.environ
                                 else None)
needs_nvcc = pytest.mark.skipif(NVCC is None or not os.path.exists(NVCC), reason="nvcc not found")


def test_there_are_cuda_sources():
    assert {p.name for p in CU_FILES} >= {"channel_stats.cu", "butterfly.cu"}


@needs_nvcc
@pytest.mark.parametrize("arch", ["80", "90"])
@pytest.mark.parametrize("cu", CU_FILES, ids=lambda p: p.name)
def test_nvcc_compiles(cu, arch, tmp_path):
    """With the flags of the real build: torch's own nvcc flags (no implicit half/bfloat16 conversions, relaxed
    constexpr) and the package's (-O3, no fast math), as lattice_kernels/_build.py passes them."""
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    from lattice_kernels._build import Options

    build = Options(cuda=True, cuda_home=None, arch_list=arch, debug=False, cuda_skipped=None).flags()["nvcc"]
    assert "--use_fast_math" not in build and "-O3" in build
    cmd = [NVCC, "-c", *COMMON_NVCC_FLAGS, *build, f"-arch=sm_{arch}", "-Xcompiler", "-Wall,-Wextra,-Werror",
           "--Werror", "cross-execution-space-call", "-Xptxas", "-v", "-o", str(tmp_path / "k.o"), str(cu)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
    # ptxas's report of every kernel: no spills, static shared memory within the 48 KiB of a launch without opt-in.
    from tools.gpu_resources import parse_ptxas_verbose

    kernels = parse_ptxas_verbose(r.stderr)
    assert kernels, f"no kernel in ptxas's report:\n{r.stderr[-2000:]}"
    for name, regs, spills, smem in kernels:
        assert spills == 0 and smem <= 48 * 1024 and 0 < regs <= 255, (name, regs, spills, smem)


@needs_nvcc
def test_binding_syntax(tmp_path):
    """ops_cuda.cpp against torch's headers (a CPU build of torch ships them, less one generated macro header,
    which the check provides)."""
    from torch.utils.cpp_extension import CUDA_HOME, include_paths

    homes = [CUDA_HOME, os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda",
             str(Path(NVCC).resolve().parents[1])]
    found = [Path(h) / "include" for h in homes if h and (Path(h) / "include" / "cuda_runtime.h").exists()]
    if not found:
        pytest.skip(f"CUDA headers (cuda_runtime.h) not found under {[h for h in homes if h]}")
    cuda_include = found[0]
    shim = tmp_path / "c10" / "cuda" / "impl"
    shim.mkdir(parents=True)
    (shim / "cuda_cmake_macros.h").write_text("#pragma once\n")
    gxx = shutil.which("g++") or shutil.which("c++")
    if gxx is None:
        pytest.skip("no host C++ compiler")
    cmd = [gxx, "-fsyntax-only", "-std=c++20", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
           *(f"-I{p}" for p in include_paths()), f"-I{tmp_path}", f"-I{cuda_include}", "-DLK_WITH_CUDA",
           str(ROOT / "csrc" / "cuda" / "ops_cuda.cpp")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
