"""`python python/upscale.py ...` is the installed `lattice-upscale` command (lattice_kernels/cli/upscale.py)."""

from lattice_kernels.cli.upscale import main

if __name__ == "__main__":
    raise SystemExit(main())
