"""Supervision through real faults injected into the test containers, each repeated."""

from __future__ import annotations

from typing import Any

from tests.conftest import Gt
from tests.helpers import STANDIN_PATTERN, answers
from tests.testbed import SshHost, wait_for

LOCAL = "tcp://127.0.0.1:9999"
ROUNDS = 3


def server_pid(host: SshHost) -> int:
    [pid] = host.pids(f"{STANDIN_PATTERN}9999")
    return pid


def row(gt: Gt) -> dict[str, Any]:
    [status] = gt.status("gaming-pc")
    return status


def wait_recovered(gt: Gt, reconnects: int, timeout: float = 45) -> dict[str, Any]:
    """Up again after the fault: state up, the expected reconnect count, and a Pong end to end."""
    wait_for(lambda: (s := row(gt))["state"] == "up" and s["reconnects"] >= reconnects, timeout, f"reconnect #{reconnects}")
    wait_for(answers, timeout, "a Pong through the same local address")
    status = row(gt)
    assert status["local"] == LOCAL
    return status


def bring_up(gt: Gt, host: SshHost) -> int:
    result = gt.up(host, "--keepalive", "1")
    assert result.returncode == 0, result.stderr
    return server_pid(host)


def test_killed_sshd_connection_recovers_every_time(gt: Gt, ssh_host: SshHost) -> None:
    pid = bring_up(gt, ssh_host)
    for round_ in range(1, ROUNDS + 1):
        serving = ssh_host.pids("sshd: gamer")
        assert serving, "no sshd process serves our connection"
        for sshd_pid in serving:
            ssh_host.kill(sshd_pid)
        status = wait_recovered(gt, round_)
        assert status["reconnects"] == round_
        assert server_pid(ssh_host) == pid and status["server"]["pid"] == pid
        assert status["server_restarts"] == 0


def test_pause_beyond_keepalive_budget_then_unpause(gt: Gt, ssh_host: SshHost) -> None:
    pid = bring_up(gt, ssh_host)
    for round_ in range(1, ROUNDS + 1):
        ssh_host.pause()
        wait_for(lambda: row(gt)["state"] == "reconnecting", 15, "the silent link to be noticed (keepalive x 3)")
        assert not answers()  # the listener stays, but nothing answers through it
        ssh_host.unpause()
        status = wait_recovered(gt, round_)
        assert server_pid(ssh_host) == pid and status["server_restarts"] == 0


def test_network_disconnect_and_reconnect(gt: Gt, host_factory) -> None:  # type: ignore[no-untyped-def]
    host = host_factory(own_network=True)
    pid = bring_up(gt, host)
    for round_ in range(1, ROUNDS + 1):
        host.disconnect()
        wait_for(lambda: row(gt)["state"] == "reconnecting", 15, "the partition to be noticed")
        host.connect()
        status = wait_recovered(gt, round_)
        assert server_pid(host) == pid and status["server_restarts"] == 0


def test_container_restart_restarts_the_dead_server(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    for round_ in range(1, ROUNDS + 1):
        ssh_host.restart()
        status = wait_recovered(gt, round_)
        assert status["server_restarts"] == round_
        assert status["server"]["pid"] == server_pid(ssh_host)


def test_killed_server_is_restarted_over_the_live_link(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    for round_ in range(1, ROUNDS + 1):
        ssh_host.kill(server_pid(ssh_host))
        wait_for(lambda: row(gt)["server_restarts"] == round_, 30, f"server restart #{round_}")
        wait_for(answers, 15, "a Pong from the restarted server")
        status = row(gt)
        assert status["reconnects"] == 0 and status["server"]["pid"] == server_pid(ssh_host)
