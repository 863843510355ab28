"""Compiles lattice_kernels._C against the torch it runs with, on first use, and caches the build.

`pip install` builds nothing (the package is pure Python plus csrc/): the extension is compiled by
torch.utils.cpp_extension.load (ninja) in the process that first needs it, into a folder whose name holds everything
the binary depends on (torch's version and CUDA, Python, the machine, the CUDA choice, the options and a hash of the
sources). A build therefore never serves another torch: installing a different torch, or changing csrc/, gives a new
folder and a new build. `lattice-kernels-build` does the same ahead of time and prints what it built. One binary
holds every CPU instruction set (each in its own translation unit, chosen at run time), so the CPU is not part of the
name.

Environment flags:
  LATTICE_KERNELS_CUDA=auto|1|0   the CUDA kernels: when the whole toolchain is there (default; otherwise a one-line
                                  warning names what is missing and the build has the CPU kernels only), always (the
                                  build fails without them), never.
  TORCH_CUDA_ARCH_LIST            CUDA architectures (default "8.0;9.0").
  LATTICE_KERNELS_DEBUG=1         -O0 -g instead of -O3.
  LATTICE_KERNELS_BUILD_DIR       where builds are kept (default: _ext/ in the package folder when it is writable,
                                  else $XDG_CACHE_HOME/lattice_kernels/ext, ~/.cache when XDG_CACHE_HOME is unset).
  MAX_JOBS                        parallel compile jobs (ninja).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parent
NAME = "_C"
CUDA_HEADER = "include/cuda_runtime_api.h"
DEFAULT_CUDA_HOME = "/usr/local/cuda"  # where torch's builder looks last


class ExtensionBuildError(RuntimeError):
    """lattice_kernels._C cannot be built or loaded here; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------------------------
# the sources and the compiler options


def source_dir() -> Path:
    """csrc/: inside the package in an installed wheel (setup.py copies it there), beside it in a checkout."""
    for d in (PACKAGE / "csrc", PACKAGE.parent / "csrc"):
        if (d / "lattice_kernels.cpp").exists():
            return d
    raise ExtensionBuildError(f"the kernel sources (csrc/) are missing from {PACKAGE} and {PACKAGE.parent}: "
                              "reinstall lattice_kernels")


def sources(csrc: Path, cuda: bool) -> list[Path]:
    """The translation units: the schemas, one binding per op family over the torch-free kernels, the CPU workspace
    (a caching CPU allocator), the kernels once per instruction set (x86-64: baseline, AVX2, AVX-512, and AMX's bf16
    convolution), and with `cuda` the CUDA kernels and their binding."""
    out = [csrc / "lattice_kernels.cpp", csrc / "cpu/binding.cpp",
           *(csrc / f"cpu/{op}.cpp" for op in ("channel_stats", "butterfly", "conv3x3", "workspace")),
           csrc / "cpu/kernels_baseline.cpp"]
    if platform.machine() in ("x86_64", "AMD64"):
        out += [csrc / "cpu/kernels_avx2.cpp", csrc / "cpu/kernels_avx512.cpp", csrc / "cpu/kernels_amx.cpp"]
    if cuda:
        out += [*sorted((csrc / "cuda").glob("*.cu")), csrc / "cuda/ops_cuda.cpp"]
    return out


def _inputs(csrc: Path) -> list[Path]:
    """Every file a build reads (its translation units and the headers they include)."""
    return sorted(p for sub in (".", "cpu", "cuda") for p in (csrc / sub).glob("*")
                  if p.suffix in (".cpp", ".h", ".cu", ".cuh"))


@dataclasses.dataclass(frozen=True)
class Options:
    cuda: bool
    cuda_home: str | None
    arch_list: str | None
    debug: bool
    cuda_skipped: str | None  # why a CUDA torch's build has no CUDA kernels (auto mode); None otherwise

    def flags(self) -> dict[str, list[str]]:
        opt = ["-O0", "-g"] if self.debug else ["-O3"]
        # -fopenmp: at::parallel_for is a header template and runs single-threaded in a TU built without it.
        # -Wno-psabi: the kernels pass 32-byte vectors between static inline functions of the baseline TU.
        cxx = [*opt, "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-psabi", "-fopenmp"]
        if platform.machine() in ("x86_64", "AMD64"):
            cxx.append("-DLK_HAVE_AVX2")
        nvcc = []
        if self.cuda:
            cxx.append("-DLK_WITH_CUDA")
            nvcc = [*opt, "-lineinfo", "-std=c++17", "-DLK_WITH_CUDA"]
        return {"cxx": cxx, "nvcc": nvcc, "ld": ["-fopenmp"]}


