"""Builds lattice_kernels._C: the CPU kernels always, the CUDA kernels when torch has CUDA and nvcc is found.

Environment flags:
  LATTICE_KERNELS_CUDA=auto|1|0   build the CUDA kernels: when possible (default), always (error if impossible), never.
  TORCH_CUDA_ARCH_LIST            CUDA architectures (default "8.0;9.0").
  LATTICE_KERNELS_DEBUG=1         -O0 -g instead of -O3.
  MAX_JOBS                        parallel compile jobs (ninja).
"""

import os
import platform
from pathlib import Path

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = Path(__file__).parent
CSRC = "csrc"


def _want_cuda() -> bool:
    flag = os.environ.get("LATTICE_KERNELS_CUDA", "auto").lower()
    if flag not in ("auto", "1", "0"):
        raise SystemExit(f"LATTICE_KERNELS_CUDA must be auto, 1 or 0, got {flag!r}")
    possible = torch.version.cuda is not None and CUDA_HOME is not None
    if flag == "1" and not possible:
        raise SystemExit(
            "LATTICE_KERNELS_CUDA=1 but the CUDA kernels cannot be built: "
            f"torch {torch.__version__} has CUDA {torch.version.cuda}, CUDA_HOME={CUDA_HOME}. "
            "Install a CUDA build of torch and the CUDA toolkit (nvcc)."
        )
    return possible and flag != "0"


def _extension():
    debug = os.environ.get("LATTICE_KERNELS_DEBUG") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # -fopenmp: at::parallel_for is a header template and runs single-threaded in a TU built without it.
    # -Wno-psabi: the kernels pass 32-byte vectors between static inline functions of the baseline TU (no ABI edge).
    cxx = [*opt, "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-psabi", "-fopenmp"]
    # One binding per op family (cpu/<op>.cpp) over the torch-free kernels, compiled once per instruction set.
    sources = [f"{CSRC}/lattice_kernels.cpp", f"{CSRC}/cpu/binding.cpp",
               *(f"{CSRC}/cpu/{op}.cpp" for op in ("channel_stats", "butterfly", "conv3x3")),
               f"{CSRC}/cpu/kernels_baseline.cpp"]
    if platform.machine() in ("x86_64", "AMD64"):
        sources += [f"{CSRC}/cpu/kernels_avx2.cpp", f"{CSRC}/cpu/kernels_avx512.cpp"]
        cxx.append("-DLK_HAVE_AVX2")
    if not _want_cuda():
        return CppExtension(
            "lattice_kernels._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"]
        )
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC / "cuda").glob("*.cu"))
    sources.append(f"{CSRC}/cuda/ops_cuda.cpp")
    nvcc = [*opt, "-lineinfo", "--use_fast_math", "-std=c++17", "-DLK_WITH_CUDA"]
    return CUDAExtension(
        "lattice_kernels._C",
        sources,
        extra_compile_args={"cxx": [*cxx, "-DLK_WITH_CUDA"], "nvcc": nvcc},
        extra_link_args=["-fopenmp"],
    )


setup(
    packages=find_packages(include=["lattice_kernels", "lattice_kernels.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
