"""The Triton launchers under torch.compile(dynamic=True) shapes, without a GPU: each launcher runs on fake tensors
with symbolic N, H and W (as a triton_op's fake implementation runs while dynamo traces), and the guards it leaves
must hold for other sizes in the same tile range (an int() of a size would recompile every new image size). Sizes
may only be compared with constants: the tile range of a small image (a bounded number of recompiles;
test_opcheck_compile states them on a GPU). A launcher that takes int(H*W) is caught."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[triton]')")
ROOT = Path(__file__).resolve().parents[1]

CODE = r"""
import json, sys
import torch
import sympy
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext
from torch.library import wrap_triton
from lattice_kernels.triton import _common, butterfly as bf, channel_stats as cs, combination_coefficients as cc

plant = sys.argv[1] == "plant"
if plant:  # the defect: the tile chosen from int(H*W), as the launchers once did
    real = _common.tiling
    for mod in (cs, bf):
        mod.tiling = lambda c, p, interleaved: real(c, int(p), interleaved)

def check(shape, channels_last):
    env = ShapeEnv()
    mode = FakeTensorMode(shape_env=env)
    ctx = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.DYNAMIC] * 4)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    def fake(*s, dynamic=True):
        t = torch.randn(*s).contiguous(memory_format=fmt if len(s) == 4 else torch.contiguous_format)
        return mode.from_tensor(t, symbolic_context=ctx if dynamic else None)
    n, c, h, w = shape
    x1, x2 = fake(*shape), fake(*shape)
    r = max(1, c // 16)
    weights = [fake(*s, dynamic=False) for s in [(r, c), (r,), (c, r), (c,)] * 2]
    symbols = {str(d.node.expr): k for k, d in zip("NCHW", x1.shape)}
    with mode:
        a = torch.rand(x1.shape[:2])
        m, s = cs.channel_stats(x1, wrap_triton)
        cs.channel_stats_backward(m, s, x1, m, s, wrap_triton)
        cc.combination_coefficients(x1, tuple(weights), wrap_triton)
        p, q, mq, sq = bf.butterfly(x1, x2, (None, a, a, None), True, wrap_triton)
        bf.butterfly_stacked(x1, x2, (a, None, None, a), False, wrap_triton)
        bf.butterfly_backward(p, q, mq, sq, x1, x2, (None, a, a, None), mq, sq, wrap_triton)
    # The guards must hold for other sizes in the same tile range: a batch one larger, an image a row or a column
    # smaller (an int() of a size would pin it: Eq(H*W, 120) fails there).
    values = {sym: int(v) for sym, v in env.var_to_val.items()}
    by_name = {k: sym for sym in values for name, k in symbols.items() if str(sym) == name}
    failing = []
    for dn, dh, dw in ((1, 0, 0), (0, -1, 0), (0, 0, -1)):
        alt = dict(values)
        for k, d in (("N", dn), ("H", dh), ("W", dw)):
            alt[by_name[k]] += d
        subs = {s: sympy.Integer(v) for s, v in alt.items()}
        bad = [str(g.expr) for g in env.guards if not bool(g.expr.xreplace(subs))]
        if bad:
            failing.append({"sizes": [alt[by_name[k]] for k in "NCHW"], "guards failing": bad})
    return {"failing": failing, "guards": [str(g.expr) for g in env.guards]}

out = {f"{shape} {'nhwc' if cl else 'nchw'}": check(shape, cl)
       for shape in [(2, 32, 12, 10), (3, 64, 40, 36)] for cl in (False, True)}
print(json.dumps(out))
"""


def _run(mode: str) -> dict:
    # Triton's JIT functions, not the interpreter.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-c", CODE, mode], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_launchers_keep_image_sizes_symbolic():
    for case, res in _run("real").items():
        assert not res["failing"], f"{case}: {res['failing']}; all guards: {res['guards']}"


def test_an_int_of_the_image_size_is_caught():
    results = _run("plant")
    assert all(len(res["failing"]) == 2 for res in results.values()), results  # the smaller images
