#!/usr/bin/env bash
# make gpu-check: the GPU checks, in stages that each take one command well under 8 minutes on an H100/H200, so that a
# short lease of a GPU machine goes to the stages still owed. Usage:
#   tools/gpu_check.sh [STAGE ...]        default: all stages in order
# Stages:
#   env       versions, GPU, nvcc; checks nvcc's CUDA major version against torch's
#   build     .venv (--system-site-packages: the machine's torch/triton, no network), the extension with the CUDA
#             kernels for sm_90 (TORCH_CUDA_ARCH_LIST); if that build fails, a build without them
#             (LATTICE_KERNELS_CUDA=0) so the Triton stages still run
#   ops       every op test on the cuda and triton backends, and the full-size GPU tests
#   models    torch.compile (fullgraph, dynamic) and the model tests on CUDA tensors, published checkpoints included
#   sanitize  compute-sanitizer memcheck (caching allocator off), racecheck and synccheck on tools/sanitizer_run.py
#   bench     the benchmarks with a budget (BENCH_MINUTES, default 4), the auto-backend table
# Each stage writes $OUT/<stage>.log and appends a line to $OUT/stages.txt; the exit status is non-zero when a stage
# failed, and the later stages still run. GPU_CHECK_DRY_RUN=1 runs, on a machine without a GPU, every command of
# every stage that can run there (no CUDA build, no sanitizer, a quick benchmark), to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu-check}
DRY=${GPU_CHECK_DRY_RUN:-0}
BENCH_MINUTES=${BENCH_MINUTES:-4}
VENV=${GPU_CHECK_VENV:-.venv}
BASE_PY=${PYTHON:-python3}
PY="$VENV/bin/python"
mkdir -p "$OUT"
# lattice_kernels._C is compiled for the options of the process that loads it (lattice_kernels/_build.py): every
# stage uses the architectures and the CUDA choice of the build stage, so that none of them compiles again.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
# The published checkpoints: a device copy of the tree has no ../shared, so they are carried in (.device/weights,
# ignored by git); on a GPU run their absence fails the checkpoint tests instead of skipping them.
if [ -z "${LATTICE_WEIGHTS_DIR:-}" ] && [ -d .device/weights ]; then export LATTICE_WEIGHTS_DIR=$PWD/.device/weights; fi
if [ "$DRY" != 1 ]; then export LATTICE_REQUIRE_WEIGHTS=1; fi
# shellcheck source=/dev/null
[ -f "$OUT/build_flags.sh" ] && . "$OUT/build_flags.sh"
status=0
note() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/stages.txt"; }

stage_env() {
  local py="$BASE_PY"
  [ -x "$PY" ] && py="$PY"
  if command -v nvidia-smi > /dev/null; then nvidia-smi 2>&1 | head -15; else echo "nvidia-smi: not found"; fi
  "$py" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)" || return 1
  "$py" -c "import triton; print('triton', triton.__version__)" || echo "triton: not installed"
  "$py" -m lattice_kernels.cli.build --check || [ "$DRY" = 1 ]
}

stage_build() {
  [ -x "$PY" ] || "$BASE_PY" -m venv --system-site-packages "$VENV" || return 1
  "$PY" -c "import torch" || { echo "no torch importable in $VENV: the machine's torch is needed (no network)"; return 1; }
  local flag=1
  if [ "$DRY" = 1 ]; then flag=auto; fi
  "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . || return 1
  if ! "$PY" -m lattice_kernels.cli.build --check; then
    [ "$DRY" = 1 ] || { echo "the CUDA kernels cannot be built here; building without them (Triton stages only)"; flag=0; }
  fi
  export LATTICE_KERNELS_CUDA=$flag
  echo "export LATTICE_KERNELS_CUDA=$flag" > "$OUT/build_flags.sh"  # for later runs of single stages
  if ! MAX_JOBS=${MAX_JOBS:-16} "$PY" -m lattice_kernels.cli.build; then
    [ "$flag" = 0 ] && return 1
    echo "=== the build with the CUDA kernels failed; building without them (LATTICE_KERNELS_CUDA=0) ==="
    export LATTICE_KERNELS_CUDA=0
    echo "export LATTICE_KERNELS_CUDA=0" > "$OUT/build_flags.sh"
    "$PY" -m lattice_kernels.cli.build || return 1
    "$PY" -c "import lattice_kernels as lk; print('backends', lk.available_backends())"
    return 1  # the CUDA build is still a failure to report
  fi
  "$PY" -c "import lattice_kernels as lk; from lattice_kernels._extension import CUDA_BUILT; print('backends', lk.available_backends(), 'cuda built', CUDA_BUILT)"
}

pytest_par() {  # parallel workers when pytest-xdist is there (the machine has 16 cores)
  if [ "$DRY" != 1 ] && "$PY" -c "import xdist" 2>/dev/null; then echo "-n 8"; fi
}

stage_ops() {
  local sel="cuda or triton"
  "$PY" -m pytest -q -p no:cacheprovider $(pytest_par) tests/test_channel_stats.py tests/test_combination_coefficients.py \
    tests/test_butterfly.py tests/test_conv3x3.py tests/test_errors.py tests/test_triton_launch.py -k "$sel"
  local a=$?
  "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_full_size.py tests/test_backend.py
  return $(( a || $? ))
}

stage_models() {
  "$PY" -m pytest -q -p no:cacheprovider $(pytest_par) tests/test_opcheck_compile.py tests/test_models.py \
    tests/test_inference.py -k "cuda or triton or gpu"
}

stage_sanitize() {
  if [ "$DRY" = 1 ]; then
    "$PY" tools/sanitizer_run.py --device cpu --backend cpu
    return
  fi
  command -v compute-sanitizer > /dev/null || { echo "compute-sanitizer not found (CUDA toolkit)"; return 1; }
  local rc=0 tool backend
  for tool in memcheck racecheck synccheck; do
    for backend in cuda triton; do
      echo "=== compute-sanitizer --tool $tool, backend $backend ==="
      PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool $tool --error-exitcode 3 \
        "$PY" tools/sanitizer_run.py --backend $backend $([ $tool = memcheck ] || echo --short) || rc=1
    done
  done
  return $rc
}

stage_bench() {
  local extra="--max-minutes $BENCH_MINUTES"
  [ "$DRY" = 1 ] && extra="--quick --max-minutes 2"
  "$PY" -m bench --out "$OUT" --name gpu $extra || return 1
  # auto reads lattice_kernels/auto_backends.json: written there (the package data) and copied to $OUT, from where
  # the session that ran it commits it.
  [ "$DRY" = 1 ] || { "$PY" -m bench.auto_table "$OUT/gpu.json" && cp lattice_kernels/auto_backends.json "$OUT/"; }
}

STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(env build ops models sanitize bench)
for s in "${STAGES[@]}"; do
  if ! declare -F "stage_$s" > /dev/null; then
    echo "unknown stage '$s' (stages: env build ops models sanitize bench)"; exit 2
  fi
  note "stage $s: start"
  t0=$(date +%s)
  if "stage_$s" > "$OUT/$s.log" 2>&1; then
    note "stage $s: ok ($(( $(date +%s) - t0 )) s)"
  else
    note "stage $s: FAILED ($(( $(date +%s) - t0 )) s); see $s.log"
    tail -20 "$OUT/$s.log"
    status=1
  fi
done
exit $status
