"""The laptop-side service probe (gt_remote/base/service_probe.py) against tiny servers of the
test's own on loopback: a handcrafted MySQL greeting, error packet, silence, another protocol.
tests/e2e/test_laptop_mariadb.py probes a real mariadbd."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import pytest

from gt_remote.base.service_probe import ServiceAnswer, probe_service

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
DOLT_HINT = "start the town's Dolt server (gt daemon) or check the port"


def packet(payload: bytes, sequence: int = 0) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([sequence]) + payload


def greeting(version: bytes) -> bytes:
    """A protocol 10 handshake as a server sends it: version, connection id, salt, capabilities..."""
    return packet(b"\x0a" + version + b"\x00" + (42).to_bytes(4, "little") + b"abcdefgh\x00" + b"\xff\xf7\x08\x02\x00\xff\x81\x15" + bytes(10) + b"ijklmnopqrst\x00mysql_native_password\x00")


def error_packet(code: int, message: bytes, state: bytes | None = None) -> bytes:
    return packet(b"\xff" + code.to_bytes(2, "little") + (b"#" + state if state else b"") + message)


class Fake:
    """A loopback server running one behaviour per connection; it notes each connection the
    client closed (EOF seen after the behaviour), so a test can check the probe closed its own."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.closed_by_client = 0
        self.port = 0
        self.done = asyncio.Event()  # a connection's handler has finished

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.behaviour(reader, writer)
            if not writer.is_closing():
                await writer.drain()
                if await asyncio.wait_for(reader.read(), 10) == b"":
                    self.closed_by_client += 1
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            self.done.set()


@asynccontextmanager
async def serving(behaviour: Behaviour) -> AsyncIterator[Fake]:
    fake = Fake(behaviour)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    fake.port = server.sockets[0].getsockname()[1]
    async with server:
        yield fake


def sends(*chunks: bytes) -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()

    return behaviour


async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


def sends_then_hangs_up(data: bytes) -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()

    return behaviour


def probe_fake(behaviour: Behaviour, protocol: str | None = "mysql", timeout: float = 5.0) -> tuple[ServiceAnswer, Fake]:
    async def scenario() -> tuple[ServiceAnswer, Fake]:
        async with serving(behaviour) as fake:
            answer = await probe_service("127.0.0.1", fake.port, protocol, timeout)
            await asyncio.wait_for(fake.done.wait(), 10)  # the handler saw the probe's close, or hung up itself
            return answer, fake

    return asyncio.run(scenario())


def test_mariadb_greeting_names_the_server_without_its_replication_prefix() -> None:
    answer, fake = probe_fake(sends(greeting(b"5.5.5-10.11.19-MariaDB-0+deb12u1")))
    assert answer == ServiceAnswer(True, "MySQL protocol 10, server 10.11.19-MariaDB-0+deb12u1")
    assert fake.closed_by_client == 1, "the probe left its connection open"


def test_dolt_greeting_names_its_version() -> None:
    answer, _ = probe_fake(sends(greeting(b"8.0.33")))
    assert answer == ServiceAnswer(True, "MySQL protocol 10, server 8.0.33")


def test_greeting_in_pieces_is_read_whole() -> None:
    whole = greeting(b"8.0.33")
    answer, _ = probe_fake(sends(whole[:2], whole[2:7], whole[7:]))
    assert answer.answers, answer.detail


def test_error_packet_before_the_handshake_is_a_refusal_with_its_message() -> None:
    message = b"Host '127.0.0.1' is blocked because of many connection errors; unblock with 'mariadb-admin flush-hosts'"
    answer, fake = probe_fake(sends(error_packet(1129, message)))
    assert not answer.answers
    assert answer.detail == f"127.0.0.1:{fake.port} refused the connection: MySQL error 1129: {message.decode()}"
    assert fake.closed_by_client == 1


def test_error_packet_with_sql_state_drops_the_state() -> None:
    answer, _ = probe_fake(sends(error_packet(1040, b"Too many connections", b"08004")))
    assert not answer.answers
    assert answer.detail.endswith("refused the connection: MySQL error 1040: Too many connections")


def test_silence_fails_at_the_timeout_and_closes() -> None:
    started = time.monotonic()
    answer, fake = probe_fake(sends(), timeout=0.3)
    took = time.monotonic() - started
    assert answer == ServiceAnswer(False, f"127.0.0.1:{fake.port} accepted but sent no MySQL greeting within 0.3 s")
    assert took < 10, f"the probe took {took:.1f} s for a 0.3 s timeout"
    assert fake.closed_by_client == 1, "the probe left its connection open"


def test_a_listener_that_hangs_up_is_named() -> None:
    answer, fake = probe_fake(hangs_up)
    assert answer == ServiceAnswer(False, f"127.0.0.1:{fake.port} accepted but closed the connection without a MySQL greeting")


def test_another_protocol_on_the_port_is_no_greeting() -> None:
    answer, fake = probe_fake(sends(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"))
    assert not answer.answers
    assert answer.detail.startswith(f"127.0.0.1:{fake.port} accepted but sent 'SSH-'")
    assert "not a MySQL greeting" in answer.detail
    assert fake.closed_by_client == 1


def test_a_packet_cut_short_is_named() -> None:
    cut = greeting(b"8.0.33")[:20]
    stalled, fake = probe_fake(sends(cut), timeout=0.3)
    assert stalled == ServiceAnswer(False, f"127.0.0.1:{fake.port} accepted but sent no MySQL greeting within 0.3 s")
    assert fake.closed_by_client == 1
    closed, fake = probe_fake(sends_then_hangs_up(cut))
    assert closed == ServiceAnswer(False, f"127.0.0.1:{fake.port} accepted but closed the connection in the middle of its first packet")


def test_an_old_protocol_version_is_not_an_answer() -> None:
    answer, fake = probe_fake(sends(packet(b"\x09" + b"3.23.58\x00")))
    assert answer == ServiceAnswer(False, f"127.0.0.1:{fake.port} sent a packet that is not a MySQL protocol 10 greeting (it starts with 0x09)")


def test_control_characters_in_the_version_are_shown_as_escapes() -> None:
    answer, _ = probe_fake(sends(greeting(b"8.0\x1b]0;owned\x07")))
    assert answer.answers
    assert "\x1b" not in answer.detail and "\x07" not in answer.detail
    assert "\\x1b]0;owned\\x07" in answer.detail


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound by this test and not listening: connecting to it is refused."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def test_nothing_listening_names_the_dolt_server(refusing_port: int) -> None:
    answer = asyncio.run(probe_service("127.0.0.1", refusing_port, "mysql", 2))
    assert answer == ServiceAnswer(False, f"nothing listens on 127.0.0.1:{refusing_port} (connection refused): {DOLT_HINT}")


def test_without_a_protocol_an_accepted_connection_answers(refusing_port: int) -> None:
    answer, fake = probe_fake(sends(), protocol=None)
    assert answer == ServiceAnswer(True, f"127.0.0.1:{fake.port} accepts connections")
    refused = asyncio.run(probe_service("127.0.0.1", refusing_port, None, 2))
    assert refused == ServiceAnswer(False, f"nothing listens on 127.0.0.1:{refusing_port} (connection refused): start the service or check the port")


def test_an_unknown_protocol_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown protocol 'redis'"):
        asyncio.run(probe_service("127.0.0.1", 1, "redis", 1))
