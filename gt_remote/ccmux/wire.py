"""The ccmux/fugue wire protocol, as much as health checks and the tests need.

Frame: 4-byte big-endian length, then a bincode-1 payload whose first field is the u32
(little-endian) variant index. Ping needs no handshake and is answered by a Pong.

The codec below (sans-IO: payload bytes in, a Message out, and back) covers the messages
gt-remote and its stand-in exchange. It is checked frame by frame against frames made by
ccmux's own codec (shared/ccmux-golden-frames.json), so it cannot drift from the real one.
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from gt_remote.base.addresses import Address, TcpAddress
from gt_remote.base.errors import NothingListens, PingFailed

MAX_PAYLOAD = 16 * 1024 * 1024
PING = struct.pack(">I", 4) + struct.pack("<I", 17)
GET_SERVER_STATUS = struct.pack(">I", 4) + struct.pack("<I", 15)
PONG_VARIANT = 17
SERVER_STATUS_VARIANT = 1
PROTOCOL_VERSION = 1

# Variant indexes, as ccmux's enums number them (ccmux-protocol, messages.rs).
CLIENT_VARIANTS = {"Connect": 0, "ListSessions": 1, "GetServerStatus": 15, "Ping": 17}
SERVER_VARIANTS = {"Connected": 0, "ServerStatus": 1, "SessionList": 4, "Error": 16, "Pong": 17}
CLIENT_TYPES = ("Tui", "Mcp", "Compat", "Unknown")
ERROR_CODES = (
    "SessionNotFound",
    "WindowNotFound",
    "PaneNotFound",
    "InvalidOperation",
    "ProtocolMismatch",
    "InternalError",
    "NotAwaitingInput",
    "NoRepository",
    "NoRecipients",
    "SessionNameExists",
    "UserPriorityActive",
)
ERROR_DETAILS = ("HumanControl",)  # ErrorDetails::HumanControl { remaining_ms: u64 }


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


# --- the codec ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One decoded message: its variant name and its fields, named as ccmux names them."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)


class _Cursor:
    """Reads bincode-1 values (fixed-width little-endian) from a payload, checking its length."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.at = 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.payload):
            raise _malformed(f"the payload ends inside a field ({len(self.payload)} bytes)")
        values = struct.unpack_from(fmt, self.payload, self.at)
        self.at += size
        return values[0] if len(values) == 1 else values

    def raw(self) -> bytes:
        length = self.take("<Q")
        if self.at + length > len(self.payload):
            raise _malformed(f"a {length}-byte field runs past the payload")
        data = self.payload[self.at : self.at + length]
        self.at += length
        return data

    def text(self) -> str:
        try:
            return self.raw().decode()
        except UnicodeDecodeError:
            raise _malformed("a string is not UTF-8") from None

    def named(self, names: tuple[str, ...], what: str) -> str:
        index = self.take("<I")
        if index >= len(names):
            raise _malformed(f"unknown {what} #{index}")
        return names[index]

    def done(self, name: str) -> None:
        if self.at != len(self.payload):
            raise _malformed(f"{len(self.payload) - self.at} bytes left over after {name}")


def _malformed(reason: str) -> PingFailed:
    return PingFailed(f"malformed ccmux message: {reason}", "is this a ccmux server of protocol version 1?")


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _framed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def split_frame(data: bytes) -> bytes:
    """The payload of one whole frame (length prefix included in `data`)."""
    if len(data) < 4:
        raise _malformed("shorter than a length prefix")
    (length,) = struct.unpack_from(">I", data)
    if length > MAX_PAYLOAD or len(data) != 4 + length:
        raise _malformed(f"the prefix says {length} bytes, the frame holds {len(data) - 4}")
    return data[4:]


