"""Resumable streams: a local client's connection outlives the SSH connection it rides on.

Each client gets a stream with an unguessable id, carried by one direct-streamlocal channel
to the relay on the remote (bootstrap/relay_agent.py), which holds the server connection.
When the channel dies with the SSH connection, the client socket stays open; once the link
is back the stream is reattached (RESUME with the count received) and both ends replay
what the other has not acknowledged. The wire format is described in relay_agent.py; the
frame reader and the reply check below are sans-IO copies of its helpers (the relay is one
uploaded stdlib file and cannot import this package).

Every keepalive each attached stream sends a heartbeat, which the relay answers: both ends
count the resume window from the last frame they received, so neither keeps a stream alive
longer than the window (plus one keepalive) whenever the loss is noticed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import asyncssh

from gt_remote.base.errors import GtRemoteError
from gt_remote.tunnel.link import Link

log = logging.getLogger(__name__)

CAP = 4 * 1024 * 1024  # unacknowledged bytes per stream and direction; reading pauses at this
BUDGET = 64 * 1024 * 1024  # unacknowledged bytes across all streams: then the largest stops
ACK_EVERY = 512 * 1024
ACK_DELAY = 0.05
FRAME_DATA = 256 * 1024  # the most data one frame carries
HIGH_WATER = 128 * 1024  # a channel's write buffer beyond this: stop writing, keep it in unacked
SMALL = 16 * 1024  # small reads are merged, so a trickle of bytes is not a pile of objects
HELLO_TIMEOUT = 15.0
CLOSE_WAIT = 2.0  # `down`: how long to wait for the link to tell the relay about detached streams
HEADER = struct.Struct(">cI")
ACK = struct.Struct(">Q")
MAX_FRAME = 1024 * 1024
MAX_REPLY = 64 * 1024
DEFAULT_WINDOW = 900.0
HEARTBEAT_FRAME = HEADER.pack(b"K", 0)


def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None: a busy stream's freed buffers go back to the system."""
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc: the allocator keeps its own policy
        return None


MALLOC_TRIM = _malloc_trim()
TRIM_AFTER = 1024 * 1024  # a stream that moved this much gives its memory back when it ends


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


Chunk = bytes | memoryview


class Outbox:
    """Bytes sent and not yet acknowledged, kept as the chunks they came in: appending and
    acknowledging never copy what is kept (a bytearray would move all of it on each)."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.head = 0  # acknowledged bytes at the start of chunks[0]
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, data: bytes, pending: deque[Chunk]) -> None:
        """Keep `data`; also queue it in `pending` (the part the channel has not had)."""
        chunks = self.chunks
        self.size += len(data)
        if chunks and len(chunks[-1]) + len(data) <= SMALL and (pending[-1] is chunks[-1] if pending else True):
            merged = chunks[-1] + data
            chunks[-1] = merged
            if pending:
                pending[-1] = merged
            return
        chunks.append(data)
        pending.append(data)

    def drop(self, count: int) -> None:
        """The peer acknowledged `count` more bytes."""
        self.size -= count
        count += self.head
        chunks = self.chunks
        while chunks and count >= len(chunks[0]):
            count -= len(chunks.popleft())
        self.head = count if chunks else 0

    def all(self) -> deque[Chunk]:
        """Everything unacknowledged, for a replay (views, no copies)."""
        replay: deque[Chunk] = deque(self.chunks)
        if replay and self.head:
            replay[0] = memoryview(self.chunks[0])[self.head :]
        return replay

    def clear(self) -> None:
        self.chunks = deque()
        self.head = self.size = 0


class StreamGone(Exception):
    """The far end no longer knows the stream (relay restarted, server gone): close cleanly."""


class FrameError(ValueError):
    """The relay's bytes are not frames: that channel is dropped, never the SSH connection."""


