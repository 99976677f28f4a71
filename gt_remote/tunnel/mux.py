"""The stdio transport at the laptop: channels to the remote's Unix sockets (the relay's) and
loopback ports, carried over one exec channel's stdin and stdout, for SSH servers that run
commands but forward nothing (Dropbear, OpenSSH with `DisableForwarding yes`).

The remote end is the relay's bridge (`relay_agent.py --mux`); the multiplexing itself is
the sans-IO gt_remote/protocol/mux.py, written once for both ends. A virtual channel here
behaves as an asyncssh channel does towards its session (`connection_made`,
`data_received`, `eof_received`, `pause_writing`/`resume_writing`, `connection_lost`), so the
stream code and the forwarder use it unchanged: `opener(conn)` gives them the SSH connection
itself, or the stdio transport that stands in for its forwarding.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from gt_remote.protocol.frames import FrameError
from gt_remote.protocol.mux import MUX_MAGIC, MuxEnd

log = logging.getLogger(__name__)

START_TIMEOUT = 15.0  # the bridge's first line, through a login shell and a python3 start
OPEN_TIMEOUT = 15.0
NOISE_CAP = 1024 * 1024  # what a login shell may print before the bridge's first line


class MuxUnavailable(ConnectionError):
    """The stdio transport could not start, or has ended: no channel goes through it."""


class BridgeFailed(ConnectionError):
    """An exec bridge could not reach the server (gt_remote/remote/bridge.py); the reason says why."""


class VirtualChannel:
    """One channel through the bridge, as its session sees an SSH channel."""

    def __init__(self, mux: StdioMux, channel: int, session: Any) -> None:
        self.mux = mux
        self.id = channel
        self.session = session
        self.closed = False
        self.write_paused = False
        self.read_paused = False
        self.held = 0  # bytes delivered while reading was paused: credited on resume
        self._closed = asyncio.Event()

    # --- what a session calls ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        whole = self.mux.end.send(self.id, bytes(data))
        self.mux.flush()
        if not whole and not self.write_paused:
            self.write_paused = True
            self.session.pause_writing()

    def write_eof(self) -> None:
        if not self.closed:
            self.mux.end.send_eof(self.id)
            self.mux.flush()

    def close(self) -> None:
        """As an SSH channel's: what was written (and its end) still goes out, then the close."""
        if not self.closed:
            self.mux.end.close(self.id)
            self.mux.flush()
            self.lost(None)

    def abort(self) -> None:
        """Gone now: what waits for credit is dropped."""
        if not self.closed:
            self.mux.end.abort(self.id)
            self.mux.flush()
            self.lost(None)

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False
        if self.held and not self.closed:
            self.mux.end.took(self.id, self.held, now=True)
            self.held = 0
            self.mux.flush()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Flow control is the multiplexer's per-channel credit: nothing to set."""

    def get_write_buffer_size(self) -> int:
        return self.mux.end.pending_size(self.id)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # --- what the multiplexer calls ---------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        if self.closed:
            return
        self.session.data_received(data, None)
        if self.read_paused:
            self.held += len(data)
        else:
            self.mux.end.took(self.id, len(data))

    def lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.mux.channels.pop(self.id, None)
        self._closed.set()
        asyncio.get_running_loop().call_soon(self.session.connection_lost, exc)


class StreamSession(asyncio.Protocol):
    """A session whose data feeds an asyncio StreamReader: open_unix_connection's here, and an
    exec bridge's (gt_remote/remote/bridge.py), each a (reader, writer) pair for a Ping."""

    def __init__(self) -> None:
        self.reader = asyncio.StreamReader()

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        self.reader.feed_data(data)

    def eof_received(self) -> bool:
        self.reader.feed_eof()
        return True

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.reader.feed_eof()


