"""Issue 17.3: every word of `status`, `ping` and the log is true through outages and hangs."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from tests.conftest import Gt
from tests.helpers import STANDIN_PATTERN, answers, one_error_line
from tests.testbed import SshHost, free_loopback_port, wait_for


def row(gt: Gt) -> dict[str, Any]:
    [status] = json.loads(gt("status", "gaming-pc", "--json").stdout)
    return dict(status)


def bring_up(gt: Gt, host: SshHost, *args: str) -> str:
    local = f"tcp://127.0.0.1:{free_loopback_port()}"
    result = gt.up(host, "--local", local, *args)
    assert result.returncode == 0, result.stderr
    return local


def test_outage_clears_the_rtt_and_recovery_is_told_in_the_past(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host, "--keepalive", "1")
    wait_for(lambda: row(gt)["rtt_ms"] is not None, 10, "a round trip to be measured")
    ssh_host.pause()
    try:
        down = wait_for(lambda: (s := row(gt))["state"] in ("reconnecting", "failed") and s, 20, "the link to drop")
        assert down["rtt_ms"] is None  # type: ignore[index]
        for _ in range(5):  # every look at a failing link: never a time already past
            status = row(gt)
            assert status["rtt_ms"] is None
            if status["next_attempt_at"] is not None:
                assert datetime.fromisoformat(status["next_attempt_at"]).timestamp() > time.time() - 1
    finally:
        ssh_host.unpause()
    up = wait_for(lambda: (s := row(gt))["state"] == "up" and s, 60, "the link to come back")
    error = up["last_error"]  # type: ignore[index]
    print(error)
    assert error and "reconnecting" not in error and "recovered" in error, error
    assert up["last_error_past"] is True  # type: ignore[index]
    text = gt("status", "gaming-pc").stdout
    assert f"last error  {error}" in text and "(since" not in text.split("last error")[1]
    assert up["next_attempt_at"] is None  # type: ignore[index]


def test_a_hung_server_of_ours_is_not_called_another_program(gt: Gt, ssh_host: SshHost) -> None:
    local = bring_up(gt, ssh_host)
    assert gt("down", "gaming-pc").returncode == 0  # the server keeps running
    [pid] = ssh_host.pids(f"{STANDIN_PATTERN}9999")
    ssh_host.kill(pid, "STOP")  # hung
    try:
        result = gt.up(ssh_host, "--local", local)
        assert result.returncode == 1
        line = one_error_line(result.stderr)
        assert f"ccmux-server (pid {pid}) on gaming-pc accepts connections but did not answer a Ping within 3 s: hung or overloaded" in line
        assert "not a ccmux server" not in line
    finally:
        ssh_host.kill(pid, "CONT")


def test_a_hung_server_while_up_is_reported_as_hung_with_a_reason_in_the_log(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host, "--keepalive", "1")
    [pid] = ssh_host.pids(f"{STANDIN_PATTERN}9999")
    ssh_host.kill(pid, "STOP")
    try:
        status = wait_for(lambda: (s := row(gt))["last_error"] and "hung or overloaded" in s["last_error"] and s, 30, "the hang to be reported")
        assert f"pid {pid}" in status["last_error"] and status["rtt_ms"] is None  # type: ignore[index]
    finally:
        ssh_host.kill(pid, "CONT")
    log = (gt.home / ".local/state/gt-remote/logs/gaming-pc.log").read_text()
    failures = [line for line in log.splitlines() if "health Ping failed:" in line]
    assert failures and all(line.split("health Ping failed:")[1].strip() for line in failures), failures


def test_ping_through_a_frozen_relay_names_the_relay(gt: Gt, ssh_host: SshHost) -> None:
    """A killed relay is started again by the next stream (test_relay_restart.py); a frozen one
    takes the Ping and never passes it on: `ping` says so, and the health check replaces it."""
    local = bring_up(gt, ssh_host, "--keepalive", "1")
    assert row(gt)["resumable"] is True
    for pid in ssh_host.pids("relay_agent.py --socket"):
        ssh_host.kill(pid, "STOP")
    result = gt("ping", "gaming-pc", "--timeout", "2")
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "relay" in line and "IncompleteReadError" not in line and "Error" not in line.split("error:", 1)[1], line
    wait_for(lambda: answers(local), 60, "a Pong through a new relay, once the health check replaced the frozen one")


def test_ping_while_the_tunnel_reconnects_names_the_tunnel(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host, "--keepalive", "1")
    ssh_host.pause()
    try:
        wait_for(lambda: row(gt)["state"] in ("reconnecting", "failed"), 20, "the link to drop")
        result = gt("ping", "gaming-pc", "--timeout", "1")
    finally:
        ssh_host.unpause()
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "the tunnel of gaming-pc is" in line and "Error" not in line.split("error:", 1)[1], line


def test_a_program_that_answers_something_else_is_not_a_ccmux_server(gt: Gt, ssh_host: SshHost) -> None:
    talker = (
        "import socket\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 9999)); s.listen()\n"
        "while True:\n"
        "    c, _ = s.accept(); c.sendall(b'HTTP/1.0 400 Bad Request\\r\\n\\r\\n'); c.close()\n"
    )
    ssh_host.sh(f"cat > /tmp/talker.py <<'EOF'\n{talker}EOF")
    ssh_host.spawn("exec python3 /tmp/talker.py")
    wait_for(lambda: ssh_host.pids("talker.py"), 10, "the talker to run")
    wait_for(lambda: ssh_host.exec("python3 -c \"import socket; socket.create_connection(('127.0.0.1', 9999))\"")[0] == 0, 10, "port 9999 to be held")
    result = gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{free_loopback_port()}")
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "127.0.0.1:9999 on gaming-pc is held by a program that is not a ccmux server" in line