class FrameReader:
    """Splits a byte stream into (type, payload) frames; sans-IO, bounded by `limit` (and the
    first frame, the hello or its reply, by `first_limit`)."""

    def __init__(self, limit: int = MAX_FRAME, first_limit: int | None = None) -> None:
        self.buffer = bytearray()
        self.limit = limit
        self.first_limit = first_limit

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        buffered = bool(self.buffer)
        if buffered:
            self.buffer += data
            view = memoryview(self.buffer)
        else:
            view = memoryview(data)  # the common case: frames straight from `data`, no buffering
        frames = []
        start, size = 0, len(view)
        try:
            while size - start >= HEADER.size:
                kind, length = HEADER.unpack_from(view, start)
                limit = self.limit if self.first_limit is None else self.first_limit
                if length > limit:
                    raise FrameError(f"the relay sent a frame of {length} bytes (at most {limit})")
                end = start + HEADER.size + length
                if end > size:
                    break
                frames.append((kind, view[start + HEADER.size : end].tobytes()))
                self.first_limit = None
                start = end
        finally:
            view.release()
        if buffered:
            del self.buffer[:start]
        elif start < size:
            self.buffer += data[start:]
        return frames


def parse_reply(kind: bytes, payload: bytes, acked: int, most: int) -> tuple[int, int]:
    """The relay's answer to a hello: (what it has received, what it replays), or StreamGone.

    `acked..most` is the range it may claim to have received. Sans-IO, for the fuzzer too."""
    if kind != b"R":
        raise StreamGone(f"the relay answered with a {kind!r} frame, not a reply")
    try:
        answer = json.loads(payload)
    except (ValueError, RecursionError):
        raise StreamGone("the relay's reply is not JSON") from None
    if not isinstance(answer, dict):
        raise StreamGone("the relay's reply is not a JSON object")
    if "error" in answer:
        raise StreamGone(str(answer["error"])[:200])
    received, replaying = answer.get("received"), answer.get("replaying", 0)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (received, replaying)):
        raise StreamGone("the relay's reply has no byte counts")
    received, replaying = cast(int, received), cast(int, replaying)
    if not acked <= received <= most:
        raise StreamGone(f"the relay claims {received} bytes received, we sent {most}")
    return received, max(0, min(replaying, CAP + MAX_FRAME))


