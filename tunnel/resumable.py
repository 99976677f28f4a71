"""Resumable streams: a local client's connection outlives the SSH connection it rides on.

Each client gets a stream with an unguessable id, carried by one direct-streamlocal channel
to the relay on the remote (bootstrap/relay_agent.py), which holds the server connection.
When the channel dies with the SSH connection, the client socket stays open; once the link
is back the stream is reattached (RESUME with the count received) and both ends replay
what the other has not acknowledged. The wire format is described in relay_agent.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import asyncssh

from gt_remote.base.errors import GtRemoteError
from gt_remote.tunnel.link import Link

log = logging.getLogger(__name__)

CAP = 4 * 1024 * 1024  # unacknowledged bytes per stream and direction; reading pauses at this
ACK_EVERY = 256 * 1024
ACK_DELAY = 0.05
CHUNK = 32 * 1024
HELLO_TIMEOUT = 15.0
HEADER = struct.Struct(">cI")
MAX_FRAME = 1024 * 1024
DEFAULT_WINDOW = 900.0


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class StreamGone(Exception):
    """The far end no longer knows the stream (relay restarted, server gone): close cleanly."""


@dataclass
class RelayPath:
    """Where resumable streams go, and what `status` counts about them."""

    link: Link
    socket_path: str
    window: float = DEFAULT_WINDOW
    streams: set[ResumableClient] = field(default_factory=set)
    streams_resumed: int = 0
    bytes_replayed: int = 0
    peak_unacked: int = 0
    missing: bool = False  # a new stream found no relay: the supervisor checks it again
    # Set by the supervisor: start the relay again (one restart for all the streams that ask).
    restart_relay: Callable[[str], Awaitable[None]] | None = None

    def buffered(self) -> int:
        return sum(len(stream.unacked) for stream in self.streams)


class ResumableClient(asyncio.Protocol):
    """A local client's socket and its stream's state: counts, unacknowledged bytes, channel."""

    def __init__(self, path: RelayPath, registry: set[Any]) -> None:
        self.path = path
        self.registry = registry
        self.id = secrets.token_hex(16)
        self.transport: asyncio.Transport | None = None
        self.channel: asyncssh.SSHUNIXChannel[bytes] | None = None
        self.attached = False
        self.unacked = bytearray()  # client -> server bytes the relay has not acknowledged
        self.acked = 0
        self.sent = 0
        self.sent_eof = False
        self.received = 0  # positions (bytes, and one for the end) received from the relay
        self.ack_sent = 0
        self.ack_timer: asyncio.TimerHandle | None = None
        self.client_paused_us = False  # the client's socket buffer is full
        self.reading_paused = False
        self.client_gone = False
        self.finished = False
        self.lost = asyncio.Event()
        self.resuming = False
        self._task: asyncio.Task[None] | None = None

    # --- the client socket ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.registry.add(self)
        self.path.streams.add(self)
        self._task = asyncio.ensure_future(self._keep_attached())

    def data_received(self, data: bytes) -> None:
        self.unacked += data
        self.sent += len(data)
        self.path.peak_unacked = max(self.path.peak_unacked, len(self.unacked))
        if self.attached:
            self._send_data(data)
        if len(self.unacked) >= CAP and not self.reading_paused:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.sent_eof = True
        if self.attached:
            self._send(frame(b"E"))
        return True  # half-close: the client may still read the replies

    def pause_writing(self) -> None:
        self.client_paused_us = True
        if self.channel is not None:
            self.channel.pause_reading()

    def resume_writing(self) -> None:
        self.client_paused_us = False
        if self.channel is not None:
            self.channel.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client_gone = True
        self.registry.discard(self)
        if self.attached:
            self._finish()  # tell the relay now; else on reattach (or its window ends it)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- keeping a channel attached ------------------------------------------------------

    async def _keep_attached(self) -> None:
        deadline: float | None = None
        resuming = False
        try:
            while not self.finished:
                try:
                    await self._attach(resuming, deadline)
                except StreamGone as gone:
                    log.info("stream %s ended: %s", self.id[:8], gone)
                    self._close_client()
                    return
                if self.client_gone:
                    self._finish()
                    return
                resuming = True
                await self.lost.wait()
                deadline = time.monotonic() + self.path.window
        except GtRemoteError as error:  # the link stayed down for the whole window
            log.info("stream %s not resumed within %g s: closing it (%s)", self.id[:8], self.path.window, error)
            self._close_client()
        finally:
            self.path.streams.discard(self)

    async def _attach(self, resuming: bool, deadline: float | None) -> None:
        """Open a channel and say hello; retried across failed connections until the deadline."""
        while True:
            remaining = HELLO_TIMEOUT if deadline is None else max(0.0, deadline - time.monotonic())
            conn = await self.path.link.wait_connected(remaining)
            try:
                await self._hello(conn, resuming)
                return
            except (asyncssh.Error, OSError, TimeoutError) as exc:
                connection_alive = conn is self.path.link.connection and not conn.is_closed()
                if isinstance(exc, asyncssh.ChannelOpenError) and connection_alive:
                    self.path.missing = True
                    if resuming or self.path.restart_relay is None:
                        raise StreamGone(f"the relay is not there ({exc.reason})") from None
                    # A new stream: have the relay started at once and try again within the hello's time.
                    deadline = deadline or time.monotonic() + HELLO_TIMEOUT
                    await self.path.restart_relay(f"a new stream found no relay ({exc.reason})")
                    if time.monotonic() >= deadline:
                        raise StreamGone(f"the relay did not come back within {HELLO_TIMEOUT:g} s") from None
                    continue
                if deadline is None:
                    # A new stream: retry only a connection that died under it, within the hello's time.
                    if connection_alive:
                        raise StreamGone(f"the relay did not answer: {exc}") from None
                    deadline = time.monotonic() + HELLO_TIMEOUT
                log.info("stream %s: reattaching failed (%s); retrying", self.id[:8], exc)
                self.path.link.mark_lost(conn, str(exc))
                await asyncio.sleep(0.2)

    async def _hello(self, conn: asyncssh.SSHClientConnection, resuming: bool) -> None:
        reply: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self.resuming = resuming
        self.lost.clear()
        channel, _ = await conn.create_unix_connection(lambda: _RelayChannel(self, reply), self.path.socket_path)
        self.channel = channel
        hello = {"op": "resume", "id": self.id, "received": self.received} if resuming else {"op": "new", "id": self.id, "window": self.path.window}
        channel.write(frame(b"H", json.dumps(hello).encode()))
        try:
            answer = await asyncio.wait_for(asyncio.shield(reply), HELLO_TIMEOUT)
        except BaseException:
            self.channel = None  # its late connection_lost must not start another resume
            channel.close()
            raise
        if "error" in answer:
            self.channel = None
            channel.close()
            raise StreamGone(str(answer["error"]))
        if resuming:
            self.path.streams_resumed += 1
            self.path.bytes_replayed += int(cast(int, answer.get("replaying", 0)))

    def on_reply(self, channel: asyncssh.SSHUNIXChannel[bytes], answer: dict[str, object]) -> None:
        """The relay's answer, in order with the frames after it: replay what it lacks."""
        if "error" in answer:
            return
        peer_received = int(cast(int, answer["received"]))
        if not self.acked <= peer_received <= self.sent + (1 if self.sent_eof else 0):
            answer["error"] = f"the relay claims {peer_received} bytes, we sent {self.sent}"
            return
        self._acknowledged(peer_received)
        self.attached = True
        if self.resuming:
            self.path.bytes_replayed += len(self.unacked)
        self._send_data(bytes(self.unacked))
        if self.sent_eof and peer_received <= self.sent:
            self._send(frame(b"E"))
        if self.client_paused_us:
            channel.pause_reading()

    def channel_lost(self, channel: asyncssh.SSHUNIXChannel[bytes]) -> None:
        if channel is not self.channel:
            return
        self.channel = None
        self.attached = False
        self.lost.set()  # finished or not: the keeper task wakes, and ends if it is over

    # --- frames ----------------------------------------------------------------------------

    def on_frame(self, kind: bytes, payload: bytes) -> None:
        if kind == b"D":
            self.received += len(payload)
            if self.transport is not None and not self.client_gone:
                self.transport.write(payload)
            self._schedule_ack()
        elif kind == b"E":
            self.received += 1
            self._send_ack()
            self._close_client()  # the server ended the session: end the client's too
        elif kind == b"A" and len(payload) == 8:
            self._acknowledged(struct.unpack(">Q", payload)[0])
        elif kind == b"C":
            self.finished = True
            self._close_client()
            self.lost.set()

    def _send(self, data: bytes) -> None:
        if self.channel is not None:
            self.channel.write(data)

    def _send_data(self, data: bytes) -> None:
        for start in range(0, len(data), CHUNK):
            self._send(frame(b"D", data[start : start + CHUNK]))

    def _schedule_ack(self) -> None:
        if self.received - self.ack_sent >= ACK_EVERY:
            self._send_ack()
        elif self.ack_timer is None:
            self.ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._send_ack)

    def _send_ack(self) -> None:
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None
        if self.attached and self.received != self.ack_sent:
            self.ack_sent = self.received
            self._send(frame(b"A", struct.pack(">Q", self.received)))

    def _acknowledged(self, count: int) -> None:
        count_bytes = min(count, self.sent)
        if count_bytes > self.acked:
            del self.unacked[: count_bytes - self.acked]
            self.acked = count_bytes
        if self.reading_paused and len(self.unacked) < CAP // 2 and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    # --- ending ----------------------------------------------------------------------------

    def _close_client(self) -> None:
        """A clean FIN to the client (after what is buffered), never a reset."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if self.client_gone and self.attached:
            self._finish()

    def _finish(self) -> None:
        """The stream is over on our side: tell the relay, so it closes the server socket."""
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None
        channel, self.channel = self.channel, None
        self.attached = False
        self.finished = True
        self.path.streams.discard(self)
        if channel is not None:
            channel.write(frame(b"C"))
            channel.close()
        self.lost.set()


class _RelayChannel(asyncssh.SSHUNIXSession[bytes]):
    """The channel's end: frames from the relay go to the stream."""

    def __init__(self, stream: ResumableClient, reply: asyncio.Future[dict[str, object]]) -> None:
        self.stream = stream
        self.reply = reply
        self.buffer = bytearray()
        self.channel: asyncssh.SSHUNIXChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHUNIXChannel[bytes]) -> None:
        self.channel = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self.buffer)
            end = HEADER.size + length
            if length > MAX_FRAME:
                self._fail("the relay sent an oversized frame")
                return
            if len(self.buffer) < end:
                return
            payload = bytes(self.buffer[HEADER.size : end])
            del self.buffer[:end]
            if not self.reply.done():
                self._on_reply(kind, payload)
            elif self.channel is self.stream.channel:
                self.stream.on_frame(kind, payload)

    def _on_reply(self, kind: bytes, payload: bytes) -> None:
        try:
            answer = json.loads(payload) if kind == b"R" else {"error": f"unexpected frame {kind!r}"}
        except ValueError:
            answer = {"error": "malformed reply"}
        if not isinstance(answer, dict):
            answer = {"error": "malformed reply"}
        if self.channel is not None:
            self.stream.on_reply(self.channel, answer)
        self.reply.set_result(answer)

    def _fail(self, reason: str) -> None:
        log.warning("stream %s: %s", self.stream.id[:8], reason)
        if self.channel is not None:
            self.channel.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(ConnectionError(f"the channel closed during the hello: {exc or 'closed'}"))
        if self.channel is not None:
            self.stream.channel_lost(self.channel)
