"""`gt-remote ping` against a real tunnel: around `down`, through a frozen relay, while the tunnel
reconnects."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Gt
from tests.e2e.helpers import bring_up_local, row
from tests.helpers import answers, one_error_line
from tests.testbed import SshHost, wait_for

# --- against the test host ----------------------------------------------------------------


def test_ping_exec_and_status_around_down(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    pong = gt("ping", "gaming-pc")
    assert pong.returncode == 0 and pong.stdout.startswith(f"Pong from {gt.local()} in ")
    missing = gt("exec", "gaming-pc", "--", "no-such-command-xyz")
    assert missing.returncode == 127 and "command not found: no-such-command-xyz" in one_error_line(missing.stderr)
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    denied = gt("exec", "gaming-pc", "--", str(script))
    assert denied.returncode == 126 and f"{script} is not executable" in one_error_line(denied.stderr)
    assert gt("down", "gaming-pc").returncode == 0
    after = gt("ping", "gaming-pc")
    assert after.returncode == 1
    line = one_error_line(after.stderr)
    assert "the tunnel of gaming-pc is down" in line and "Errno" not in line
    gt.env["GASTOWN_CCMUX_ADDR"] = gt.local()  # the address it had: nothing listens there now
    line = one_error_line(gt("ping").stderr)
    assert "the tunnel is down" in line and "Errno" not in line


def test_ping_through_a_frozen_relay_names_the_relay(gt: Gt, ssh_host: SshHost) -> None:
    """A killed relay is started again by the next stream (test_relay_restart.py); a frozen one
    takes the Ping and never passes it on: `ping` says so, and the health check replaces it."""
    local = bring_up_local(gt, ssh_host, "--keepalive", "1")
    assert row(gt)["resumable"] is True
    for pid in ssh_host.pids("relay_agent.py --socket"):
        ssh_host.kill(pid, "STOP")
    result = gt("ping", "gaming-pc", "--timeout", "2")
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "relay" in line and "IncompleteReadError" not in line and "Error" not in line.split("error:", 1)[1], line
    wait_for(lambda: answers(local), 60, "a Pong through a new relay, once the health check replaced the frozen one")


def test_ping_while_the_tunnel_reconnects_names_the_tunnel(gt: Gt, ssh_host: SshHost) -> None:
    bring_up_local(gt, ssh_host, "--keepalive", "1")
    ssh_host.pause()
    try:
        wait_for(lambda: row(gt)["state"] in ("reconnecting", "failed"), 20, "the link to drop")
        result = gt("ping", "gaming-pc", "--timeout", "1")
    finally:
        ssh_host.unpause()
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "the tunnel of gaming-pc is" in line and "Error" not in line.split("error:", 1)[1], line

