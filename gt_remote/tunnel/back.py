"""Back tunnels: the gaming PC's 127.0.0.1:PORT reaches a service on the laptop (the town's
Dolt, gastown's proxy, any port), through the same supervised connection.

Where the relay runs, it holds the gaming PC's listener, not sshd: an SSH drop leaves it
listening, so a reconnect never finds the port held by a dead session, and the relay accepts
only connections from the login user's sockets. This end keeps one *listen channel* to the
relay per tunnel (a `listen` hello, then heartbeats), on every new connection. The relay
announces each accepted connection's stream there (N); this end dials the laptop's service
and attaches the stream (ResumableClient with the relay's id): from then on it is a stream
of the stream core like a forward one, resumable across drops with every byte kept.

Without a relay (plain mode), sshd's remote forward does the listening: after a drop, the
dead session's sshd may hold the port until it notices, so the forward is retried until the
port is released, and `status` says so. Plain mode gives no resume and no check of who
connects (docs/usage.md, "Back tunnels").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from gt_remote.base.backs import BackSpec
from gt_remote.base.errors import GtRemoteError
from gt_remote.protocol.stream import HEADER, MAX_FRAME, MAX_REPLY, FrameError, FrameReader, StreamGone, frame, parse_notice
from gt_remote.tunnel.link import Link
from gt_remote.tunnel.mux import opener
from gt_remote.tunnel.resumable import RelayPath, ResumableClient, relay_request

log = logging.getLogger(__name__)

LISTEN_TIMEOUT = 10.0  # the relay's answer to a listen hello (a bind: at once)
PLAIN_RETRY = 1.0  # sshd's remote forward, while the dropped session still holds the port
REFUSED_RETRY = 5.0  # the port is someone else's: look again now and then
DIAL_TIMEOUT = 5.0  # the laptop's service
ANSWER_WAIT_AT_CLOSE = 2.0  # a live relay answers a listen hello at once; `down` allows a supervisor 5 s in all


class BackPortHeld(GtRemoteError):
    """The gaming PC's port is another program's: the back tunnel cannot listen there."""


class BackStream(ResumableClient):
    """A back tunnel's stream at the laptop: the relay made it for a connection on the gaming
    PC, and its application here is the laptop's service."""

    def __init__(self, tunnel: BackTunnel, stream_id: str) -> None:
        self.tunnel = tunnel
        super().__init__(tunnel.path, tunnel.streams, stream_id)

    def ended_here(self) -> None:
        self.tunnel.bytes_to_laptop += self.core.received
        self.tunnel.bytes_to_remote += self.core.sent
        if self.core.why not in ("ended", "the client's end closed", "the server's end closed", "closed by the relay"):
            self.tunnel.last_error = f"a connection ended: {self.core.why}"
        super().ended_here()


