"""Deployment: ONNX export of models built from the library's ops, run in ONNX Runtime (and OpenVINO) against the
PyTorch model and the independent plain model in float64; the torch.export round trip; the errors of bad inputs."""

from __future__ import annotations

import copy
import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lattice_kernels as lk
from lattice_kernels import ops
from lattice_kernels.export import (
    MissingDependencyError,
    UntranslatableOpError,
    check_onnx,
    export_onnx,
    export_program,
    run_onnxruntime,
)
from lattice_kernels.models.reference import PlainLatticeNet

from .conftest import weights_dir
from .images import crop, photo

WEIGHTS = weights_dir()
needs_weights = pytest.mark.skipif(
    WEIGHTS is None, reason="published checkpoints not found: set LATTICE_WEIGHTS_DIR or put ../shared/weights beside "
    "the repository")
needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="the deploy extra is not installed (pip install -e '.[deploy]')")


def photo_crop(name: str, h: int, w: int, top: int, left: int) -> torch.Tensor:
    """(1, 3, h, w) float32 on 0..255 from a real photograph."""
    return torch.from_numpy(crop(photo(name), h, w, top, left)).permute(2, 0, 1)[None].float()


def ckpt(scale: int) -> str:
    return os.path.join(WEIGHTS, f"LatticeNet_x{scale}.pt")


@pytest.fixture(scope="module")
def latticenet_x4():
    """The published x4 model on the default backend (the library's cpu kernels here), and the plain model."""
    sd = torch.load(ckpt(4), map_location="cpu", weights_only=True)
    plain = PlainLatticeNet(4)
    plain.load_state_dict(sd)
    return lk.LatticeNet.from_checkpoint(ckpt(4)).eval(), plain.double().eval()


# The export commands of docs/deployment.md, run as written (tests/test_doc_commands.py counts them as run here).
DOC_EXPORT = "lattice-export --checkpoint LatticeNet_x4.pt --out latticenet_x4.onnx"
DOC_EXPORT_FP16 = "lattice-export --checkpoint LatticeNet_x4.pt --out x4_fp16.onnx --dtype float16"


