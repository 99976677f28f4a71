"""The benchmark's report: sections picked in order, partial and older runs rendered. The smoke
run itself starts containers: tests/e2e/test_bench.py."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from bench import cost, report, scratch
from bench.back import LoopLog, summarise
from bench.run import SECTIONS, Bed, merged, sections
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


def test_transport_is_a_section_with_its_goals_from_the_run(tmp_path: Path) -> None:
    """The transport section's goals come from its figures: the stdio transport within 1.5 x
    stream-local forwarding's round trip and at least 0.5 x its throughput; `up` on Dropbear
    and on a hardened OpenSSH under 3 s and under 3 x a default OpenSSH's (#31)."""
    assert sections("transport") == ["transport"]
    relay = "/usr/bin/python3 -I /home/gamer/.local/share/gt-remote/relay/c26f9061cc5390f4/relay_agent.py"
    assert (cost.role(f"{relay} --socket /s --port 9999 "), cost.role(f"{relay} --mux "), cost.role("sshd: gamer@notty ")) == ("relay", "bridge", "sshd")
    assert cost.role("/usr/sbin/dropbear -F -E -s -w -p 22 -r /etc/dropbear/dropbear_ed25519_host_key ") == "sshd"  # its sessions keep its name
    ups = {case: {"cold": [1.0, 1.2], "warm": [0.5, 0.6]} for case in ("openssh", "openssh --transport stdio", "dropbear", "hardened")}
    status = {case: {"transport": "stdio", "transport_reason": "dropbear_2022.83 has no stream-local forwarding"} for case in ups}
    status["openssh"] = {"transport": "forward", "transport_reason": "sshd forwards"}
    paths = ("gt-remote forward", "gt-remote stdio", "ssh -L")
    transport = {
        "up": {"seconds": ups, "status": status},
        "rtt_us": {"gt-remote forward": [500.0] * 10, "gt-remote stdio": [700.0] * 10, "ssh -L": [300.0] * 10},
        "throughput_mib_s": {"gt-remote forward": [60.0], "gt-remote stdio": [40.0], "ssh -L": [70.0]},
        "status": {"gt-remote forward": {"transport": "forward"}, "gt-remote stdio": {"transport": "stdio"}},
        "cpu_us_per_ping": {name: {"supervisor": 100.0} for name in paths},
    }
    rows = {row["figure"]: row for row in report.transport_summary(transport)}
    assert len(rows) == 7 and all(row["met"] for row in rows.values() if row["met"] is not None)
    transport["rtt_us"]["gt-remote stdio"] = [760.0] * 10  # 1.52 x
    transport["throughput_mib_s"]["gt-remote stdio"] = [29.0]  # 0.48 x
    ups["dropbear"]["warm"] = [1.6, 1.9]  # 3.2 x the default's 0.55 s median
    ups["hardened"]["cold"] = [3.1, 3.2]  # over 3 s, 2.9 x
    met = {row["figure"]: row["met"] for row in report.transport_summary(transport)}
    assert met == {
        "Stdio transport: Ping RTT p50": False,
        "Stdio transport: Ping RTT p99": None,
        "Stdio transport: echo throughput, 1 MiB frames (each way)": False,
        "`up` on Dropbear (stdio transport), cold, median": True,
        "`up` on Dropbear (stdio transport), warm, median": False,
        "`up` on OpenSSH, `DisableForwarding yes` (stdio transport), cold, median": False,
        "`up` on OpenSSH, `DisableForwarding yes` (stdio transport), warm, median": True,
    }
    full = json.loads((REPO / "docs/benchmarks.json").read_text())
    older = {key: value for key, value in full.items() if key != "transport"}
    older["measured_apart"] = {key: value for key, value in full.get("measured_apart", {}).items() if key != "transport"}
    assert "## 9. Transports" not in report.markdown(older)  # a run from before the section renders without it
    (tmp_path / "benchmarks.json").write_text(json.dumps(older))
    both = merged(tmp_path / "benchmarks.json", {"plan": full["plan"], "transport": transport, "finished_at": "2030-01-02 03:04", "duration_s": 99.0}, ["transport"])
    text = report.markdown(both)
    assert "## 9. Transports" in text and "(`python -m bench.run --only transport --merge`) on 2030-01-02 03:04 UTC" in text
    # the default transport's figures beside section 3's, as ratios to ssh -L: "nothing changes" shows
    assert "its figures in this section are a round trip of 500 µs, 1.67 × `ssh -L`'s" in text and "Section 3 of the full run" in text


def test_a_run_removes_only_its_own_and_stale_marked_scratch_dirs(tmp_path: Path) -> None:
    """Each scratch dir carries the bench's marker; a later run removes only marked dirs of this
    user that are older than a day, never an unmarked one, a young one, a link, or another name."""
    day_ago = time.time() - scratch.STALE_AFTER_S - 60
    stale = scratch.make("gt-remote-bench-", tmp_path)
    os.utime(stale / scratch.MARKER, (day_ago, day_ago))
    (stale / "id_ed25519").write_text("a throwaway key")
    stale_runtime = scratch.make("gtr-bench-", tmp_path)
    os.utime(stale_runtime / scratch.MARKER, (day_ago, day_ago))
    young = scratch.make("gt-remote-bench-", tmp_path)  # a run going on beside this one
    unmarked = tmp_path / "gt-remote-bench-unmarked"
    unmarked.mkdir()
    os.utime(unmarked, (day_ago, day_ago))
    other = tmp_path / "someone-else"
    other.mkdir()
    (other / scratch.MARKER).write_text(scratch.MARKER_TEXT)
    os.utime(other / scratch.MARKER, (day_ago, day_ago))
    link = tmp_path / "gt-remote-bench-link"
    link.symlink_to(stale_runtime)
    assert sorted(scratch.sweep(tmp_path)) == sorted([stale, stale_runtime])
    assert not stale.exists() and not stale_runtime.exists()
    assert young.exists() and unmarked.exists() and other.exists() and link.is_symlink()
    with pytest.raises(ValueError, match="starts with one of"):
        scratch.make("elsewhere-", tmp_path)


def test_a_bed_leaves_no_scratch_dir_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The private key, the home and the supervisors' runtime dir go with the run's end."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # read TMPDIR again
    try:
        bed = Bed.create()
        extra = bed.scratch("gtr-bench-cli-")
        assert bed.key.path.exists() and bed.work.parent == tmp_path and (extra / scratch.MARKER).exists()
        bed.close()
        assert list(tmp_path.iterdir()) == []
    finally:
        tempfile.tempdir = None
