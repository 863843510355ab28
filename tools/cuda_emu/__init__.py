"""Build and load the CPU execution harness of csrc/cuda (see csrc/cuda_emu/include/lk_cuda_emu.h).

The module ``lk_cuda_emu`` (pybind11, numpy buffers, no torch) is built with ninja under
``build/cuda_emu/<variant>/`` in one of three variants:

- ``plain``: optimised, run in-process by the tests;
- ``asan``: AddressSanitizer + UndefinedBehaviorSanitizer (memcheck on the CPU), run in a child process with the
  sanitizer runtime preloaded;
- ``tsan``: ThreadSanitizer with every CUDA thread a TSan fiber and the GPU's barriers declared as happens-before
  edges (racecheck on the CPU), run in a child process likewise.

ninja rebuilds a variant only when a source or the command changed, so a session builds each variant once.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
EMU = ROOT / "csrc" / "cuda_emu"
SOURCES = [
    EMU / "runtime.cpp",
    EMU / "binding.cpp",
    ROOT / "csrc" / "cuda" / "channel_stats.cu",
    ROOT / "csrc" / "cuda" / "butterfly.cu",
    ROOT / "tests" / "cuda_emu" / "samples.cu",
]
MODULE = "lk_cuda_emu"

_COMMON = ["-std=c++17", "-fPIC", "-Wall", "-Wextra", "-Wno-unknown-pragmas", "-fvisibility=hidden"]
VARIANTS: dict[str, list[str]] = {
    "plain": ["-O2"],
    "asan": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
    "tsan": ["-O1", "-g", "-fsanitize=thread"],
}
_RUNTIME_LIB = {"asan": "libasan.so", "tsan": "libtsan.so"}


class HarnessUnavailable(RuntimeError):
    """The harness cannot be built here (a missing compiler, ninja or pybind11); the message says which."""


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        raise HarnessUnavailable(f"{name} not found: install it (the harness is built with ninja and a C++17 compiler)")
    return path


def _pybind11_include() -> str:
    try:
        import pybind11
    except ImportError as e:
        raise HarnessUnavailable("pybind11 is not installed: pip install -e '.[test]' (it is in the test extra)") from e
    return pybind11.get_include()


def build_dir(variant: str) -> Path:
    return ROOT / "build" / "cuda_emu" / variant


def build(variant: str = "plain") -> Path:
    """Build (or bring up to date) one variant; returns the path of its extension module."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown harness variant {variant!r}; choose one of {sorted(VARIANTS)}")
    cxx = os.environ.get("CXX") or _tool("g++")
    ninja = _tool("ninja")
    out = build_dir(variant)
    out.mkdir(parents=True, exist_ok=True)
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    includes = [EMU / "include", EMU, ROOT / "csrc" / "cuda", Path(_pybind11_include()),
                Path(sysconfig.get_paths()["include"])]
    cflags = " ".join([*_COMMON, *VARIANTS[variant], *(f"-I{p}" for p in includes)])
    ldflags = " ".join(VARIANTS[variant])
    lines = [
        f"cxx = {cxx}",
        f"cflags = {cflags}",
        f"ldflags = {ldflags}",
        "rule cxx",
        "  command = $cxx -MMD -MF $out.d $cflags -x c++ -c $in -o $out",
        "  depfile = $out.d",
        "  deps = gcc",
        "rule link",
        "  command = $cxx -shared $ldflags $in -o $out",
    ]
    objs = []
    for src in SOURCES:
        obj = f"{src.stem}.o"
        lines.append(f"build {obj}: cxx {src}")
        if variant == "tsan" and src.name == "runtime.cpp":  # the harness's bookkeeping: not instrumented
            flags = cflags.replace("-fsanitize=thread", "-DLK_EMU_TSAN=1")
            lines.append(f"  cflags = {flags}")
        objs.append(obj)
    lines.append(f"build {MODULE}{suffix}: link {' '.join(objs)}")
    with open(out / ".build.lock", "w") as lock:  # concurrent processes (pytest-xdist workers) build one at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        (out / "build.ninja").write_text("\n".join(lines) + "\n")
        r = subprocess.run([ninja, "-C", str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building the {variant} harness failed:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}")
    return out / f"{MODULE}{suffix}"


def load(variant: str = "plain") -> ModuleType:
    """Build if needed and import the variant's module (only ``plain`` can be imported without a preload)."""
    path = build(variant)
    spec = importlib.util.spec_from_file_location(MODULE, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sanitizer_env(variant: str) -> dict[str, str]:
    """The environment of a child process that imports a sanitizer variant: its runtime preloaded, a report
    aborting the process with the sanitizer's message on stderr."""
    env = dict(os.environ)
    if variant in _RUNTIME_LIB:
        cxx = os.environ.get("CXX") or _tool("g++")
        lib = subprocess.run([cxx, f"-print-file-name={_RUNTIME_LIB[variant]}"], capture_output=True,
                             text=True).stdout.strip()
        if not os.path.isabs(lib):
            raise HarnessUnavailable(f"the {variant} runtime ({_RUNTIME_LIB[variant]}) is not installed with {cxx}")
        env["LD_PRELOAD"] = lib
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:exitcode=86"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:exitcode=87"
    env["TSAN_OPTIONS"] = "halt_on_error=1:exitcode=88:report_signal_unsafe=0"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env
