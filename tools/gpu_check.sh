#!/usr/bin/env bash
# The GPU checks as two prepared device calls, each under 6 minutes on an H100/H200 including the build, so that a
# 15-minute lease of a GPU machine holds both and a rerun:
#   tools/gpu_check.sh prepare   on the machine with the network, before the calls: the published checkpoints into
#                                .device/weights, the wheels the device lacks (pypng, resize-right) into .device/wheels
#   tools/gpu_check.sh a         call (a): env build aot tests   (the device tool's carry: [".device"])
#   tools/gpu_check.sh b         call (b): env build sanitize bench
#   tools/gpu_check.sh STAGE...  single stages
# Stages (each limited to STAGE_LIMIT_<stage> seconds, defaults below):
#   env       versions, GPU, kernel (Firecracker or gVisor), the nvcc/torch CUDA check
#   build     the extension with the CUDA kernels for sm_90 (TORCH_CUDA_ARCH_LIST) against the machine's torch (no
#             network); if that build fails, one without them (LATTICE_KERNELS_CUDA=0) so the Triton checks still run
#   aot       every Triton kernel compiled with the machine's Triton for every specialization its launchers choose
#             (tools/gpu_resources.py), so that a Triton API difference shows before the tests
#   tests     one pytest-xdist run (-n 16): every op test on cuda and triton, the full-size GPU tests, torch.compile
#             (fullgraph, dynamic), the models with the published checkpoints on both GPU backends
#   sanitize  compute-sanitizer: planted defects first (it must catch them), then memcheck (caching allocator off)
#             and racecheck over every op of the cuda backend at small shapes (tools/sanitizer_run.py --short)
#   bench     the benchmarks, model cases first, with a budget (BENCH_MINUTES, default 3), then auto's table
# Each stage writes $OUT/<stage>.log as it runs and a line to $OUT/stages.txt, so a call stopped at its limit still
# returns what it did; a failed stage does not stop the later ones, and the exit status is non-zero when one failed.
# GPU_CHECK_DRY_RUN=1 runs, on a machine without a GPU, every command that can run there (no CUDA build, the tests
# collected but not run, the sanitizer's planted program compiled but not run, a quick benchmark).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu-check}
DRY=${GPU_CHECK_DRY_RUN:-0}
BENCH_MINUTES=${BENCH_MINUTES:-3}
BASE_PY=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT
# The device's python3 is itself a virtual environment (/opt/torch/.venv): a venv made from it would not see its
# torch, so the checks use that interpreter directly (GPU_CHECK_VENV=DIR: a venv of that name instead).
if [ -n "${GPU_CHECK_VENV:-}" ]; then PY="$GPU_CHECK_VENV/bin/python"; else PY="$BASE_PY"; fi
# lattice_kernels._C is compiled for the options of the process that loads it (lattice_kernels/_build.py): every
# stage uses the architectures and the CUDA choice of the build stage, so that none of them compiles again.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
# The published checkpoints: a device copy of the tree has no ../shared, so they are carried in (.device/weights);
# on a GPU run their absence fails the checkpoint tests instead of skipping them.
if [ -z "${LATTICE_WEIGHTS_DIR:-}" ] && [ -d .device/weights ]; then export LATTICE_WEIGHTS_DIR=$PWD/.device/weights; fi
if [ "$DRY" != 1 ]; then export LATTICE_REQUIRE_WEIGHTS=1; fi
# shellcheck source=/dev/null
[ -f "$OUT/build_flags.sh" ] && . "$OUT/build_flags.sh"
note() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/stages.txt"; }

# Seconds per stage; measured budgets are in docs/gpu.md.
declare -A LIMIT=([env]=60 [build]=300 [aot]=120 [tests]=330 [sanitize]=150 [bench]=$(( BENCH_MINUTES * 60 + 60 )))

