"""Deployment: torch.export and ONNX export of any module built from the library's ops.

``export_program`` is torch.export with dynamic N/H/W: the exported program keeps the custom ops
(torch.ops.lattice_kernels.*) and runs wherever lattice_kernels is importable. ``export_onnx`` turns it into
standard ONNX: before conversion every custom op is decomposed to its specification (lattice_kernels/ops/reference.py:
unbiased std, the coefficient MLP, the butterfly, conv + LeakyReLU), so the ONNX graph computes the same math with
standard operators that ONNX Runtime, OpenVINO and TensorRT optimise as they would a plain PyTorch model.

Why a decomposition to the spec rather than hand-written onnxscript functions (torch.onnx's custom_translation_table):
the spec is the one definition every backend is tested against, so the ONNX graph cannot drift from it, and what
torch.onnx then converts is plain ATen that its own translations (tested upstream) already cover; a second,
hand-written ONNX version of each op would be another implementation to keep equal. ``custom_translation_table``
is still accepted for a user's own ops.

Needs the ``deploy`` extra (onnx, onnxscript; onnxruntime / openvino to run the result):
``pip install 'lattice_kernels[deploy]'``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from .ops import reference as spec

__all__ = [
    "DEFAULT_OPSET",
    "MissingDependencyError",
    "UntranslatableOpError",
    "check_onnx",
    "decompose_to_spec",
    "export_onnx",
    "export_program",
    "require",
    "run_onnxruntime",
]

DEFAULT_OPSET = 18
# The namespaces of the library's custom ops: the C++ ops (cpu and cuda backends) and the Triton ones (same schemas).
NAMESPACES = ("lattice_kernels", "lattice_kernels_triton")
EXTRA = "deploy"


class MissingDependencyError(ImportError):
    """An optional package of the ``deploy`` extra is not installed."""


class UntranslatableOpError(ValueError):
    """The model contains an op that has no ONNX translation."""


def require(*modules: str, what: str = "ONNX export") -> None:
    """Import each module or raise MissingDependencyError naming the ones missing and the extra that has them."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingDependencyError(
            f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f"pip install 'lattice_kernels[{EXTRA}]' (or pip install {' '.join(missing)})"
        )


# ---------------------------------------------------------------------------------------------- the decompositions
# Each returns exactly what the op's schema does (csrc/lattice_kernels.cpp), computed by the spec.

def _no_stats(x: Tensor) -> Tensor:
    return x.new_empty((0,), dtype=spec.stats_dtype(x.dtype))


def _combination_coefficients(x, w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s):
    mean, std = spec.channel_stats(x)
    return spec.coefficients_from_stats(mean, std, w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s), mean, std


def _butterfly(x1, x2, alpha1, alpha2, beta1, beta2, q_stats):
    p, q = spec.butterfly(x1, x2, alpha1, alpha2, beta1, beta2)
    mean_q, std_q = spec.channel_stats(q) if q_stats else (_no_stats(x1), _no_stats(x1))
    return p, q, mean_q, std_q


def _butterfly_stacked(x1, x2, alpha1, alpha2, beta1, beta2, q_stats):
    p, q, mean_q, std_q = _butterfly(x1, x2, alpha1, alpha2, beta1, beta2, q_stats)
    return torch.cat((p, q), dim=1), mean_q, std_q


def _butterfly_out(x1, x2, alpha1, alpha2, beta1, beta2, q_stats, out):
    p, q, mean_q, std_q = _butterfly(x1, x2, alpha1, alpha2, beta1, beta2, q_stats)
    c = x1.shape[1]
    out[:, :c].copy_(p)
    out[:, c:].copy_(q)
    return mean_q, std_q


_SPEC: dict[str, Callable] = {
    "channel_stats": spec.channel_stats,
    "combination_coefficients": _combination_coefficients,
    "coefficients_from_stats": spec.coefficients_from_stats,
    "butterfly": _butterfly,
    "butterfly_stacked": _butterfly_stacked,
    "butterfly_out": _butterfly_out,
    "conv3x3": spec.conv3x3,
}
TRANSLATED_OPS = tuple(_SPEC)


def _library_namespaces() -> list:
    """The op namespaces of this library that are defined in this process (the Triton one only once used)."""
    out = []
    for ns in NAMESPACES:
        packet = getattr(torch.ops, ns)
        if any(hasattr(packet, name) for name in _SPEC):
            out.append(packet)
    return out


def decomposition_table() -> dict:
    """{OpOverload: spec function} for every forward op of the library defined in this process."""
    table = {}
    for packet in _library_namespaces():
        for name, fn in _SPEC.items():
            if hasattr(packet, name):
                table[getattr(packet, name).default] = fn
    return table


