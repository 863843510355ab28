"""lattice_kernels is pure Python plus the kernel sources: the wheel carries csrc/ (copied into the package, without
the CPU harness csrc/cuda_emu/ that only the tests build), and lattice_kernels._C is compiled against the torch it
runs with on first use, or ahead of time by `lattice-kernels-build` (lattice_kernels/_build.py, which reads the
build's environment flags). Nothing here imports torch, so pip's build isolation cannot swap in another torch."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


class BuildPyWithKernelSources(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "lattice_kernels" / "csrc"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ROOT / "csrc", target, ignore=shutil.ignore_patterns("cuda_emu", "*.o", "*.so"))


setup(
    packages=find_packages(include=["lattice_kernels", "lattice_kernels.*"]),
    cmdclass={"build_py": BuildPyWithKernelSources},
)
