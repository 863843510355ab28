"""pytest-benchmark versions of the op micro-benchmarks, for regression tracking (not part of `make test`):

    pytest bench/test_benchmarks.py --benchmark-autosave          # then --benchmark-compare
"""

from __future__ import annotations

import pytest
import torch

import lattice_kernels as lk
from bench.ops_bench import make_cases

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SHAPE = (1, 64, 180, 320)
BACKENDS = [b for b in lk.available_backends() if (b == "cpu") == (DEVICE.type == "cpu") or b == "torch"]
CASES = {c.name: c for c in make_cases(SHAPE, torch.float32, DEVICE)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(CASES))
@pytest.mark.parametrize("with_backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_op(benchmark, op, backend, with_backward):
    case = CASES[op]
    inputs = tuple(t.requires_grad_(with_backward and t.is_floating_point()) for t in case.make_inputs(0))

    def call():
        if with_backward:
            outs = [o for o in case.run(backend, *inputs) if o.requires_grad]
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
        else:
            with torch.no_grad():
                case.run(backend, *inputs)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"{op} {'fwd+bwd' if with_backward else 'fwd'}"
    benchmark(call)
