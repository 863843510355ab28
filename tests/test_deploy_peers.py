"""bench/deploy.py's peers at their defaults (#26's report): OpenVINO at its own default precision next to f32
forced, the library under bf16 autocast next to float32, and the recorded default-malloc run's table on
docs/benchmarks.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from bench.deploy import _plain_and_library, peers_table, precision_name, run_one

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "bench" / "results" / "deploy-peers-cpu-amd-epyc-avx2-default-malloc.json"


def test_the_recorded_peers_table_is_on_the_benchmarks_page():
    table = peers_table(json.loads(RECORD.read_text()))
    assert table in (ROOT / "docs" / "benchmarks.md").read_text(), \
        f"docs/benchmarks.md's peers table differs from {RECORD.name}"


def test_precision_names():
    assert precision_name("<Type: 'float32'>") == "f32" and precision_name("float32") == "f32"
    assert precision_name("bf16") == "bf16"


def test_peer_defaults_are_run_and_labelled(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    pytest.importorskip("onnxscript")
    shape = [1, 3, 12, 16]
    res = run_one("cpu", {"shape": shape, "rounds": 2, "warmup": 1, "plain": ["eager"], "peer_defaults": True},
                  torch.float32, tmp_path)
    assert {"cpu", "cpu-bf16-autocast", "eager", "onnxruntime", "openvino", "openvino-default"} <= \
        set(res["samples_ms"]), res["samples_ms"].keys()
    assert res["precision"]["openvino"] == "f32" and res["precision"]["openvino-default"] in ("f32", "bf16")
    assert res["precision"]["cpu-bf16-autocast"] == "bf16 autocast"
    # bf16 autocast: within 2x the error eager PyTorch makes under bf16 autocast on the same input
    models = _plain_and_library(["cpu"], "cpu", torch.float32)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        ref = models["eager"](x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            eager_bf16 = models["eager"](x).float()
    eager_err = (eager_bf16 - ref).abs().max().item()
    assert 0 < res["max_abs_diff_vs_eager"]["cpu-bf16-autocast"] <= 2 * eager_err, (res["max_abs_diff_vs_eager"],
                                                                                     eager_err)


def test_the_readme_quotes_the_recorded_ratios():
    """The README's caveat under its headline quotes ratios of this record: each must be in its table."""
    readme = (ROOT / "README.md").read_text()
    a = readme.index("Measured without either")
    quoted = re.findall(r"\b(\d+\.\d\d)x\b", readme[a:readme.index("\n\n", a)])
    assert quoted, "the README's caveat quotes no ratio of the peers record"
    table = peers_table(json.loads(RECORD.read_text()))
    missing = [q for q in quoted if f"| {q}x (" not in table]
    assert not missing, f"README quotes {missing}, which {RECORD.name} does not hold"
