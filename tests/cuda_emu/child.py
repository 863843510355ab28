"""Runs harness cases or a sample kernel in a child process under a sanitizer build (torch-free: numpy and the
harness module only, with the sanitizer runtime preloaded by the parent).

    python -m tests.cuda_emu.child MODULE.so cases VARIANT OUT.npz   # the variant's subset of cases.py
    python -m tests.cuda_emu.child MODULE.so sample NAME          # one sample kernel; prints its first outputs
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np


def load(path: str):
    spec = importlib.util.spec_from_file_location("lk_cuda_emu", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str]) -> int:
    m = load(argv[0])
    if argv[1] == "cases":
        from tools.cuda_emu import cases

        results = {}
        for case in cases.sanitizer_cases(argv[2]):
            for key, val in cases.run(m, case).items():
                results[f"{case.id}/{key}"] = val
        np.savez(argv[3], **results)
        return 0
    if argv[1] == "sample":
        x = np.arange(256, dtype=np.float32)
        out = np.zeros(256, dtype=np.float32)
        m.sample(argv[2], x, out, [])
        print(" ".join(f"{v:.9g}" for v in out[:40]))
        return 0
    raise SystemExit(f"unknown command {argv[1]!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
