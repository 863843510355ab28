"""The numbers the README, docs/*.md and bench/results/*.md quote are the recorded JSON's: regenerated from the
JSON, each headline block (on the front page or a docs page) and each full report equals what is committed
(python -m bench.readme_table --write), and so do the photo tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.readme_table import HEADLINE_END, doc_pages, full_report, headline
from bench.rounds import SPREAD

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PAGES = {p.relative_to(ROOT).as_posix(): p.read_text() for p in doc_pages(ROOT)}
HEADLINE = r"<!-- headline: (\S+) -->\n(.*?)\n" + re.escape(HEADLINE_END)
BLOCKS = [(page, results, block) for page, text in PAGES.items()
          for results, block in re.findall(HEADLINE, text, flags=re.S)]
REPORTS = sorted(p for p in (ROOT / "bench" / "results").glob("*.json") if p.with_suffix(".md").exists()
                 and "rows" in json.loads(p.read_text()))


def test_the_readme_has_a_headline_block():
    assert re.search(HEADLINE, README, flags=re.S), "README.md has no <!-- headline: bench/results/<device>.json -->"


@pytest.mark.parametrize("page, results, block", BLOCKS, ids=[f"{b[0]}:{b[1]}" for b in BLOCKS])
def test_headline_matches_the_recorded_json(page, results, block):
    run = json.loads((ROOT / results).read_text())
    assert block == headline(run), (f"{page}'s headline for {results} differs from the JSON: run "
                                    f"`python -m bench.readme_table {results} --write`")


def test_every_recorded_run_with_a_report_has_its_headline_on_a_page():
    named = {results for _, results, _ in BLOCKS}
    missing = [p.relative_to(ROOT).as_posix() for p in REPORTS if p.relative_to(ROOT).as_posix() not in named
               and p.name.startswith("cpu-")]
    assert not missing, f"recorded CPU runs with no headline block on README.md or docs/*.md: {missing}"


@pytest.mark.parametrize("results", REPORTS, ids=[p.name for p in REPORTS])
def test_full_report_matches_the_recorded_json(results):
    assert results.with_suffix(".md").read_text() == full_report(json.loads(results.read_text())), (
        f"{results.with_suffix('.md').name} differs from {results.name}: run "
        f"`python -m bench.readme_table {results.relative_to(ROOT)} --write`")


def _new_run() -> dict:
    env = {"device": "Test CPU (2 threads)", "date": "2026-11-29 20:00 UTC", "torch": "2.13.0", "triton": None,
           "cpu_isa": "avx2", "copy_bandwidth_GBps": 20.0, "malloc": "tuned"}

    def model(case, backend, ms, ve, vc, mem):
        return {"kind": "model", "case": case, "backend": backend, "median_ms": ms, "p10_ms": ms - 1,
                "p90_ms": ms + 1, "runs": 8, "vs_eager": ve[0], "vs_eager_range": ve[1], "vs_compile": vc[0],
                "vs_compile_range": vc[1], "peak_mem_MB": mem, "peak_mem_vs_eager": mem / 1000}

    deploy = {"kind": "deploy", "device": "cpu", "dtype": "float32", "shape": [8, 3, 128, 128], "rounds": 6,
              "threads": 2, "baseline": "cpu", "case": "LatticeNet x4 infer batch 8 of LR 128x128 float32 cpu, "
              "deployment runtimes", "median_ms": {"cpu": 700.0, "onnxruntime": 910.0},
              "ratio_to_library": {"cpu": 1.0, "onnxruntime": 1.3}, "ratio_range": {"cpu": [1.0, 1.0],
                                                                                     "onnxruntime": [1.2, 1.45]},
              "max_abs_diff_vs_eager": {"cpu": 1e-4, "onnxruntime": 3e-5},
              "precision": {"cpu-bf16-autocast": "bf16 autocast (the inference default on this CPU)"},
              "samples_ms": {"cpu": [700.0, 690.0, 710.0], "cpu-bf16-autocast": [500.0, 400.0, 600.0],
                             "onnxruntime": [910.0, 900.0, 900.0], "openvino-default": [450.0, 480.0, 540.0]}}
    rows = [model("LatticeNet x4 infer LR 320x180", "cpu", 300.0, (2.1, [1.9, 2.3]), (1.4, [1.3, 1.5]), 500.0),
            model("LatticeNet x4 train step b16 LR 48", "cpu", 850.0, (1.5, [1.45, 1.62]), (1.25, [1.2, 1.3]), 600.0),
            deploy]
    return {"environment": env, "rows": rows, "ratio_spread": SPREAD}


def test_headline_shows_each_ratio_with_its_spread():
    text = headline(_new_run())
    assert ("| LatticeNet x4 infer LR 320x180 (8 rounds) | 300.0 ms | 2.10x (1.90-2.30) | 1.40x (1.30-1.50) | - | - "
            "| - |") in text
    assert ("| LatticeNet x4 train step b16 LR 48 (8 rounds) | 850.0 ms, 600 MiB (0.60x eager's) | 1.50x (1.45-1.62) "
            "| 1.25x (1.20-1.30) | - | - | - |") in text
    assert ("| LatticeNet x4 infer batch 8 of LR 128x128 float32 cpu (6 rounds) | 700.0 ms | - | - | 1.30x (1.20-1.45) "
            "| - | - |") in text
    # the library's bf16 row: each runtime over it per round (ONNX Runtime 1.82, 2.25, 1.50; OpenVINO 0.90, 1.20,
    # 0.90), the median of its own samples
    assert ("| LatticeNet x4 infer batch 8 of LR 128x128 bf16 autocast cpu (the inference default on this CPU) "
            "(6 rounds) | 500.0 ms | - | - | 1.82x (1.50-2.25) | - | 0.90x (0.90-1.20) |") in text
    assert SPREAD in text
    report = full_report(_new_run())
    assert "| 300.0 (299.0-301.0) | 500 | 0.50x | 2.10x (1.90-2.30) | 1.40x (1.30-1.50) |" in report


def test_photo_table_matches_the_recorded_json():
    """README's "Quality on real photographs" table and bench/results/photos-psnr-ssim.md are python/
    evaluate_photos.py's table of the recorded JSON (plain and LatticeNet+ columns)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("evaluate_photos", ROOT / "python" / "evaluate_photos.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    record = json.loads((ROOT / "bench" / "results" / "photos-psnr-ssim.json").read_text())
    want = mod.table(record)
    assert (ROOT / "bench" / "results" / "photos-psnr-ssim.md").read_text() == want, (
        "photos-psnr-ssim.md differs from its JSON: rerun python python/evaluate_photos.py "
        "--out bench/results/photos-psnr-ssim")
    evaluation = PAGES["docs/evaluation.md"]
    assert want in evaluation, "docs/evaluation.md's photo table differs from bench/results/photos-psnr-ssim.json"
    # the front page's rows of means: the header and the mean rows of the same table
    front = [ln for ln in README.splitlines() if "**mean**" in ln or ln.startswith("| scale | photo |")]
    assert len(front) == 4, front
    assert all(ln in want.splitlines() for ln in front), "README.md's mean rows differ from the photo table"