def run_doc_export(command: str, folder: Path) -> Path:
    """`command` in `folder` (holding the published LatticeNet_x4.pt) with the installed lattice-export; the ONNX
    file it wrote, after its own ONNX Runtime check passed."""
    (folder / "LatticeNet_x4.pt").symlink_to(Path(ckpt(4)).resolve())
    words = shlex.split(command)
    exe = Path(sys.executable).parent / words[0]
    r = subprocess.run([str(exe), *words[1:]], cwd=folder, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ONNX Runtime check at" in r.stdout and r.stdout.rstrip().endswith(": ok"), r.stdout
    return folder / words[words.index("--out") + 1]


@pytest.fixture(scope="module")
def latticenet_x4_onnx(latticenet_x4, tmp_path_factory):
    """The published x4 exported by the documented command (dynamic N, H, W)."""
    return run_doc_export(DOC_EXPORT, tmp_path_factory.mktemp("onnx"))


@needs_weights
@needs_onnx
def test_latticenet_onnx_matches_model_on_photographs(latticenet_x4, latticenet_x4_onnx):
    """Published weights, real photographs at two sizes other than the example's (and a batch of two): ONNX Runtime
    against the library's model (cpu kernels) and against the plain model in float64, within 1e-3 on 0..255
    (float32 through ~30 convolutions of 64 channels: ~1e-4 is typical)."""
    net, plain64 = latticenet_x4
    inputs = [photo_crop("astronaut", 37, 53, 100, 180), photo_crop("coffee", 48, 29, 120, 200),
              torch.cat((photo_crop("chelsea", 20, 24, 50, 120), photo_crop("rocket", 20, 24, 200, 100)))]
    for x in inputs:
        got = run_onnxruntime(latticenet_x4_onnx, x)
        with torch.no_grad():
            want = net(x)
            want64 = plain64(x.double())
        assert got.shape == (x.shape[0], 3, 4 * x.shape[2], 4 * x.shape[3])
        err_model = (got - want).abs().max().item()
        err_plain = (got.double() - want64).abs().max().item()
        assert err_model <= 1e-3, f"{tuple(x.shape)}: ONNX Runtime vs the model: {err_model:.2e}"
        assert err_plain <= 1e-3, f"{tuple(x.shape)}: ONNX Runtime vs the float64 plain model: {err_plain:.2e}"


@needs_weights
@needs_onnx
def test_latticenet_onnx_runs_in_openvino(latticenet_x4, latticenet_x4_onnx):
    ov = pytest.importorskip("openvino", reason="openvino is not installed (the deploy extra)")
    net, _ = latticenet_x4
    x = photo_crop("coffee", 31, 45, 100, 100)
    compiled = ov.Core().compile_model(str(latticenet_x4_onnx), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = torch.from_numpy(compiled(x.numpy())[0])
    with torch.no_grad():
        err = (got - net(x)).abs().max().item()
    assert err <= 1e-3, f"OpenVINO vs the model: {err:.2e} on 0..255"


@needs_weights
@needs_onnx
def test_onnx_graph_is_standard_with_named_dynamic_axes(latticenet_x4_onnx):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(latticenet_x4_onnx))
    onnx.checker.check_model(model, full_check=True)
    domains = {n.domain for n in model.graph.node}
    assert domains <= {"", "ai.onnx"}, f"non-standard op domains in the graph: {domains}"
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    out = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert out == ["batch", 3, "4*height", "4*width"]


class EveryOp(torch.nn.Module):
    """A user's module calling every op of the library directly: conv3x3 with and without bias and activation,
    channel_stats, combination_coefficients, coefficients_from_stats, butterfly with q_stats and with out=,
    butterfly_stacked, with coefficients in every position (and None)."""

    def __init__(self, c: int = 8, backend: str | None = None):
        super().__init__()
        self.backend = backend
        self.cc = lk.CombinationCoefficient(c, 4, backend=backend)
        self.w = torch.nn.Parameter(torch.randn(c, c, 3, 3) * 0.2)
        self.b = torch.nn.Parameter(torch.randn(c))

    def forward(self, x):
        bk = self.backend
        y = ops.conv3x3(x, self.w, self.b, negative_slope=0.1, backend=bk)
        z = ops.conv3x3(x, self.w, backend=bk)
        mean, std = ops.channel_stats(y, backend=bk)
        a = self.cc.coefficients(z)
        b = self.cc.from_stats(mean, std)
        p, q, mean_q, std_q = ops.butterfly(y, z, a, None, None, b, q_stats=True, backend=bk)
        (pq,) = ops.butterfly_stacked(p, q, b, a, None, None, backend=bk)
        out = x.new_empty((x.shape[0], 2 * x.shape[1], x.shape[2], x.shape[3]))
        with torch.no_grad():
            ops.butterfly(p, q, None, mean_q, std_q, None, out=out, backend=bk)
        return torch.cat((pq, out), 1) * self.cc.from_stats(mean_q, std_q).repeat(1, 4)[:, :, None, None]


class UserNet(torch.nn.Module):
    """A user's model: a conv, two LatticeBlocks of other placements and widths, a conv."""

    def __init__(self, backend: str | None = None):
        super().__init__()
        self.head = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.b1 = lk.LatticeBlock(16, diff=4, reduction=4, placement="both", backend=backend)
        self.b2 = lk.LatticeBlock(16, diff=4, reduction=4, placement="serial", backend=backend)
        self.tail = torch.nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, x):
        return self.tail(self.b2(self.b1(self.head(x))))


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@needs_onnx
@pytest.mark.parametrize(("kind", "backend"), [
    (k, b) for k, b in (("every_op", "cpu"), ("every_op", "torch"), ("user_net", "cpu"), ("restorer", "cpu"))
    if b in lk.available_backends()])
