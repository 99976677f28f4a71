"""The stdio transport's bridge (`relay_agent.py --mux`), run as the remote runs it: the built
file under Python 3.8, its stdin and stdout pipes speaking the multiplexer's frames (the
sans-IO gt_remote/protocol/mux.py at this end, as the laptop's), to real sockets. No SSH:
what sshd adds is a pipe."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gt_remote.protocol import mux
from tests.helpers import PYTHON_38, agent_file
from tests.reaper import short_tempdir


class Bridge:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([str(PYTHON_38), str(agent_file()), "--mux"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.end = mux.MuxEnd()
        self.buffer = b""
        assert self.proc.stdout is not None
        magic = self.proc.stdout.read(len(mux.MUX_MAGIC))
        assert magic == mux.MUX_MAGIC, magic

    def send(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.end.take_out())
        self.proc.stdin.flush()

    def events(self, wait: float = 10.0) -> list[tuple[Any, ...]]:
        """The next batch of events; [] if the bridge says nothing within `wait` s."""
        assert self.proc.stdout is not None
        while True:
            readable, _, _ = select.select([self.proc.stdout], [], [], wait)
            if not readable:
                return []
            data = os.read(self.proc.stdout.fileno(), 65536)
            assert data, "the bridge ended"
            found = self.end.feed(data)
            self.send()  # credit the end gave back
            if found:
                return found

    def until(self, kind: str) -> list[tuple[Any, ...]]:
        seen: list[tuple[Any, ...]] = []
        while not any(event[0] == kind for event in seen):
            more = self.events()
            assert more, f"no {kind} from the bridge within 10 s"
            seen += more
        return seen

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    assert PYTHON_38.exists(), f"{PYTHON_38} is missing: the bridge must be tested under the oldest Python the relay claims"
    started = Bridge()
    try:
        yield started
    finally:
        started.close()


def greeter(family: int = socket.AF_INET, path: str | None = None, greeting: bytes = b"hello from the server") -> tuple[socket.socket, Any]:
    """A server that speaks first, as a MySQL server does: its greeting comes before any request."""
    listener = socket.socket(family)
    listener.bind(path if path else ("127.0.0.1", 0))
    listener.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.sendall(greeting)
            threading.Thread(target=lambda c=conn: (c.recv(1 << 20), c.close()), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()


def test_a_server_that_speaks_first_is_heard_after_the_open_and_only_then(bridge: Bridge) -> None:
    """The bridge checks whose socket answered a port before a byte goes to the laptop: the
    greeting comes after R, whole, every time (on 3.8 to 3.10 a pause in connection_made is lost)."""
    listener, (_, port) = greeter()
    with listener:
        for _ in range(20):
            channel = bridge.end.open({"tcp": port})
            bridge.send()
            events = bridge.until("data")
            kinds = [event[0] for event in events if event[1] == channel]
            assert kinds[0] == "opened", kinds
            data = b"".join(event[2] for event in events if event[0] == "data" and event[1] == channel)
            while len(data) < len(b"hello from the server"):
                data += b"".join(event[2] for event in bridge.events() if event[0] == "data" and event[1] == channel)
            assert data == b"hello from the server"
            bridge.end.close(channel)
            bridge.send()


def test_a_unix_socket_target_and_a_failed_open(bridge: Bridge) -> None:
    directory = str(short_tempdir("gtr-mux-"))
    path = os.path.join(directory, "s")
    listener, _ = greeter(socket.AF_UNIX, path, b"unix hello")
    with listener:
        channel = bridge.end.open({"unix": path})
        bridge.send()
        events = bridge.until("data")
        assert events[0][:2] == ("opened", channel)
        missing = bridge.end.open({"unix": os.path.join(directory, "none")})
        bridge.send()
        failed = [event for event in bridge.until("failed") if event[0] == "failed"]
        assert failed[0][1] == missing and "No such file" in failed[0][2]


def test_a_close_after_a_large_write_delivers_every_byte_and_the_end(bridge: Bridge) -> None:
    """As an SSH channel's close: 2 MiB written (twice the credit), its end, then the close:
    the server gets all of it, then EOF; nothing is cut off at the window."""
    received = bytearray()
    done = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        while chunk := conn.recv(1 << 20):
            received.extend(chunk)
        done.set()
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    with listener:
        channel = bridge.end.open({"tcp": listener.getsockname()[1]})
        bridge.send()
        bridge.until("opened")
        payload = os.urandom(2 * mux.MUX_WINDOW)
        assert not bridge.end.send(channel, payload), "more than the credit: some waits"
        bridge.end.send_eof(channel)
        bridge.end.close(channel)
        bridge.send()
        deadline = time.monotonic() + 30
        while not done.is_set():  # credit goes back and forth until the server has its end
            assert time.monotonic() < deadline, f"the server got {len(received)} of {len(payload)} bytes and no end within 30 s"
            bridge.events(wait=0.1)
        assert bytes(received) == payload