def _functional_mutable_call(op, *, _only_clone_these_bases=None, _all_bases=(), **kwargs):
    """What torch.export's auto_functionalized_v2(op, ...) node computes (the op on copies of the mutated bases,
    returning its outputs and the new bases), with op run by its spec, so that re-tracing gives ATen ops."""
    from torch._higher_order_ops import auto_functionalize as af

    names, types = af.get_mutable_args_from_schema(op._schema)
    views = af.read_view_information_from_args(names, types, dict(kwargs), list(_all_bases))
    bases = [b.clone() for b in _all_bases]  # (torch's own copy keeps strides with as_strided, which ONNX lacks)
    args = {a.name: kwargs[a.name] for a in op._schema.arguments if a.name in kwargs}
    for name in names:
        args[name] = None if views[name] is None else views[name].regenerate_view(bases)
    out = _SPEC[op.overloadpacket.__name__](**args)
    return (*out, *bases)


def _unwrap_mutable_ops(program: torch.export.ExportedProgram, table: dict) -> None:
    """torch.export wraps a mutating op (butterfly_out) in an auto_functionalized_v2 node that no decomposition
    table reaches (nor torch.onnx): replace those of the library's ops by _functional_mutable_call."""
    hop = getattr(torch.ops.higher_order, "auto_functionalized_v2", None)
    for module in program.graph_module.modules():  # with the subgraphs of no_grad regions
        if not isinstance(module, torch.fx.GraphModule):
            continue
        graph, changed = module.graph, False
        for node in list(graph.nodes):
            if node.op == "call_function" and node.target is hop and node.args and node.args[0] in table:
                with graph.inserting_before(node):
                    new = graph.call_function(_functional_mutable_call, node.args, dict(node.kwargs))
                new.meta = dict(node.meta)
                node.replace_all_uses_with(new)
                graph.erase_node(node)
                changed = True
        if changed:
            module.recompile()


def decompose_to_spec(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """The exported program with every lattice_kernels op replaced by its specification (plain ATen ops)."""
    table = decomposition_table()
    mutating = {op for op in table if op._schema.is_mutable}
    with _quiet_torch():
        if any(node.target in mutating for m in program.graph_module.modules()
               if isinstance(m, torch.fx.GraphModule) for node in m.graph.nodes):
            program = program.run_decompositions({})  # functionalised: the mutating ops become auto_functionalized_v2
            _unwrap_mutable_ops(program, table)
        return program.run_decompositions(table)


# ------------------------------------------------------------------------------------------------------ export

def _check_example(model: object, example_input: object) -> Tensor:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    if example_input.dim() != 4:
        raise ValueError(f"example_input must be a 4-D (N, C, H, W) image batch, got shape "
                         f"{tuple(example_input.shape)}; add a batch axis with x[None] for a single (C, H, W) image")
    if example_input.numel() == 0:
        raise ValueError(f"example_input is empty (shape {tuple(example_input.shape)})")
    if not example_input.is_floating_point():
        raise TypeError(f"example_input must be a floating-point tensor, got {example_input.dtype}")
    return example_input


def _dynamic_shapes(x: Tensor, dynamic_batch: bool, dynamic_hw: bool) -> tuple[Tensor, tuple | None]:
    """The traced input and torch.export's dynamic_shapes for it. torch.export specialises axes of size 1 (and
    H*W = 1 has no std), so a batch of 1 is traced as the example repeated twice and H, W must be >= 2."""
    axes = {}
    if dynamic_batch:
        if x.shape[0] == 1:
            x = x.expand(2, *x.shape[1:]).clone()
        axes[0] = torch.export.Dim("batch")
    if dynamic_hw:
        h, w = x.shape[2:]
        if h < 2 or w < 2:
            raise ValueError(f"example_input must be at least 2x2 for dynamic height and width, got {h}x{w}")
        axes[2] = torch.export.Dim("height", min=2)
        axes[3] = torch.export.Dim("width", min=2)
    return x, ((axes,) if axes else None)


def export_program(model: nn.Module, example_input: Tensor, *, dynamic_batch: bool = True,
                   dynamic_hw: bool = True) -> torch.export.ExportedProgram:
    """torch.export of model (taken in eval mode, as it is) on one (N, C, H, W) input, with dynamic batch, height
    and width axes. The program keeps the library's custom ops; save it with torch.export.save and load it with
    torch.export.load in any process that imports lattice_kernels."""
    x = _check_example(model, example_input)
    x, dynamic_shapes = _dynamic_shapes(x, dynamic_batch, dynamic_hw)
    was_training = model.training
    model.eval()
    try:
        with _quiet_torch():
            return torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes)
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Silence two messages of torch's own that are not the user's concern: a FutureWarning of torch's pytree
    raised inside torch.export, and torch.onnx's warning per torchvision op when torchvision is not installed."""
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)", FutureWarning)
            yield
    finally:
        registry_log.setLevel(level)


