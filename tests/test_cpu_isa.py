"""The CPU kernels exist for the baseline target, AVX2, AVX-512 and AVX-512 with AMX (its bf16 convolution), and
write large outputs with streaming stores; the suite runs what the CPU and the (small) test shapes pick, and this test
runs the other paths in a subprocess (LATTICE_KERNELS_CPU_ISA forces the instruction set,
LATTICE_KERNELS_STREAM_BYTES=0 streaming on every call) against the spec."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import lattice_kernels as lk

CHECK = r"""
import torch, lattice_kernels as lk
from lattice_kernels._extension import C as _C
from lattice_kernels.ops import reference as ref
assert _C.cpu_isa() == ISA, _C.cpu_isa()
for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
    for fmt in (torch.contiguous_format, torch.channels_last):
        g = torch.Generator().manual_seed(0)
        x1 = torch.randn(2, 19, 33, 35, generator=g).to(dtype).contiguous(memory_format=fmt).requires_grad_()
        x2 = torch.randn(2, 19, 33, 35, generator=g).to(dtype).contiguous(memory_format=fmt).requires_grad_()
        st = torch.float64 if dtype == torch.float64 else torch.float32
        a = torch.rand(2, 19, generator=g).to(st).requires_grad_()
        p, q, mq, sq = lk.ops.butterfly(x1, x2, alpha2=a, q_stats=True, backend="cpu")
        rmq, rsq = ref.channel_stats(q.double())
        assert (mq.double() - rmq).abs().max() < 1e-5 and (sq.double() - rsq).abs().max() < 1e-5, dtype
        pq, = lk.ops.butterfly_stacked(x1, x2, alpha2=a, backend="cpu")
        assert torch.equal(pq[:, :19], p) and torch.equal(pq[:, 19:], q), dtype
        rp, rq = ref.butterfly(x1.double(), x2.double(), alpha2=a.double())
        tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
        assert ((p.double() - rp).abs() / (rp.abs() + 1)).max() < tol, dtype
        assert ((q.double() - rq).abs() / (rq.abs() + 1)).max() < tol, dtype
        m, s = lk.ops.channel_stats(x1, backend="cpu")
        rm, rs = ref.channel_stats(x1.double())
        assert (m.double() - rm).abs().max() < 1e-5 and (s.double() - rs).abs().max() < 1e-5, dtype
        (p.float().sum() + (q.float() ** 2).sum() + sq.sum() + s.sum()).backward()
        x1r, x2r = x1.detach().double().requires_grad_(), x2.detach().double().requires_grad_()
        ar = a.detach().double().requires_grad_()
        rp, rq = ref.butterfly(x1r, x2r, alpha2=ar)
        (rp.sum() + (rq.to(dtype).double() ** 2).sum() + ref.channel_stats(rq.to(dtype).double())[1].sum()
         + ref.channel_stats(x1r)[1].sum()).backward()
        for got, want in ((x1.grad, x1r.grad), (x2.grad, x2r.grad), (a.grad, ar.grad)):
            err = ((got.double() - want).abs().max() / want.abs().max()).item()
            assert err < max(tol, 1e-5) * 4, (dtype, err)