def decode_client_message(payload: bytes) -> Message:
    """A client -> server payload (what the stand-in and a real server read)."""
    cursor = _Cursor(payload)
    name = _variant_name(cursor.take("<I"), CLIENT_VARIANTS)
    fields: dict[str, Any] = {}
    if name == "Connect":
        client_id = cursor.raw()
        if len(client_id) != 16:
            raise _malformed(f"a client_id of {len(client_id)} bytes, not 16")
        fields = {"client_id": str(uuid.UUID(bytes=client_id)), "protocol_version": cursor.take("<I"), "client_type": cursor.named(CLIENT_TYPES, "client type")}
    cursor.done(name)
    return Message(name, fields)


def decode_server_message(payload: bytes) -> Message:
    """A server -> client payload (what gt-remote and a real client read)."""
    cursor = _Cursor(payload)
    name = _variant_name(cursor.take("<I"), SERVER_VARIANTS)
    fields: dict[str, Any] = {}
    if name == "Connected":
        fields = {"server_version": cursor.text(), "protocol_version": cursor.take("<I")}
    elif name == "ServerStatus":
        status = decode_server_status(payload)
        cursor.at = len(payload)
        fields = {
            "commit_seq": status.commit_seq,
            "client_count": status.client_count,
            "session_count": status.session_count,
            "replay_range": list(status.replay_range),
            "wal_healthy": status.wal_healthy,
            "checkpoint_healthy": status.checkpoint_healthy,
            "human_control_active": status.human_control_active,
        }
    elif name == "SessionList":
        if cursor.take("<Q") != 0:
            raise _malformed("a SessionList with sessions (not decoded here)")
        fields = {"sessions": []}
    elif name == "Error":
        code_index = cursor.take("<I")
        if code_index >= len(ERROR_CODES):
            raise _malformed(f"unknown error code #{code_index}")
        fields = {"code": ERROR_CODES[code_index], "code_index": code_index, "message": cursor.text(), "details": _details(cursor)}
    cursor.done(name)
    return Message(name, fields)


def _details(cursor: _Cursor) -> dict[str, Any] | None:
    tag = cursor.take("<B")
    if tag == 0:
        return None
    if tag != 1:
        raise _malformed(f"an Option tag of {tag}")
    kind = cursor.named(ERROR_DETAILS, "error detail")
    return {kind: {"remaining_ms": cursor.take("<Q")}}


def _variant_name(index: int, variants: dict[str, int]) -> str:
    for name, number in variants.items():
        if number == index:
            return name
    raise _malformed(f"unknown message variant {index}")


def encode_client_message(message: Message) -> bytes:
    """The whole frame (length prefix included) for a client -> server message."""
    payload = struct.pack("<I", CLIENT_VARIANTS[message.name])
    if message.name == "Connect":
        fields = message.fields
        payload += struct.pack("<Q", 16) + uuid.UUID(fields["client_id"]).bytes
        payload += struct.pack("<II", fields["protocol_version"], CLIENT_TYPES.index(fields["client_type"]))
    return _framed(payload)


def encode_server_message(message: Message) -> bytes:
    """The whole frame (length prefix included) for a server -> client message."""
    fields = message.fields
    payload = struct.pack("<I", SERVER_VARIANTS[message.name])
    if message.name == "Connected":
        payload += _string(fields["server_version"]) + struct.pack("<I", fields["protocol_version"])
    elif message.name == "ServerStatus":
        low, high = fields["replay_range"]
        payload += struct.pack(
            "<QQQQQ???", fields["commit_seq"], fields["client_count"], fields["session_count"], low, high, fields["wal_healthy"], fields["checkpoint_healthy"], fields["human_control_active"]
        )
    elif message.name == "SessionList":
        if fields.get("sessions"):
            raise ValueError("encoding sessions is not supported")
        payload += struct.pack("<Q", 0)
    elif message.name == "Error":
        payload += struct.pack("<I", ERROR_CODES.index(fields["code"])) + _string(fields["message"])
        details = fields.get("details")
        if details is None:
            payload += b"\x00"
        else:
            [(kind, body)] = details.items()
            payload += b"\x01" + struct.pack("<IQ", ERROR_DETAILS.index(kind), body["remaining_ms"])
    return _framed(payload)
