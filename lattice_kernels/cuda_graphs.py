"""CUDA graphs for inference: a model's forward captured once per input (shape, strides, dtype, device and call
settings), then replayed, so that a call costs one graph launch instead of ~200 kernel launches from Python.

The forward of the library's models makes no host sync and no host tensor (counted on the CPU by
tools/launch_count.py, tests/test_launch_count.py), which capture requires. A graph reads the model's parameters
where they were at capture: a graph is keyed by their addresses too, so moving or replacing them captures anew (in-
place updates, load_state_dict included, are seen by the graph). Each cached graph keeps its forward's
intermediate buffers allocated in its own memory pool; MAX_GRAPHS per model are kept (least recently used dropped),
and release(model) drops them all.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

MAX_GRAPHS = 4
WARMUP_CALLS = 2  # before capture, on a side stream: cuDNN's algorithm search, Triton's compilation, lazy inits


class CudaGraphCaptureError(RuntimeError):
    """The forward could not be captured in a CUDA graph (the message says why; inference.run(cuda_graphs=False)
    or lattice-upscale --no-cuda-graphs runs it eagerly)."""


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    static_in: Tensor
    static_out: Tensor


_GRAPHS: weakref.WeakKeyDictionary[nn.Module, OrderedDict[Hashable, _Captured]] = weakref.WeakKeyDictionary()


def _key(model: nn.Module, t: Tensor, settings: Hashable) -> Hashable:
    tensors = [*model.parameters(), *model.buffers()]
    return (tuple(t.shape), t.stride(), t.dtype, t.device, settings, tuple(p.data_ptr() for p in tensors))


def _capture(fn: Callable[[Tensor], Tensor], t: Tensor) -> _Captured:
    static_in = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
    static_in.copy_(t)
    side = torch.cuda.Stream(t.device)
    side.wait_stream(torch.cuda.current_stream(t.device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP_CALLS):
            fn(static_in)
    torch.cuda.current_stream(t.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            static_out = fn(static_in)
    except Exception as e:
        raise CudaGraphCaptureError(
            f"capturing the forward on a {tuple(t.shape)} {t.dtype} input in a CUDA graph failed ({e}); run it "
            "without graphs: inference.run(..., cuda_graphs=False), lattice-upscale --no-cuda-graphs") from e
    return _Captured(graph, static_in, static_out)


def graphed_call(model: nn.Module, fn: Callable[[Tensor], Tensor], t: Tensor, settings: Hashable = ()) -> Tensor:
    """fn(t) (a forward of `model` on a CUDA tensor t) by replaying the graph captured for t's (shape, strides, dtype,
    device), `settings` (what else changes fn: autocast dtype, memory format) and the model's parameter addresses;
    captured on first use. Returns a new tensor (a copy of the graph's output)."""
    if t.device.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA input, got one on {t.device}")
    graphs = _GRAPHS.setdefault(model, OrderedDict())
    key = _key(model, t, settings)
    captured = graphs.get(key)
    if captured is None:
        captured = graphs[key] = _capture(fn, t)
        while len(graphs) > MAX_GRAPHS:
            graphs.popitem(last=False)
    else:
        graphs.move_to_end(key)
    captured.static_in.copy_(t)
    captured.graph.replay()
    return captured.static_out.clone()


def cached_graphs(model: nn.Module) -> int:
    """How many captured graphs are kept for `model`."""
    return len(_GRAPHS.get(model, ()))


def release(model: nn.Module | None = None) -> None:
    """Drops the graphs (and their memory pools) kept for `model`, or for every model."""
    if model is None:
        _GRAPHS.clear()
    else:
        _GRAPHS.pop(model, None)
