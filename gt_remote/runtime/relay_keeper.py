"""The relay keeper: one job of the supervisor, keeping the remote relay that makes streams
resumable running, and saying why when there is none.

It sets the relay up (beside the server's bring-up), checks that sshd lets channels reach
it, restarts it when a stream finds it gone or it stops answering while the server answers,
Pings the server through it, and has it touch the lease. Everything it knows is in
`status()`. When no relay can run, forwarding is plain and `reason` says why.

"The relay is gone" reaches it one way: RelayPath's hook (`on_missing`), from a stream that
found no relay, or `missing` set on the path, which the health check reads.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import asyncssh

from gt_remote.base.config import HostSettings
from gt_remote.base.errors import ConnectFailed, GtRemoteError
from gt_remote.ccmux.wire import ping as wire_ping
from gt_remote.remote import lease as remote_lease
from gt_remote.remote.load import sessions_on
from gt_remote.remote.relay import deploy as remote_relay
from gt_remote.runtime.words import iso, reason
from gt_remote.tunnel.forwarder import Forwarder
from gt_remote.tunnel.link import Link
from gt_remote.tunnel.mux import MuxUnavailable, StdioTransport, refused, server_software, stdio_of, use_stdio
from gt_remote.tunnel.resumable import RelayPath, ResumableClient, StreamGone, relay_request

log = logging.getLogger("gt_remote.runtime.supervisor")  # one log for the supervisor's jobs

Say = Callable[[str], None]
RELAY_PING_TIMEOUT = 5.0  # a health Ping through the relay: generous, as misses restart the relay
RELAY_MISSES_BEFORE_RESTART = 2
RELAY_RETRY_PAUSE = 0.5  # a stream's next try when its relay check started nothing


class RelayKeeper:
    def __init__(self, settings: Callable[[], HostSettings], link: Link, forwarder: Forwarder, say: Say) -> None:
        self._settings = settings  # the supervisor's, which an upgrade may change (install_dir)
        self.link = link
        self.forwarder = forwarder
        self.say = say
        owner = remote_lease.lease_name(settings())  # the relay closes this supervisor's streams by it at `down`
        self.path = RelayPath(link, "", settings().resume_window, owner=owner, restart_relay=self.on_missing)  # counters live across relay restarts
        self._probe_path = RelayPath(link, "", RELAY_PING_TIMEOUT, owner=owner, restart_relay=self.on_missing)  # the health Ping's streams
        self.reason: str | None = None if settings().resume else "turned off (--no-resume or resume = false in the config)"
        self.started_pid: int | None = None  # started by this bring-up: stopped if it fails
        self.pid: int | None = None
        self.restarts = 0
        self.last_death: dict[str, Any] | None = None
        self.error: str | None = None  # the last health Ping through the relay failed: why
        self.keeps_lease = True  # the relay's lease op worked last time (a change is logged)
        self._restart: asyncio.Task[None] | None = None  # one restart in flight at a time
        self._misses = 0  # health Pings in a row that failed through the relay only
        self._restarts_allowed = True  # until `down --stop-server` stops the relay
        self.setup: asyncio.Task[remote_relay.RelayState | None] | None = None  # the bring-up's, beside the server's
        self.transport: str | None = None  # how streams reach the relay: "forward" or "stdio"
        self.transport_why: str | None = None
        self.stdio_error: str | None = None
        self.sessions: int | None = None  # the server's session count, asked after the last health Ping through the relay

    @property
    def settings(self) -> HostSettings:
        return self._settings()

    @property
    def in_use(self) -> bool:
        return self.forwarder.relay is not None

    # --- bring-up -----------------------------------------------------------------------

    def set_up_beside_the_server(self, conn: asyncssh.SSHClientConnection, found: dict[str, str]) -> None:
        """From the bring-up script's relay answers: note a relay it started (stopped again if
        `up` fails), and finish setting it up beside the server's install and start."""
        self.note_started(found)
        if self.settings.resume:
            self.setup = asyncio.ensure_future(self.ensure(conn, at_bring_up=True, known=found))

    def note_started(self, found: dict[str, str]) -> None:
        """A relay the bring-up script started, from its answers: the undo of a failed or
        interrupted `up` stops it (abandon). Noted also when `up` was interrupted while the
        script ran, which then sets nothing more up."""
        relay = remote_relay.relay_state_from(found, self.settings.remote_port)
        if relay is not None and relay.started:
            self.started_pid = relay.pid

    async def wait_for_setup(self) -> None:
        if self.setup is not None:  # shielded: a Ctrl-C lets it finish, so abandon() knows what it started
            await asyncio.shield(self.setup)

    async def channel_refused(self, conn: asyncssh.SSHClientConnection) -> bool:
        """Can streams reach the relay the way they went so far? True when the way changed:
        sshd refuses channels to its socket, so streams go through the stdio transport, or
        else plain (saying why); what was under way must be tried again."""
        if not self.in_use or stdio_of(conn) is not None:
            if self.in_use:
                self.say(f"connections are resumable (relay pid {self.pid}, {self.transport_line()})")
            return False
        refused = await remote_relay.channel_refused(conn, self.path.socket_path)
        if refused is None:
            self.transport, self.transport_why = "forward", f"{server_software(conn)} forwards channels to the relay's socket"
            self.say(f"connections are resumable (relay pid {self.pid})")
            return False
        if self.settings.transport != "forward" and await self.use_stdio(conn, refused):
            self.say(f"connections are resumable (relay pid {self.pid}, {self.transport_line()})")
            return True
        if self.settings.transport == "forward":
            refused += "; --transport auto (the default) carries streams over an exec channel instead"
        self.plain(refused)
        self.say(f"connections are not resumable: {refused}")
        return True

    async def use_stdio(self, conn: asyncssh.SSHClientConnection, why: str) -> bool:
        """Streams through the stdio transport on this connection: its bridge started now, so a
        remote where it cannot run says so at once. False (and the reason kept) if it cannot."""
        transport = StdioTransport(conn, remote_relay.start_mux, why)
        try:
            await transport.mux()
        except (MuxUnavailable, asyncssh.Error, OSError, TimeoutError) as exc:
            self.stdio_error = f"{why}; and the stdio transport did not start: {exc}"
            log.warning("%s", self.stdio_error)
            return False
        use_stdio(conn, transport)
        self.transport, self.transport_why, self.stdio_error = "stdio", why, None
        log.info("streams go through the stdio transport: %s", why)
        return True

    def transport_line(self) -> str:
        if self.transport == "stdio":
            return f"through the stdio transport: {self.transport_why}"
        return "through sshd's channels"

    async def abandon(self, conn: asyncssh.SSHClientConnection | None) -> None:
        """A failed bring-up: once the setup has finished (it may be an upload: the caller's
        time limit bounds the wait), stop the relay it started and take back its upload."""
        uploaded = False
        if self.setup is not None:
            [setup] = await asyncio.gather(self.setup, return_exceptions=True)
            uploaded = isinstance(setup, remote_relay.RelayState) and setup.uploaded
        if self.started_pid is not None and conn is not None:
            await remote_relay.stop_relay(conn, self.settings.remote_port, only_pid=self.started_pid)
        if uploaded and conn is not None:
            await remote_relay.remove_upload(conn)  # set up beside the server's, it must not outlive a failed up

    # --- keeping it -----------------------------------------------------------------------

    def plain(self, why: str | None) -> None:
        if self.reason != why:
            log.warning("connections are not resumable: %s", why)
        self.reason = why
        self.forwarder.relay = None

    async def ensure(self, conn: asyncssh.SSHClientConnection, at_bring_up: bool = False, known: dict[str, str] | None = None) -> remote_relay.RelayState | None:
        """Resumable streams where the relay runs; plain forwarding, with the reason, where not.

        At bring-up the channel check rides beside the end-to-end Ping (channel_refused)."""
        if not self.settings.resume:
            return None
        was_missing, self.path.missing = self.path.missing, False
        state = await remote_relay.ensure_relay(conn, self.settings.remote_port, known, lease=remote_lease.lease_name(self.settings))
        if state.socket is not None and not at_bring_up and (was_missing or not self.in_use) and stdio_of(conn) is None:
            why = await remote_relay.channel_refused(conn, state.socket)
            if why and not (self.settings.transport != "forward" and await self.use_stdio(conn, why)):
                state = remote_relay.RelayState(None, pid=state.pid, reason=self.stdio_error or why, started=state.started)
        if at_bring_up and state.started:
            self.started_pid = state.pid  # stopped again if the bring-up fails
        if at_bring_up and state.socket is None:
            self.say(f"connections are not resumable: {state.reason}")
        if state.socket is not None and not await self._way_to(conn, state.socket, at_bring_up):
            state = remote_relay.RelayState(None, pid=state.pid, reason=self.stdio_error or "no way to the relay", started=state.started)
        if state.socket is None:
            self.plain(state.reason)
            return state
        self.pid = state.pid
        self.path.socket_path = state.socket
        self.reason = None
        self.forwarder.relay = self.path
        return state

    async def _way_to(self, conn: asyncssh.SSHClientConnection, socket: str, at_bring_up: bool) -> bool:
        """The stdio transport on this connection when it is asked for, or when streams used it
        before (each new connection needs its own bridge), or when this sshd is known to open
        no channel to a Unix socket (Dropbear): decided before a stream tries. False if it is
        needed and cannot start. Other sshds are asked beside the first Ping (channel_refused)."""
        if stdio_of(conn) is not None:
            return True
        known = refused(conn, "unix")
        wanted = self.settings.transport == "stdio" or (self.settings.transport == "auto" and (self.transport == "stdio" or known is not None))
        if not wanted:
            return True
        why = "asked for (transport = stdio)" if self.settings.transport == "stdio" else (known or self.transport_why or "")
        if await self.use_stdio(conn, why):
            return True
        if not at_bring_up and self.transport == "stdio" and self.path.streams:
            # Streams rode the bridge before this reconnect: going plain now would end them all
            # while the relay holds them. Fail this connection instead; the link tries again.
            raise ConnectFailed(f"the stdio transport did not start on the new connection ({self.stdio_error})", "the link tries again")
        return False

    async def on_missing(self, cause: str) -> None:
        """RelayPath's hook: a new stream found no relay. It waits while the relay starts."""
        before = self.restarts
        await self.restart(cause)
        if self.restarts == before:  # none started (one runs, or none can): do not hammer the remote
            await asyncio.sleep(RELAY_RETRY_PAUSE)

    async def restart(self, cause: str, stop_first: bool = False) -> None:
        """Start the relay again; every caller meanwhile waits on the same restart."""
        if self._restart is None or self._restart.done():
            self._restart = asyncio.create_task(self._restart_once(cause, stop_first))
        await asyncio.shield(self._restart)

    async def _restart_once(self, cause: str, stop_first: bool) -> None:
        conn = self.link.connection
        if conn is None or not self.settings.resume or not self._restarts_allowed:
            return  # the next connection starts it (after_reconnect), or `down` stops it
        try:
            if stop_first:  # frozen or wedged: SIGTERM, then SIGKILL, which a stopped process cannot ignore
                await remote_relay.stop_relay(conn, self.settings.remote_port)
                self.path.missing = True
            state = await self.ensure(conn)
        except (GtRemoteError, asyncssh.Error, OSError) as exc:
            log.warning("restarting the relay failed: %s", reason(exc))
            return
        if state is not None and state.started:
            self.restarts += 1
            self.last_death = {"at": iso(time.time()), "cause": cause}
            self.error = None
            log.warning("relay restarted (pid %s), restart #%d: %s", state.pid, self.restarts, cause)

    async def stop(self) -> None:
        """`down --stop-server`: stop the relay; no stream or health Ping may start it again
        afterwards, nor a restart already under way."""
        self._restarts_allowed = False
        restart = self._restart
        if restart is not None and not restart.done():
            await asyncio.wait([restart])
        try:
            conn = await self.link.wait_connected(5.0)
            await remote_relay.stop_relay(conn, self.settings.remote_port)
        except GtRemoteError as error:
            log.warning("could not stop the relay: %s", error)

    # --- the health check's part -------------------------------------------------------------

    async def ping(self) -> float | None:
        """In resumable mode, Ping the server the way clients reach it: over a relay stream.
        A dead or frozen (SIGSTOP) relay fails it while the server itself answers; the caller
        tells those apart with a direct Ping (and then calls `answered_directly`). The round
        trip, or None."""
        if not self.in_use:
            self.error = None
            return None
        try:
            rtt = await self._ping_through(timeout=max(RELAY_PING_TIMEOUT, 2 * self.settings.keepalive))
        except (GtRemoteError, OSError) as exc:
            self.error = str(exc)
            log.warning("health Ping through the relay failed: %s", exc)
            return None
        self.error = None
        self._misses = 0
        return rtt

    async def _ping_through(self, timeout: float) -> float:
        """A Ping over a relay stream of its own: the stream code clients use, from a socket
        pair instead of the listener, counted apart so `status` shows only the users' streams."""
        self._probe_path.socket_path = self.path.socket_path
        self.sessions = None
        probes: list[ResumableClient] = []

        def probe() -> ResumableClient:
            probes.append(ResumableClient(self._probe_path, set()))
            return probes[-1]

        ours, theirs = socket.socketpair()
        try:
            await asyncio.get_running_loop().connect_accepted_socket(probe, theirs)
            reader, writer = await asyncio.open_connection(sock=ours)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        try:
            rtt = await wire_ping(reader, writer, timeout)
            self.sessions = await sessions_on(reader, writer, timeout)  # the same stream: for `pick`
        finally:
            writer.close()
        await probes[0].wait_ended(RELAY_PING_TIMEOUT)  # the check leaves no stream behind it
        return rtt

    async def load(self, conn: asyncssh.SSHClientConnection) -> dict[str, Any]:
        """The machine's load facts from the relay's load op: read from /proc in its own
        process, so no process is started on the remote. StreamGone when it cannot (a relay
        of another gt-remote version, without the op)."""
        return await relay_request(conn, self.path.socket_path, {"op": "load"}, timeout=max(5.0, self.settings.keepalive))

    async def answered_directly(self, conn: asyncssh.SSHClientConnection) -> None:
        """The server answers directly but not through the relay: frozen or wedged. Twice in a
        row, so one slow hello on a loaded machine does not cost every stream its relay."""
        if self.error is None or self.link.connection is not conn:
            self._misses = 0
            return
        self._misses += 1
        if self._misses >= RELAY_MISSES_BEFORE_RESTART:
            self._misses = 0
            await self.restart(f"the relay stopped answering ({self.error}) while the server answered directly", stop_first=True)

    async def touch_lease(self, conn: asyncssh.SSHClientConnection) -> list[str] | None:
        """The lease, refreshed by the relay: no shell started on the remote. The other holders,
        or None when the relay could not (the remote script must do it)."""
        try:
            holders, self.path.relay_streams = await remote_lease.touch_through_relay(conn, self.path.socket_path, self.settings)
        except StreamGone as exc:
            if self.keeps_lease:
                log.warning("the relay could not touch the lease (%s); the remote script does, until it can again", exc)
            self.keeps_lease = False
            return None
        self.keeps_lease = True
        return holders

    # --- what `status` shows ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "resumable": self.in_use,
            "resumable_reason": self.reason,
            "resume_window_s": self.settings.resume_window,
            "streams_open": len(self.path.streams),
            "relay_streams": self.path.relay_streams,
            "streams_resumed": self.path.streams_resumed,
            "bytes_replayed": self.path.bytes_replayed,
            "relay_restarts": self.restarts,
            "last_relay_death": self.last_death,
            "relay_error": self.error,
            "transport": self.transport if self.in_use else None,
            "transport_reason": self.transport_why if self.in_use else None,
            "server_path": self.server_path(),
        }

    def server_path(self) -> str | None:
        """How Pings (and plain forwarding) reach the server on this connection, for `doctor`."""
        conn = self.link.connection
        if conn is None:
            return None
        if stdio_of(conn) is not None:
            return "through the stdio transport's bridge"
        why = refused(conn, "tcp")
        return f"through exec bridges: {why}" if why else "through sshd's channels"
