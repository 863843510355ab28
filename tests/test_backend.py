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
    from lattice_kernels._backend import resolve

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
