"""Start at login without a remote: sd_notify to path and abstract sockets or none, and
`service status` exit codes for systemd and launchd."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from gt_remote.runtime import notify
from tests.conftest import Gt
from tests.helpers import received

# --- the sd_notify datagram ---------------------------------------------------------------


# --- service status ---------------------------------------------------------------------

FAKE = """#!/bin/sh
# A stand-in for {tool}: answers from $FAKE_STATE, records every call.
echo "$*" >> "$FAKE_CALLS"
{body}
"""


FAKE_SYSTEMCTL = 'case "$*" in *is-active*) echo "$FAKE_STATE"; [ "$FAKE_STATE" = active ] ;; *) exit 0 ;; esac'


FAKE_LAUNCHCTL = 'case "$1" in print) [ "$FAKE_STATE" = unloaded ] && { echo "Could not find service" >&2; exit 113; }; printf "service = {\\n\\tstate = %s\\n}\\n" "$FAKE_STATE" ;; *) exit 0 ;; esac'


def fake_tool(gt: Gt, tool: str, body: str) -> None:
    bin_dir = gt.home / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / tool
    script.write_text(FAKE.format(tool=tool, body=body))
    script.chmod(0o755)
    gt.env["PATH"] = f"{bin_dir}:{gt.env['PATH']}"
    gt.env["FAKE_CALLS"] = str(gt.home / "fake-calls")


def test_notify_sends_to_a_path_socket(receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert notify.notify(notify.READY, "STATUS=up")
    assert received(sock) == ["READY=1\nSTATUS=up"]


def test_notify_sends_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"gtr-notify-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.notify(notify.READY)
        assert received(sock) == ["READY=1"]


def test_notify_without_a_service_manager_does_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.notify(notify.READY) is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))  # the manager went away
    assert notify.notify(notify.READY) is False


def test_service_status_exit_codes_systemd(gt: Gt) -> None:
    fake_tool(gt, "systemctl", FAKE_SYSTEMCTL)
    status = lambda: gt("service", "status", "gaming-pc", "--platform", "systemd")  # noqa: E731
    absent = status()
    assert absent.returncode == 1 and "not installed" in absent.stdout
    assert gt("service", "install", "gaming-pc", "--platform", "systemd", "--no-start").returncode == 0
    for state in ("inactive", "failed", "activating"):
        gt.env["FAKE_STATE"] = state
        result = status()
        assert result.returncode == 3 and f"not active ({state})" in result.stdout, result.stdout
        assert "systemctl --user daemon-reload && systemctl --user enable --now gt-remote-gaming-pc.service" in result.stdout
    gt.env["FAKE_STATE"] = "active"
    result = status()
    assert result.returncode == 0 and "active (active)" in result.stdout
    assert "--user is-active gt-remote-gaming-pc.service" in (gt.home / "fake-calls").read_text()


def test_service_status_exit_codes_launchd(gt: Gt) -> None:
    fake_tool(gt, "launchctl", FAKE_LAUNCHCTL)
    assert gt("service", "install", "gaming-pc", "--platform", "launchd", "--no-start").returncode == 0
    expected = {"running": 0, "not running": 3, "unloaded": 3}
    for state, code in expected.items():
        gt.env["FAKE_STATE"] = state
        result = gt("service", "status", "gaming-pc", "--platform", "launchd")
        assert result.returncode == code, (state, result.stdout)
    assert "print gui/" in (gt.home / "fake-calls").read_text()

