"""bench/train_precision.py: the float32 and bf16 training steps timed in one process, their ratio per round."""

from __future__ import annotations

import pytest

import lattice_kernels as lk

pytestmark = pytest.mark.skipif("cpu" not in lk.available_backends(), reason="times the library's cpu backend")


def test_train_precision_times_both_steps_in_rounds():
    from bench import train_precision

    r = train_precision.run([1, 3, 8, 8], rounds=3)
    assert set(r["times"]) == {"float32", "bfloat16"}
    assert all(t["median_ms"] > 0 and t["runs"] == 3 for t in r["times"].values())
    lo, hi = r["bf16_speedup_range"]
    assert 0 < lo <= r["bf16_speedup"] <= hi
