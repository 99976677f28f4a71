"""Liveness counts every byte received, so a bulk transfer on a slow uplink is never a dead link.

The laptop reaches the container's sshd through a TCP proxy in this test that passes the
uplink (laptop -> sshd) at a fixed, slow rate: a "slow uplink". A bulk upload then fills
the queue, and an SSH round trip's answer waits seconds behind it, while the echoed data
keeps arriving. A wake check (`gt-remote reconnect`) must leave that link alone.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gt_remote.ccmux import wire
from tests.conftest import Gt
from tests.testbed import SshHost, free_loopback_port, wait_for

UPLINK_BYTES_PER_S = 256 * 1024
STANDIN_ECHO = 0x7FFF0001  # the stand-in echoes this frame back (its benchmark message)
ECHO_FRAME = struct.pack(">I", 4 + 32 * 1024) + struct.pack("<I", STANDIN_ECHO) + bytes(32 * 1024)
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


def row(gt: Gt) -> dict[str, Any]:
    [status] = gt.status("gaming-pc")
    return status


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


def test_the_echo_frame_is_a_standin_message() -> None:
    """The bulk transfer above rides the stand-in's echo message: a frame of the wire format."""
    assert wire.split_frame(ECHO_FRAME)[:4] == struct.pack("<I", STANDIN_ECHO)
