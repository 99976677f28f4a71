"""The benchmark at one repetition each, so its code cannot rot. No timing is asserted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

import docker
from bench import report, scratch
from bench.run import SMOKE, run
from tests.reaper import SESSION_ENV, SESSION_LABEL
from tests.testbed import REPO, wait_for


# The whole smoke run starts and stops some twenty containers for nine sections: about two
# minutes on a quiet two-core machine, and close to pytest's default 300 s on one that also runs
# the test suite. It gets 600 s, so a slow machine is not taken for a broken bench.
@pytest.mark.timeout(600)
def test_bench_smoke_writes_the_report(tmp_path: Path) -> None:
    results = run(SMOKE, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert text.startswith("# Benchmarks") and "## Summary" in text
    assert (tmp_path / report.CHART).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = report.summary(results)
    assert len(rows) == 34 and all(row["reference"] >= 0 and (row["ours"] is None or row["ours"] >= 0) for row in rows)
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
    assert "## 6. CLI" in text and set(cli["wall_s"]) >= {report.CLICK, "gt-remote status", report.PICK}
    idle = results["scale"]["remote_idle"]  # what an idle tunnel, load figures included, costs the remote (#32)
    assert set(idle) == {"gt-remote", report.IDLE_PLAIN, "autossh + ssh"} and any(row["figure"].startswith("Processes started per minute") for row in rows)
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
    transport = results["transport"]  # the stdio transport beside stream-local forwarding, and `up` on each kind of SSH server (#31)
    assert "## 9. Transports" in text and transport["status"]["gt-remote forward"]["transport"] == "forward"
    assert all(transport["status"][name]["transport"] == "stdio" for name in transport["status"] if name != "gt-remote forward")
    assert all(len(values) == SMOKE.pings // 10 * 10 for values in transport["rtt_us"].values())
    assert set(transport["up"]["seconds"]) == {"openssh", "openssh --transport stdio", "dropbear", "hardened"}
    assert sum(row["figure"].startswith(("Stdio transport", "`up` on")) for row in rows) == 5  # the smoke run times warm `up`s only
    assert "bridge" in transport["cpu_us_per_ping"]["gt-remote stdio"]  # the stdio tunnel's bridge found in the container, its CPU counted


def test_an_interrupted_run_leaves_no_scratch_dir_or_container() -> None:
    """Ctrl-C in the middle of a run: its containers are stopped and its scratch dirs (the
    throwaway private key among them) removed before it exits. The run gets a temporary
    directory of its own (TMPDIR; short, for the supervisors' socket paths) and a container
    label of its own, so that what it leaves is told apart from everything else."""
    base = Path(tempfile.mkdtemp(prefix="gtrb-"))
    label = f"bench-interrupt-{os.getpid()}"
    env = {**os.environ, "TMPDIR": str(base), SESSION_ENV: label}
    out = base / "out"
    proc = subprocess.Popen([sys.executable, "-m", "bench.run", "--only", "transport", "--smoke", "--out", str(out)],
                            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    engine = docker.from_env()

    def containers() -> list[object]:
        return list(engine.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={label}"}))

    try:
        wait_for(lambda: any("transport up rep" in line for line in lines) or proc.poll() is not None, 120, "the run to bring its tunnels up")
        assert proc.poll() is None, "".join(lines)
        assert containers() and any((path / scratch.MARKER).exists() for path in base.iterdir())
        proc.send_signal(signal.SIGINT)  # the run this test started, by pid
        assert proc.wait(120) == 130, "".join(lines)
        reader.join(10)
        assert "interrupted" in "".join(lines)
        assert sorted(path.name for path in base.iterdir()) == [], "".join(lines)
        assert not out.exists()  # no report from a run cut short
        assert [c for c in containers() if c.status == "running"] == []  # type: ignore[attr-defined]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for container in containers():  # only this test's, by its own label: what a failure left
            container.remove(force=True)  # type: ignore[attr-defined]
        scratch.remove(base)