async def relay_request(conn: asyncssh.SSHClientConnection, socket_path: str, hello: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One of the relay's ops besides streams (close, stats, lease): the hello on a channel of
    its own, and the reply. StreamGone for every way it can fail, the relay's refusal included."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await conn.open_unix_connection(socket_path)
            try:
                writer.write(frame(b"H", json.dumps(hello).encode()))
                kind, length = HEADER.unpack(await reader.readexactly(HEADER.size))
                if kind != b"R" or length > MAX_REPLY:
                    raise StreamGone(f"the relay answered with a {kind!r} frame of {length} bytes, not a reply")
                answer = json.loads(await reader.readexactly(length))
            finally:
                writer.close()
    except (GtRemoteError, asyncssh.Error, OSError, TimeoutError, ValueError, RecursionError, asyncio.IncompleteReadError) as exc:
        raise StreamGone(f"the relay did not answer: {str(exc) or type(exc).__name__}") from None
    if not isinstance(answer, dict):
        raise StreamGone("the relay's reply is not a JSON object")
    if "error" in answer:
        raise StreamGone(f"the relay refused: {str(answer['error'])[:200]}")
    return answer


@dataclass
class RelayPath:
    """Where resumable streams go, and what `status` counts about them."""

    link: Link
    socket_path: str
    window: float = DEFAULT_WINDOW
    heartbeat: float | None = None  # seconds between heartbeats; None: the link's keepalive
    budget: int = BUDGET
    streams: set[ResumableClient] = field(default_factory=set)
    streams_resumed: int = 0
    bytes_replayed: int = 0
    peak_unacked: int = 0
    unacked_total: int = 0
    peak_unacked_total: int = 0
    missing: bool = False  # a new stream found no relay: the supervisor checks it again
    # Set by the supervisor: start the relay again (one restart for all the streams that ask).
    restart_relay: Callable[[str], Awaitable[None]] | None = None
    _heartbeats: asyncio.Task[None] | None = None

    def buffered(self) -> int:
        return sum(len(stream.unacked) for stream in self.streams)

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat if self.heartbeat is not None else float(self.link.target.keepalive)

    def start_heartbeats(self) -> None:
        if self._heartbeats is None or self._heartbeats.done():
            self._heartbeats = asyncio.ensure_future(self._beat())

    async def _beat(self) -> None:
        """One heartbeat per attached stream each keepalive: the relay's window restarts.

        Ends once no stream is left, so an idle tunnel keeps no task for it; the next
        stream starts it again (start_heartbeats, called after the stream is registered)."""
        while self.streams:
            await asyncio.sleep(self.heartbeat_interval)
            for stream in list(self.streams):
                stream.heartbeat()

    # --- the budget across streams ---------------------------------------------------

    def check_budget(self) -> None:
        """Past the budget, the stream holding the most stops being read until acks come."""
        if self.unacked_total > self.peak_unacked_total:
            self.peak_unacked_total = self.unacked_total
        if self.unacked_total <= self.budget:
            return
        reading = [s for s in self.streams if not s.budget_paused and not s.client_gone]
        if reading:
            largest = max(reading, key=lambda s: len(s.unacked))
            largest.budget_paused = True
            largest.update_reading()

    def after_ack(self) -> None:
        if self.unacked_total <= self.budget // 2:
            for stream in list(self.streams):
                if stream.budget_paused:
                    stream.budget_paused = False
                    stream.update_reading()

    # --- ending -----------------------------------------------------------------------

    async def close_detached(self, wait: float = CLOSE_WAIT) -> int:
        """`down`: streams waiting for the link will never be resumed; have the relay release
        their server connections now. With the link down (or no answer within `wait`), the
        relay does it itself one window after the last heartbeat."""
        if self._heartbeats is not None:
            self._heartbeats.cancel()
        detached = [s for s in self.streams if not s.attached and not s.finished]
        for stream in detached:
            stream.finished = True  # its keeper must not reattach it meanwhile
        if not detached or not self.socket_path:
            return 0
        ids = [stream.id for stream in detached]
        conn = self.link.connection
        if conn is None:  # shutting down, the link no longer reconnects
            log.info("the link is down: the relay closes %d detached stream(s) one resume window after their last heartbeat", len(ids))
            return 0
        try:
            answer = await relay_request(conn, self.socket_path, {"op": "close", "ids": ids}, wait)
        except StreamGone as exc:
            log.info("could not tell the relay to close %d detached stream(s) (%s); it closes them one resume window after their last heartbeat", len(ids), exc)
            return 0
        closed = answer.get("closed")
        closed = closed if isinstance(closed, int) and not isinstance(closed, bool) else 0
        log.info("the relay closed %d detached stream(s) at shutdown", closed)
        return closed


class ResumableClient(asyncio.Protocol):
    """A local client's socket and its stream's state: counts, unacknowledged bytes, channel."""

    def __init__(self, path: RelayPath, registry: set[Any]) -> None:
        self.path = path
        self.registry = registry
        self.id = secrets.token_hex(16)
        self.transport: asyncio.Transport | None = None
        self.channel: asyncssh.SSHUNIXChannel[bytes] | None = None
        self.attached = False
        self.writable = True  # the channel's write buffer is under its high-water mark
        self.unacked = Outbox()  # client -> server bytes the relay has not acknowledged
        self.pending: deque[Chunk] = deque()  # of those, what the current channel has not had
        self.inbox: deque[bytes] = deque()  # server -> client bytes the client's socket has not taken
        self.inbox_size = 0
        self.acked = 0
        self.sent = 0
        self.sent_eof = False
        self.eof_flushed = False
        self.received = 0  # positions (bytes, and one for the end) received from the relay
        self.received_eof = False
        self.client_full = False
        self.ack_sent = 0
        self.ack_timer: asyncio.TimerHandle | None = None
        self.last_rx = time.monotonic()  # the last frame from the relay: the window runs from here
        self.reading_paused = False
        self.budget_paused = False
        self.client_gone = False
        self.trimmed = False
        self.finished = False
        self.lost = asyncio.Event()
        self.resuming = False
        self._task: asyncio.Task[None] | None = None

    # --- the client socket ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.registry.add(self)
        self.path.streams.add(self)
        self.path.start_heartbeats()
        self._task = asyncio.ensure_future(self._keep_attached())

    def data_received(self, data: bytes) -> None:
        size = len(data)
        self.sent += size
        path = self.path
        path.unacked_total += size
        if self.attached and self.writable and not self.pending:
            self.unacked.append(data, self.pending)
            self.pending.clear()
            self._send(HEADER.pack(b"D", size) + data)  # the hot path: one write, no copy kept
        else:
            self.unacked.append(data, self.pending)
            self.flush()
        if len(self.unacked) > path.peak_unacked:
            path.peak_unacked = len(self.unacked)
        self.update_reading()
        path.check_budget()

    def eof_received(self) -> bool:
        self.sent_eof = True
        self.flush()
        return True  # half-close: the client may still read the replies

    def pause_writing(self) -> None:
        self.client_full = True  # its resume_writing acknowledges; no timer meanwhile

    def resume_writing(self) -> None:
        self.client_full = False
        self._drain_inbox()
        self._send_ack()  # the client took what was waiting: the relay may send more

    def connection_lost(self, exc: Exception | None) -> None:
        self.client_gone = True
        self.registry.discard(self)
        if self.attached:
            self._finish()  # tell the relay now; else on reattach (or its window ends it)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def update_reading(self) -> None:
        """Read the client while this stream is under its cap and not stopped by the budget."""
        transport = self.transport
        if transport is None or self.client_gone:
            return
        if not self.reading_paused and (self.budget_paused or len(self.unacked) >= CAP):
            self.reading_paused = True
            transport.pause_reading()
        elif self.reading_paused and not self.budget_paused and len(self.unacked) < CAP // 2:
            self.reading_paused = False
            transport.resume_reading()

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
                deadline = self.last_rx + self.path.window  # from the last frame, not from noticing
        except GtRemoteError:  # nothing from the relay for the whole window
            silent = time.monotonic() - self.last_rx
            log.info("stream %s not resumed: nothing from the relay for %.0f s (resume window %g s): closing it", self.id[:8], silent, self.path.window)
            self._close_client()
        finally:
            self.path.streams.discard(self)
            self._release()

    async def _attach(self, resuming: bool, deadline: float | None) -> None:
        """Open a channel and say hello; retried across failed connections until the deadline."""
        while True:
            if self.finished:
                raise StreamGone("closed at shutdown")
            remaining = HELLO_TIMEOUT if deadline is None else max(0.0, deadline - time.monotonic())
            conn = await self.path.link.wait_connected(remaining)
            if self.finished:
                raise StreamGone("closed at shutdown")
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
        reply: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self.resuming = resuming
        self.lost.clear()
        channel, _ = await conn.create_unix_connection(lambda: _RelayChannel(self, reply), self.path.socket_path)
        channel.set_write_buffer_limits(high=HIGH_WATER)
        self.channel = channel
        hello: dict[str, object]
        if resuming:
            hello = {"op": "resume", "id": self.id, "received": self.received}
        else:
            hello = {"op": "new", "id": self.id, "window": self.path.window, "heartbeat": self.path.heartbeat_interval}
        channel.write(frame(b"H", json.dumps(hello).encode()))
        if not resuming:
            self._send_with_the_hello()
        try:
            _, replaying = await asyncio.wait_for(asyncio.shield(reply), HELLO_TIMEOUT)
        except BaseException as exc:
            self.channel = None  # its late connection_lost must not start another resume
            self.attached = False
            channel.abort()
            if self.finished and isinstance(exc, Exception):  # a cancellation stays one
                raise StreamGone("the client closed before the relay answered") from None
            raise
        if resuming:
            self.path.streams_resumed += 1
            self.path.bytes_replayed += replaying

    def _send_with_the_hello(self) -> None:
        """A new stream's bytes follow its hello at once, not a round trip later: the relay keeps
        the frames that come after a hello until it has dialled the server. Everything not
        acknowledged goes, so a hello retried on a new channel carries it all again."""
        self.attached = True
        self.writable = True
        self.pending = self.unacked.all()
        self.eof_flushed = False
        self.flush()

    def on_reply(self, channel: asyncssh.SSHUNIXChannel[bytes], kind: bytes, payload: bytes) -> tuple[int, int]:
        """The relay's answer, in order with the frames after it: on a resume, replay what it
        lacks (a new stream's bytes are on their way already)."""
        peer_received, replaying = parse_reply(kind, payload, self.acked, self.sent + (1 if self.sent_eof else 0))
        self.last_rx = time.monotonic()
        self._acknowledged(peer_received)
        if self.resuming:
            self.attached = True
            self.writable = True
            self.pending = self.unacked.all()
            self.eof_flushed = peer_received > self.sent
            self.path.bytes_replayed += self.sent - self.acked
            self.flush()
        return peer_received, replaying

    def channel_lost(self, channel: asyncssh.SSHUNIXChannel[bytes]) -> None:
        if channel is not self.channel:
            return
        self.channel = None
        self.attached = False
        self.lost.set()  # finished or not: the keeper task wakes, and ends if it is over

    def channel_writable(self, writable: bool) -> None:
        self.writable = writable
        if writable:
            self.flush()

    def heartbeat(self) -> None:
        if self.attached:
            self._send(HEARTBEAT_FRAME)

    # --- frames ----------------------------------------------------------------------------

    def on_frame(self, kind: bytes, payload: bytes) -> None:
        self.last_rx = time.monotonic()
        if kind == b"D":
            self.received += len(payload)
            if self.transport is not None and not self.client_gone:
                if self.client_full or self.inbox:
                    self.inbox.append(payload)
                    self.inbox_size += len(payload)
                else:
                    self.transport.write(payload)
            if self.received - self.ack_sent >= ACK_EVERY:
                self._send_ack()
            elif self.ack_timer is None:
                self.ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._send_ack)
        elif kind == b"A" and len(payload) == ACK.size:
            self._acknowledged(ACK.unpack(payload)[0])
        elif kind == b"E":
            self.received += 1
            self.received_eof = True
            self._send_ack()
            if not self.inbox:
                self._close_client()  # the server ended the session: end the client's too
        elif kind == b"C":
            self.finished = True
            self._close_client()
            self.lost.set()

    def _send(self, data: bytes) -> None:
        channel = self.channel
        if channel is not None:
            try:
                channel.write(data)
            except OSError:  # closing under us: its connection_lost follows
                pass

    def flush(self) -> None:
        """Write what the channel has not had yet, as far as its buffer takes it."""
        if not self.attached or self.channel is None:
            return
        pending = self.pending
        while pending and self.writable and self.channel is not None:
            chunk = pending.popleft()
            self._send(HEADER.pack(b"D", len(chunk)) + chunk)
        if self.sent_eof and not self.eof_flushed and not pending:
            self.eof_flushed = True
            self._send(frame(b"E"))

    def _send_ack(self) -> None:
        """Acknowledge what the client's socket took, not what waits in its buffer: the relay
        then sends no more than CAP ahead of the client, while the channel is always read (so
        acks never queue behind data the client is not taking)."""
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None
        transport = self.transport
        waiting = 0 if transport is None or self.client_gone else self.inbox_size + transport.get_write_buffer_size()
        delivered = self.received - waiting - (1 if waiting and self.received_eof else 0)
        if self.attached and delivered > self.ack_sent:
            self.ack_sent = delivered
            self._send(b"A\x00\x00\x00\x08" + ACK.pack(delivered))
        if waiting and not self.finished and not self.client_full:
            self.ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._send_ack)

    def _acknowledged(self, count: int) -> None:
        count_bytes = min(count, self.sent)
        if count_bytes > self.acked:
            done = count_bytes - self.acked
            self.unacked.drop(done)
            self.acked = count_bytes
            self.path.unacked_total -= done
            self.path.after_ack()
        self.update_reading()

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
        self._release()
        if channel is not None:
            try:
                channel.write(frame(b"C"))
            except OSError:
                pass
            channel.close()
        self.lost.set()

    def _drain_inbox(self) -> None:
        """Give the client what waited for its socket, then the server's end if it came."""
        transport = self.transport
        if transport is None or self.client_gone:
            self.inbox.clear()
            self.inbox_size = 0
            return
        while self.inbox and not self.client_full:
            chunk = self.inbox.popleft()
            self.inbox_size -= len(chunk)
            transport.write(chunk)
        if self.received_eof and not self.inbox:
            self._close_client()

    def _release(self) -> None:
        """Give the buffers back (and their share of the budget) once the stream is over."""
        self.pending.clear()
        self.inbox.clear()
        self.inbox_size = 0
        if self.unacked:
            self.path.unacked_total -= len(self.unacked)
            self.unacked.clear()
            self.path.after_ack()
        if MALLOC_TRIM is not None and self.sent + self.received >= TRIM_AFTER and not self.trimmed:
            self.trimmed = True
            asyncio.get_running_loop().call_later(0.1, MALLOC_TRIM, 0)  # once the transports let go


