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
    assert len(rows) == 27 and all(row["reference"] >= 0 and (row["ours"] is None or row["ours"] >= 0) for row in rows)
    recovery = results["recovery"]
    assert recovery["kill"]["gt-remote"][0] is not None and recovery["pause"]["gt-remote"][0] is not None
    assert recovery["kill"]["ssh -L"] == [None]  # plain ssh -L never comes back
    assert json.loads((tmp_path / "benchmarks.json").read_text())["plan"]["reps"] == 1
    attached = results["attached"]
    assert "## 5. Attached client" in text
    assert list(attached["faults"]) == ["kill", "pause", "network", "sshd"]
    for by_tool in attached["faults"].values():
        assert {"gt-remote plain", "autossh", "ssh -L"} <= set(by_tool)
        assert by_tool["gt-remote plain"]["wrong_answers"] == 0
        assert by_tool["ssh -L"]["stall_s"] == [None]  # its one connection is gone and nothing forwards any more
    assert sum(attached["faults"]["kill"]["gt-remote plain"]["resets"]) == 1  # plain forwarding resets on a killed session
    assert ("gt-remote resumable" in attached["faults"]["kill"]) == attached["resumable"]["available"]
    if not attached["resumable"]["available"]:
        assert "resumable: not available" in text
    cli = results["cli"]  # the CLI section: each command ran, beside import click
    assert "## 6. CLI" in text and set(cli["wall_s"]) >= {report.CLICK, "gt-remote status"}
    assert all(len(values) == SMOKE.cli_reps and min(values) > 0 for values in cli["maxrss_kib"].values())
    cost = results["cost"]["tools"]  # CPU per GiB and per 10k round trips, for both ends of each tunnel
    assert "## 7. CPU cost" in text and {"ssh", "sshd"} <= set(cost["ssh -L"]["per_gib"])
    assert "supervisor" in cost["gt-remote plain"]["per_10k_round_trips"]
    steps = results["bring_up"]["steps"]["gt-remote warm"][0]  # where `up` spends its time, step by step
    assert steps[-1][1] == "exit N" and [at for at, _ in steps] == sorted(at for at, _ in steps)
    assert "| step (the line that ends it) | arrives at | took (since the line before) |" in text
    back = results["back"]  # a MySQL client on the gaming PC, the laptop's MariaDB, against ssh -R and autossh -R
    assert "## 8. Back tunnels" in text and back["modes"] == {"gt-remote resumable": "relay", "gt-remote plain": "plain"}
    assert set(back["rtt_us"]) == {"gt-remote resumable", "gt-remote plain", "ssh -R", "unforwarded"}
    assert all(len(values) == SMOKE.back_transfer_runs for path in back["transfer_mb_s"].values() for values in path.values())
    for fault in ("kill", "freeze"):
        resumable = back["faults"][fault]["gt-remote resumable"]  # the client's one connection survives: no query fails, none doubles
        assert resumable["recovery_s"][0] is not None and resumable["failed"] == [0] and resumable["wrong"] == [0] and resumable["failed_before_faults"] == 0
        assert back["faults"][fault]["gt-remote plain"]["failed"][0] >= 1  # sshd's forward ends with the session: the query in flight fails
        assert back["status"][fault]["gt-remote resumable"]["connections_total"] == back["status_before"][fault]["gt-remote resumable"]["connections_total"]
