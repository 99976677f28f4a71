"""The benchmark's report: sections picked in order, partial and older runs rendered. The smoke
run itself starts containers: tests/e2e/test_bench.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.back import LoopLog, summarise
from bench.run import SECTIONS, merged, sections
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



def test_back_is_a_section_and_merges_into_a_full_run(tmp_path: Path) -> None:
    """`--only back --merge` puts the section into the committed run's report, marked as measured apart."""
    assert sections("back") == ["back"]
    full = json.loads((REPO / "docs/benchmarks.json").read_text())
    older = {key: value for key, value in full.items() if key not in ("back", "measured_apart")}
    (tmp_path / "benchmarks.json").write_text(json.dumps(older))
    assert "## 8. Back tunnels" not in report.markdown(older)  # a run from before the section renders without it
    if "back" not in full:
        pytest.skip("the committed run has no back section yet")
    fresh = {"plan": full["plan"], "back": full["back"], "finished_at": "2030-01-02 03:04", "duration_s": 99.0}
    both = merged(tmp_path / "benchmarks.json", fresh, ["back"])
    assert both["back"] == full["back"] and both["recovery"] == older["recovery"]
    assert both["measured_apart"] == {"back": {"finished_at": "2030-01-02 03:04", "duration_s": 99.0}}
    text = report.markdown(both)
    assert "## 8. Back tunnels" in text and "Measured in a run of its own (`python -m bench.run --only back --merge`) on 2030-01-02 03:04 UTC" in text
    assert sum(row["figure"].startswith("Back tunnel") for row in report.summary(both)) == 7


def test_a_query_loops_log_gives_each_rounds_recovery_and_failures() -> None:
    """The loop's log (kind, n, sent, done[, detail]) read per fault: the answer to the first query
    sent after it within its round, the failures up to the next fault, those before apart."""
    log = LoopLog.parse(
        "connect 0 0.5 0.5\n"
        "ok 1 1.0 1.01\n"
        "fail 2 1.5 1.6 ERROR 2002 (HY000): Can't connect\n"  # before the first fault
        "connect 0 1.7 1.7\n"
        "ok 3 9.0 9.02\n"
        "fail 4 10.1 10.3 ERROR 2013 (HY000) at line 4: Lost connection to server during query\n"
        "connect 0 10.4 10.4\n"
        "ok 5 10.5 10.8\n"  # sent after the fault at 10.0: recovery 0.8 s
        "wrong 6 10.9 10.95 7\n"
        "ok 7 20.9 21.0\n"  # the second round's answer
    )
    out = summarise(log, [10.0, 20.0], start=1.2, end=21.5, cap=0.5, releases=[10.4, 20.2])
    assert out["recovery_s"] == [pytest.approx(0.8), None]  # the second answer came 0.8 s after its release: past the cap
    assert out["after_release_s"] == [pytest.approx(0.4), None]
    assert summarise(log, [10.0, 20.0], start=1.2, end=21.5, cap=1.0)["recovery_s"] == [pytest.approx(0.8), pytest.approx(1.0)]
    assert (out["failed"], out["wrong"], out["connections"]) == ([1, 0], [1, 0], [1, 0])
    assert out["failures"] == [["ERROR 2013 (HY000) at line 4: Lost connection to server during query"], []]
    assert out["failed_before_faults"] == 1 and out["answered"] == 3