stage_prepare() {  # on the machine with the network
  mkdir -p .device/weights .device/wheels
  local src=${LATTICE_WEIGHTS_DIR:-../shared/weights}
  cp -v "$src"/LatticeNet_x*.pt .device/weights/ || { echo "no published checkpoints in $src (LATTICE_WEIGHTS_DIR)"; return 1; }
  "$BASE_PY" -m pip download --no-deps --only-binary=:all: -d .device/wheels pypng resize-right || return 1
  du -sh .device
}

stage_env() {
  if command -v nvidia-smi > /dev/null; then nvidia-smi 2>&1 | head -15; else echo "nvidia-smi: not found"; fi
  echo "kernel $(uname -r) ($(uname -r | grep -q -- '-fc-' && echo Firecracker || echo 'not Firecracker'))"
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)" || return 1
  "$PY" -c "import triton; print('triton', triton.__version__)" || echo "triton: not installed"
  command -v nvcc > /dev/null && nvcc --version | tail -2
  PYTHONPATH=$PWD "$PY" -m lattice_kernels.cli.build --check || [ "$DRY" = 1 ]
}

stage_build() {
  if [ -n "${GPU_CHECK_VENV:-}" ] && [ ! -x "$PY" ]; then "$BASE_PY" -m venv --system-site-packages "$GPU_CHECK_VENV" || return 1; fi
  "$PY" -c "import torch" || { echo "no torch importable by $PY: the machine's torch is needed (no network)"; return 1; }
  if compgen -G ".device/wheels/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps .device/wheels/*.whl || return 1
  fi
  "$PY" -m pip install -q --no-build-isolation --no-deps --no-index -e . || return 1
  local flag=1
  if [ "$DRY" = 1 ]; then flag=auto; fi
  if ! "$PY" -m lattice_kernels.cli.build --check; then
    [ "$DRY" = 1 ] || { echo "the CUDA kernels cannot be built here; building without them (Triton checks only)"; flag=0; }
  fi
  echo "export LATTICE_KERNELS_CUDA=$flag" > "$OUT/build_flags.sh"  # for the later stages and calls
  if ! LATTICE_KERNELS_CUDA=$flag MAX_JOBS=${MAX_JOBS:-16} "$PY" -m lattice_kernels.cli.build; then
    [ "$flag" = 0 ] && return 1
    echo "=== the build with the CUDA kernels failed; building without them (LATTICE_KERNELS_CUDA=0) ==="
    echo "export LATTICE_KERNELS_CUDA=0" > "$OUT/build_flags.sh"
    LATTICE_KERNELS_CUDA=0 "$PY" -m lattice_kernels.cli.build || return 1
    return 1  # the CUDA build is still a failure to report
  fi
  LATTICE_KERNELS_CUDA=$flag "$PY" -c "import lattice_kernels as lk; from lattice_kernels._extension import CUDA_BUILT; print('backends', lk.available_backends(), 'cuda built', CUDA_BUILT)"
}

stage_aot() {
  env -u TRITON_INTERPRET "$PY" -m tools.gpu_resources --only triton --quick --json "$OUT/aot.json"
}

# What the tests stage runs: the op files on the GPU backends, and the GPU-only files whole.
GPU_TEST_FILES=(tests/test_channel_stats.py tests/test_combination_coefficients.py tests/test_butterfly.py
                tests/test_conv3x3.py tests/test_errors.py tests/test_triton_launch.py tests/test_fuzz_findings.py
                tests/test_opcheck_compile.py tests/test_models.py tests/test_inference.py)
GPU_ONLY_FILES=(tests/test_gpu_full_size.py tests/test_backend.py)

stage_tests() {
  local run=(-n "${GPU_CHECK_WORKERS:-16}")
  [ "$DRY" = 1 ] && run=(--collect-only)
  "$PY" -m pytest -q -p no:cacheprovider -rfEs "${run[@]}" --junitxml="$OUT/tests.xml" \
    "${GPU_TEST_FILES[@]}" -k "cuda or triton or gpu"
  local a=$?
  "$PY" -m pytest -q -p no:cacheprovider -rfEs "${run[@]}" --junitxml="$OUT/tests_gpu_only.xml" "${GPU_ONLY_FILES[@]}"
  return $(( a || $? ))
}

