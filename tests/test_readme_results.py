"""The numbers the README and bench/results/*.md quote are the recorded JSON's: regenerated from the JSON, each
headline block of README.md and each full report equals what is committed (python -m bench.readme_table --write)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.readme_table import HEADLINE_END, full_report, headline

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"<!-- headline: (\S+) -->\n(.*?)\n" + re.escape(HEADLINE_END), README, flags=re.S)
REPORTS = sorted(p for p in (ROOT / "bench" / "results").glob("*.json") if p.with_suffix(".md").exists()
                 and "rows" in json.loads(p.read_text()))


def test_the_readme_has_a_headline_block():
    assert BLOCKS, "README.md has no <!-- headline: bench/results/<device>.json --> block"


@pytest.mark.parametrize("results, block", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_readme_headline_matches_the_recorded_json(results, block):
    run = json.loads((ROOT / results).read_text())
    assert block == headline(run), (f"README.md's headline for {results} differs from the JSON: run "
                                    f"`python -m bench.readme_table {results} --write`")


@pytest.mark.parametrize("results", REPORTS, ids=[p.name for p in REPORTS])
def test_full_report_matches_the_recorded_json(results):
    assert results.with_suffix(".md").read_text() == full_report(json.loads(results.read_text())), (
        f"{results.with_suffix('.md').name} differs from {results.name}: run "
        f"`python -m bench.readme_table {results.relative_to(ROOT)} --write`")
