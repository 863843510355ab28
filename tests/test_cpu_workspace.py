"""The CPU workspace (ops/cpu_workspace.py, csrc/cpu/workspace.cpp): the library's modules take their large CPU buffers
from blocks freed earlier instead of fresh pages. Results must not change (bitwise: the same kernels run on other
memory), what it holds must stay bounded, and nothing outside a forward may be served by it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading

import pytest
import torch

import lattice_kernels as lk
from lattice_kernels import ops
from lattice_kernels.ops import cpu_workspace as ws

pytestmark = pytest.mark.skipif("cpu" not in lk.available_backends(), reason="the CPU workspace is part of the "
                                "compiled extension, which did not build or load here")

MAX_HELD = 1.25  # the allowance over the peak of live bytes (csrc/cpu/workspace.cpp)


def _net(scale: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return lk.LatticeNet(scale=scale, backend="cpu").eval()


def _image(n: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 255  # a 64-channel map of 2x48x64 is 1.5 MiB: pooled


@pytest.fixture
def workspace_on():
    before = ws._enabled
    ops.set_cpu_workspace(True)
    yield
    ws._enabled = before


def _counts() -> dict:
    return ops.cpu_workspace_info()


def _delta(a: dict, b: dict) -> dict:
    return {k: b[k] - a[k] for k in ("hits", "misses", "evictions")}


def test_forward_reuses_blocks_and_matches_the_forward_without(workspace_on):
    net, x = _net(), _image(2, 48, 64)
    with torch.no_grad():
        ops.set_cpu_workspace(False)
        c0 = _counts()
        plain = net(x)
        assert _delta(c0, _counts()) == {"hits": 0, "misses": 0, "evictions": 0}, "disabled, yet the workspace served"
        ops.set_cpu_workspace(True)
        first = net(x)
        c1 = _counts()
        second = net(x)
        d = _delta(c1, _counts())
    assert torch.equal(first, plain) and torch.equal(second, plain)
    # the second call of the same shape: nearly every large buffer is a block freed by the first
    assert d["hits"] > 0 and d["misses"] <= 0.2 * (d["hits"] + d["misses"]), d
    info = _counts()
    assert info["depth"] == 0 and info["installed"], "a scope was left open after the forward"


def test_held_bytes_stay_within_the_allowance_and_unused_blocks_are_freed(workspace_on):
    net = _net()
    ops.release_cpu_workspace()
    with torch.no_grad():
        out = net(_image(2, 96, 128))
        big = _counts()
        assert big["live_bytes"] + big["cached_bytes"] <= MAX_HELD * big["peak_bytes"], big
        assert big["live_bytes"] >= out.numel() * out.element_size(), "the output comes from the workspace"
        del out
        # the output was freed outside every scope: its block went back to the system, not to the cache
        assert _counts()["live_bytes"] == 0
        net(_image(1, 24, 32))  # much smaller: the big image's blocks are not used and are freed at its end
        net(_image(1, 24, 32))
    small = _counts()
    assert small["peak_bytes"] < big["peak_bytes"] / 4
    assert small["cached_bytes"] <= MAX_HELD * small["peak_bytes"], (big, small)
    ops.release_cpu_workspace()
    assert _counts()["cached_bytes"] == 0


def test_buffers_made_outside_a_forward_do_not_come_from_it(workspace_on):
    net, x = _net(), _image(2, 48, 64)
    with torch.no_grad():
        net(x)
    before = _counts()
    big = torch.empty(8 << 20, dtype=torch.uint8)
    big.fill_(1)
    after = _counts()
    assert _delta(before, after) == {"hits": 0, "misses": 0, "evictions": 0}
    assert after["live_bytes"] == before["live_bytes"]


def test_an_error_inside_the_forward_closes_the_scope(workspace_on, monkeypatch):
    net, x = _net(), _image(1, 24, 32)
    block = net.body_unit2

    def fail(*args, **kwargs):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(block.conv_block1, "forward", fail)
    with torch.no_grad(), pytest.raises(RuntimeError, match="planted failure"):
        net(x)
    assert _counts()["depth"] == 0
    monkeypatch.undo()
    with torch.no_grad():
        net(x)  # and the next forward runs normally
    assert _counts()["depth"] == 0


def test_training_step_gradients_are_unchanged_and_backward_frees_to_the_system(workspace_on):
    def step(enabled: bool):
        ops.set_cpu_workspace(enabled)
        torch.manual_seed(0)
        net = lk.LatticeNet(scale=2, backend="cpu")
        x = _image(2, 32, 48)
        net(x).square().mean().backward()
        return [p.grad.clone() for p in net.parameters() if p.grad is not None]

    ops.release_cpu_workspace()
    plain = step(False)
    pooled = step(True)
    assert len(plain) == len(pooled) and all(torch.equal(a, b) for a, b in zip(plain, pooled, strict=True))
    info = _counts()
    # the saved activations were freed by backward, outside every scope: back to the system
    assert info["live_bytes"] == 0 and info["cached_bytes"] <= MAX_HELD * info["peak_bytes"], info


def test_concurrent_forwards_in_threads(workspace_on):
    net = _net()
    shapes = [(1, 40, 56), (2, 32, 48)]
    with torch.no_grad():
        expected = [net(_image(*s, seed=i)) for i, s in enumerate(shapes)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with torch.no_grad():
                for _ in range(3):
                    assert torch.equal(net(_image(*shapes[i], seed=i)), expected[i])
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(shapes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert _counts()["depth"] == 0


def test_lattice_block_alone_opens_a_scope(workspace_on):
    torch.manual_seed(0)
    block = lk.LatticeBlock(64, backend="cpu").eval()
    x = torch.randn(2, 64, 32, 48)
    with torch.no_grad():
        block(x)
        c = _counts()
        block(x)
    assert _delta(c, _counts())["hits"] > 0


def test_workspace_is_not_opened_for_other_devices_or_while_tracing(workspace_on):
    assert isinstance(ops.workspace(torch.empty(1, device="meta")), contextlib.nullcontext)
    assert not isinstance(ops.workspace(torch.empty(1)), contextlib.nullcontext)
    seen = []

    def fn(x):
        seen.append(isinstance(ops.workspace(x), contextlib.nullcontext))
        return x + 1

    torch.compile(fn, fullgraph=True, backend="eager")(torch.zeros(2))
    assert seen == [True]


def _run(code: str, env_value: str) -> subprocess.CompletedProcess:
    env = {**os.environ, ws.ENV: env_value}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_environment_switch():
    code = ("import torch, lattice_kernels as lk\nfrom lattice_kernels import ops\n"
            "net = lk.LatticeNet(scale=2, backend='cpu').eval()\n"
            "with torch.no_grad():\n    net(torch.rand(2, 3, 48, 64) * 255)\n"
            "i = ops.cpu_workspace_info(); print(ops.cpu_workspace_enabled(), i['hits'] + i['misses'])")
    off = _run(code, "0")
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["False", "0"]
    on = _run(code, "1")
    assert on.returncode == 0, on.stderr
    enabled, served = on.stdout.split()
    assert enabled == "True" and int(served) > 0
    bad = _run(code, "maybe")
    assert bad.returncode != 0
    assert f"{ws.ENV}='maybe': use 1 (the default) or 0" in bad.stderr


def test_another_threads_buffers_do_not_come_from_it_during_a_forward(workspace_on):
    x = _image(1, 24, 32)
    with ops.workspace(x):
        before = _counts()
        assert before["depth"] >= 1
        made = []
        t = threading.Thread(target=lambda: made.append(torch.empty(8 << 20, dtype=torch.uint8).fill_(1)))
        t.start()
        t.join()
        after = _counts()
        made.clear()
    assert _delta(before, after) == {"hits": 0, "misses": 0, "evictions": 0}
    assert after["live_bytes"] == before["live_bytes"]


def test_kept_outputs_do_not_raise_what_it_keeps(workspace_on):
    net, x = _net(), _image(2, 48, 64)
    ops.release_cpu_workspace()
    kept = []
    with torch.no_grad():
        for _ in range(6):
            kept.append(net(x))
    info = _counts()
    assert info["live_bytes"] >= sum(o.numel() * o.element_size() for o in kept)
    # the outputs kept alive are not part of a forward's peak: the cache stays within 1.25x one forward's
    assert info["cached_bytes"] <= MAX_HELD * info["peak_bytes"], info


def _resident_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the resident memory from Linux's /proc")
def test_released_blocks_leave_resident_memory(workspace_on):
    """The workspace maps its blocks itself: released, they leave the process. Through glibc they stayed resident in
    its heap once glibc's mmap threshold had risen (it rises to each mapped block freed, up to 32 MiB), as here."""
    ops.release_cpu_workspace()
    raise_threshold = torch.empty(16 << 20, dtype=torch.uint8).fill_(1)
    del raise_threshold  # glibc now serves blocks of up to 16 MiB from its heap, and trims it above 32 MiB free
    x = _image(1, 8, 8)
    blocks = 6
    with ops.workspace(x):
        made = [torch.empty(2 << 20, dtype=torch.uint8).fill_(1) for _ in range(blocks)]
        made.clear()  # freed inside the scope: cached
    held = _counts()["cached_bytes"] / 2 ** 20
    assert held >= 2 * blocks, _counts()
    before = _resident_mib()
    ops.release_cpu_workspace()
    assert _counts()["cached_bytes"] == 0
    assert before - _resident_mib() >= 0.9 * held, f"released {held:.0f} MiB, resident memory fell by " \
                                                   f"{before - _resident_mib():.1f} MiB"


def test_a_block_that_cannot_be_mapped_is_named(workspace_on):
    """2**50 bytes exceed a 64-bit process's address space (2**47 on x86-64 and arm64), whatever the overcommit."""
    with ops.workspace(_image(1, 8, 8)):
        with pytest.raises(RuntimeError, match=r"CPU workspace: could not map \d+ bytes \(.+\); "
                                               "LATTICE_KERNELS_CPU_WORKSPACE=0"):
            torch.empty(2 ** 50, dtype=torch.uint8)
    assert _counts()["depth"] == 0
