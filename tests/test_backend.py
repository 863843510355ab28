"""Backend selection: set/get/use, LATTICE_KERNELS_BACKEND, and clear errors for what is not available."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import lattice_kernels as lk


def test_available_always_has_torch():
    avail = lk.available_backends()
    assert "torch" in avail
    assert set(avail) <= {"cuda", "triton", "cpu", "torch"}


def test_set_get_use():
    before = lk.get_backend()
    lk.set_backend("torch")
    try:
        assert lk.get_backend() == "torch"
        with lk.use_backend("auto"):
            assert lk.get_backend() == "auto"
        assert lk.get_backend() == "torch"
    finally:
        lk.set_backend(before)


def test_use_backend_restores_after_error():
    before = lk.get_backend()
    with pytest.raises(KeyError), lk.use_backend("torch"):
        raise KeyError("boom")
    assert lk.get_backend() == before


def test_invalid_name():
    with pytest.raises(ValueError, match="backend must be one of auto, cuda, triton, cpu, torch; got 'gpu'"):
        lk.set_backend("gpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        lk.ops.channel_stats(torch.randn(1, 2, 3, 3), backend="fast")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_unavailable_says_how_to_get_it():
    with pytest.raises(lk.BackendUnavailableError, match="backend 'cuda' is not available: .*(CUDA|nvcc)"):
        lk.set_backend("cuda")
    with pytest.raises(lk.BackendUnavailableError, match="backend 'cuda' is not available"):
        lk.ops.channel_stats(torch.randn(1, 2, 3, 3), backend="cuda")


@pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="triton can run here")
def test_triton_unavailable_says_how_to_get_it():
    with pytest.raises(lk.BackendUnavailableError,
                       match="backend 'triton' is not available: .*(CUDA|TRITON_INTERPRET)"):
        lk.set_backend("triton")


def test_cpu_backend_refuses_other_devices():
    if "cpu" not in lk.available_backends():
        pytest.skip("the compiled extension did not load")
    with pytest.raises(lk.BackendUnavailableError, match="backend 'cpu' runs on CPU tensors, got tensors on meta"):
        lk.ops.channel_stats(torch.empty(1, 2, 3, 3, device="meta"), backend="cpu")


def test_auto_picks_cpu_kernels_on_cpu():
    from lattice_kernels.backends import resolve

    want = "cpu" if "cpu" in lk.available_backends() else "torch"
    assert resolve("auto", torch.device("cpu")) == want


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)


def test_env_variable_sets_default():
    r = _run("import lattice_kernels as lk; print(lk.get_backend())", LATTICE_KERNELS_BACKEND="torch")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "torch"


def test_env_variable_invalid_is_an_error():
    r = _run("import lattice_kernels", LATTICE_KERNELS_BACKEND="quantum")
    assert r.returncode != 0
    assert "LATTICE_KERNELS_BACKEND: backend must be one of" in r.stderr


@pytest.fixture
def forced_gpu_facts(monkeypatch):
    """Availability as on a GPU machine with both GPU backends (the facts only: nothing runs on a GPU)."""
    import dataclasses

    from lattice_kernels import backends

    facts = dataclasses.replace(backends.availability(), extension_error=None, cuda_built=True, cuda_device=True,
                                triton_installed=True, device_names={0: "NVIDIA H200", 1: "NVIDIA H100 80GB HBM3"},
                                recorded={"NVIDIA H200": {"butterfly": "triton"}})
    monkeypatch.setattr(backends, "_availability", facts)
    monkeypatch.setattr(backends, "_warned", {"NVIDIA H100 80GB HBM3"})
    return backends


@pytest.mark.parametrize("name", ["auto", "cuda", "triton", "torch"])
def test_resolution_on_cuda_is_traceable_fullgraph(forced_gpu_facts, name):
    """torch.compile(fullgraph=True) over code that resolves a backend for CUDA tensors: resolution must not call the
    extension, the import system, the CUDA runtime or read files inside traced code (each would be a graph break)."""
    backends = forced_gpu_facts
    names = ("auto", "cuda", "triton", "torch")
    dev = torch.device("cuda", 0)

    def fn(x):
        return x + names.index(backends.resolve(name, dev, "butterfly"))

    eager = fn(torch.zeros(1))
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="eager")(torch.zeros(1))
    assert torch.equal(compiled, eager)
    expected = {"auto": "triton", "cuda": "cuda", "triton": "triton", "torch": "torch"}[name]
    assert names[int(eager.item())] == expected


def test_auto_reads_the_tensors_card(forced_gpu_facts):
    backends = forced_gpu_facts
    assert backends.resolve("auto", torch.device("cuda", 0), "butterfly") == "triton"  # recorded for the H200
    assert backends.resolve("auto", torch.device("cuda", 1), "butterfly") == "cuda"  # no record: cuda
    assert backends.resolve("auto", torch.device("cuda", 0), "conv3x3") == "cuda"  # same code on both


def test_default_backend_change_retraces(forced_gpu_facts):
    """The default backend is read (and guarded) in traced code: changing it gives the new resolution."""
    backends = forced_gpu_facts

    def fn(x):
        return x + len(backends.resolve(None, torch.device("cuda", 0), "channel_stats"))

    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    with lk.use_backend("torch"):
        assert compiled(torch.zeros(1)).item() == len("torch")
    with lk.use_backend("triton"):
        assert compiled(torch.zeros(1)).item() == len("triton")


def test_refresh_gathers_the_facts_again(monkeypatch):
    from lattice_kernels import backends

    before = backends.availability()
    monkeypatch.setenv("TRITON_INTERPRET", "0" if before.triton_interpreter else "1")
    assert backends.availability() is before  # decided once
    try:
        assert backends.refresh().triton_interpreter != before.triton_interpreter
    finally:
        monkeypatch.undo()
        backends.refresh()
    assert backends.availability().triton_interpreter == before.triton_interpreter


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_unavailable_backend_inside_compile_keeps_its_message():
    def fn(x):
        return lk.ops.channel_stats(x, backend="cuda")[0]

    torch._dynamo.reset()
    with pytest.raises(Exception, match="backend 'cuda' is not available: .*LATTICE_KERNELS_CUDA=1"):
        torch.compile(fn, fullgraph=True, backend="eager")(torch.randn(1, 4, 5, 5))


def test_auto_gives_the_coefficient_mlp_the_fused_ops_recorded_choice(monkeypatch):
    """auto_backends.json records combination_coefficients, not the MLP alone: coefficients_from_stats follows it
    (instead of warning that the card has no record)."""
    import dataclasses
    import warnings

    from lattice_kernels import backends

    fake = dataclasses.replace(backends.availability(), extension_error=None, cuda_built=True, cuda_device=True,
                               triton_installed=True, device_names={0: "Card X"},
                               recorded={"Card X": {"combination_coefficients": "triton"}})
    monkeypatch.setattr(backends, "_availability", fake)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends._auto_gpu(0, "coefficients_from_stats") == "triton"
        assert backends._auto_gpu(0, "combination_coefficients") == "triton"
