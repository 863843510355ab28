"""tools/gpu_check.sh, the two prepared device calls, checked without a GPU: the script parses, refuses unknown
stages, lists test files that exist and select GPU tests, and its planted-defect program for compute-sanitizer
compiles with nvcc. (GPU_CHECK_DRY_RUN=1 runs the whole script; docs/gpu.md.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_check.sh"


def _array(name: str) -> list[str]:
    m = re.search(rf"^{name}=\((.*?)\)", SCRIPT.read_text(), re.S | re.M)
    assert m, f"{name} not found in {SCRIPT}"
    return m.group(1).split()


def test_script_parses_and_refuses_unknown_stages(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    r = subprocess.run(["bash", str(SCRIPT), "no-such-stage"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path)})
    assert r.returncode == 2 and "unknown stage 'no-such-stage'" in r.stdout
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                                                                                  "OUT": str(tmp_path)})
    assert r.returncode == 2 and "usage" in r.stdout


def test_listed_test_files_exist():
    files = _array("GPU_TEST_FILES") + _array("GPU_ONLY_FILES")
    assert len(files) >= 10
    for f in files:
        assert (ROOT / f).is_file(), f


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (the CUDA toolkit) is not installed")
def test_planted_sanitizer_defects_compile(tmp_path):
    r = subprocess.run(["nvcc", "-arch=sm_90", "-o", str(tmp_path / "planted"), str(ROOT / "tools" /
                        "sanitizer_planted.cu")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
