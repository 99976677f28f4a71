"""The link: the current SSH connection, watched and replaced when it dies.

asyncssh closes a dead connection on EOF or reset at once, and on a silent peer after
keepalive x 3. The link then reconnects under the backoff policy, runs the caller's
after-reconnect check (is the remote server alive?), and publishes the new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable

import asyncssh

from gt_remote.base.errors import ConnectFailed, GtRemoteError
from gt_remote.tunnel.connection import SshTarget, classify, connect, lost_reason, receipts
from gt_remote.tunnel.policy import reconnect_policy

log = logging.getLogger(__name__)

FINAL_RETRY_INTERVAL = 60.0
UNEXPECTED_RETRY_INTERVAL = 5.0
CHECK_TIMEOUT = 2.0  # an SSH round trip after a wake: a live link answers, or sends something, well within this
CHECK_LIMIT = 20.0  # bytes kept arriving all along without the answer: the link is alive, stop waiting

AfterConnect = Callable[[asyncssh.SSHClientConnection], Awaitable[None]]


class LinkState(str, enum.Enum):
    CONNECTING = "connecting"
    UP = "up"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    DOWN = "down"


class CheckOutcome(str, enum.Enum):
    """What an on-demand check of the link found and did."""

    HEALTHY = "healthy"  # answered: left alone
    DROPPED = "dropped"  # no answer within the deadline: dropped, reconnecting
    FORCED = "forced"  # answered, but dropped on request (--force)
    RECONNECTING = "reconnecting"  # no connection to check: the next attempt starts now


class Link:
    def __init__(self, target: SshTarget, after_reconnect: AfterConnect | None = None) -> None:
        self.target = target
        self.after_reconnect = after_reconnect
        self.state = LinkState.CONNECTING
        self.since = time.time()
        self.last_error: GtRemoteError | None = None
        self.reconnects = 0
        self.next_attempt_at: float | None = None
        self.up_since: float | None = None  # when the current connection came up
        self._conn: asyncssh.SSHClientConnection | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        self._retry_now = asyncio.Event()
        self._drop_reason: str | None = None
        self._incident_at: float | None = None  # monotonic: a wake or loss not yet recovered from
        self.last_recovery_s: float | None = None

    # --- what others read -----------------------------------------------------------

    @property
    def connection(self) -> asyncssh.SSHClientConnection | None:
        return self._conn if self._ready.is_set() else None

    async def wait_connected(self, timeout: float) -> asyncssh.SSHClientConnection:
        """The live connection; waits up to `timeout` through an outage, then raises.

        A deadline already passed (timeout <= 0) raises on every Python: asyncio.wait_for
        with 0 raised on 3.11 but returns a ready result on 3.12+, which would let a stream
        retry past its window.
        """
        if timeout <= 0:
            raise ConnectFailed("the tunnel stayed down for the whole wait", "see `gt-remote status`")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise ConnectFailed(f"the tunnel stayed down for {timeout:g} s", "see `gt-remote status`") from None
        assert self._conn is not None
        return self._conn

    def mark_lost(self, conn: asyncssh.SSHClientConnection, reason: str) -> None:
        """A user of the connection saw it fail (say, a channel would not open): drop it now."""
        if conn is self._conn and self._ready.is_set():
            log.warning("dropping the connection: %s", reason)
            conn.close()

    # --- checks on demand (wake, network change, `gt-remote reconnect`) ---------------

    def incident(self) -> None:
        """Something may have broken the link (a wake): time the recovery from now."""
        if self._incident_at is None:
            self._incident_at = time.monotonic()

    async def check(self, timeout: float = CHECK_TIMEOUT, force: bool = False) -> CheckOutcome:
        """One SSH round trip; `timeout` s with neither an answer nor any byte received drops the link so it reconnects now."""
        conn = self.connection
        if conn is None:
            self._retry_now.set()  # cut a backoff wait short: the network may be back
            return CheckOutcome.RECONNECTING
        try:
            await answer_or_silence(conn, timeout)
        except (TimeoutError, asyncssh.Error, OSError):
            self.drop(conn, f"no answer to an SSH round trip within {timeout:g} s, and no bytes received meanwhile")
            return CheckOutcome.DROPPED
        if conn is not self._conn or not self._ready.is_set():
            return CheckOutcome.RECONNECTING  # it died while we asked
        if force:
            self.drop(conn, "reconnect requested (--force)")
            return CheckOutcome.FORCED
        self._recovered()
        return CheckOutcome.HEALTHY

    def drop(self, conn: asyncssh.SSHClientConnection, reason: str) -> None:
        """Abort at once: a clean close would wait on a silent peer to take its data."""
        if conn is self._conn and self._ready.is_set():
            log.warning("dropping the connection: %s", reason)
            self._drop_reason = reason
            self._ready.clear()  # nobody may pick up the dead connection while it closes
            conn.abort()

    def _recovered(self) -> None:
        if self._incident_at is not None:
            self.last_recovery_s = time.monotonic() - self._incident_at
            self._incident_at = None

    async def _backoff_sleep(self, delay: float) -> None:
        """Wait before the next attempt, unless a wake or a request says try now.

        A wake seen during an attempt still counts: the event is cleared only once used.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._retry_now.wait(), delay)
        self._retry_now.clear()

    # --- lifecycle ------------------------------------------------------------------

    async def open(self) -> asyncssh.SSHClientConnection:
        """The first connection: no retries, the user is waiting and wants the reason now."""
        conn = await connect(self.target)
        self._publish(conn)
        return conn

    async def run(self) -> None:
        """Watch the connection forever; replace it whenever it dies."""
        while not self._stopping:
            assert self._conn is not None
            await self._conn.wait_closed()
            if self._stopping:
                break
            self._ready.clear()
            self.incident()
            dropped, self._drop_reason = self._drop_reason, None
            cause = f"connection lost: {dropped}" if dropped else lost_reason(self._conn)
            log.warning("%s", cause)
            self._set_state(LinkState.RECONNECTING, ConnectFailed(cause, "reconnecting"))
            self.next_attempt_at = time.time()  # the first attempt is made at once
            await self._reconnect()

    async def _reconnect(self) -> None:
        while not self._stopping:
            try:
                async for attempt in reconnect_policy(self._waiting, sleep=self._backoff_sleep):
                    with attempt:
                        conn = await self._connect_and_check()
                self.reconnects += 1
                self._publish(conn)
                log.info("reconnected (reconnect #%d)", self.reconnects)
                return
            except GtRemoteError as error:
                log.error("giving up for now: %s", error)
                self._set_state(LinkState.FAILED, error)
                self.next_attempt_at = time.time() + FINAL_RETRY_INTERVAL
                await self._backoff_sleep(FINAL_RETRY_INTERVAL)
            except Exception as exc:  # a bug must not end reconnecting for good
                log.exception("unexpected error while reconnecting")
                self._set_state(LinkState.RECONNECTING, ConnectFailed(f"internal error: {exc!r}", "retrying; see the log"))
                await asyncio.sleep(UNEXPECTED_RETRY_INTERVAL)

    async def _connect_and_check(self) -> asyncssh.SSHClientConnection:
        conn = await connect(self.target)
        try:
            if self.after_reconnect:
                await self.after_reconnect(conn)
        except (TimeoutError, asyncssh.Error, OSError) as exc:
            conn.close()
            raise classify(exc, self.target.destination) from exc  # typed, so the policy can judge it
        except BaseException:
            conn.close()
            raise
        return conn

    def _waiting(self, error: BaseException, next_at: float) -> None:
        log.info("attempt failed (%s); next at %.1f", error, next_at)
        assert isinstance(error, GtRemoteError)
        self._set_state(LinkState.RECONNECTING, error)
        self.next_attempt_at = next_at

    def _publish(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn
        self.up_since = time.time()
        self.next_attempt_at = None
        self._recovered()
        self._set_state(LinkState.UP, None)
        self._ready.set()

    def _set_state(self, state: LinkState, error: GtRemoteError | None) -> None:
        if state != self.state:
            self.since = time.time()
        self.state = state
        if error is not None:
            self.last_error = error  # kept after recovery: status shows the last error and since when

    async def close(self) -> None:
        self._stopping = True
        self._ready.clear()
        self.state = LinkState.DOWN
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()


async def answer_or_silence(conn: asyncssh.SSHClientConnection, timeout: float, limit: float = CHECK_LIMIT) -> None:
    """An SSH round trip, waited for while the connection keeps receiving bytes.

    The answer can queue behind a bulk upload on a slow uplink; the data and window
    adjustments arriving meanwhile prove the peer alive. Raises TimeoutError only after
    `timeout` seconds with nothing received at all.
    """
    seen = receipts(conn)
    if seen is None:
        await asyncio.wait_for(round_trip(conn), timeout)
        return
    started = time.monotonic()
    answer = asyncio.ensure_future(round_trip(conn))
    try:
        while not answer.done():
            quiet = seen.quiet_since(started)
            if quiet >= timeout:
                raise TimeoutError
            if time.monotonic() - started >= limit:
                return  # bytes arrived all along: alive, however late the answer
            await asyncio.wait([answer], timeout=min(timeout - quiet, limit - (time.monotonic() - started)))
        answer.result()
    finally:
        answer.cancel()


async def round_trip(conn: asyncssh.SSHClientConnection) -> None:
    """The keepalive OpenSSH and asyncssh use: a global request the server must answer.

    asyncssh has no public call for it; this is the one its own keepalive timer makes. Unlike
    a Ping of the server, it proves the SSH path only and touches nothing on the remote.
    """
    await conn._make_global_request(b"keepalive@openssh.com")
