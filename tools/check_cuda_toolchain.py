"""Checks that the CUDA kernels can be built here: torch has CUDA, nvcc is found, and nvcc's CUDA major version is
torch's. Prints what it found; exits 1 saying what is missing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys


def main() -> int:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    problems = []
    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is a CPU build (install a CUDA build of torch)")
    nvcc = shutil.which("nvcc") or (f"{CUDA_HOME}/bin/nvcc" if CUDA_HOME else None)
    if nvcc is None or not shutil.which(nvcc):
        problems.append("nvcc not found (install the CUDA toolkit, or put its bin/ on PATH, or set CUDA_HOME)")
    else:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"release (\d+)\.(\d+)", out)
        nvcc_version = f"{m.group(1)}.{m.group(2)}" if m else "unknown"
        print(f"nvcc {nvcc} (CUDA {nvcc_version}); torch {torch.__version__} (CUDA {torch.version.cuda})")
        if m and torch.version.cuda and m.group(1) != torch.version.cuda.split(".")[0]:
            problems.append(f"nvcc is CUDA {nvcc_version} but torch was built with CUDA {torch.version.cuda}: the "
                            "major versions must match (install the matching toolkit or point CUDA_HOME at it)")
    for p in problems:
        print(f"cannot build the CUDA kernels: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
