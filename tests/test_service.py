"""Start at login: READY=1 only after the end-to-end Ping, one supervisor per host, and
`service status` exit codes. The unit file itself is checked in test_tools.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gt_remote.runtime import notify
from tests.conftest import Gt
from tests.helpers import answers, one_error_line, openssl_mapped
from tests.testbed import STANDIN, SshHost

# --- the sd_notify datagram ---------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's notify socket, at a short path."""
    path = Path(f"/tmp/gtr-notify-{os.getpid()}-{time.monotonic_ns()}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield sock, str(path)
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def received(sock: socket.socket) -> list[str]:
    """Every datagram already queued, without waiting."""
    sock.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


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


# --- up --foreground under a service manager --------------------------------------------


def foreground_up(gt: Gt, host: SshHost, notify_socket: str, *args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "gt_remote", "-F", str(host.ssh_config), "up", host.alias, "--foreground", *args]
    env = {**gt.env, "NOTIFY_SOCKET": notify_socket}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_ready(sock: socket.socket, proc: subprocess.Popen[str], timeout: float = 90) -> list[str]:
    """Datagrams up to and including READY=1; fails if the process exits first."""
    sock.settimeout(0.2)
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while not any("READY=1" in m.splitlines() for m in messages):
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            assert proc.poll() is None, f"up --foreground exited {proc.returncode} before READY=1: {proc.communicate()}"
            assert time.monotonic() < deadline, f"no READY=1 within {timeout} s; got {messages}"
    return messages


def test_ready_is_sent_only_once_the_tunnel_answers_a_ping(gt: Gt, ssh_host: SshHost, receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    proc = foreground_up(gt, ssh_host, path, "--server-binary", str(STANDIN))
    try:
        messages = wait_for_ready(sock, proc)
        # At the moment READY=1 arrives, the server answers through the local address ...
        assert answers("tcp://127.0.0.1:9999"), "READY=1 came before the tunnel answered a Ping"
        # ... and READY=1 came after the progress of the whole bring-up, the Ping included.
        assert any(m.startswith("STATUS=checking tcp://127.0.0.1:9999 end to end with a ccmux Ping") for m in messages[:-1]), messages
        assert messages[-1].splitlines() == ["READY=1", "STATUS=up: tcp://127.0.0.1:9999 -> gaming-pc:9999"]
        assert [row["supervisor_pid"] for row in gt.status("gaming-pc")] == [proc.pid]
        assert proc.stdout is not None and proc.stdout.readline() == "export GASTOWN_CCMUX_ADDR=tcp://127.0.0.1:9999\n"
        assert openssl_mapped(proc.pid) == []  # a supervisor for as long as the service runs: lean as a detached one
    finally:
        proc.send_signal(signal.SIGTERM)  # what systemd sends on stop
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_a_failed_foreground_up_never_reports_ready(gt: Gt, ssh_host: SshHost, receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    no_server = foreground_up(gt, ssh_host, path)  # nothing installed and no --server-binary
    _, err = no_server.communicate(timeout=90)
    assert no_server.returncode == 1 and "ccmux-server is not installed on gaming-pc" in one_error_line(err)
    first = received(sock)
    assert first and not any("READY=1" in m for m in first), first  # progress, but never READY
    assert err.count("ccmux-server is not installed") == 1 and err.count("gt-remote: connecting to gaming-pc") == 1
    logged = gt("logs", "gaming-pc").stdout  # what a service's user reads: the steps and the error
    assert "connecting to gaming-pc" in logged and "ERROR gt_remote.runtime.supervisor: ccmux-server is not installed on gaming-pc" in logged

    ssh_host.sh(": > /home/gamer/.ssh/authorized_keys")
    refused = foreground_up(gt, ssh_host, path, "--server-binary", str(STANDIN))
    _, err = refused.communicate(timeout=90)
    assert refused.returncode == 1 and "refused authentication" in one_error_line(err)
    assert not any("READY=1" in m for m in received(sock))


def test_foreground_up_for_a_host_already_supervised_exits_non_zero(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    before = gt.status("gaming-pc")[0]["supervisor_pid"]
    second = gt("up", "gaming-pc", "--foreground", ssh_config=ssh_host.ssh_config)
    assert second.returncode == 1 and second.stdout == ""
    assert "gaming-pc is already up under another supervisor (pid %d)" % before in one_error_line(second.stderr)
    assert gt.status("gaming-pc")[0]["supervisor_pid"] == before and answers()  # the first one is untouched


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
