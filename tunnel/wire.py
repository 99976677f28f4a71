"""The ccmux/fugue wire protocol, as much as health checks need.

Frame: 4-byte big-endian length, then a bincode-1 payload whose first field is the u32
(little-endian) variant index. Ping needs no handshake and is answered by a Pong.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass
from typing import Protocol

from gt_remote.base.addresses import Address, TcpAddress
from gt_remote.base.errors import NothingListens, PingFailed

MAX_PAYLOAD = 16 * 1024 * 1024
PING = struct.pack(">I", 4) + struct.pack("<I", 17)
GET_SERVER_STATUS = struct.pack(">I", 4) + struct.pack("<I", 15)
PONG_VARIANT = 17
SERVER_STATUS_VARIANT = 1


class NoPong(PingFailed):
    """Connected, and nothing came back in time: a hung or overloaded server, not another program."""


class FrameReader(Protocol):
    """asyncio's StreamReader or asyncssh's SSHReader (without importing asyncssh here)."""

    async def readexactly(self, n: int) -> bytes: ...


class FrameWriter(Protocol):
    def write(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class ServerStatus:
    commit_seq: int
    client_count: int
    session_count: int
    replay_range: tuple[int, int]
    wal_healthy: bool
    checkpoint_healthy: bool
    human_control_active: bool


async def read_frame(reader: FrameReader) -> bytes:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    if length > MAX_PAYLOAD:
        raise PingFailed(f"server sent a {length}-byte frame, over the 16 MiB limit", "is this port really a ccmux server?")
    return await reader.readexactly(length)


def variant_of(payload: bytes) -> int:
    if len(payload) < 4:
        raise PingFailed("server sent a frame too short to hold a message", "is this port really a ccmux server?")
    return struct.unpack_from("<I", payload)[0]


async def _await_variant(reader: FrameReader, wanted: int) -> bytes:
    """Skip broadcasts that may arrive first; return the first frame of the wanted variant."""
    while True:
        payload = await read_frame(reader)
        if variant_of(payload) == wanted:
            return payload


async def ping(reader: FrameReader, writer: FrameWriter, timeout: float) -> float:
    """Send a Ping on an open stream; return the round trip in seconds."""
    started = time.perf_counter()
    writer.write(PING)
    try:
        await asyncio.wait_for(_await_variant(reader, PONG_VARIANT), timeout)
    except TimeoutError:
        raise NoPong(f"no Pong within {timeout:g} s", "the server is busy or not a ccmux server") from None
    except asyncio.IncompleteReadError:
        raise PingFailed("the connection was closed before a Pong came", "the server, or what carries the connection to it, is not answering") from None
    except (ConnectionError, OSError) as exc:
        raise PingFailed(f"the connection failed before a Pong came ({exc.strerror or 'reset'})", "the server, or what carries the connection to it, is not answering") from None
    return time.perf_counter() - started


def decode_server_status(payload: bytes) -> ServerStatus:
    if variant_of(payload) != SERVER_STATUS_VARIANT or len(payload) != 47:
        raise PingFailed(f"not a ServerStatus reply ({len(payload)} bytes)", "is this a ccmux server of protocol version 1?")
    commit, clients, sessions, low, high, wal, checkpoint, human = struct.unpack_from("<QQQQQ???", payload, 4)
    return ServerStatus(commit, clients, sessions, (low, high), wal, checkpoint, human)


async def server_status(reader: FrameReader, writer: FrameWriter, timeout: float) -> ServerStatus:
    writer.write(GET_SERVER_STATUS)
    payload = await asyncio.wait_for(_await_variant(reader, SERVER_STATUS_VARIANT), timeout)
    return decode_server_status(payload)


async def open_address(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if isinstance(address, TcpAddress):
        return await asyncio.open_connection(address.host, address.port)
    return await asyncio.open_unix_connection(address.path)


async def ping_address(address: Address, timeout: float = 5.0) -> float:
    """Ping a ccmux server at a local address, end to end; return the round trip in seconds."""
    try:
        reader, writer = await asyncio.wait_for(open_address(address), timeout)
    except (ConnectionRefusedError, FileNotFoundError):
        raise NothingListens(f"nothing listens at {address.url}", "is the tunnel up? see `gt-remote status`") from None
    except (TimeoutError, OSError) as exc:
        raise PingFailed(f"cannot connect to {address.url}: {exc or 'timed out'}", "is the tunnel up? see `gt-remote status`") from None
    try:
        return await ping(reader, writer, timeout)
    finally:
        writer.close()
