"""`python python/denoise.py ...` is the installed `lattice-denoise` command (lattice_kernels/cli/denoise.py)."""

from lattice_kernels.cli.denoise import main

if __name__ == "__main__":
    raise SystemExit(main())
