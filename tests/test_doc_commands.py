"""Every command shown in the docs runs: each line of the ```sh blocks of README.md and docs/*.md is run here as
written (in a folder holding the files it names: photographs, a short clip, checkpoints, benchmark-style folders),
or is run by the test named for it, or is listed with the reason it cannot run on this machine (shown as
skipped). A command added to the docs without one of these fails test_every_command_is_classified.

A plain `lattice-... args` line runs in this process through the installed console script's entry point (the
function the script calls, with the line's arguments, in the line's folder and environment: a fresh Python and
torch per line would cost 3 s each); a line with a pipe or an environment prefix, and the training commands, run in
a shell. tests/test_cli.py runs the installed scripts themselves.

Two lines are shortened, as the --help examples' tests shorten them: the training commands run 2 steps on
16-pixel patches (the flags appended; argparse takes the last value)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lattice_kernels as lk
from lattice_kernels.imresize import imresize

from .conftest import weights_dir
from .images import crop, photo

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
WEIGHTS = weights_dir()
SHORT_TRAINING = ["--steps", "2", "--patch", "16", "--batch-size", "2", "--repeat", "4", "--no-progress"]


def doc_commands() -> list[tuple[str, str]]:
    """(page:line, command) for each command line of the pages' ```sh blocks (continuations joined, comment lines
    and the output lines they show left out)."""
    out = []
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
            first = text.count("\n", 0, m.start(1)) + 1
            body = m.group(1).replace("\\\n", " ")
            for k, line in enumerate(body.splitlines()):
                if line.strip() and not line.lstrip().startswith("#"):
                    out.append((f"{page.relative_to(ROOT).as_posix()}:{first + k}", line.strip()))
    return out


COMMANDS = doc_commands()


def words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


# Commands run by another test, which must hold them: (the test, a check that it runs this command).
def _install_cases() -> list[str]:
    from .test_install import CASES

    return [f"{how}{'' if isolation else ' --no-build-isolation'}" for how, isolation in CASES]


def _export_test_runs(command: str) -> bool:
    from . import test_export

    return command in (test_export.DOC_EXPORT, test_export.DOC_EXPORT_FP16)


ELSEWHERE = {
    "pip install .": ("tests/test_install.py::test_install_paths", lambda: "pip install ." in _install_cases()),
    "pip install -e .": ("tests/test_install.py::test_install_paths",
                         lambda: "pip install -e . --no-build-isolation" in _install_cases()),
    "pip install --no-build-isolation .": ("tests/test_install.py::test_install_paths",
                                           lambda: "pip install . --no-build-isolation" in _install_cases()),
    "make test": (".ci/run (CI runs the suite with it)", lambda: "make test" in (ROOT / ".ci" / "run").read_text()),
    # the exported files are what tests/test_export.py checks in ONNX Runtime and OpenVINO
    "lattice-export --checkpoint LatticeNet_x4.pt --out latticenet_x4.onnx": (
        "tests/test_export.py (the latticenet_x4_onnx fixture)", lambda: _export_test_runs(
            "lattice-export --checkpoint LatticeNet_x4.pt --out latticenet_x4.onnx")),
    "lattice-export --checkpoint LatticeNet_x4.pt --out x4_fp16.onnx --dtype float16": (
        "tests/test_export.py::test_float16_export_runs_in_onnxruntime_within_half_precision",
        lambda: _export_test_runs("lattice-export --checkpoint LatticeNet_x4.pt --out x4_fp16.onnx --dtype float16")),
    "torchrun --nproc_per_node 4 -m lattice_kernels.cli.train --data DIV2K/HR --out-dir runs/x2": (
        "tests/test_cli.py::test_train_under_torchrun_as_in_help (the same line, from lattice-train --help)",
        lambda: "torchrun --nproc_per_node 4 -m lattice_kernels.cli.train --data DIV2K/HR --out-dir runs/x2"
        in subprocess.run([str(Path(sys.executable).parent / "lattice-train"), "--help"], capture_output=True,
                          text=True).stdout),
}
NOT_RUN = {
    "make bench": "the full benchmark takes tens of minutes; its budgeted stages are tested in "
                  "tests/test_bench_budget.py",
    "pip install 'lattice_kernels[video]'": "installs from the package registry; make test's environment has the "
                                            "extra (tests/test_video.py uses it)",
    "make gpu-check": "needs a CUDA GPU (tools/gpu_check.sh; its stages are checked by tests/test_gpu_check_script.py)",
    'make gpu-check STAGES="tests"': "needs a CUDA GPU",
}
RUN_HERE = ("lattice-", "find ", "LATTICE_KERNELS_CUDA=1 ")


def classify(command: str) -> str:
    key = key_of(command)
    if key in map(key_of, ELSEWHERE):
        return "elsewhere"
    if key in map(key_of, NOT_RUN):
        return "not run"
    if command.startswith(RUN_HERE):
        return "here"
    return "unclassified"


def key_of(command: str) -> str:
    return " ".join(words(command))


def test_every_command_is_classified():
    assert len(COMMANDS) >= 30, COMMANDS
    unknown = [f"{where}: {c}" for where, c in COMMANDS if classify(c) == "unclassified"]
    assert not unknown, "doc commands that no test runs (add them to tests/test_doc_commands.py):\n" + \
        "\n".join(unknown)
    documented = {key_of(c) for _, c in COMMANDS}
    stale = [k for k in (*ELSEWHERE, *NOT_RUN) if key_of(k) not in documented]
    assert not stale, f"listed here but no longer in the docs: {stale}"


@pytest.mark.parametrize("command", sorted(ELSEWHERE))
def test_commands_run_by_other_tests_are_there(command):
    where, check = ELSEWHERE[command]
    assert check(), f"{where} no longer runs `{command}`"


@pytest.mark.parametrize("command", sorted(NOT_RUN))
def test_commands_not_run_here(command):
    pytest.skip(f"`{command}`: {NOT_RUN[command]}")


# ---------------------------------------------------------------------------------------------------------------
# the folder the commands run in


def _save(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """Every file and folder a doc command names, small: 24x20 photographs, a 3-frame clip, random checkpoints where
    the docs name one of your own, the published ones where they name those."""
    d = tmp_path_factory.mktemp("docs")
    small = [crop(photo(n), 20, 24, 120, 160) for n in ("coffee", "rocket", "astronaut", "chelsea")]
    for name, img in (("photo.jpg", small[0]), ("huge.png", small[1]), ("big.png", small[2]),
                      ("noisy.png", small[3]), ("photos/a.png", small[0]), ("photos/sub/b.png", small[1]),
                      ("shots/s1.tif", small[2]), ("shots/deep/s2.tif", small[3]), ("scans/scan.tif", small[0])):
        _save(d / name, img)
    torch.manual_seed(0)
    for name in ("model.safetensors", "runs/dn/model.safetensors", "restorer.safetensors"):
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        lk.LatticeRestorer(3, "small").eval().save_safetensors(d / name)
    if WEIGHTS is not None:
        (d / "LatticeNet_x4.pt").symlink_to(Path(WEIGHTS).resolve() / "LatticeNet_x4.pt")
    hr = [crop(photo(n), 48, 48, 100, 100) for n in ("coffee", "rocket", "motorcycle_left")]
    for folder in ("Set5/HR", "Set14/HR", "B100/HR", "Urban100/HR", "CBSD68", "train/DIV2K/HR", "train/clean"):
        for i, img in enumerate(hr[:2]):
            _save(d / folder / f"img{i}.png", img)
    for i, img in enumerate(hr[:2]):
        _save(d / "Set5" / "LR_bicubic" / "X4" / f"img{i}x4.png", imresize(img, scale=0.25))
    _make_clips(d, small[:3])
    return d


def _make_clips(d: Path, frames: list[np.ndarray]) -> None:
    from lattice_kernels.video_files import ffmpeg_exe

    raw = b"".join(np.ascontiguousarray(f).tobytes() for f in frames)
    for name, codec in (("clip.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]), ("clip.mkv", ["-c:v", "ffv1"])):
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "24x20",
                        "-r", "25", "-i", "-", *codec, str(d / name)], input=raw, check=True)


IN_PROCESS = ("lattice-upscale", "lattice-denoise", "lattice-evaluate", "lattice-kernels-build")


def _entry_point(name: str):
    """The function the installed console script `name` calls (pyproject.toml's [project.scripts])."""
    from importlib.metadata import entry_points

    (ep,) = entry_points(group="console_scripts", name=name)
    return ep.load()


def _run_in_process(command: str, cwd: Path, monkeypatch, capfd) -> subprocess.CompletedProcess:
    w = words(command)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cwd / ".cache"))
    monkeypatch.delenv("LATTICE_WEIGHTS_DIR", raising=False)
    if WEIGHTS is not None:
        monkeypatch.setenv("LATTICE_WEIGHTS_DIR", str(Path(WEIGHTS).resolve()))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    capfd.readouterr()
    try:
        rc = _entry_point(w[0])(w[1:])
    finally:
        torch.set_num_threads(threads)
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(w, rc, out, err)


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(cwd / ".cache")}
    env.pop("LATTICE_WEIGHTS_DIR", None)
    if WEIGHTS is not None:
        env["LATTICE_WEIGHTS_DIR"] = str(Path(WEIGHTS).resolve())
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _distinct(commands: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each command once (the front page repeats some of the pages' commands), at its first place."""
    seen: set[str] = set()
    out = []
    for where, c in commands:
        if key_of(c) not in seen:
            seen.add(key_of(c))
            out.append((where, c))
    return out


HERE = _distinct([(where, c) for where, c in COMMANDS if classify(c) == "here"])


def _expected_outputs(command: str) -> list[str]:
    """Files or folders the command must leave: its `# writes X` comment, its -o/--out-dir/--out/--markdown/--json."""
    out = re.findall(r"# writes (\S+)", command)
    w = words(command.split("|")[-1])
    for flag in ("-o", "--out-dir", "--out", "--markdown", "--json"):
        if flag in w:
            out.append(w[w.index(flag) + 1])
    return out


@pytest.mark.parametrize("where, command", HERE, ids=[w for w, _ in HERE])
def test_doc_command_runs(where, command, sandbox, monkeypatch, capfd):
    w = words(command.split("|")[-1])
    if WEIGHTS is None and ("LatticeNet_x4.pt" in w or (w[0] == "lattice-upscale" and {"--scale", "-s"} & set(w))):
        pytest.skip("the authors' published checkpoints were not found (LATTICE_WEIGHTS_DIR)")
    run, cwd = command, sandbox
    if w[0] == "lattice-train":  # in a folder of its own: the docs' runs/dn is the denoising example's model
        run, cwd = f"{command.split('#')[0]} {' '.join(SHORT_TRAINING)}", sandbox / "train"
    for out in _expected_outputs(command):
        if (cwd / out).is_file():
            (cwd / out).unlink()  # left by another command: this one must write it
    plain = "|" not in command and w[0] in IN_PROCESS and not re.match(r"^\w+=", command)
    r = _run_in_process(run, cwd, monkeypatch, capfd) if plain else _run(run, cwd)
    if command.startswith("LATTICE_KERNELS_CUDA=1 ") and not torch.cuda.is_available() and \
            torch.version.cuda is None:
        # the documented behaviour on a CPU torch: refused, saying why
        assert r.returncode == 2 and "this torch is a CPU build" in r.stderr, r.stderr[-2000:]
        return
    assert r.returncode == 0, f"{where}: `{run}` failed ({r.returncode}):\n{r.stderr[-3000:]}"
    for out in _expected_outputs(command):
        path = cwd / out
        assert path.exists() and (path.is_file() or any(path.iterdir())), f"{where}: `{command}` left no {out}"


def test_readme_python_quickstart_runs(sandbox):
    """The front page's Python quickstart, as written, in the folder holding photo.jpg."""
    if WEIGHTS is None:
        pytest.skip("the authors' published checkpoints were not found (LATTICE_WEIGHTS_DIR)")
    text = (ROOT / "README.md").read_text()
    code = re.search(r"## Quickstart: Python\n\n```python\n(.*?)^```", text, flags=re.S | re.M).group(1)
    assert len(code.strip().splitlines()) <= 10, code
    (sandbox / "quickstart.py").write_text(code + "\nprint(tuple(y.shape))\n")
    (sandbox / "photo_x4.png").unlink(missing_ok=True)
    r = _run(f"{shlex.quote(sys.executable)} quickstart.py", sandbox)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "(2, 64, 48, 48)", r.stdout
    assert Image.open(sandbox / "photo_x4.png").size == (96, 80)
