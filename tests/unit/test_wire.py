"""The ccmux wire: Ping/Pong bytes, ServerStatus, the handshake, clean failures; and the decoders
fuzzed: any bytes answer or raise PingFailed, any payload decodes or is refused, an oversized
frame is refused before it is read."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gt_remote.base.addresses import UnixAddress
from gt_remote.base.errors import PingFailed
from gt_remote.ccmux import wire
from tests.reaper import short_tempdir
from tests.testbed import STANDIN, free_loopback_port, wait_for
from tests.unit.strategies import FUZZ

# --- the wire frame reader (ccmux Ping through the tunnel) ----------------------------------


class _Sink:
    def write(self, data: bytes) -> None:
        pass


def _frames(payloads: list[bytes]) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in payloads)


WIRE_BYTES = st.one_of(
    st.binary(max_size=256),
    st.lists(st.binary(max_size=64), max_size=5).map(_frames),  # well-framed, odd variants
    st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=64)).map(lambda t: t[0].to_bytes(4, "big") + t[1]),  # any length field
)


@pytest.fixture
def standin() -> Iterator[tuple[int, Path]]:
    runtime = short_tempdir("gtr-wire-")
    port = free_loopback_port()
    proc = subprocess.Popen([sys.executable, str(STANDIN), "--listen-tcp", f"127.0.0.1:{port}"], env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}, stderr=subprocess.PIPE, text=True)
    socket_path = runtime / "ccmux" / "ccmux.sock"
    wait_for(socket_path.exists, 10, "the stand-in's socket")
    assert proc.stderr is not None
    for line in proc.stderr:  # until it logs its TCP listener, bound after the socket
        if "listening on tcp" in line:
            break
    yield port, socket_path
    proc.terminate()  # the process this fixture started
    proc.wait(10)


async def exchange(port: int, frame: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(frame)
    payload = await wire.read_frame(reader)
    writer.close()
    return payload


@FUZZ
@given(data=WIRE_BYTES)
def test_ping_on_any_bytes_answers_or_raises_ping_failed(data: bytes) -> None:
    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        try:
            rtt = await wire.ping(reader, _Sink(), timeout=1.0)
        except PingFailed:
            return
        assert rtt >= 0 and wire.PONG_VARIANT.to_bytes(4, "little") in data

    asyncio.run(run())


@FUZZ
@given(payload=st.binary(max_size=64))
def test_server_status_decoder_takes_any_payload(payload: bytes) -> None:
    try:
        status = wire.decode_server_status(payload)
    except PingFailed:
        return
    assert len(payload) == 47 and status.commit_seq >= 0


def test_a_frame_over_the_limit_is_refused_before_it_is_read() -> None:
    """A 4 GiB length field: refused from the header, nothing buffered for it."""
    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data((2**32 - 1).to_bytes(4, "big"))
        with pytest.raises(PingFailed, match="over the 16 MiB limit"):
            await wire.read_frame(reader)

    asyncio.run(run())


def test_ping_pong_bytes(standin: tuple[int, Path]) -> None:
    port, _ = standin
    assert wire.PING == bytes.fromhex("0000000411000000")
    assert asyncio.run(exchange(port, wire.PING)) == bytes.fromhex("11000000")


def test_ping_over_unix_socket(standin: tuple[int, Path]) -> None:
    _, path = standin
    assert asyncio.run(wire.ping_address(UnixAddress(str(path)))) > 0


def test_server_status_layout(standin: tuple[int, Path]) -> None:
    port, _ = standin
    payload = asyncio.run(exchange(port, wire.GET_SERVER_STATUS))
    assert len(payload) == 47
    status = wire.decode_server_status(payload)
    assert status.client_count == 1 and status.wal_healthy


def test_connect_handshake(standin: tuple[int, Path]) -> None:
    port, _ = standin
    body = struct.pack("<I", 0) + struct.pack("<Q", 16) + bytes(16) + struct.pack("<II", 1, 3)
    payload = asyncio.run(exchange(port, struct.pack(">I", len(body)) + body))
    variant, length = struct.unpack_from("<IQ", payload)
    assert variant == 0 and payload[12:12 + length] == b"0.1.1"


def test_ping_to_a_non_ccmux_port_fails_cleanly() -> None:
    async def scenario() -> None:
        held: list[asyncio.StreamWriter] = []  # a writer nobody holds is closed when collected (3.13)
        server = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await wire.ping_address(wire.TcpAddress("127.0.0.1", port), timeout=0.5)
        finally:
            server.close()

    with pytest.raises(PingFailed, match="no Pong"):
        asyncio.run(scenario())


def test_ping_to_a_closed_port_fails_cleanly() -> None:
    with pytest.raises(PingFailed, match="nothing listens at tcp:"):
        asyncio.run(wire.ping_address(wire.TcpAddress("127.0.0.1", free_loopback_port()), timeout=1))

