"""The supervisor's settings hand-over, without a remote: a cut-short or foreign hand-over is
refused, and `down` and `status` know a supervisor by its host name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gt_remote.base.config import HostSettings
from gt_remote.runtime.control import _supervises
from tests.testbed import REPO


def run_supervisor(name: str, stdin: bytes, tmp_path: Path) -> tuple[int, list[dict[str, object]]]:
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_RUNTIME_DIR": str(tmp_path / "run"), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "gt_remote.runtime.supervisor", name], input=stdin, capture_output=True, env=env, timeout=60)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def test_a_cut_short_or_foreign_hand_over_is_refused(tmp_path: Path) -> None:
    """`up` killed mid-write, or settings for another host than the command line names (which
    `down` and `status` go by): an error event for `up`, never a supervisor for the wrong host."""
    whole = HostSettings(name="other", destination="gamer@elsewhere", local_url="tcp://127.0.0.1:1").to_json().encode()
    for stdin in (whole[: len(whole) // 2], b"", whole):
        code, events = run_supervisor("pc", stdin, tmp_path)
        assert code == 1 and [event["event"] for event in events] == ["error"], events
        assert "no usable settings" in str(events[0]["error"])
    assert not (tmp_path / "run" / "gt-remote" / "other.pid").exists()


def test_down_and_status_know_a_supervisor_by_its_host_name() -> None:
    """control._supervises reads /proc/PID/cmdline; one started before this change carries its settings there."""
    python = [sys.executable, "-m", "gt_remote.runtime.supervisor"]
    assert _supervises([*python, "pc"], "pc")
    assert not _supervises([*python, "pc"], "other")
    assert _supervises([*python, HostSettings(name="pc", destination="gamer@pc").to_json()], "pc")
    assert not _supervises([*python, "{not json"], "pc")

