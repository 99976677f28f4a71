"""A dead or frozen relay, inside the container: new clients still get through, status says so.

Killed: the first new stream that finds no relay has it started at once (one restart for all
the streams waiting) and retries within the hello's time, so no client is closed for it.
Frozen (SIGSTOP): the health check Pings through the relay, sees it fail while the server
answers directly, shows it in status and replaces the relay.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from gt_remote.ccmux import wire
from tests.conftest import Gt
from tests.helpers import answers
from tests.testbed import SshHost, free_loopback_port, wait_for

CLIENTS = 12
OVER_S = 3.0


def relay_pids(host: SshHost) -> list[int]:
    return host.pids("relay_agent.py --socket")


def row(gt: Gt) -> dict[str, Any]:
    [status] = gt.status("gaming-pc")
    return status


def bring_up(gt: Gt, host: SshHost, keepalive: str) -> int:
    """Up with resumable streams on a local port of its own; the local port."""
    port = free_loopback_port()
    result = gt.up(host, "--keepalive", keepalive, "--local", f"tcp://127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    assert row(gt)["resumable"] is True
    return port


def ping_once(port: int) -> str:
    """'pong', or what went wrong: an EOF, a reset, a timeout."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(wire.PING)
            data = b""
            while len(data) < 8:
                chunk = client.recv(8 - len(data))
                if not chunk:
                    return f"EOF after {len(data)} bytes"
                data += chunk
            return "pong" if data == wire.PING else f"not a Pong: {data.hex()}"
    except OSError as exc:
        return repr(exc)


def test_new_clients_after_a_relay_kill_all_get_their_pong(gt: Gt, ssh_host: SshHost) -> None:
    port = bring_up(gt, ssh_host, keepalive="30")  # the health loop stays out of it: the streams do it
    [pid] = relay_pids(ssh_host)
    ssh_host.kill(pid)
    wait_for(lambda: relay_pids(ssh_host) == [], 10, "the killed relay to be gone")
    results: list[str] = [""] * CLIENTS
    started = time.monotonic()

    def client(index: int) -> None:
        time.sleep(max(0.0, started + index * OVER_S / CLIENTS - time.monotonic()))  # the schedule: spread over 3 s
        results[index] = ping_once(port)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == ["pong"] * CLIENTS, results
    status = row(gt)
    assert status["relay_restarts"] == 1, status
    assert "a new stream found no relay" in status["last_relay_death"]["cause"], status["last_relay_death"]
    assert len(relay_pids(ssh_host)) == 1 and status["state"] == "up" and status["last_error"] is None
    shown = gt("status", "gaming-pc").stdout
    assert "relay       restarted 1 time(s), last at " in shown and ": a new stream found no relay" in shown, shown


def test_a_frozen_relay_shows_in_status_and_is_replaced(gt: Gt, ssh_host: SshHost) -> None:
    port = bring_up(gt, ssh_host, keepalive="1")
    [pid] = relay_pids(ssh_host)
    ssh_host.kill(pid, "STOP")
    status = wait_for(lambda: (s := row(gt))["relay_error"] and s, 30, "the frozen relay to show in status")
    assert "Pong" in status["relay_error"], status["relay_error"]
    status = wait_for(lambda: (s := row(gt))["relay_restarts"] == 1 and s, 60, "the frozen relay to be replaced")
    assert "the relay stopped answering" in status["last_relay_death"]["cause"], status["last_relay_death"]
    wait_for(lambda: len(pids := relay_pids(ssh_host)) == 1 and pid not in pids, 15, "one new relay, the frozen one gone")
    wait_for(lambda: answers(f"tcp://127.0.0.1:{port}"), 15, "a Pong through the new relay")
    wait_for(lambda: row(gt)["relay_error"] is None, 15, "status to clear the relay error")
    assert row(gt)["server_restarts"] == 0