class StdioMux(asyncssh.SSHClientSession[bytes]):
    """The bridge's exec channel and the virtual channels through it."""

    def __init__(self) -> None:
        self.end = MuxEnd()
        self.channels: dict[int, VirtualChannel] = {}
        self.opening: dict[int, tuple[asyncio.Future[VirtualChannel], Any]] = {}
        self.exec_channel: asyncssh.SSHClientChannel[bytes] | None = None
        self.started = asyncio.get_running_loop().create_future()
        self.noise = bytearray()
        self.marker = b""
        self.ended: str | None = None
        self.stderr_tail = b""

    @classmethod
    async def start(cls, conn: asyncssh.SSHClientConnection, command: str, stdin: bytes, marker: bytes) -> StdioMux:
        """Run the bridge (`command`, its script first on stdin) and wait for its first line;
        MuxUnavailable with what it said otherwise. `marker` ends the login shell's noise."""
        mux = cls()
        mux.marker = marker
        for attempt in (1, 2, 3):  # a refused session request started nothing (Dropbear, with many starting at once)
            try:
                channel, _ = await conn.create_session(lambda: mux, command, encoding=None)
                break
            except asyncssh.ChannelOpenError as exc:
                if exc.code != asyncssh.OPEN_REQUEST_SESSION_FAILED or attempt == 3:
                    raise
                await asyncio.sleep(0.1 * attempt)
        mux.exec_channel = channel
        channel.write(stdin)
        try:
            await asyncio.wait_for(asyncio.shield(mux.started), START_TIMEOUT)
        except BaseException:
            channel.close()
            raise
        return mux

    @property
    def alive(self) -> bool:
        return self.ended is None and self.started.done() and not self.started.exception()

    # --- opening channels, as asyncssh's connection does -------------------------------------

    async def create_unix_connection(self, session_factory: Callable[[], Any], path: str) -> tuple[VirtualChannel, Any]:
        return await self._open({"unix": path}, session_factory)

    async def create_connection(self, session_factory: Callable[[], Any], host: str, port: int) -> tuple[VirtualChannel, Any]:
        return await self._open({"tcp": port}, session_factory)

    async def open_unix_connection(self, path: str) -> tuple[asyncio.StreamReader, VirtualChannel]:
        channel, session = await self._open({"unix": path}, StreamSession)
        return session.reader, channel

    async def open_connection(self, host: str, port: int) -> tuple[asyncio.StreamReader, VirtualChannel]:
        channel, session = await self._open({"tcp": port}, StreamSession)
        return session.reader, channel

    async def _open(self, target: dict[str, Any], session_factory: Callable[[], Any]) -> tuple[VirtualChannel, Any]:
        if not self.alive:
            raise MuxUnavailable(f"the stdio transport has ended ({self.ended or 'not started'})")
        channel_id = self.end.open(target)
        opened: asyncio.Future[VirtualChannel] = asyncio.get_running_loop().create_future()
        session = session_factory()
        self.opening[channel_id] = (opened, session)
        self.flush()
        try:
            channel = await asyncio.wait_for(asyncio.shield(opened), OPEN_TIMEOUT)
        except BaseException:
            self.opening.pop(channel_id, None)
            self.end.close(channel_id)
            self.flush()
            raise
        return channel, session

    def flush(self) -> None:
        data = self.end.take_out()
        if data and self.exec_channel is not None and self.ended is None:
            self.exec_channel.write(data)

    # --- the exec channel's session ----------------------------------------------------------

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self.stderr_tail = (self.stderr_tail + data)[-2048:]
            for line in data.decode(errors="replace").splitlines():
                log.info("stdio transport (remote): %s", line)
            return
        if not self.started.done():
            data = self._past_the_noise(data)
            if not data:
                return
        try:
            events = self.end.feed(data)
        except FrameError as error:
            self._end(f"the bridge's frames are broken: {error}")
            return
        for event in events:
            self._on_event(event)
        self.flush()

    def _past_the_noise(self, data: bytes) -> bytes:
        """Skip what the login shell printed, then the script's marker and the bridge's first line."""
        self.noise += data
        start = self.noise.find(self.marker) if self.marker else 0
        if start >= 0:
            magic_at = self.noise.find(MUX_MAGIC, start)
            if magic_at >= 0:
                rest = bytes(self.noise[magic_at + len(MUX_MAGIC) :])
                self.noise.clear()
                self.started.set_result(None)
                return rest
        if len(self.noise) > NOISE_CAP:
            self._end("the remote login shell printed more than 1 MiB before the bridge started")
        return b""

    def _on_event(self, event: tuple[Any, ...]) -> None:
        kind, channel_id = event[0], event[1]
        if kind == "opened":
            waiting = self.opening.pop(channel_id, None)
            if waiting is not None and not waiting[0].done():
                made = self.channels[channel_id] = VirtualChannel(self, channel_id, waiting[1])
                waiting[1].connection_made(made)  # now: its data may follow in this same read
                waiting[0].set_result(made)
            else:
                self.end.close(channel_id)
            return
        if kind == "failed":
            waiting = self.opening.pop(channel_id, None)
            if waiting is not None and not waiting[0].done():
                waiting[0].set_exception(asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(event[2])))
            return
        channel = self.channels.get(channel_id)
        if channel is None:
            return
        if kind == "data":
            channel.deliver(event[2])
        elif kind == "eof":
            if not channel.session.eof_received():
                channel.close()
        elif kind == "closed":
            channel.lost(None)
        elif kind == "writable" and channel.write_paused:
            channel.write_paused = False
            channel.session.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(str(exc) if exc else "the bridge's exec channel closed")

    def _end(self, why: str) -> None:
        if self.ended is not None:
            return
        self.ended = why
        said = self._what_it_said()
        if not self.started.done():
            self.started.set_exception(MuxUnavailable(f"the stdio transport did not start: {said or why}"))
        for opened, _ in list(self.opening.values()):
            if not opened.done():
                opened.set_exception(MuxUnavailable(f"the stdio transport ended: {why}"))
        self.opening.clear()
        for channel in list(self.channels.values()):
            channel.lost(MuxUnavailable(why))
        if self.exec_channel is not None:
            self.exec_channel.close()

    def _what_it_said(self) -> str:
        """The script's own reason (mux_error=...), else the end of its stderr."""
        text = bytes(self.noise).decode(errors="replace")
        for line in text.splitlines():
            if line.startswith("mux_error="):
                return line[len("mux_error=") :]
        return self.stderr_tail.decode(errors="replace").strip().splitlines()[-1] if self.stderr_tail.strip() else ""

    def close(self) -> None:
        self._end("closed")