# compute-sanitizer must exit with this status on a finding (and only then).
SAN_FOUND=3
sanitizer() { PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --error-exitcode $SAN_FOUND "$@"; }

stage_sanitize() {
  local planted="$OUT/sanitizer_planted"
  if command -v nvcc > /dev/null; then
    nvcc -arch=sm_90 -o "$planted" tools/sanitizer_planted.cu || return 1
  else
    echo "nvcc not found: no planted-defect program"; [ "$DRY" = 1 ] || return 1
  fi
  if [ "$DRY" = 1 ]; then
    "$PY" tools/sanitizer_run.py --device cpu --backend cpu --short
    return
  fi
  command -v compute-sanitizer > /dev/null || { echo "compute-sanitizer not found (CUDA toolkit)"; return 1; }
  uname -r | grep -q -- '-fc-' || echo "WARNING: not a Firecracker kernel ($(uname -r)); compute-sanitizer refuses the device on gVisor"
  local rc=0 tool case
  for tool in memcheck racecheck; do
    case=$([ $tool = memcheck ] && echo oob || echo race)
    sanitizer --tool $tool "$planted" $case
    if [ $? -ne $SAN_FOUND ]; then echo "=== $tool did NOT report the planted defect ($case): its results below prove nothing ==="; rc=1; fi
  done
  for tool in memcheck racecheck; do
    echo "=== compute-sanitizer --tool $tool, backend cuda ==="
    sanitizer --tool $tool "$PY" tools/sanitizer_run.py --backend cuda --short || rc=1
  done
  return $rc
}

stage_bench() {
  local extra=(--max-minutes "$BENCH_MINUTES")
  [ "$DRY" = 1 ] && extra=(--quick --max-minutes 1 --ops channel_stats --models "lattice_block")
  "$PY" -m bench --out "$OUT" --name gpu "${extra[@]}" || return 1
  # auto reads lattice_kernels/auto_backends.json: written there (the package data) and copied to $OUT, from where
  # the session that ran it commits it.
  [ "$DRY" = 1 ] || { "$PY" -m bench.auto_table "$OUT/gpu.json" && cp lattice_kernels/auto_backends.json "$OUT/"; }
}

ALL="prepare env build aot tests sanitize bench"
if [ "${1:-}" = --one-stage ]; then  # one stage, in a child so that `timeout` can stop it
  "stage_$2"
  exit $?
fi
[ $# -eq 0 ] && { echo "usage: $0 prepare | a | b | STAGE... (stages: $ALL)"; exit 2; }
STAGES=()
for arg in "$@"; do
  case "$arg" in
    a) STAGES+=(env build aot tests) ;;
    b) STAGES+=(env build sanitize bench) ;;
    *) STAGES+=("$arg") ;;
  esac
done
status=0
for s in "${STAGES[@]}"; do
  if ! declare -F "stage_$s" > /dev/null; then echo "unknown stage '$s' (stages: $ALL)"; exit 2; fi
  limit=${LIMIT[$s]:-600}
  eval "limit=\${STAGE_LIMIT_$s:-$limit}"
  note "stage $s: start (limit ${limit} s)"
  t0=$(date +%s)
  timeout -k 10 "$limit" bash "$0" --one-stage "$s" > "$OUT/$s.log" 2>&1
  rc=$?
  [ -f "$OUT/build_flags.sh" ] && . "$OUT/build_flags.sh"
  if [ $rc -eq 0 ]; then
    note "stage $s: ok ($(( $(date +%s) - t0 )) s)"
  else
    [ $rc -eq 124 ] && note "stage $s: STOPPED at its limit of $limit s"
    note "stage $s: FAILED ($(( $(date +%s) - t0 )) s, status $rc); see $s.log"
    tail -25 "$OUT/$s.log"
    status=1
  fi
done
exit $status
