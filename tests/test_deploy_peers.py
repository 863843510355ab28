"""bench/deploy.py's peers at their defaults (#26's report): OpenVINO at its own default precision next to f32
forced, the library under bf16 autocast next to float32, and the recorded default-malloc run's table on
docs/benchmarks.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import lattice_kernels as lk
from bench.deploy import _plain_and_library, peers_table, precision_name, run_one
from lattice_kernels import inference

ROOT = Path(__file__).resolve().parent.parent
RECORDS = [ROOT / "bench" / "results" / f"deploy-peers-cpu-{cpu}-default-malloc{what}.json"
           for cpu, what in (("amd-epyc-avx2", ""), ("amd-epyc-avx512-bf16", "-workspace"),
                             ("amd-epyc-avx512-bf16", "-bf16-default"), ("intel-xeon-amx", "-bf16-default"))]


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.stem)
def test_the_recorded_peers_table_is_on_the_benchmarks_page(record):
    table = peers_table(json.loads(record.read_text()))
    assert table in (ROOT / "docs" / "benchmarks.md").read_text(), \
        f"docs/benchmarks.md's peers table differs from {record.name}"


def test_precision_names():
    assert precision_name("<Type: 'float32'>") == "f32" and precision_name("float32") == "f32"
    assert precision_name("bf16") == "bf16"


def test_peer_defaults_are_run_and_labelled(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    pytest.importorskip("onnxscript")
    shape = [1, 3, 12, 16]
    res = run_one("cpu", {"shape": shape, "rounds": 2, "warmup": 1, "plain": ["eager"], "peer_defaults": True,
                          "workspace_off": True}, torch.float32, tmp_path)
    assert res["max_abs_diff_vs_eager"]["cpu-no-workspace"] == res["max_abs_diff_vs_eager"]["cpu"]
    assert {"cpu", "cpu-bf16-autocast", "cpu-no-workspace", "eager", "onnxruntime", "openvino",
            "openvino-default"} <= \
        set(res["samples_ms"]), res["samples_ms"].keys()
    assert res["precision"]["openvino"] == "f32" and res["precision"]["openvino-default"] in ("f32", "bf16")
    default = inference.default_dtype(lk.LatticeNet(), "cpu") == torch.bfloat16
    assert res["precision"]["cpu-bf16-autocast"] == "bf16 autocast" + (" (the inference default on this CPU)"
                                                                        if default else "")
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
    """The README's text under its headline quotes ratios of the headline's record: each must be in the headline."""
    from bench.readme_table import headline

    readme = (ROOT / "README.md").read_text()
    a = readme.index("Measured as a user runs them")
    quoted = re.findall(r"\b(\d+\.\d\d)x\b", readme[a:readme.index("\n\n", a)])
    assert quoted, "the README's text under the headline quotes no ratio"
    record = re.search(r"<!-- headline: (\S+) -->", readme).group(1)
    table = headline(json.loads((ROOT / record).read_text()))
    missing = [q for q in quoted if f" {q}x (" not in table]
    assert not missing, f"README quotes {missing}, which the headline of {record} does not hold"


MEMORY_RECORDS = [ROOT / "bench" / "results" / f"peers-memory-cpu-{cpu}-default-malloc{case}.json"
                  for cpu, case in (("amd-epyc-avx512-bf16", ""), ("amd-epyc-avx512-bf16", "-batch8"),
                                    ("intel-xeon-amx", ""))]


@pytest.mark.parametrize("record", MEMORY_RECORDS, ids=lambda p: p.stem)
def test_the_recorded_memory_table_is_on_the_benchmarks_page(record):
    from bench.peers_memory import memory_table

    assert memory_table(json.loads(record.read_text())) in (ROOT / "docs" / "benchmarks.md").read_text(), \
        f"docs/benchmarks.md's memory table differs from {record.name}"


@pytest.mark.parametrize("runner", ["cpu", "cpu-no-workspace"])
def test_peers_memory_measures_a_runner(runner):
    from bench import peers_memory

    row = peers_memory.measure(runner, [1, 3, 24, 32])
    assert row["runner"] == runner and row["precision"] == "float32"
    assert row["peak_rss_MiB"] >= row["rss_before_MiB"] > 0 and row["peak_over_before_MiB"] >= 0
