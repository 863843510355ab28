# The README's commands. Each sets up .venv first (system site-packages visible, so a GPU user's CUDA torch is
# reused; torch==2.13.0 (CPU) is installed only when no torch is importable), compiles lattice_kernels._C for that
# torch ahead of its first use (lattice-kernels-build), then runs.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.lattice-installed
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/cuda/*.cu csrc/cuda/*.cuh)

.PHONY: test bench bench-quick gpu-check lint install clean

$(VPY):
	$(PYTHON) -m venv --system-site-packages $(VENV)

$(STAMP): $(SOURCES) | $(VPY)
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install torch==2.13.0
	$(VPY) -m pip install --upgrade "setuptools>=64" wheel ninja
	$(VPY) -m pip install --no-build-isolation -e ".[test,triton]"
	$(VENV)/bin/lattice-kernels-build
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VPY) -m ruff check .

test: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m pytest -q -n 2 --dist loadfile -p no:benchmark tests

bench: $(STAMP)
	$(VPY) -m bench

bench-quick: $(STAMP)
	$(VPY) -m bench --quick

# On a GPU machine (tools/gpu_check.sh): call (a) builds the CUDA extension (no network needed) and runs the GPU
# tests, call (b) compute-sanitizer and the benchmarks; logs, JSON and plots go under $OUT (default
# bench/results/gpu-check). `make gpu-check STAGES="tests"` for some stages; `tools/gpu_check.sh prepare` first, on a
# machine with the network, carries the published checkpoints and missing wheels in .device/.
gpu-check:
	bash tools/gpu_check.sh $(or $(STAGES),a b)

clean:
	rm -rf build *.egg-info lattice_kernels/*.so lattice_kernels/_ext $(STAMP)