class _RelayChannel(asyncssh.SSHUNIXSession[bytes]):
    """The channel's end: frames from the relay go to the stream. Whatever the relay sends,
    only this channel can fail: an exception here would otherwise end the SSH connection."""

    def __init__(self, stream: ResumableClient, reply: asyncio.Future[tuple[int, int]]) -> None:
        self.stream = stream
        self.reply = reply
        self.reader = FrameReader(MAX_FRAME, MAX_REPLY)
        self.channel: asyncssh.SSHUNIXChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHUNIXChannel[bytes]) -> None:
        self.channel = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        try:
            self._frames(data)
        except StreamGone as gone:
            self._fail(gone)
        except Exception as exc:  # noqa: BLE001 - a bad relay reply ends this stream, never the link
            log.warning("stream %s: bad frames from the relay: %r", self.stream.id[:8], exc)
            self._fail(StreamGone(f"bad frames from the relay: {exc}"))

    def _frames(self, data: bytes) -> None:
        frames = self.reader.feed(data)
        if not self.reply.done():
            if not frames:
                return
            kind, payload = frames.pop(0)
            assert self.channel is not None
            self.reply.set_result(self.stream.on_reply(self.channel, kind, payload))
        stream = self.stream
        if self.channel is stream.channel:
            for kind, payload in frames:
                stream.on_frame(kind, payload)

    def _fail(self, gone: StreamGone) -> None:
        if not self.reply.done():
            self.reply.set_exception(gone)  # the keeper closes the client cleanly
        if self.channel is not None:
            self.channel.abort()

    def pause_writing(self) -> None:
        if self.channel is self.stream.channel:
            self.stream.channel_writable(False)

    def resume_writing(self) -> None:
        if self.channel is self.stream.channel:
            self.stream.channel_writable(True)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(ConnectionError(f"the channel closed during the hello: {exc or 'closed'}"))
        if self.channel is not None:
            self.stream.channel_lost(self.channel)