# --- which way a connection's channels go ------------------------------------------------------

Starter = Callable[[asyncssh.SSHClientConnection], Awaitable[StdioMux]]


class StdioTransport:
    """A connection's stdio transport: its bridge, started again if it ended while the
    connection lives on (one start at a time)."""

    def __init__(self, conn: asyncssh.SSHClientConnection, starter: Starter, why: str) -> None:
        self.conn = conn
        self.starter = starter
        self.why = why  # why this connection uses it (for status and doctor)
        self.current: StdioMux | None = None
        self._lock = asyncio.Lock()
        self.starts = 0

    async def mux(self) -> StdioMux:
        current = self.current
        if current is not None and current.alive:
            return current
        async with self._lock:
            if self.current is None or not self.current.alive:
                self.current = await self.starter(self.conn)
                self.starts += 1
            return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()


_TRANSPORTS: weakref.WeakKeyDictionary[asyncssh.SSHClientConnection, StdioTransport] = weakref.WeakKeyDictionary()


def use_stdio(conn: asyncssh.SSHClientConnection, transport: StdioTransport) -> None:
    """From now on, this connection's channels to the remote go through its stdio transport."""
    old = _TRANSPORTS.get(conn)
    if old is not None and old is not transport:
        old.close()
    _TRANSPORTS[conn] = transport


def stdio_of(conn: asyncssh.SSHClientConnection) -> StdioTransport | None:
    return _TRANSPORTS.get(conn)


async def opener(conn: asyncssh.SSHClientConnection) -> Any:
    """What opens this connection's channels to the remote: the connection itself (sshd
    forwards), or its stdio transport's bridge. Both offer create_unix_connection,
    open_unix_connection, create_connection and open_connection."""
    transport = _TRANSPORTS.get(conn)
    return conn if transport is None else await transport.mux()


# --- what this connection's sshd forwards ------------------------------------------------------

_REFUSED: weakref.WeakKeyDictionary[asyncssh.SSHClientConnection, dict[str, str]] = weakref.WeakKeyDictionary()


def server_software(conn: asyncssh.SSHClientConnection) -> str:
    """The SSH server's version string without its protocol part: `OpenSSH_9.2p1 Debian-2`,
    `dropbear_2022.83`; messages name it, and advice fits it."""
    version = str(conn.get_extra_info("server_version") or "")
    return version.removeprefix("SSH-2.0-").removeprefix("SSH-1.99-") or "an unknown SSH server"


def is_dropbear(conn: asyncssh.SSHClientConnection) -> bool:
    return "dropbear" in server_software(conn).lower()


def refused(conn: asyncssh.SSHClientConnection, kind: str) -> str | None:
    """Why this sshd refuses channels of `kind` ("unix" or "tcp"), once known; None if it
    may open them. Dropbear opens no channel to a Unix socket, and is never asked."""
    known = _REFUSED.get(conn, {}).get(kind)
    if known is None and kind == "unix" and is_dropbear(conn):
        return f"{server_software(conn)} has no stream-local forwarding (channels to Unix sockets)"
    return known


def note_refused(conn: asyncssh.SSHClientConnection, kind: str, exc: asyncssh.ChannelOpenError) -> str:
    """An sshd's refusal, kept for the connection's life (so later channels do not ask again),
    in words that name the server and its reason code."""
    what = "channels to Unix sockets" if kind == "unix" else "TCP forwarding"
    why = f"{server_software(conn)} refuses {what} ({exc.reason or 'no reason given'}, code {exc.code})"
    _REFUSED.setdefault(conn, {})[kind] = why
    return why
