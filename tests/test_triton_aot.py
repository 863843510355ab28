"""The Triton kernels compiled ahead of time for sm_80 and sm_90 without a GPU (tools/gpu_resources.py): every
kernel, with the specializations its launchers choose at the benchmarks' largest shapes and a 4K frame, compiles,
spills nothing and fits the target's shared memory; a planted spill and a planted compile error are caught; the
launch grids at 2K-8K frames; the interpreter refuses grids a GPU refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import ON_GPU
from .triton_launch_limits import GridLimitError

triton = pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[triton]')")
ROOT = Path(__file__).resolve().parents[1]
KERNELS = {"stats_partial_kernel", "merge_partials_kernel", "stats_finalize_kernel", "stats_backward_kernel",
           "cc_finalize_kernel", "cc_from_stats_kernel", "butterfly_kernel", "butterfly_backward_kernel"}


def _without_interpreter(code: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run Python code in a child with TRITON_INTERPRET unset (the AOT compile needs Triton's JIT functions)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=str(ROOT), TRITON_DEFAULT_FP_FUSION="1")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_every_triton_kernel_compiles_for_sm80_and_sm90(tmp_path):
    out = tmp_path / "rows.json"
    r = _without_interpreter(f"import sys; from tools import gpu_resources as g; "
                             f"sys.exit(g.main(['--only', 'triton', '--quick', '--json', {str(out)!r}]))")
    rows = json.loads(out.read_text()) if out.exists() else []
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    for arch in (80, 90):
        compiled = {row["kernel"] for row in rows if row["arch"] == arch}
        assert compiled == KERNELS, f"sm_{arch}: compiled {sorted(compiled)}"
    for row in rows:
        assert not row["problem"] and 0 < row["registers"] <= 255 and row["spill_bytes"] == 0, row


def test_aot_check_catches_a_spill_and_a_compile_error():
    code = """
import json
from tools.gpu_resources import Specialization, compile_triton
from tests.triton_aot_samples import non_compiling_kernel, spilling_kernel
spill = Specialization("spilling_kernel", (("x_ptr", "*fp32"), ("out_ptr", "*fp32"), ("BLOCK", "constexpr")),
                       (("BLOCK", 32768),), (0, 1))
bad = Specialization("non_compiling_kernel", (("x_ptr", "*fp32"), ("BLOCK", "constexpr")), (("BLOCK", 3),), (0,))
rows = [compile_triton(spill, spilling_kernel, 90, num_warps=1), compile_triton(bad, non_compiling_kernel, 80)]
print(json.dumps([r.problem for r in rows]))
"""
    r = _without_interpreter(code)
    assert r.returncode == 0, r.stderr[-4000:]
    spill, bad = json.loads(r.stdout.strip().splitlines()[-1])
    assert "local memory (spills)" in spill, spill
    assert "compile failed" in bad, bad


@pytest.mark.skipif(ON_GPU, reason="checks the interpreter's launches (a GPU enforces its own limits)")
def test_interpreter_refuses_a_grid_a_gpu_refuses():
    import triton.language as tl

    @triton.jit
    def fill(x_ptr):
        tl.store(x_ptr + tl.program_id(0) + 2 * tl.program_id(1), 1.0)

    x = torch.zeros(6)
    fill[(2, 3)](x)
    assert x.sum().item() == 6
    with pytest.raises(GridLimitError, match="axis 1 = 65536"):
        fill[(1, 65536)](x)
    with pytest.raises(GridLimitError, match="axis 2 = 70000"):
        fill[(1, 1, 70000)](x)


