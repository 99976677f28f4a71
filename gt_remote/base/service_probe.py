"""Does the laptop's service behind a back tunnel answer? For `doctor` and `up`.

A back tunnel carries a polecat's connections from the gaming PC to a service on the laptop,
the town's Dolt SQL server first of all. When that service is down the tunnel still comes up,
and the polecat sees only a connection that closes: so gt-remote asks the laptop's end itself,
and says in one line what is wrong and what to do.

A TCP connection accepted is all that is known of most services (protocol None). A MySQL-protocol
server (Dolt, MariaDB, MySQL) speaks first: its initial handshake packet, which names the server,
or an error packet when it refuses this client ("Host is blocked", "Too many connections"). So
reading that one packet tells a server that answers from a port held by something else, a
server that refuses, and a listener that is stuck; nothing is sent, and no login is tried.

Stdlib and asyncio only, with the sanitiser for what the far side sends (a version, an error
message): no SSH library, so `doctor` can ask before any SSH connection, and base stays the bottom layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from dataclasses import dataclass

from gt_remote.base.sanitize import visible

PROTOCOLS = ("mysql",)
# What to do when nothing listens, by protocol: the MySQL-protocol preset is the town's Dolt.
START_HINTS = {"mysql": "start the town's Dolt server (gt daemon) or check the port", None: "start the service or check the port"}
MAX_PACKET = 64 * 1024  # a greeting is about 100 bytes, an error packet a few hundred: more is not MySQL
MARIADB_PREFIX = "5.5.5-"  # MariaDB's greeting puts it before its real version, for old replicas
CLOSE_S = 1.0  # at most this long to see our own connection closed


@dataclass(frozen=True)
class ServiceAnswer:
    """Whether the service answers as it should, and one line that says what was seen."""

    answers: bool
    detail: str


class _NoGreeting(Exception):
    """The connection was accepted, but what came back (or did not) is no MySQL greeting."""


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _seconds(timeout: float) -> str:
    return f"{timeout:g} s"


async def probe_service(host: str, port: int, protocol: str | None, timeout: float) -> ServiceAnswer:
    """Connect to host:port and check that the service there answers, within `timeout` seconds
    overall. protocol None: a TCP connection accepted is an answer. "mysql": the server's first
    packet must be a MySQL handshake (protocol version 10). The connection is closed in every case."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: one of {', '.join(PROTOCOLS)}, or None")
    where = _address(host, port)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return ServiceAnswer(False, f"{where} did not accept a connection within {_seconds(timeout)}")
    except ConnectionRefusedError:
        return ServiceAnswer(False, f"nothing listens on {where} (connection refused): {START_HINTS[protocol]}")
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "") or type(exc).__name__
        return ServiceAnswer(False, f"cannot connect to {where}: {visible(str(reason))}")
    try:
        if protocol is None:
            return ServiceAnswer(True, f"{where} accepts connections")
        try:
            return _read_greeting(where, await _first_packet(reader, where, deadline - loop.time(), timeout))
        except _NoGreeting as exc:
            return ServiceAnswer(False, str(exc))
    finally:
        await _close(writer)


async def _first_packet(reader: asyncio.StreamReader, where: str, remaining: float, timeout: float) -> bytes:
    """The payload of the server's first packet: 3 bytes of length (little-endian), a sequence
    id of 0, then the payload. Raises _NoGreeting with the reason when there is no such packet."""
    try:
        async with asyncio.timeout(max(remaining, 0.0)):
            try:
                header = await reader.readexactly(4)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise _NoGreeting(f"{where} accepted but closed the connection after {visible(repr(exc.partial))[1:]}, not a MySQL greeting") from None
                raise _NoGreeting(f"{where} accepted but closed the connection without a MySQL greeting") from None
            length, sequence = int.from_bytes(header[:3], "little"), header[3]
            if sequence != 0 or not 0 < length <= MAX_PACKET:
                raise _NoGreeting(f"{where} accepted but sent {visible(repr(header))[1:]}..., not a MySQL greeting: another program may hold this port")
            try:
                return await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                raise _NoGreeting(f"{where} accepted but closed the connection in the middle of its first packet") from None
    except TimeoutError:
        raise _NoGreeting(f"{where} accepted but sent no MySQL greeting within {_seconds(timeout)}") from None
    except ConnectionError as exc:
        raise _NoGreeting(f"{where} accepted but dropped the connection ({visible(exc.strerror or type(exc).__name__)}) before a MySQL greeting") from None


def _read_greeting(where: str, payload: bytes) -> ServiceAnswer:
    """A handshake (0x0a, the server version NUL-terminated, then more) or an error packet (0xff,
    a 2-byte code, an optional '#' and 5-byte SQL state, the message)."""
    if payload[0] == 0xFF:
        code = int.from_bytes(payload[1:3], "little")
        message = payload[3:]
        if message[:1] == b"#":
            message = message[6:]
        text = visible(message.decode("utf-8", "replace")).strip()
        return ServiceAnswer(False, f"{where} refused the connection: MySQL error {code}: {text}")
    if payload[0] != 10:
        return ServiceAnswer(False, f"{where} sent a packet that is not a MySQL protocol 10 greeting (it starts with 0x{payload[0]:02x})")
    end = payload.find(b"\0", 1)
    if end < 0:
        return ServiceAnswer(False, f"{where} sent a MySQL greeting with no server version")
    version = visible(payload[1:end].decode("utf-8", "replace"))
    if version.startswith(MARIADB_PREFIX) and "MariaDB" in version:
        version = version[len(MARIADB_PREFIX) :]
    return ServiceAnswer(True, f"MySQL protocol 10, server {version}")


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close our end and wait for it, briefly: a peer that vanished cannot hold the probe up."""
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), CLOSE_S)
