"""A killed test run leaves nothing running (#30.2): the session's reaper (tests/reaper.py) ends
the supervisors its tests started, the bench's reference tunnels (autossh), the laptop mariadbd
servers and its containers, and removes the bench's scratch dirs, once pytest is gone, however
it went. Proved on a real run: a pytest of its own (tests/e2e/killed_run.py)
brings a tunnel up and is killed with SIGKILL, its whole process group as make's would be, or
pytest alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from docker import from_env
from tests.e2e.killed_run import REPORT_ENV
from tests.helpers import tcp_port_free
from tests.reaper import SESSION_LABEL, argv_of, is_gt_remote_supervisor
from tests.testbed import REPO, wait_for

INNER = Path(__file__).parent / "killed_run.py"
UP_WITHIN_S = 180.0  # the inner pytest's start, a container, a mariadbd and an `up`, on a loaded machine
REAPED_WITHIN_S = 60.0  # the reaper's grace for a supervisor (10 s), then docker rm -f


def running(pid: int, program: bytes) -> bool:
    """Process `pid` is alive (not a zombie) and runs `program` (a part of its command line)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and any(program in part for part in argv_of(pid))


def session_containers(session: str) -> list[Any]:
    client = from_env()
    try:
        return list(client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session}"}))
    finally:
        client.close()


def reapers_of(session: str) -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit() and b"tests.reaper" in (argv := argv_of(int(entry.name))) and session.encode() in argv]


def leftovers(facts: dict[str, Any]) -> list[str]:
    """What the killed run still has running: empty once its reaper is done."""
    found = []
    if is_gt_remote_supervisor(argv_of(facts["supervisor"])) and running(facts["supervisor"], b"gt_remote"):
        found.append(f"supervisor {facts['supervisor']}")
    if running(facts["mariadbd"], b"mariadbd"):
        found.append(f"mariadbd {facts['mariadbd']}")
    if running(facts["autossh"], b"autossh"):
        found.append(f"autossh {facts['autossh']}")
    if Path(facts["bench_dir"]).exists():
        found.append(f"bench scratch dir {facts['bench_dir']}")
    found += [f"container {container.short_id}" for container in session_containers(facts["session"])]
    found += [f"reaper {pid}" for pid in reapers_of(facts["session"])]
    if Path(facts["root"]).exists():
        found.append(f"runtime root {facts['root']}")
    return found


@pytest.mark.parametrize("kill", ["process group", "pytest alone"])
def test_a_killed_run_leaves_no_supervisor_container_or_server(tmp_path: Path, kill: str) -> None:
    report, log = tmp_path / "report.json", tmp_path / "inner.log"
    with log.open("w") as out:  # a file, not a pipe: the reaper outlives the run and holds what it inherits
        inner = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner"), str(INNER)],
            cwd=REPO, env={**os.environ, REPORT_ENV: str(report)}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: report.exists() or inner.poll() is not None, UP_WITHIN_S, "the inner run to bring its tunnel up")
        assert inner.poll() is None, log.read_text()
        facts = json.loads(report.read_text())
        assert facts["pytest"] == inner.pid
        assert running(facts["supervisor"], b"gt_remote.runtime.supervisor") and running(facts["mariadbd"], b"mariadbd")
        assert running(facts["autossh"], b"autossh") and Path(facts["bench_dir"]).is_dir()
        assert [container.id for container in session_containers(facts["session"])] == [facts["container"]]
        assert reapers_of(facts["session"]), "the inner run started no reaper"
        if kill == "process group":
            os.killpg(inner.pid, signal.SIGKILL)  # the run's whole process group: Ctrl-C's reach, with no teardown
        else:
            inner.kill()  # pytest only, by its pid: its mariadbd dies with it (PR_SET_PDEATHSIG)
        inner.wait(30)
    finally:
        if inner.poll() is None:
            os.killpg(inner.pid, signal.SIGKILL)  # the group this test started
            inner.wait(30)
    wait_for(lambda: not leftovers(facts), REAPED_WITHIN_S, "the reaper to end what the killed run left")
    assert tcp_port_free(facts["local_port"])
    reaped = (tmp_path / "inner" / "reaper.log").read_text()
    assert f"ended the session's supervisors left running: {facts['supervisor']}" in reaped, reaped
    assert "containers and networks left running" in reaped, reaped
    assert f"removed the session's bench scratch directories left behind: {facts['bench_dir']}" in reaped, reaped
    if kill == "pytest alone":  # a process group's SIGKILL reaches autossh itself
        assert f"reference tunnels (autossh, ssh) left running: {facts['autossh']}" in reaped, reaped
