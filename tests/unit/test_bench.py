"""The benchmark's report: sections picked in order, partial and older runs rendered. The smoke
run itself starts containers: tests/e2e/test_bench.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.run import SECTIONS, sections
from tests.testbed import REPO


def test_only_picks_sections_in_report_order() -> None:
    assert sections(None) == list(SECTIONS)
    assert sections("memory, cli") == ["scale", "cli"]
    with pytest.raises(SystemExit, match="no section nope"):
        sections("cli,nope")


def test_report_renders_a_partial_run_and_an_older_one(tmp_path: Path) -> None:
    """--only writes a report of just its sections; the committed full run still renders."""
    full = json.loads((REPO / "docs/benchmarks.json").read_text())
    partial = {key: full[key] for key in ("plan", "versions", "duration_s", "scale")} | {"sections": ["scale"]}
    report.write(partial, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "## 4. Scale" in text and "## 1. Recovery" not in text and "Sections run (`--only`): scale" in text
    assert not (tmp_path / report.CHART).exists()  # the chart is of recovery, which did not run
    assert "## 5. Attached client" in report.markdown(full)

