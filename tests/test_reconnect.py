"""Waking up fast, end to end: `gt-remote reconnect` and the wake signal against a real sshd.

Every tunnel here runs with --keepalive 30, so a silent link would take keepalive x 3 = 90 s
to be noticed by itself; each test waits far less than that for the reconnect.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from tests.conftest import Gt
from tests.helpers import STANDIN_PATTERN, answers
from tests.testbed import SshHost, wait_for

LOCAL = "tcp://127.0.0.1:9999"
LONG_KEEPALIVE = "30"
SOONER_THAN_KEEPALIVE = 45.0  # every wait below: well under keepalive x 3 = 90 s


def row(gt: Gt) -> dict[str, Any]:
    [status] = gt.status("gaming-pc")
    return status


def server_pid(host: SshHost) -> int:
    [pid] = host.pids(f"{STANDIN_PATTERN}9999")
    return pid


def bring_up(gt: Gt, host: SshHost) -> int:
    result = gt.up(host, "--keepalive", LONG_KEEPALIVE)
    assert result.returncode == 0, result.stderr
    return server_pid(host)


def wait_recovered(gt: Gt, host: SshHost, reconnects: int, server: int) -> dict[str, Any]:
    """Up again on a new connection, the same remote server, a Pong through the same address."""
    wait_for(lambda: (s := row(gt))["state"] == "up" and s["reconnects"] >= reconnects, SOONER_THAN_KEEPALIVE, f"reconnect #{reconnects}")
    wait_for(lambda: answers(LOCAL), SOONER_THAN_KEEPALIVE, "a Pong through the same local address")
    status = row(gt)
    assert status["reconnects"] == reconnects and status["local"] == LOCAL
    assert server_pid(host) == server and status["server"]["pid"] == server and status["server_restarts"] == 0
    assert status["last_recovery_s"] is not None and status["last_recovery_s"] > 0
    return status


def test_reconnect_leaves_a_healthy_link_alone(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    result = gt("reconnect", "gaming-pc")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "gt-remote: gaming-pc: the link was healthy; left it alone"
    status = row(gt)
    assert status["reconnects"] == 0 and status["state"] == "up"
    assert status["last_wake"]["kind"] == "request" and status["last_wake"]["outcome"] == "healthy"
    assert status["last_recovery_s"] is not None  # the check's round trip: the time to a working link
    every = gt("reconnect", "--all")
    assert every.returncode == 0 and "gaming-pc: the link was healthy" in every.stderr, every.stderr
    assert row(gt)["reconnects"] == 0
    assert answers(LOCAL)


def test_reconnect_drops_a_silent_link_at_once(gt: Gt, ssh_host: SshHost) -> None:
    server = bring_up(gt, ssh_host)
    ssh_host.pause()
    try:
        result = gt("reconnect", "gaming-pc", timeout=60)
        assert result.returncode == 1, result.stderr  # not up again yet: the host is still paused
        assert "gaming-pc: dropped a dead link (no answer within 2 s); still reconnecting" in result.stderr, result.stderr
        status = row(gt)
        assert status["state"] == "reconnecting", status  # keepalive x 3 (90 s) has not passed
        assert status["last_wake"]["outcome"] == "dropped", status["last_wake"]
        log = gt("logs", "gaming-pc", "-n", "200").stdout
        assert "dropping the connection: no answer to an SSH round trip within 2 s" in log
    finally:
        ssh_host.unpause()
    wait_recovered(gt, ssh_host, reconnects=1, server=server)


def test_reconnect_force_replaces_a_healthy_link(gt: Gt, ssh_host: SshHost) -> None:
    server = bring_up(gt, ssh_host)
    result = gt("reconnect", "gaming-pc", "--force")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "gt-remote: gaming-pc: dropped the link on request; reconnected"
    wait_recovered(gt, ssh_host, reconnects=1, server=server)


def test_wake_signal_checks_the_link_at_once(gt: Gt, ssh_host: SshHost) -> None:
    """SIGUSR1 takes the path a detected sleep or network change takes."""
    server = bring_up(gt, ssh_host)
    supervisor = row(gt)["supervisor_pid"]  # the supervisor this test started
    os.kill(supervisor, signal.SIGUSR1)
    wait_for(lambda: (row(gt)["last_wake"] or {}).get("outcome") == "healthy", 20, "the wake check of a healthy link")
    assert row(gt)["reconnects"] == 0 and row(gt)["last_wake"]["kind"] == "signal"
    ssh_host.pause()
    try:
        os.kill(supervisor, signal.SIGUSR1)
        wait_for(lambda: row(gt)["state"] == "reconnecting", 20, "the silent link to be dropped after the wake")
        wake = row(gt)["last_wake"]
        assert wake["kind"] == "signal" and wake["outcome"] == "dropped", wake
    finally:
        ssh_host.unpause()
    wait_recovered(gt, ssh_host, reconnects=1, server=server)


def test_reconnect_needs_exactly_one_of_host_or_all(gt: Gt) -> None:
    for args in ((), ("gaming-pc", "--all")):
        result = gt("reconnect", *args)
        assert result.returncode == 2
        assert result.stderr.strip() == "gt-remote: error: name one HOST or pass --all; e.g. 'gt-remote reconnect gaming-pc'"


def test_reconnect_of_a_host_that_is_not_up_fails_in_one_line(gt: Gt) -> None:
    result = gt("reconnect", "gaming-pc")
    assert result.returncode == 1
    assert result.stderr.strip() == "gt-remote: error: gaming-pc is not up; run 'eval \"$(gt-remote up gaming-pc)\"' first"


def test_recovery_time_is_reported_after_a_fault_without_a_wake(gt: Gt, ssh_host: SshHost) -> None:
    server = bring_up(gt, ssh_host)
    assert row(gt)["last_recovery_s"] is None and row(gt)["last_wake"] is None  # nothing to recover from yet
    for sshd_pid in ssh_host.pids("sshd: gamer"):
        ssh_host.kill(sshd_pid)  # the SSH session dies: a loss the link notices by itself
    status = wait_recovered(gt, ssh_host, reconnects=1, server=server)
    assert status["last_wake"] is None


def test_reconnect_retries_a_failed_link_now_instead_of_in_a_minute(gt: Gt, ssh_host: SshHost) -> None:
    """A final error (the key refused) waits 60 s between attempts; `reconnect` cuts that short."""
    server = bring_up(gt, ssh_host)
    ssh_host.sh("rm /home/gamer/.ssh/authorized_keys")
    for sshd_pid in ssh_host.pids("sshd: gamer"):
        ssh_host.kill(sshd_pid)
    wait_for(lambda: row(gt)["state"] == "failed", 30, "the refused key to fail the link for now")
    ssh_host.authorize()  # the user fixes the key; the next scheduled attempt is a minute away
    result = gt("reconnect", "gaming-pc", timeout=60)
    assert result.returncode == 0, result.stderr  # back within reconnect's 15 s wait, not after 60 s
    assert result.stderr.strip() == "gt-remote: gaming-pc: the link was already down; trying again now; reconnected"
    wait_recovered(gt, ssh_host, reconnects=1, server=server)
