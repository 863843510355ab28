#!/usr/bin/env bash
# make gpu-check: on a machine with a CUDA GPU (no network needed), build the CUDA extension, run the test suite
# (GPU tests included), run a short program under compute-sanitizer memcheck, run the benchmarks, and record which
# backend 'auto' should pick per op. Writes under $OUT (default bench/results/gpu-check) at most 8 files (what the
# device tool brings back): gpu_check.log, logs.tar.gz (build, tests, memcheck, bench logs), gpu.json, three plots
# and auto_backends.json. GPU_CHECK_DRY_RUN=1 runs the same steps on
# a CPU machine (no CUDA build, no sanitizer, a quick benchmark) to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu-check}
PY=${PYTHON:-python3}
DRY=${GPU_CHECK_DRY_RUN:-0}
BENCH_MINUTES=${BENCH_MINUTES:-3}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
status=0
step() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
fail() { step "FAILED: $*"; status=1; }

step "environment"
{ nvidia-smi 2>&1 | head -15; $PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"; $PY -c "import triton; print('triton', triton.__version__)"; } >> "$LOG" 2>&1

step "build (LATTICE_KERNELS_CUDA=$([ "$DRY" = 1 ] && echo auto || echo 1))"
if [ "$DRY" = 1 ]; then cuda_flag=auto; else cuda_flag=1; fi
LATTICE_KERNELS_CUDA=$cuda_flag TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} \
  $PY -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || { fail "build (see build.log)"; tail -30 "$OUT/build.log" >> "$LOG"; exit 1; }
$PY -c "import lattice_kernels as lk; from lattice_kernels._backend import _C; print('backends', lk.available_backends(), 'cuda built', _C.cuda_built())" >> "$LOG" 2>&1

step "tests"
workers=$([ "$DRY" = 1 ] && echo 0 || echo 8)
if $PY -c "import xdist" 2>/dev/null && [ "$workers" != 0 ]; then par="-n $workers"; else par=""; fi
$PY -m pytest -q tests $par -p no:cacheprovider > "$OUT/tests.log" 2>&1 || fail "tests (see tests.log)"
tail -5 "$OUT/tests.log" >> "$LOG"

if [ "$DRY" != 1 ]; then
  step "compute-sanitizer memcheck"
  if command -v compute-sanitizer > /dev/null; then
    compute-sanitizer --tool memcheck --error-exitcode 3 $PY tools/sanitizer_run.py > "$OUT/memcheck.log" 2>&1 \
      || fail "memcheck (see memcheck.log)"
    tail -3 "$OUT/memcheck.log" >> "$LOG"
  else
    fail "compute-sanitizer not found"
  fi
fi

step "benchmarks (budget ${BENCH_MINUTES} min)"
if [ "$DRY" = 1 ]; then extra="--quick --max-minutes 2"; else extra="--max-minutes $BENCH_MINUTES"; fi
$PY -m bench --out "$OUT" --name gpu $extra > "$OUT/bench.log" 2>&1 || fail "benchmarks (see bench.log)"
tail -3 "$OUT/bench.log" >> "$LOG"

if [ "$DRY" != 1 ]; then
  step "auto backend table"
  $PY -m bench.auto_table "$OUT/gpu.json" --table "$OUT/auto_backends.json" >> "$LOG" 2>&1 || fail "auto table"
fi
(cd "$OUT" && tar czf logs.tar.gz build.log tests.log bench.log $( [ -f memcheck.log ] && echo memcheck.log ) \
  && rm -f build.log tests.log bench.log memcheck.log)
step "done (status $status)"
exit $status
