"""The benchmark at one repetition each, so its code cannot rot. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

from bench import report
from bench.run import SMOKE, run


def test_bench_smoke_writes_the_report(tmp_path: Path) -> None:
    results = run(SMOKE, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert text.startswith("# Benchmarks") and "## Summary" in text
    assert (tmp_path / report.CHART).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = report.summary(results)
    assert len(rows) == 10 and all(row["ours"] >= 0 and row["reference"] >= 0 for row in rows)
    recovery = results["recovery"]
    assert recovery["kill"]["gt-remote"][0] is not None and recovery["pause"]["gt-remote"][0] is not None
    assert recovery["kill"]["ssh -L"] == [None]  # plain ssh -L never comes back
    assert json.loads((tmp_path / "benchmarks.json").read_text())["plan"]["reps"] == 1