print("ok")
"""


@pytest.mark.parametrize(("isa", "stream"), [("baseline", "0"), ("avx2", "0"), ("avx2", "-1"), ("avx512", "0"),
                                             ("avx512", "-1"), ("amx", "0")],
                         ids=["baseline", "avx2-streaming", "avx2-plain-stores", "avx512-streaming",
                              "avx512-plain-stores", "amx"])
def test_each_instruction_set_matches_reference(isa, stream):
    if "cpu" not in lk.available_backends():
        pytest.skip("the compiled extension did not load")
    from lattice_kernels._extension import C as _C

    if isa not in _C.cpu_isas():
        pytest.skip(f"this CPU or build has no {isa} kernels (it runs {', '.join(_C.cpu_isas())})")
    r = subprocess.run([sys.executable, "-c", f"ISA = {isa!r}\n" + CHECK], capture_output=True, text=True,
                       env={**os.environ, "LATTICE_KERNELS_CPU_ISA": isa, "LATTICE_KERNELS_STREAM_BYTES": stream},
                       timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_bad_isa_request_is_an_error():
    if "cpu" not in lk.available_backends():
        pytest.skip("the compiled extension did not load")
    r = subprocess.run([sys.executable, "-c", "import torch, lattice_kernels as lk; "
                        "lk.ops.channel_stats(torch.randn(1, 2, 3, 3), backend='cpu')"],
                       capture_output=True, text=True, env={**os.environ, "LATTICE_KERNELS_CPU_ISA": "sse9"},
                       timeout=300)
    assert r.returncode != 0 and "LATTICE_KERNELS_CPU_ISA must be one of" in r.stderr and "got 'sse9'" in r.stderr


def test_isa_the_cpu_lacks_is_an_error():
    """Forcing an instruction set this CPU cannot run fails at the first call and says so (never a silent fallback,
    never an illegal instruction)."""
    if "cpu" not in lk.available_backends():
        pytest.skip("the compiled extension did not load")
    from lattice_kernels._extension import C as _C

    x86 = "avx2" in _C.cpu_isas() or _C.cpu_isa() != "baseline"
    built = ("amx", "avx512", "avx2", "baseline") if x86 else ("baseline",)
    missing = [isa for isa in built if isa not in _C.cpu_isas()]
    if not missing:
        pytest.skip(f"this CPU runs every instruction set of this build ({', '.join(_C.cpu_isas())})")
    r = subprocess.run([sys.executable, "-c", "import torch, lattice_kernels as lk; "
                        "lk.ops.channel_stats(torch.randn(1, 2, 3, 3), backend='cpu')"],
                       capture_output=True, text=True, env={**os.environ, "LATTICE_KERNELS_CPU_ISA": missing[0]},
                       timeout=300)
    assert r.returncode != 0 and f"this CPU lacks {missing[0]}" in r.stderr


def test_cpu_isa_is_the_most_capable_supported():
    if "cpu" not in lk.available_backends():
        pytest.skip("the compiled extension did not load")
    from lattice_kernels._extension import C as _C

    if os.environ.get("LATTICE_KERNELS_CPU_ISA"):
        pytest.skip("LATTICE_KERNELS_CPU_ISA is set for this run")
    assert _C.cpu_isas()[-1] == "baseline"
    assert _C.cpu_isa() == _C.cpu_isas()[0]


# The rule behind the choice, on CPUs this machine is not (choose_cpu_isa applies it to given sets): the default is
# the most capable set the CPU runs (an AVX2-only CPU gets avx2, not an error), a forced set must be one it runs.
AVX2_ONLY = [("avx512", False), ("avx2", True), ("baseline", True)]


@pytest.mark.parametrize(("want", "choices", "expected"), [
    ("", [("avx512", True), ("avx2", True), ("baseline", True)], "avx512"),
    ("", AVX2_ONLY, "avx2"),
    ("", [("avx512", False), ("avx2", False), ("baseline", True)], "baseline"),
    ("baseline", AVX2_ONLY, "baseline"),
    ("avx2", AVX2_ONLY, "avx2"),
])
def test_isa_rule_picks_the_most_capable_or_the_forced_set(want, choices, expected):
    if "cpu" not in lk.available_backends():
        pytest.skip("the compiled extension did not load")
    from lattice_kernels._extension import C as _C

    assert _C.choose_cpu_isa(want, choices) == expected


@pytest.mark.parametrize(("want", "choices", "match"), [
    ("avx512", AVX2_ONLY, r"LATTICE_KERNELS_CPU_ISA=avx512 but this CPU lacks avx512 \(it runs avx2, baseline\)"),
    ("sse9", AVX2_ONLY, r"must be one of 'avx512', 'avx2', 'baseline' \(this build\), got 'sse9'"),
    ("", [("avx2", False)], "no instruction set of this build"),
])
def test_isa_rule_errors_say_what_would_work(want, choices, match):
    if "cpu" not in lk.available_backends():
        pytest.skip("the compiled extension did not load")
    from lattice_kernels._extension import C as _C

    with pytest.raises(RuntimeError, match=match):
        _C.choose_cpu_isa(want, choices)


def test_isa_rule_rejects_malformed_choices():
    if "cpu" not in lk.available_backends():
        pytest.skip("the compiled extension did not load")
    from lattice_kernels._extension import C as _C

    for bad in ([["avx2", True]], [("avx2",)], ["avx2"], 3):
        with pytest.raises(TypeError, match="sequence of"):
            _C.choose_cpu_isa("", bad)
