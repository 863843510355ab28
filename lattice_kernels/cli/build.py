"""Compile lattice_kernels._C for the installed torch now, instead of on first use, and say what was built.

examples:
  lattice-kernels-build                             # compile when needed; prints the build folder and what it holds
  lattice-kernels-build --check                     # can the CUDA kernels be built here? (exit 0 yes, 1 no)
  LATTICE_KERNELS_CUDA=1 lattice-kernels-build --force    # compile again, failing unless the CUDA kernels build

Environment flags: LATTICE_KERNELS_CUDA=auto|1|0, TORCH_CUDA_ARCH_LIST, LATTICE_KERNELS_DEBUG=1,
LATTICE_KERNELS_BUILD_DIR, MAX_JOBS (see docs/install.md).
"""

from __future__ import annotations

import argparse

from .. import _build
from . import HelpFormatter, command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lattice-kernels-build", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--check", action="store_true",
                   help="only check the CUDA toolchain (torch's CUDA, CUDA_HOME, nvcc, headers, versions)")
    p.add_argument("--force", action="store_true", help="compile again even when a build exists (or failed)")
    p.add_argument("--verbose", action="store_true", help="print the compiler's commands and output")
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    if args.check:
        tc = _build.find_cuda_toolchain(torch.version.cuda)
        print(f"torch {torch.__version__} (CUDA {torch.version.cuda}); {tc.describe()}")
        if tc.problem is not None:
            print(f"the CUDA kernels cannot be built here: {tc.problem}")
            return 1
        print("the CUDA kernels can be built here")
        return 0
    build = _build.load_extension(force=args.force, verbose=args.verbose)
    if build.options.cuda:
        cuda = "with the CUDA kernels"
    else:
        why = build.options.cuda_skipped or ("this torch is a CPU build" if torch.version.cuda is None
                                             else "LATTICE_KERNELS_CUDA=0")
        cuda = f"without the CUDA kernels ({why})"
    when = f"compiled in {build.seconds:.0f} s" if build.built_now else "already built"
    print(f"lattice_kernels._C for torch {torch.__version__}, {cuda}: {when}")
    print(f"  folder: {build.folder}")
    print(f"  CPU instruction sets this CPU runs: {', '.join(build.module.cpu_isas())}")
    return 0


main = command("lattice-kernels-build", build_parser, run)

if __name__ == "__main__":
    raise SystemExit(main())
