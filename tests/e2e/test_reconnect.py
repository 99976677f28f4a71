"""Reconnecting: real faults injected into the container (killed sshd sessions, pauses, network
cuts, restarts) each recovered from, `gt-remote reconnect` and the wake signal, and a wake check
that keeps a slow link busy with an upload."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Gt
from tests.e2e.helpers import ROUNDS, row
from tests.helpers import ECHO_FRAME, STANDIN_PATTERN, answers
from tests.testbed import SshHost, free_loopback_port, wait_for


def server_pid(host: SshHost) -> int:
    [pid] = host.pids(f"{STANDIN_PATTERN}9999")
    return pid


def wait_recovered_from_fault(gt: Gt, reconnects: int, timeout: float = 45) -> dict[str, Any]:
    """Up again after the fault: state up, the expected reconnect count, and a Pong end to end."""
    wait_for(lambda: (s := row(gt))["state"] == "up" and s["reconnects"] >= reconnects, timeout, f"reconnect #{reconnects}")
    wait_for(lambda: answers(gt.local()), timeout, "a Pong through the same local address")
    status = row(gt)
    assert status["local"] == gt.local()
    return status


def bring_up_for_faults(gt: Gt, host: SshHost) -> int:
    result = gt.up(host, "--keepalive", "1")
    assert result.returncode == 0, result.stderr
    return server_pid(host)


UPLINK_BYTES_PER_S = 256 * 1024


TICK = 0.05


class SlowUplinkProxy:
    """127.0.0.1:port -> the container's sshd; the uplink paced to a fixed rate, the downlink free."""

    def __init__(self, target_port: int, rate: int) -> None:
        self.target_port = target_port
        self.rate = rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.uplink_bytes = 0
        self.closing = False
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                laptop, _ = self.listener.accept()
            except OSError:
                return
            sshd = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [laptop, sshd]
            threading.Thread(target=self._pump, args=(laptop, sshd, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(sshd, laptop, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, paced: bool) -> None:
        budget = int(self.rate * TICK)
        try:
            while True:
                started = time.monotonic()
                data = source.recv(budget if paced else 65536)
                if not data:
                    break
                sink.sendall(data)
                if paced:
                    self.uplink_bytes += len(data)
                    time.sleep(max(0.0, TICK * len(data) / budget - (time.monotonic() - started)))  # the pace, not a wait for state
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closing = True
        for sock in self.sockets:
            sock.close()


class BulkEcho:
    """A client of the tunnel that uploads echo frames as fast as the tunnel takes them and reads the echoes."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sent = 0
        self.received = 0
        self.error: BaseException | None = None
        self.stopping = False
        threading.Thread(target=self._send, daemon=True).start()
        threading.Thread(target=self._receive, daemon=True).start()

    def _send(self) -> None:
        try:
            while not self.stopping:
                self.sock.sendall(ECHO_FRAME)
                self.sent += len(ECHO_FRAME)
        except OSError as exc:
            if not self.stopping:
                self.error = exc

    def _receive(self) -> None:
        try:
            while not self.stopping:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("the tunnel closed the bulk transfer")
                self.received += len(data)
        except OSError as exc:
            if not self.stopping:
                self.error = exc

    def close(self) -> None:
        self.stopping = True
        self.sock.close()


@pytest.fixture
def slow_uplink(ssh_host: SshHost) -> Iterator[SshHost]:
    """The host, reached through the slow uplink: ssh_config and known_hosts name the proxy."""
    proxy = SlowUplinkProxy(ssh_host.port, UPLINK_BYTES_PER_S)
    key_type, key = ssh_host.host_key_line.split()[1:]
    with ssh_host.known_hosts.open("a") as known:
        known.write(f"[127.0.0.1]:{proxy.port} {key_type} {key}\n")
    ssh_host.port = proxy.port
    ssh_host.write_ssh_config()
    yield ssh_host
    proxy.close()


LONG_KEEPALIVE = "30"


SOONER_THAN_KEEPALIVE = 45.0  # every wait below: well under keepalive x 3 = 90 s


def bring_up(gt: Gt, host: SshHost) -> int:
    result = gt.up(host, "--keepalive", LONG_KEEPALIVE)
    assert result.returncode == 0, result.stderr
    return server_pid(host)


def wait_recovered(gt: Gt, host: SshHost, reconnects: int, server: int) -> dict[str, Any]:
    """Up again on a new connection, the same remote server, a Pong through the same address."""
    wait_for(lambda: (s := row(gt))["state"] == "up" and s["reconnects"] >= reconnects, SOONER_THAN_KEEPALIVE, f"reconnect #{reconnects}")
    wait_for(lambda: answers(gt.local()), SOONER_THAN_KEEPALIVE, "a Pong through the same local address")
    status = row(gt)
    assert status["reconnects"] == reconnects and status["local"] == gt.local()
    assert server_pid(host) == server and status["server"]["pid"] == server and status["server_restarts"] == 0
    assert status["last_recovery_s"] is not None and status["last_recovery_s"] > 0
    return status


def test_killed_sshd_connection_recovers_every_time(gt: Gt, ssh_host: SshHost) -> None:
    pid = bring_up_for_faults(gt, ssh_host)
    for round_ in range(1, ROUNDS + 1):
        serving = ssh_host.pids("sshd: gamer")
        assert serving, "no sshd process serves our connection"
        for sshd_pid in serving:
            ssh_host.kill(sshd_pid)
        status = wait_recovered_from_fault(gt, round_)
        assert status["reconnects"] == round_
        assert server_pid(ssh_host) == pid and status["server"]["pid"] == pid
        assert status["server_restarts"] == 0


def test_pause_beyond_keepalive_budget_then_unpause(gt: Gt, ssh_host: SshHost) -> None:
    pid = bring_up_for_faults(gt, ssh_host)
    for round_ in range(1, ROUNDS + 1):
        ssh_host.pause()
        wait_for(lambda: row(gt)["state"] == "reconnecting", 15, "the silent link to be noticed (keepalive x 3)")
        assert not answers(gt.local())  # the listener stays, but nothing answers through it
        ssh_host.unpause()
        status = wait_recovered_from_fault(gt, round_)
        assert server_pid(ssh_host) == pid and status["server_restarts"] == 0


def test_network_disconnect_and_reconnect(gt: Gt, host_factory) -> None:  # type: ignore[no-untyped-def]
    host = host_factory(own_network=True)
    pid = bring_up_for_faults(gt, host)
    for round_ in range(1, ROUNDS + 1):
        host.disconnect()
        wait_for(lambda: row(gt)["state"] == "reconnecting", 15, "the partition to be noticed")
        host.connect()
        status = wait_recovered_from_fault(gt, round_)
        assert server_pid(host) == pid and status["server_restarts"] == 0


def test_container_restart_restarts_the_dead_server(gt: Gt, ssh_host: SshHost) -> None:
    bring_up_for_faults(gt, ssh_host)
    for round_ in range(1, ROUNDS + 1):
        ssh_host.restart()
        status = wait_recovered_from_fault(gt, round_)
        assert status["server_restarts"] == round_
        assert status["server"]["pid"] == server_pid(ssh_host)


def test_killed_server_is_restarted_over_the_live_link(gt: Gt, ssh_host: SshHost) -> None:
    bring_up_for_faults(gt, ssh_host)
    for round_ in range(1, ROUNDS + 1):
        ssh_host.kill(server_pid(ssh_host))
        wait_for(lambda: row(gt)["server_restarts"] == round_, 30, f"server restart #{round_}")
        wait_for(lambda: answers(gt.local()), 15, "a Pong from the restarted server")
        status = row(gt)
        assert status["reconnects"] == 0 and status["server"]["pid"] == server_pid(ssh_host)


def test_a_wake_check_during_a_bulk_upload_on_a_slow_uplink_keeps_the_link(gt: Gt, slow_uplink: SshHost) -> None:
    local = free_loopback_port()
    result = gt.up(slow_uplink, "--keepalive", "30", "--no-resume", "--local", f"tcp://127.0.0.1:{local}")  # asyncssh's keepalive stays out of it
    assert result.returncode == 0, result.stderr
    bulk = BulkEcho(local)
    try:
        # The queue is full once the sender is far ahead of what came back: the uplink is the bottleneck.
        wait_for(lambda: bulk.sent - bulk.received > 2 * 1024 * 1024 and bulk.received > 0, 60, "the upload to fill the slow uplink's queue")
        before = bulk.received
        check = gt("reconnect", "gaming-pc", timeout=60)
        assert check.returncode == 0, check.stderr
        assert check.stderr.strip() == "gt-remote: gaming-pc: the link was healthy; left it alone"
        status = row(gt)
        assert status["reconnects"] == 0 and status["state"] == "up"
        assert status["last_wake"]["outcome"] == "healthy"
        assert status["last_recovery_s"] > 2.0, "the round trip's answer came within 2 s: the uplink was not slow enough to test this"
        wait_for(lambda: bulk.received > before + 1024 * 1024, 60, "the bulk transfer to go on after the check")
        assert bulk.error is None, bulk.error
    finally:
        bulk.close()


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
    assert answers(gt.local())


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