def test_onnx_export_of_library_modules_matches_float64(tmp_path, backend, kind):
    """Each model kind, built on the cpu backend (the custom ops; every op also on the torch backend, where the
    modules are plain PyTorch already), exported once and run by ONNX Runtime at two other sizes and batch sizes:
    within 2e-5 of max |y| of the same model run in float64 on the spec (float32 through a few convolutions:
    ~1e-6 relative is typical)."""
    torch.manual_seed(0)
    if kind == "every_op":
        model, c = EveryOp(8, backend), 8
    elif kind == "user_net":
        model, c = UserNet(backend), 1
    else:
        model, c = lk.LatticeRestorer(3, "small", backend=backend), 3
        with torch.no_grad():
            _randomise_batchnorm(model)
    model.eval()
    path = export_onnx(model, torch.rand(1, c, 12, 10), tmp_path / f"{kind}.onnx")
    model64 = copy.deepcopy(model).double()
    for m in model64.modules():  # the spec in float64: the ground truth
        if hasattr(m, "backend"):
            m.backend = "torch"
    for x in (torch.rand(1, c, 9, 15), torch.rand(3, c, 16, 7)):
        got = run_onnxruntime(path, x)
        with torch.no_grad():
            want = model64(x.double())
        scale = want.abs().max().item()
        err = (got.double() - want).abs().max().item()
        assert got.shape == want.shape
        assert err <= 2e-5 * scale, f"{kind} on {backend}, {tuple(x.shape)}: {err:.2e} (max |y| {scale:.2e})"


@needs_weights
@needs_onnx
def test_float16_export_runs_in_onnxruntime_within_half_precision(tmp_path, latticenet_x4):
    """dtype=float16 gives a half graph (input and output float16): its error against the float64 plain model is
    within 2x the error of the plain model itself run in float16 by PyTorch (the repository's rule for half
    results; statistics and coefficients stay float32 in both)."""
    onnx = pytest.importorskip("onnx")
    _, plain64 = latticenet_x4
    path = run_doc_export(DOC_EXPORT_FP16, tmp_path)  # export_onnx(dtype=torch.float16) under the command
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    x = photo_crop("chelsea", 23, 29, 60, 140)
    got = run_onnxruntime(path, x.half())
    assert got.dtype == torch.float16
    with torch.no_grad():
        want = plain64(x.double())
        half_eager = lk.LatticeNet.from_checkpoint(ckpt(4), backend="torch").half().eval()(x.half())
    err = (got.double() - want).abs().max().item()
    eager_err = (half_eager.double() - want).abs().max().item()
    assert err <= 2 * eager_err, f"float16 ONNX error {err:.3g} > 2x PyTorch's float16 error {eager_err:.3g}"
    # in this process, a small model of the library's modules: the exported model is left as it was
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), lk.LatticeBlock(16, diff=4),
                                torch.nn.Conv2d(16, 3, 3, padding=1)).eval()
    export_onnx(model, torch.rand(1, 3, 8, 8), tmp_path / "small_fp16.onnx", dtype=torch.float16)
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point()), \
        "export_onnx(dtype=float16) must not change the model"


@needs_weights
def test_torch_export_round_trip_reproduces_the_model(tmp_path, latticenet_x4):
    """export_program keeps the custom ops; saved with torch.export.save and loaded, it reproduces the model at
    sizes and batch sizes other than the example's: within 1e-3 on 0..255 (seen: bitwise at batch 1, ~1e-4 at
    batch 2, where the traced graph's memory formats, and so oneDNN's summation order, differ from eager's)."""
    net, _ = latticenet_x4
    program = export_program(net, photo_crop("astronaut", 24, 32, 0, 0))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    if "cpu" in lk.available_backends():
        assert any(t.startswith("lattice_kernels.") for t in targets), "the custom ops should stay in the program"
    torch.export.save(program, tmp_path / "x4.pt2")
    loaded = torch.export.load(tmp_path / "x4.pt2").module()
    for x in (photo_crop("coffee", 21, 35, 100, 100), torch.cat([photo_crop("rocket", 18, 22, 200, 100)] * 2)):
        with torch.no_grad():
            got, want = loaded(x), net(x)
        assert got.shape == want.shape
        err = (got - want).abs().max().item()
        assert err <= 1e-3, f"the loaded program differs from the model at {tuple(x.shape)} by {err:.2e}"


# ------------------------------------------------------------------------------------------------------ errors