class BackTunnel:
    """One back tunnel at the laptop, kept for the supervisor's whole life."""

    def __init__(self, spec: BackSpec, link: Link, path: RelayPath, relay_in_use: Callable[[], bool], restart_relay: Callable[[str], Awaitable[None]]) -> None:
        self.spec = spec
        self.link = link
        self.path = path  # the socket path is the relay keeper's, read when each channel opens
        self.relay_in_use = relay_in_use
        self.restart_relay = restart_relay
        self.streams: set[Any] = set()
        self.state = "starting"  # listening | waiting | refused
        self.why: str | None = None
        self.mode: str | None = None  # relay | plain
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.connections_total = 0
        self.refused_connections = 0
        self.bytes_to_laptop = 0
        self.bytes_to_remote = 0
        self.first_outcome = asyncio.Event()  # listening or refused, once: what `up` waits for
        self.refusal: BackPortHeld | None = None
        self._task: asyncio.Task[None] | None = None
        self._plain_listener: asyncssh.SSHListener | None = None
        self._dials: set[asyncio.Task[None]] = set()
        self._hello_answered: asyncio.Event | None = None  # set once the relay answered the last listen hello

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            answered = self._hello_answered
            if answered is not None and not answered.is_set():
                # A listen hello is out: let the relay answer it first, so that the close by owner
                # that follows (`down`, or the undo of an interrupted `up`) finds the listener it
                # opens. Cut off now, the relay could open it after that close, and keep it one
                # resume window with no one behind it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(answered.wait(), ANSWER_WAIT_AT_CLOSE)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._dials):
            task.cancel()
        if self._plain_listener is not None:
            self._plain_listener.close()
        for stream in list(self.streams):
            stream.abort()

    # --- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                conn = await self.link.wait_connected(3600.0)
            except GtRemoteError:
                continue
            try:
                if self.relay_in_use() and self.path.socket_path:
                    self.mode = "relay"
                    await self._listen_through_relay(conn)
                else:
                    self.mode = "plain"
                    await self._forward_by_sshd(conn)
            except BackPortHeld as held:
                self._refused(held)
                await asyncio.sleep(REFUSED_RETRY)
            except (asyncssh.Error, OSError, ValueError, StreamGone, TimeoutError, asyncio.IncompleteReadError) as exc:
                if self.state == "listening":
                    self._set("waiting", f"the connection to the relay dropped ({exc.__class__.__name__}); the relay keeps listening")
                await asyncio.sleep(0.2 if conn is not self.link.connection else 1.0)
            except Exception as exc:  # noqa: BLE001 - a bug here must not end the tunnel's keeping for good
                log.exception("back tunnel %s: unexpected error; trying again", self.spec.canonical)
                self.note_error(f"internal error: {exc!r}")
                await asyncio.sleep(1.0)

    def _set(self, state: str, why: str | None) -> None:
        if (state, why) != (self.state, self.why):
            (log.info if state in ("listening", "waiting") else log.warning)("back tunnel %s: %s%s", self.spec.canonical, state, f" ({why})" if why else "")
        self.state, self.why = state, why
        if state in ("listening", "refused"):
            self.first_outcome.set()

    def _refused(self, held: BackPortHeld) -> None:
        self.refusal = held
        self._set("refused", held.cause)
        self.note_error(held.cause)

    def note_error(self, text: str) -> None:
        self.last_error, self.last_error_at = text, time.time()

    # --- through the relay -----------------------------------------------------------------

    async def _listen_through_relay(self, conn: asyncssh.SSHClientConnection) -> None:
        """One listen channel: the hello, the relay's answer, then its notices until it closes."""
        try:
            reader, writer = await asyncio.wait_for((await opener(conn)).open_unix_connection(self.path.socket_path), LISTEN_TIMEOUT)
        except asyncssh.ChannelOpenError as exc:
            if conn is self.link.connection and not conn.is_closed():
                await self.restart_relay(f"a back tunnel found no relay ({exc.reason})")
            raise
        heartbeats: asyncio.Task[None] | None = None
        try:
            hello = {"op": "listen", "owner": self.path.owner, "port": self.spec.remote_port, "window": self.path.window, "heartbeat": self.path.heartbeat_interval}
            answered = self._hello_answered = asyncio.Event()
            writer.write(frame(b"H", json.dumps(hello).encode()))
            try:
                answer = await asyncio.wait_for(self._reply(reader), LISTEN_TIMEOUT)
            finally:
                answered.set()
            if "error" in answer:
                raise BackPortHeld(f"back tunnel {self.spec.canonical}: {str(answer['error'])[:300]}", self._held_fix())
            self.refusal = None
            self._set("listening", None)
            heartbeats = asyncio.ensure_future(self._beat(writer))
            await self._notices(reader, conn)
        finally:
            if heartbeats is not None:
                heartbeats.cancel()
            writer.close()

    def _held_fix(self) -> str:
        spec = self.spec
        other = spec.remote_port + 10000 if spec.remote_port + 10000 <= 65535 else spec.remote_port - 1
        shown = f"{spec.preset}:{other}" if spec.preset else f"{other}:{spec.local_host}:{spec.local_port}"
        return f"pick another port on the gaming PC: --back {shown} (the panes are told the port)" if spec.preset else f"pick another port on the gaming PC: --back {shown}"

    @staticmethod
    async def _reply(reader: asyncssh.SSHReader[bytes]) -> dict[str, Any]:
        kind, length = HEADER.unpack(await reader.readexactly(HEADER.size))
        if kind != b"R" or length > MAX_REPLY:
            raise FrameError(f"the relay answered a listen with a {kind!r} frame")
        answer = json.loads(await reader.readexactly(length))
        if not isinstance(answer, dict):
            raise FrameError("the relay's answer to a listen is not an object")
        return answer

    async def _beat(self, writer: asyncssh.SSHWriter[bytes]) -> None:
        """The relay's listener stays while it hears from this end within the window."""
        while True:
            await asyncio.sleep(self.path.heartbeat_interval)
            writer.write(frame(b"K"))

    async def _notices(self, reader: asyncssh.SSHReader[bytes], conn: asyncssh.SSHClientConnection) -> None:
        frames = FrameReader(MAX_FRAME)
        while True:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("the relay closed the listen channel")
            for kind, payload in frames.feed(data):
                what, value, total = parse_notice(kind, payload)
                if what == "stream":
                    self._dial_for(value, conn)
                elif what == "refused":  # the relay says so at most once a minute, with its count
                    self.refused_connections = max(self.refused_connections + 1, total)
                    self.note_error(value)
                    log.warning("back tunnel %s: %s (%d refused in all)", self.spec.canonical, value, total)

    def _dial_for(self, stream_id: str, conn: asyncssh.SSHClientConnection) -> None:
        if any(stream.id == stream_id for stream in self.streams) or any(task.get_name() == stream_id for task in self._dials):
            return  # announced again on a new listen channel: already ours
        task = asyncio.ensure_future(self._dial(stream_id, conn))
        task.set_name(stream_id)
        self._dials.add(task)
        task.add_done_callback(self._dials.discard)

    async def _dial(self, stream_id: str, conn: asyncssh.SSHClientConnection) -> None:
        """The laptop's service for one announced stream; if it does not answer, the relay is
        told to close the stream, and its client on the gaming PC gets EOF."""
        loop = asyncio.get_running_loop()
        spec = self.spec
        try:
            await asyncio.wait_for(loop.create_connection(lambda: BackStream(self, stream_id), spec.local_host, spec.local_port), DIAL_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            cause = getattr(exc, "strerror", None) or str(exc) or "timed out"
            self.note_error(f"{spec.local_text} on this laptop did not answer ({cause}); a connection from the gaming PC was closed")
            log.warning("back tunnel %s: %s", spec.canonical, self.last_error)
            try:
                live = self.link.connection or conn
                await relay_request(live, self.path.socket_path, {"op": "close", "ids": [stream_id]}, LISTEN_TIMEOUT)
            except StreamGone as gone:
                log.info("back tunnel %s: the relay closes stream %s itself after its window (%s)", spec.canonical, stream_id[:8], gone)
            return
        self.connections_total += 1

    # --- plain: sshd's remote forward --------------------------------------------------------

    async def _forward_by_sshd(self, conn: asyncssh.SSHClientConnection) -> None:
        """sshd listens for this connection's life; after a drop the dead session may hold the
        port for a while: retried until it is released."""
        spec = self.spec
        tries = 0
        while conn is self.link.connection and not conn.is_closed():
            try:
                listener = await conn.forward_remote_port("127.0.0.1", spec.remote_port, spec.local_host, spec.local_port)
            except asyncssh.ChannelListenError as exc:
                tries += 1
                if tries == 1 and self.state == "starting":
                    raise BackPortHeld(
                        f"back tunnel {spec.canonical}: sshd on the gaming PC could not listen on 127.0.0.1:{spec.remote_port} ({str(exc) or 'refused'}): another program holds it, or sshd forbids remote forwarding",
                        self._held_fix(),
                    ) from None
                self._set("waiting", f"127.0.0.1:{spec.remote_port} on the gaming PC is still held (by the dropped session's sshd, until it notices); retrying every {PLAIN_RETRY:g} s (try {tries})")
                await asyncio.sleep(PLAIN_RETRY)
                continue
            self._plain_listener = listener
            self.refusal = None
            self._set("listening", "plain: sshd's remote forward; connections end with the SSH connection")
            await listener.wait_closed()
            self._plain_listener = None
            if self.state == "listening":
                self._set("waiting", "the SSH connection dropped; forwarding again once it is back")
            return
        await asyncio.sleep(0.2)

    # --- what `status` shows ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        spec = self.spec
        live_in = sum(stream.core.received for stream in self.streams)
        live_out = sum(stream.core.sent for stream in self.streams)
        return {
            "spec": spec.canonical,
            "remote": f"127.0.0.1:{spec.remote_port}",
            "local": spec.local_text,
            "mode": self.mode,
            "state": self.state,
            "why": self.why,
            "connections_open": len(self.streams),
            "connections_total": self.connections_total,
            "connections_refused": self.refused_connections,
            "bytes_to_laptop": self.bytes_to_laptop + live_in,
            "bytes_to_remote": self.bytes_to_remote + live_out,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "environment": spec.environment(),
        }
