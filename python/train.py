"""`python python/train.py ...` is the installed `lattice-train` command (lattice_kernels/cli/train.py)."""

from lattice_kernels.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