def test_non_4d_example_input_is_refused(tmp_path):
    net = lk.LatticeNet(2)
    image = photo_crop("astronaut", 8, 8, 0, 0)[0]  # (3, H, W): no batch axis
    for fn in (lambda: export_onnx(net, image, tmp_path / "x.onnx"), lambda: export_program(net, image)):
        with pytest.raises(ValueError, match=r"4-D \(N, C, H, W\).*x\[None\]"):
            fn()
    with pytest.raises(TypeError, match="example_input must be a torch.Tensor"):
        export_program(net, image.numpy())
    with pytest.raises(TypeError, match="floating-point"):
        export_program(net, torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        export_program(net, torch.zeros(0, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 2x2"):
        export_program(net, torch.zeros(1, 3, 1, 8))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        export_program(lambda x: x, torch.zeros(1, 3, 8, 8))
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript")):
        with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float16"):
            export_onnx(net, torch.zeros(1, 3, 8, 8), tmp_path / "x.onnx", dtype=torch.bfloat16)


@pytest.mark.parametrize("missing", ["onnx", "onnxscript", "onnxruntime"])
def test_missing_optional_package_names_the_extra(tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` now raises ImportError
    net, x = lk.LatticeNet(2), torch.rand(1, 3, 8, 8)
    with pytest.raises(MissingDependencyError, match=rf"{missing}.*pip install 'lattice_kernels\[deploy\]'"):
        if missing == "onnxruntime":
            run_onnxruntime(tmp_path / "x.onnx", x)
        else:
            export_onnx(net, x, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


@torch.library.custom_op("lattice_kernels_test::double_it", mutates_args=())
def double_it(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


@double_it.register_fake
def _(x):
    return torch.empty_like(x)


class WithForeignOp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = lk.LatticeBlock(8, diff=2, reduction=4)

    def forward(self, x):
        return double_it(self.block(x))


@needs_onnx
def test_op_without_translation_is_named(tmp_path):
    """A custom op that is not the library's: a clear error naming it, no file written; with a translation passed
    through custom_translation_table (as torch.onnx takes it) the model exports and matches."""
    model, x = WithForeignOp().eval(), torch.rand(1, 8, 6, 6)
    with pytest.raises(UntranslatableOpError, match=r"lattice_kernels_test\.double_it.*custom_translation_table"):
        export_onnx(model, x, tmp_path / "f.onnx")
    assert not (tmp_path / "f.onnx").exists()

    from onnxscript import opset18 as op

    def double_it_onnx(x):
        return op.Add(x, x)

    path = export_onnx(model, x, tmp_path / "f.onnx",
                       custom_translation_table={torch.ops.lattice_kernels_test.double_it.default: double_it_onnx})
    err = check_onnx(path, model, torch.rand(2, 8, 5, 7))
    assert err <= 1e-4, err


# ---------------------------------------------------------------------------------------------------- command

@needs_onnx
def test_export_command_writes_and_checks(tmp_path, capsys):
    from lattice_kernels.cli import export as cli

    torch.manual_seed(0)
    model = lk.LatticeRestorer(1, "small")
    with torch.no_grad():
        _randomise_batchnorm(model)
    model.save_safetensors(tmp_path / "gray.safetensors")
    out = tmp_path / "deploy" / "gray.onnx"
    assert cli.main(["--checkpoint", str(tmp_path / "gray.safetensors"), "--out", str(out), "--size", "16", "12"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and f"wrote {out}" in text and "dynamic N, H, W" in text
    assert "ONNX Runtime check at 2x1x23x15" in text and text.rstrip().endswith(": ok"), text
    # the file holds the checkpoint's model: ONNX Runtime on another input gives what the model gives
    x = torch.rand(1, 1, 10, 13)
    assert check_onnx(out, lk.LatticeRestorer.from_checkpoint(tmp_path / "gray.safetensors"), x) <= 1e-5


def test_export_command_bad_arguments(tmp_path, capsys):
    from lattice_kernels.cli import export as cli

    def run(*argv):
        return cli.run(cli.build_parser().parse_args(argv))

    with pytest.raises(FileNotFoundError, match="weights file not found"):
        run("--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.onnx"))
    torch.save({"conv.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="neither LatticeNet weights.*nor LatticeRestorer"):
        run("--checkpoint", str(tmp_path / "other.pt"), "--out", str(tmp_path / "x.onnx"))
    # main() reports a user error in one line, exit status 2
    capsys.readouterr()
    assert cli.main(["--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lattice-export: error: weights file not found") and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as e:
        cli.main(["--out", str(tmp_path / "x.onnx")])  # --checkpoint is required
    assert e.value.code == 2