# ---------------------------------------------------------------------------------------------------------------
# the CUDA toolchain


@dataclasses.dataclass(frozen=True)
class CudaToolchain:
    home: str | None  # the CUDA_HOME the build would use
    nvcc: str | None
    version: str | None  # nvcc's CUDA release, e.g. "13.0"
    problem: str | None  # what is missing; None when the CUDA kernels can be built

    def describe(self) -> str:
        return f"CUDA_HOME {self.home}, nvcc {self.nvcc} (CUDA {self.version})"


def nvcc_release(nvcc: str) -> str | None:
    """The "release X.Y" that `nvcc --version` prints, None when it prints none."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def find_cuda_toolchain(torch_cuda: str | None, environ: Mapping[str, str] | None = None) -> CudaToolchain:
    """Whether the CUDA kernels can be built for a torch built with CUDA `torch_cuda` (None: a CPU build), with the
    CUDA_HOME torch's builder would use (CUDA_HOME or CUDA_PATH, else the folder above the bin/ of the nvcc on PATH,
    else /usr/local/cuda): its bin/nvcc, its headers, and nvcc's CUDA major version equal to torch's."""
    env = os.environ if environ is None else environ

    def fail(problem: str, home: str | None = None, nvcc: str | None = None, version: str | None = None):
        return CudaToolchain(home, nvcc, version, problem)

    if torch_cuda is None:
        return fail("this torch is a CPU build (the CUDA kernels need a CUDA build of torch)")
    home = env.get("CUDA_HOME") or env.get("CUDA_PATH")
    origin = "CUDA_HOME" if env.get("CUDA_HOME") else "CUDA_PATH"
    if not home:
        on_path = shutil.which("nvcc", path=env.get("PATH", ""))
        if on_path:
            home, origin = str(Path(on_path).parent.parent), f"the folder of {on_path}"
        elif Path(DEFAULT_CUDA_HOME, "bin", "nvcc").exists():
            home, origin = DEFAULT_CUDA_HOME, "the default"
        else:
            return fail(f"no nvcc (nvcc is not on PATH, CUDA_HOME is unset and {DEFAULT_CUDA_HOME} has none): "
                        "install the CUDA toolkit, or set CUDA_HOME to it")
    nvcc = str(Path(home) / "bin" / "nvcc")
    if not os.access(nvcc, os.X_OK):
        return fail(f"CUDA_HOME {home} ({origin}) has no bin/nvcc: set CUDA_HOME to the CUDA toolkit's folder", home)
    if not (Path(home) / CUDA_HEADER).exists():
        hint = ""
        if Path(home).resolve() != Path(DEFAULT_CUDA_HOME).resolve() and Path(DEFAULT_CUDA_HOME, CUDA_HEADER).exists():
            hint = f" ({DEFAULT_CUDA_HOME} has them: CUDA_HOME={DEFAULT_CUDA_HOME})"
        return fail(f"CUDA_HOME {home} ({origin}) has no {CUDA_HEADER}, the CUDA headers: set CUDA_HOME to the "
                    f"CUDA toolkit's folder{hint}", home, nvcc)
    version = nvcc_release(nvcc)
    if version is None:
        return fail(f"{nvcc} --version names no CUDA release", home, nvcc)
    if version.split(".")[0] != torch_cuda.split(".")[0]:
        return fail(f"nvcc {nvcc} is CUDA {version} but torch was built with CUDA {torch_cuda}: the major "
                    "versions must match (install the matching toolkit, or set CUDA_HOME to it)", home, nvcc, version)
    return CudaToolchain(home, nvcc, version, None)


def options(environ: Mapping[str, str] | None = None, torch_cuda: str | bool | None = False) -> Options:
    """The build's options from the environment flags; `torch_cuda` (default: the installed torch's) for tests.
    Raises ExtensionBuildError for a bad flag, or LATTICE_KERNELS_CUDA=1 where the CUDA kernels cannot be built."""
    env = os.environ if environ is None else environ
    if torch_cuda is False:
        import torch

        torch_cuda = torch.version.cuda
    flag = env.get("LATTICE_KERNELS_CUDA", "auto").strip().lower()
    if flag not in ("auto", "1", "0"):
        raise ExtensionBuildError(f"LATTICE_KERNELS_CUDA must be auto, 1 or 0, got {flag!r}")
    debug = env.get("LATTICE_KERNELS_DEBUG") == "1"
    if flag == "0" or (flag == "auto" and torch_cuda is None):
        return Options(False, None, None, debug, None)
    tc = find_cuda_toolchain(torch_cuda, env)
    if tc.problem is not None:
        if flag == "1":
            raise ExtensionBuildError(f"LATTICE_KERNELS_CUDA=1 but the CUDA kernels cannot be built: {tc.problem}")
        return Options(False, None, None, debug, tc.problem)
    return Options(True, tc.home, env.get("TORCH_CUDA_ARCH_LIST", "8.0;9.0"), debug, None)


# ---------------------------------------------------------------------------------------------------------------
# the build folder


def build_root(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("LATTICE_KERNELS_BUILD_DIR"):
        return Path(env["LATTICE_KERNELS_BUILD_DIR"]).expanduser()
    if os.access(PACKAGE, os.W_OK):
        return PACKAGE / "_ext"
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "lattice_kernels" / "ext"


def build_name(opts: Options, csrc: Path) -> str:
    """torch<version>-<cpu | cuda<version>-<archs>>-py<XY>-<machine>[-debug]-<hash of sources and flags>."""
    import torch

    digest = hashlib.sha256(json.dumps(opts.flags(), sort_keys=True).encode())
    for p in _inputs(csrc):
        digest.update(p.relative_to(csrc).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    device = f"cuda{torch.version.cuda}-{re.sub(r'[^0-9a-zA-Z.+]+', '_', opts.arch_list or '')}" if opts.cuda \
        else "cpu"
    parts = [f"torch{torch.__version__}", device, f"py{sys.version_info[0]}{sys.version_info[1]}", platform.machine()]
    if opts.debug:
        parts.append("debug")
    return "-".join([*parts, digest.hexdigest()[:12]])


@dataclasses.dataclass(frozen=True)
class Build:
    """A built extension: its folder, options and the module."""

    folder: Path
    options: Options
    module: ModuleType
    built_now: bool
    seconds: float | None  # the compile time, when it was built by this call


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"lattice_kernels.{NAME}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[spec.name] = module
    return module


def _lock(path: Path):
    import fcntl

    f = open(path, "a")
    fcntl.flock(f, fcntl.LOCK_EX)  # released when f is closed or the process ends (a killed build holds nothing)
    return f


def _library(folder: Path) -> Path:
    return folder / f"{NAME}.so"


def _compile(folder: Path, opts: Options, csrc: Path, verbose: bool) -> float:
    import torch.utils.cpp_extension as cpp

    if opts.cuda and cpp.CUDA_HOME != opts.cuda_home:
        # torch guessed CUDA_HOME when it was imported; the build uses the one whose toolchain was checked.
        cpp.CUDA_HOME = opts.cuda_home
    if opts.cuda:
        os.environ["TORCH_CUDA_ARCH_LIST"] = opts.arch_list
    # torch remembers, per process, the sources it compiled under a name: it skips a second build of the same ones
    # (even one that failed) and renames the output of different ones to _C_v1. The folder's name already tells
    # builds apart, so each call starts unremembered and ninja decides what to recompile.
    versions = getattr(getattr(cpp, "JIT_EXTENSION_VERSIONER", None), "entries", None)
    if isinstance(versions, dict):
        versions.pop(NAME, None)
    stale = folder / "lock"  # torch's own lock: left behind by a killed build, it would make this one wait forever
    stale.unlink(missing_ok=True)
    flags = opts.flags()
    t0 = time.perf_counter()
    cpp.load(NAME, [str(p) for p in sources(csrc, opts.cuda)], extra_cflags=flags["cxx"],
             extra_cuda_cflags=flags["nvcc"], extra_ldflags=flags["ld"], build_directory=str(folder),
             with_cuda=opts.cuda, is_python_module=False, verbose=verbose)
    return time.perf_counter() - t0


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_extension(environ: Mapping[str, str] | None = None, force: bool = False, verbose: bool = False,
                   announce: Callable[[str], None] = _to_stderr, csrc: Path | None = None) -> Build:
    """lattice_kernels._C for this torch: imported from its build folder, compiled there first when it is not built
    yet (or `force`). One process compiles at a time per folder (a lock); the others wait and import its result.
    A failed build is recorded in its folder and raised again without compiling until `force`. `csrc` (default:
    source_dir()) for tests. Raises ExtensionBuildError."""
    opts = options(environ)
    csrc = source_dir() if csrc is None else csrc
    root = build_root(environ)
    folder = root / build_name(opts, csrc)
    failed = folder / "build-failed.txt"
    if not force and _library(folder).exists():
        return Build(folder, opts, _import(_library(folder)), False, None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExtensionBuildError(f"cannot create the build folder {folder} ({e.strerror}): set "
                                  "LATTICE_KERNELS_BUILD_DIR to a writable folder") from None
    with _lock(root / f"{folder.name}.lock"):
        if not force and _library(folder).exists():  # another process built it while this one waited
            return Build(folder, opts, _import(_library(folder)), False, None)
        if not force and failed.exists():
            raise ExtensionBuildError(f"{failed.read_text().strip()} (an earlier build failed; once that is "
                                      "fixed, `lattice-kernels-build --force` compiles again)")
        if opts.cuda_skipped:
            announce(f"lattice_kernels: warning: building without the CUDA kernels: {opts.cuda_skipped}; the cpu, "
                     "triton and torch backends are unaffected (LATTICE_KERNELS_CUDA=1 makes this an error)")
        what = "CPU and CUDA kernels" if opts.cuda else "CPU kernels"
        announce(f"lattice_kernels: compiling the {what} for torch {_torch_version()} into {folder} (once per "
                 "torch version and source change; a few minutes; `lattice-kernels-build` does it ahead of time)")
        _library(folder).unlink(missing_ok=True)
        try:
            seconds = _compile(folder, opts, csrc, verbose)
        except Exception as e:  # the compiler's errors come as RuntimeError, a missing ninja or compiler otherwise
            log = folder / "build.log"
            log.write_text(f"{type(e).__name__}: {e}\n")
            lines = str(e).splitlines() or [type(e).__name__]
            first = next((ln.strip() for ln in lines if re.search(r"\b(fatal )?error\b:", ln)), lines[0].strip())
            message = f"compiling lattice_kernels._C failed: {first[:300]} (the whole output: {log})"
            failed.write_text(message + "\n")
            raise ExtensionBuildError(message) from None
        failed.unlink(missing_ok=True)
        info = {"torch": _torch_version(), "options": dataclasses.asdict(opts), "seconds": round(seconds, 1)}
        (folder / "build.json").write_text(json.dumps(info, indent=1) + "\n")
        announce(f"lattice_kernels: compiled in {seconds:.0f} s")
        _prune(root, folder)
    return Build(folder, opts, _import(_library(folder)), True, seconds)


def _torch_version() -> str:
    import torch

    return torch.__version__


def _prune(root: Path, keep: Path) -> None:
    """Drop earlier builds of the same torch and options (only the hash of the sources differs)."""
    prefix = keep.name.rsplit("-", 1)[0] + "-"
    for d in root.iterdir():
        if d.is_dir() and d != keep and d.name.startswith(prefix) and len(d.name) == len(keep.name):
            shutil.rmtree(d, ignore_errors=True)


def build_info(folder: Path) -> dict:
    path = folder / "build.json"
    return json.loads(path.read_text()) if path.exists() else {}