def _foreign_ops(program: torch.export.ExportedProgram, allowed: set) -> list[str]:
    """Names of the custom ops (outside aten/prims) left in the program that no translation covers."""
    out = []
    for node in program.graph.nodes:
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
            continue
        ns = target.namespace
        if ns in ("aten", "prims") or target in allowed or target.overloadpacket in allowed:
            continue
        name = str(target)
        if name not in out:
            out.append(name)
    return out


def export_onnx(model: nn.Module, example_input: Tensor, path: str | os.PathLike, *, dynamic_hw: bool = True,
                dynamic_batch: bool = True, opset: int = DEFAULT_OPSET, dtype: torch.dtype = torch.float32,
                custom_translation_table: dict | None = None) -> Path:
    """Export model (LatticeNet, LatticeRestorer, any module with LatticeBlocks or the library's ops) to a standard
    ONNX file at path and return the path. The graph takes one (N, C, H, W) input named "input" and gives "output";
    N, H and W are dynamic (unless dynamic_batch / dynamic_hw is False). dtype float16 gives an all-half graph for
    GPU runtimes (statistics and coefficients still in float32, as the op contract has them); the model itself is
    not changed (a copy is cast). Raises MissingDependencyError without onnx/onnxscript, UntranslatableOpError when
    the model contains an op with no ONNX translation (a user's custom op: pass custom_translation_table, as for
    torch.onnx.export)."""
    require("onnx", "onnxscript")
    x = _check_example(model, example_input)
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"dtype must be torch.float32 or torch.float16, got {dtype}")
    if dtype != torch.float32 or x.dtype != dtype:
        model = copy.deepcopy(model).to(dtype)
        x = x.to(dtype)
    program = decompose_to_spec(export_program(model, x, dynamic_batch=dynamic_batch, dynamic_hw=dynamic_hw))
    user_table = dict(custom_translation_table or {})
    foreign = _foreign_ops(program, set(user_table))
    if foreign:
        raise UntranslatableOpError(
            f"the model contains op(s) with no ONNX translation: {', '.join(foreign)}. lattice_kernels translates "
            f"its own ops ({', '.join(TRANSLATED_OPS)}) and torch.onnx the ATen ops; for another custom op pass "
            "custom_translation_table={torch.ops.<namespace>.<op>.default: <onnxscript function>}"
        )
    with _quiet_torch():
        onnx_program = torch.onnx.export(program, (x,), dynamo=True, opset_version=opset, input_names=["input"],
                                         output_names=["output"], custom_translation_table=user_table or None,
                                         verbose=False)
    _name_dynamic_axes(onnx_program.model, ("batch", None, "height", "width"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_program.save(str(path), external_data=False)
    return path


def _name_dynamic_axes(model, names: tuple[str | None, ...]) -> None:
    """Rename the exporter's shape symbols (s0, 4*s53, ...) after the input axes they stand for (batch, 4*height,
    ...) in every shape of the ONNX graph (an onnx_ir model)."""
    import re

    import onnx_ir as ir

    graph = model.graph
    symbols = {}
    for dim, name in zip(graph.inputs[0].shape or (), names):
        if name is not None and isinstance(dim, ir.SymbolicDim) and dim.value:
            symbols[dim.value] = name
    if not symbols:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, symbols)) + r")\b")
    values = [*graph.inputs, *graph.outputs, *(v for node in graph.all_nodes() for v in node.outputs)]
    for value in values:
        if value.shape is None:
            continue
        dims = [pattern.sub(lambda m: symbols[m.group(1)], d.value) if isinstance(d, ir.SymbolicDim) and d.value
                else d for d in value.shape]
        value.shape = ir.Shape(dims)


# ------------------------------------------------------------------------------------------------ running ONNX

def run_onnxruntime(path: str | os.PathLike, x: Tensor, *, threads: int | None = None,
                    providers: list[str] | None = None) -> Tensor:
    """Run the ONNX model at path on x with ONNX Runtime (all graph optimisations; CPU unless providers says
    otherwise) and return its output as a CPU tensor. x is cast to the graph's input dtype (float32 / float16)."""
    require("onnxruntime", what="running the ONNX model")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    dtype = torch.float16 if graph_input.type == "tensor(float16)" else torch.float32
    return torch.from_numpy(session.run(None, {graph_input.name: x.detach().to("cpu", dtype).numpy()})[0])


@torch.no_grad()
def check_onnx(path: str | os.PathLike, model: nn.Module, x: Tensor) -> float:
    """max |ONNX Runtime(path)(x) - model(x)| on CPU (model taken in eval mode; x is cast to the graph's input
    dtype for ONNX Runtime, so a float16 graph is compared with the float32 model)."""
    was_training = model.training
    model.eval()
    try:
        expected = model(x).float().cpu()
    finally:
        model.train(was_training)
    actual = run_onnxruntime(path, x).float()
    if actual.shape != expected.shape:
        raise ValueError(f"the ONNX model gives shape {tuple(actual.shape)}, the model {tuple(expected.shape)}")
    return (actual - expected).abs().max().item()
