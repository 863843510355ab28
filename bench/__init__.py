"""Speed and memory benchmarks of lattice_kernels: ops and whole models, every available backend.

Run with `make bench` (or `python -m bench --help`)."""
