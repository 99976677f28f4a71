"""Resumable streams: a local client's connection outlives the SSH connection it rides on.

Each client gets a stream with an unguessable id, carried by one direct-streamlocal channel
to the relay on the remote (gt_remote/remote/relay/relay_agent.py), which holds the server connection.
When the channel dies with the SSH connection, the client socket stays open; once the link
is back the stream is reattached and both ends replay what the other lacks.

The protocol is the stream core, gt_remote/protocol/stream.py, which the relay is built
from too: this module only moves bytes between it, the client's socket and the channel,
and keeps a channel attached across SSH connections. Every keepalive each attached stream
sends a heartbeat, which the relay answers: both ends count the resume window from the
last frame they received.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import asyncssh

from gt_remote.base.errors import GtRemoteError
from gt_remote.protocol import stream as core
from gt_remote.protocol.pipe import StreamPipe
from gt_remote.protocol.stream import HEADER, HIGH_WATER, MAX_FRAME, MAX_REPLY, FrameError, FrameReader, StreamGone, frame
from gt_remote.tunnel.link import Link
from gt_remote.tunnel.mux import MuxUnavailable, opener

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 15.0
CLOSE_WAIT = 2.0  # `down`: how long to wait for the relay to close this supervisor's streams
DEFAULT_WINDOW = 900.0
__all__ = ["FrameError", "FrameReader", "RelayPath", "ResumableClient", "StreamGone", "relay_request"]


async def relay_request(conn: asyncssh.SSHClientConnection, socket_path: str, hello: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One of the relay's ops besides streams (close, stats, lease): the hello on a channel of
    its own, and the reply. StreamGone for every way it can fail, the relay's refusal included."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await (await opener(conn)).open_unix_connection(socket_path)
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
    budget: int = core.BUDGET
    owner: str = ""  # whose streams these are on the relay (the lease name): `down` closes them all
    streams: set[ResumableClient] = field(default_factory=set)
    streams_resumed: int = 0
    bytes_replayed: int = 0
    peak_unacked: int = 0
    relay_streams: int | None = None  # this owner's streams as the relay counts them (the lease op's answer)
    missing: bool = False  # a new stream found no relay: the supervisor checks it again
    # Set by the supervisor: start the relay again (one restart for all the streams that ask).
    restart_relay: Callable[[str], Awaitable[None]] | None = None
    _heartbeats: asyncio.Task[None] | None = None
    _budget: core.Budget | None = None
    _abandoned: set[str] = field(default_factory=set)  # ids the relay may hold that no stream here will resume
    _closer: asyncio.Task[None] | None = None

    @property
    def shared_budget(self) -> core.Budget:
        if self._budget is None:
            self._budget = core.Budget(self.budget)
        return self._budget

    def buffered(self) -> int:
        return sum(stream.core.held for stream in self.streams)

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

    def forget(self, stream: ResumableClient) -> None:
        """A stream ended here. The last one to go ends the heartbeats at once rather than at
        their next tick: an idle supervisor then holds the same tasks at any moment, which is
        what its leak check (the soak's baseline) compares."""
        self.streams.discard(stream)
        if not self.streams and self._heartbeats is not None:
            self._heartbeats.cancel()
            self._heartbeats = None  # a stream that comes before the cancel lands starts new ones

    def abandon(self, stream_id: str) -> None:
        """A stream given up here that the relay may still hold: it is told to close it as
        soon as the link is up (it would otherwise keep it, and its server connection, for
        the whole window)."""
        self._abandoned.add(stream_id)
        if self._closer is None or self._closer.done():
            self._closer = asyncio.ensure_future(self._close_abandoned())

    async def _close_abandoned(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.window  # past it, the relay has let go itself
        while self._abandoned and asyncio.get_running_loop().time() < deadline:
            ids = sorted(self._abandoned)[: core.MAX_STREAMS]
            try:
                conn = await self.link.wait_connected(max(0.0, deadline - asyncio.get_running_loop().time()))
                await relay_request(conn, self.socket_path, {"op": "close", "ids": ids}, max(5.0, self.heartbeat_interval))
            except (GtRemoteError, StreamGone) as exc:
                log.info("could not have the relay close %d abandoned stream(s) yet: %s", len(ids), exc)
                await asyncio.sleep(self.heartbeat_interval)
                continue
            self._abandoned.difference_update(ids)

    async def close_detached(self, wait: float = CLOSE_WAIT) -> int:
        """`down`: no stream of this supervisor will be resumed. The relay closes every stream
        it holds for this owner, found from its side (detached ones, and any a lost hello left
        there); with the link down (or no answer within `wait`), it does so itself one window
        after their last heartbeat."""
        for task in (self._heartbeats, self._closer):
            if task is not None:
                task.cancel()
        detached = [s for s in self.streams if not s.core.attached]
        for stream in detached:
            stream.core.close("closed at shutdown")  # its keeper must not reattach it meanwhile
            stream.pump()
        if not self.socket_path or (not detached and not self.owner):
            return 0
        hello: dict[str, object] = {"op": "close", "owner": self.owner} if self.owner else {"op": "close", "ids": [s.id for s in detached]}
        conn = self.link.connection
        if conn is None:  # shutting down, the link no longer reconnects
            log.info("the link is down: the relay closes this supervisor's streams one resume window after their last heartbeat")
            return 0
        try:
            answer = await relay_request(conn, self.socket_path, hello, wait)
        except StreamGone as exc:
            log.info("could not tell the relay to close this supervisor's streams (%s); it closes them one resume window after their last heartbeat", exc)
            return 0
        closed = answer.get("closed")
        closed = closed if isinstance(closed, int) and not isinstance(closed, bool) else 0
        if closed:
            log.info("the relay closed %d stream(s) of this supervisor at shutdown", closed)
        return closed


class ResumableClient(StreamPipe, asyncio.Protocol):
    """A local client's socket, and the channel its stream rides on now: the adapter between
    them and the stream's core, which holds every count and byte of the protocol."""

    def __init__(self, path: RelayPath, registry: set[Any], stream_id: str | None = None) -> None:
        """`stream_id`: a back tunnel's stream, which the relay made and announced (its
        application here is the laptop's service, dialled for it)."""
        self.path = path
        self.registry = registry
        self.id = stream_id or secrets.token_hex(16)
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.channel: asyncssh.SSHUNIXChannel[bytes] | None = None
        self.reply: asyncio.Future[None] | None = None
        self.lost = asyncio.Event()
        self.client_gone = False
        self.opened_at = loop.time()
        self._task: asyncio.Task[None] | None = None
        peer_opened = stream_id is not None
        # A back stream waits in the relay for the whole window, so its first attach may too.
        self.first_attach_within = path.window if peer_opened else HELLO_TIMEOUT
        self.start_pipe(core.Stream(core.LAPTOP, path.window, loop.time(), path.shared_budget, stream_id=self.id, owner=path.owner, peer_opened=peer_opened), loop)

    # --- the client socket ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=HIGH_WATER)
        self.registry.add(self)
        self.path.streams.add(self)
        self.path.start_heartbeats()
        self._task = asyncio.ensure_future(self._keep_attached())

    def data_received(self, data: bytes) -> None:
        stream = self.core
        stream.app_data(data)
        if len(stream.outbox) > self.path.peak_unacked:
            self.path.peak_unacked = len(stream.outbox)
        self.pump()

    def eof_received(self) -> bool:
        self.app_ended_its_side()
        return True  # half-close: the client may still read the replies

    def pause_writing(self) -> None:
        self.core.app_writable = False  # its resume_writing acknowledges; no timer meanwhile

    def resume_writing(self) -> None:
        self.app_took()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client_gone = True
        self.registry.discard(self)
        self.app_lost()

    async def wait_ended(self, timeout: float) -> bool:
        """Wait (at most `timeout`) for the stream to be over on both ends: its keeper task
        done, after the relay confirmed the close. For the supervisor's own short streams (the
        health Ping), so a check leaves nothing running behind it. True when it ended."""
        if self._task is None:
            return self.core.finished
        done, _pending = await asyncio.wait({self._task}, timeout=timeout)
        return bool(done)

    def abort(self) -> None:
        """The supervisor stops: the relay is told at once (C), the client's socket goes."""
        self.core.close("the supervisor stopped")
        self.pump()
        if self.transport is not None:
            self.transport.abort()

    def app(self) -> asyncio.Transport | None:
        transport = self.transport
        return transport if transport is not None and not self.client_gone and not transport.is_closing() else None

    def send_to_channel(self, data: bytes) -> None:
        channel = self.channel
        if channel is not None:
            try:
                channel.write(data)
            except OSError:  # closing under us: its connection_lost follows
                pass

    # --- the channel -----------------------------------------------------------------------

    def heartbeat(self) -> None:
        self.core.heartbeat()
        self.pump()

    def on_frames(self, frames: list[tuple[bytes, bytes]]) -> None:
        stream = self.core
        awaiting, resumes, replayed = stream.awaiting_reply, stream.resumes, stream.replayed
        try:
            stream.on_frames(frames, self.loop.time(), self.app_buffered())
        except FrameError as error:
            stream.close(f"bad frames from the relay: {error}")
        self.path.streams_resumed += stream.resumes - resumes
        self.path.bytes_replayed += stream.replayed - replayed
        reply = self.reply
        if awaiting and reply is not None and not reply.done():
            if stream.finished:
                reply.set_exception(StreamGone(stream.why))
            elif not stream.awaiting_reply:
                reply.set_result(None)
        self.pump()

    def channel_lost(self, channel: asyncssh.SSHUNIXChannel[bytes]) -> None:
        if channel is not self.channel:
            return
        if self.ended:
            self.close_unconfirmed()
            return
        self.channel = None
        self.core.detach()
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(ConnectionError("the channel closed during the hello"))
        self.lost.set()  # finished or not: the keeper task wakes, and ends if it is over
        self.pump()

    def channel_writable(self, writable: bool) -> None:
        self.core.channel_writable = writable
        if writable:
            self.pump()

    # --- keeping a channel attached ------------------------------------------------------

    async def _keep_attached(self) -> None:
        deadline: float | None = None
        try:
            while not self.core.finished:
                try:
                    await self._attach(deadline)
                except StreamGone as gone:
                    if self.core.hellos and not self.core.finished:
                        self.path.abandon(self.id)  # the relay may hold it: have it closed, not kept for the window
                    self.core.close(str(gone))
                    self.pump()
                    return
                if self.core.finished:
                    return
                await self.lost.wait()
                deadline = self.core.last_rx + self.path.window  # from the last frame, not from noticing
        except GtRemoteError:  # nothing from the relay for the whole window
            silent = self.loop.time() - self.core.last_rx
            self.core.close(f"not resumed: nothing from the relay for {silent:.0f} s (resume window {self.path.window:g} s)")
            self.pump()

    async def _attach(self, deadline: float | None) -> None:
        """Open a channel and say hello; retried across failed connections until the deadline."""
        while True:
            if self.core.finished:
                raise StreamGone("closed at shutdown")
            remaining = self.first_attach_within if deadline is None else max(0.0, deadline - self.loop.time())
            conn = await self.path.link.wait_connected(remaining)
            if self.core.finished:
                raise StreamGone("closed at shutdown")
            try:
                await self._hello(conn)
                return
            except (asyncssh.Error, OSError, TimeoutError) as exc:
                connection_alive = conn is self.path.link.connection and not conn.is_closed()
                if isinstance(exc, asyncssh.ChannelOpenError) and connection_alive:
                    self.path.missing = True
                    if self.core.answered or self.core.peer_opened or self.path.restart_relay is None:
                        raise StreamGone(f"the relay is not there ({exc.reason})") from None
                    # A new stream: have the relay started at once and try again within the hello's time.
                    deadline = deadline or self.loop.time() + HELLO_TIMEOUT
                    await self.path.restart_relay(f"a new stream found no relay ({exc.reason})")
                    if self.loop.time() >= deadline:
                        raise StreamGone(f"the relay did not come back within {HELLO_TIMEOUT:g} s") from None
                    continue
                # The hello may have reached the relay, and a retry resumes whatever the relay holds
                # (the core sends `resume` after a first hello), so a new stream retries too, within
                # its hello time: a channel closed by a dying connection can arrive while that
                # connection still looks alive, and giving up then closed the client for nothing.
                deadline = deadline or self.opened_at + self.first_attach_within
                if self.loop.time() >= deadline:
                    raise StreamGone(f"the relay did not answer: {exc}") from None
                log.info("stream %s: %s failed (%s); retrying", self.id[:8], "reattaching" if self.core.answered else "opening", exc)
                if (self.core.answered or not connection_alive) and not isinstance(exc, MuxUnavailable):  # a dead bridge starts again, the link is fine
                    self.path.link.mark_lost(conn, str(exc))
                await asyncio.sleep(0.2)

    async def _hello(self, conn: asyncssh.SSHClientConnection) -> None:
        """A channel, the hello (the core says which), and its answer."""
        self.lost.clear()
        reply = self.reply = self.loop.create_future()
        channel, _ = await (await opener(conn)).create_unix_connection(lambda: _RelayChannel(self), self.path.socket_path)
        channel.set_write_buffer_limits(high=HIGH_WATER)
        self.channel = channel
        self.core.hello(self.path.heartbeat_interval)
        self.pump()
        try:
            await asyncio.wait_for(asyncio.shield(reply), HELLO_TIMEOUT)
        except BaseException as exc:
            if self.channel is channel:
                self.channel = None  # its late connection_lost must not start another resume
                self.core.detach()
            channel.abort()
            if self.core.finished and isinstance(exc, Exception) and not isinstance(exc, StreamGone):  # a cancellation stays one
                raise StreamGone(self.core.why or "closed before the relay answered") from None
            raise

    # --- ending ----------------------------------------------------------------------------

    def ended_here(self) -> None:
        stream = self.core
        if stream.why not in ("ended", "the client's end closed", "the supervisor stopped"):
            log.info("stream %s ended: %s", self.id[:8], stream.why)
        self.path.forget(self)
        if stream.unconfirmed and self.channel is not None:
            self.loop.call_later(HELLO_TIMEOUT, self.close_unconfirmed)  # the relay's answering C closes it sooner
        else:
            self._close_channel()
        self.registry.discard(self)
        self.lost.set()

    def _close_channel(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            channel.close()

    def close_confirmed(self) -> None:
        """The relay answered this end's close: it holds nothing of the stream."""
        self.core.close_confirmed = True
        self._close_channel()

    def close_unconfirmed(self) -> None:
        """No answer to this end's close (the channel died, or the relay did not say): have the
        relay close the stream by id once the link is up, so it is not kept for the window."""
        if self.core.unconfirmed:
            self.path.abandon(self.id)
            self.core.close_confirmed = True  # asked once
        self._close_channel()


class _RelayChannel(asyncssh.SSHUNIXSession[bytes]):
    """The channel's end: frames from the relay go to the stream. Whatever the relay sends,
    only this stream can fail: an exception here would otherwise end the SSH connection."""

    def __init__(self, stream: ResumableClient) -> None:
        self.stream = stream
        self.reader = FrameReader(MAX_FRAME, MAX_REPLY)
        self.channel: asyncssh.SSHUNIXChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHUNIXChannel[bytes]) -> None:
        self.channel = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        stream = self.stream
        if self.channel is not stream.channel:
            return
        if stream.ended:  # only the answer to its close is still awaited
            try:
                if any(kind == b"C" for kind, _ in self.reader.feed(data)):
                    stream.close_confirmed()
            except FrameError:
                stream.close_unconfirmed()
            return
        try:
            stream.on_frames(self.reader.feed(data))
        except Exception as exc:  # noqa: BLE001 - a bad relay reply ends this stream, never the link
            log.warning("stream %s: bad frames from the relay: %r", stream.id[:8], exc)
            stream.core.close(f"bad frames from the relay: {exc}")
            if stream.reply is not None and not stream.reply.done():
                stream.reply.set_exception(StreamGone(stream.core.why))
            stream.pump()
            if self.channel is not None:
                self.channel.abort()

    def pause_writing(self) -> None:
        if self.channel is self.stream.channel:
            self.stream.channel_writable(False)

    def resume_writing(self) -> None:
        if self.channel is self.stream.channel:
            self.stream.channel_writable(True)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.channel is not None:
            self.stream.channel_lost(self.channel)
