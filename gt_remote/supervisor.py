"""The supervisor: one process per host that keeps its tunnel alive.

It binds the local address first (a taken port fails before anything remote is touched),
connects, makes sure the remote server answers, proves the path end to end with a Ping,
and then watches: the link reconnects on loss, the health loop Pings the server through
the tunnel and restarts it only if it died. `status` and `down` talk to its control socket.

Run detached by `gt-remote up` as `python -m gt_remote.supervisor SETTINGS_JSON`, which
reports progress as JSON lines on stdout until the tunnel is up, or in-process with
`up --foreground` (systemd, launchd).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import logging.handlers
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncssh

from gt_remote import control, progress, reach
from gt_remote.base.addresses import export_lines
from gt_remote.base.config import HostSettings
from gt_remote.base.errors import GtRemoteError, PingFailed
from gt_remote.base.paths import HostFiles, write_private
from gt_remote.bootstrap import relay as remote_relay
from gt_remote.bootstrap import server as remote_server
from gt_remote.bootstrap.ensure import ServerInfo, ensure_server, revive_server
from gt_remote.bootstrap.probe import ping_remote
from gt_remote.bootstrap.upgrade import replace_server
from gt_remote.tunnel.connection import SshTarget
from gt_remote.tunnel.forwarder import Forwarder
from gt_remote.tunnel.link import CheckOutcome, Link, LinkState
from gt_remote.tunnel.resumable import RelayPath
from gt_remote.tunnel.wake import WakeEvent, WakeWatcher
from gt_remote.tunnel.wire import ping_address

log = logging.getLogger("gt_remote.supervisor")

Say = Callable[[str], None]
LOG_MAX_BYTES = 1024 * 1024
LOG_BACKUPS = 3
RECONNECT_WAIT = 15.0  # how long `gt-remote reconnect` waits for a dropped link to come back


def iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _open_fds() -> int | None:
    try:
        return len(os.listdir(f"/proc/{os.getpid()}/fd"))
    except OSError:
        return None


class Supervisor:
    def __init__(self, settings: HostSettings, say: Say) -> None:
        self.settings = settings
        self.say = say
        self.files = HostFiles(settings.name)
        target = SshTarget(settings.destination, settings.ssh_config, settings.keepalive)
        self.link = Link(target, after_reconnect=self._after_reconnect)
        self.forwarder = Forwarder(settings.local, settings.remote_port, self.link)
        self.relay = RelayPath(self.link, "", settings.resume_window)  # counters live across relay restarts
        self.resume_reason: str | None = None if settings.resume else "turned off (--no-resume or resume = false in the config)"
        self.relay_started_pid: int | None = None  # started by this bring-up: stopped if it fails
        self.server: ServerInfo | None = None
        self.server_restarts = 0
        self.server_error: GtRemoteError | None = None
        self.rtt_ms: float | None = None
        self._stop = asyncio.Event()
        self._control: asyncio.AbstractServer | None = None
        self._saved: tuple[object, ...] = ()
        self._server_lock = asyncio.Lock()  # an upgrade and a revive never touch the server at once
        self.last_wake: WakeEvent | None = None
        self.last_wake_outcome: CheckOutcome | None = None
        self._checking = asyncio.Lock()
        self._wake_checks: set[asyncio.Task[CheckOutcome]] = set()  # held, so they are not collected mid-run

    # --- bring-up -------------------------------------------------------------------

    async def bring_up(self) -> None:
        """Everything `up` promises, or nothing left behind."""
        await self.forwarder.start()
        progress.steps.debug("forward: listening on %s for 127.0.0.1:%d on the remote", self.settings.local_url, self.settings.remote_port)
        try:
            self.say(f"connecting to {self.settings.destination}")
            conn = await self.link.open()
            self.server = await ensure_server(conn, self.settings, self.say)
            await self._ensure_relay(conn, at_bring_up=True)
            self.say(f"checking {self.settings.local_url} end to end with a ccmux Ping")
            self.rtt_ms = await ping_address(self.settings.local, timeout=10.0) * 1000
            self._control = await control.serve(self.files.control, self._on_request)
        except BaseException:
            await self._abandon()
            raise
        self._save_record()
        reach.remember(self.settings)
        log.info("up: %s -> %s:127.0.0.1:%d", self.settings.local_url, self.settings.destination, self.settings.remote_port)

    async def _abandon(self) -> None:
        server = self.server
        conn = self.link.connection
        if server and server.started_by_gt_remote and not server.reused and conn is not None:
            await remote_server.stop(conn, self.settings.server, self.settings.remote_port, only_pid=server.pid)
        if self.relay_started_pid is not None and conn is not None:
            await remote_relay.stop_relay(conn, self.settings.remote_port, only_pid=self.relay_started_pid)
        await self.forwarder.close()
        await self.link.close()

    # --- running --------------------------------------------------------------------

    async def serve_forever(self) -> None:
        watcher = WakeWatcher(self.on_wake)
        tasks = [asyncio.create_task(self.link.run()), asyncio.create_task(self._health_loop()), asyncio.create_task(watcher.run())]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._shutdown()

    def request_stop(self) -> None:
        self._stop.set()

    async def _health_loop(self) -> None:
        """Ping the server through the tunnel; revive it if it died while the link stayed up."""
        while True:
            await asyncio.sleep(self.settings.keepalive)
            conn = self.link.connection
            if conn is not None and self.relay.missing:
                await self._guarded_relay_check(conn)
            if conn is not None:
                try:
                    self.rtt_ms = await ping_remote(conn, self.settings.remote_port, timeout=max(2.0, self.settings.keepalive)) * 1000
                    self.server_error = None
                except (TimeoutError, asyncssh.Error, PingFailed, OSError) as exc:
                    log.warning("health Ping failed: %s", exc)
                    await self._check_server(conn)
            self._save_record_if_changed()

    # --- waking up ------------------------------------------------------------------

    def on_wake(self, event: WakeEvent) -> None:
        """A sleep, a network change or SIGUSR1: check the link now, not after keepalive x 3."""
        log.info("%s: %s; checking the link", event.kind, event.detail)
        self._wake_checks.add(task := asyncio.create_task(self.check_link(event)))
        task.add_done_callback(self._wake_check_done)

    def _wake_check_done(self, task: asyncio.Task[CheckOutcome]) -> None:
        self._wake_checks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("link check failed: %r", task.exception())

    async def check_link(self, event: WakeEvent, force: bool = False) -> CheckOutcome:
        """Checks run one at a time: a burst of events on waking costs one round trip, not many."""
        self.last_wake = event
        self.link.incident()
        async with self._checking:
            outcome = await self.link.check(force=force)
        self.last_wake_outcome = outcome
        log.info("link check after %s: %s", event.kind, outcome.value)
        return outcome

    async def _reconnect_request(self, force: bool, wait: float) -> dict[str, Any]:
        """`gt-remote reconnect`: check (or drop) now, then wait a little for the link to return."""
        outcome = await self.check_link(WakeEvent("request", "gt-remote reconnect" + (" --force" if force else ""), time.time()), force)
        reconnected = True
        if outcome is not CheckOutcome.HEALTHY:
            try:
                await self.link.wait_connected(wait)
            except GtRemoteError:
                reconnected = False
        return {"ok": True, "outcome": outcome.value, "reconnected": reconnected, "state": self.link.state.value, "last_error": str(self.link.last_error) if self.link.last_error else None}

    async def _check_server(self, conn: asyncssh.SSHClientConnection) -> None:
        try:
            await self._revive(conn)
        except GtRemoteError as error:
            log.error("remote server check failed: %s", error)
            self.server_error = error
        except (TimeoutError, asyncssh.Error, OSError) as exc:
            log.warning("remote server check interrupted: %s", exc)  # the link notices a dead connection itself

    async def _after_reconnect(self, conn: asyncssh.SSHClientConnection) -> None:
        """Runs on every new connection before it is used; errors count as a failed attempt."""
        await self._revive(conn)
        await self._ensure_relay(conn)

    async def _ensure_relay(self, conn: asyncssh.SSHClientConnection, at_bring_up: bool = False) -> None:
        """Resumable streams where the relay runs; plain forwarding, with the reason, where not."""
        if not self.settings.resume:
            return
        was_missing, self.relay.missing = self.relay.missing, False
        state = await remote_relay.ensure_relay(conn, self.settings.remote_port)
        if state.socket is not None and (at_bring_up or was_missing or self.forwarder.relay is None):
            refused = await remote_relay.channel_refused(conn, state.socket)
            if refused:
                state = remote_relay.RelayState(None, pid=state.pid, reason=refused, started=state.started)
        if at_bring_up and state.started:
            self.relay_started_pid = state.pid  # stopped again if the bring-up fails
        if at_bring_up:
            self.say(f"connections are resumable (relay pid {state.pid})" if state.socket else f"connections are not resumable: {state.reason}")
        if state.socket is None:
            if self.resume_reason != state.reason:
                log.warning("connections are not resumable: %s", state.reason)
            self.resume_reason = state.reason
            self.forwarder.relay = None
            return
        self.relay.socket_path = state.socket
        self.resume_reason = None
        self.forwarder.relay = self.relay

    async def _guarded_relay_check(self, conn: asyncssh.SSHClientConnection) -> None:
        """A stream found no relay while the link stayed up (it was killed): start it again."""
        try:
            await self._ensure_relay(conn)
        except (GtRemoteError, asyncssh.Error, OSError) as exc:
            log.warning("relay check failed: %s", exc)

    async def _revive(self, conn: asyncssh.SSHClientConnection) -> None:
        assert self.server is not None
        async with self._server_lock:
            revived = await revive_server(conn, self.settings, self.server)
        if revived is not None:
            self.server = revived
            self.server_restarts += 1
            log.warning("remote server restarted (pid %s), restart #%d", revived.pid, self.server_restarts)

    # --- control --------------------------------------------------------------------

    async def _on_request(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, "status": self.status()}
        if op == "reconnect":
            return await self._reconnect_request(bool(request.get("force")), float(request.get("wait", RECONNECT_WAIT)))
        if op == "stop":
            stopped = await self._stop_remote_server() if request.get("stop_server") else None
            self._stop.set()
            return {"ok": True, **(stopped or {})}
        if op == "upgrade":
            return await self._upgrade(str(request.get("server_binary")))
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _upgrade(self, binary: str) -> dict[str, Any]:
        """Replace the running server with another build; the tunnel and its link stay."""
        old = self.server

        def restored(server: ServerInfo) -> None:
            self.server = server

        try:
            conn = await self.link.wait_connected(10.0)
            async with self._server_lock:
                self.server = await replace_server(conn, self.settings, binary, log.info, restored)
                self.settings = dataclasses.replace(self.settings, server_binary=binary)
        except GtRemoteError as error:
            log.error("upgrade failed: %s", error)
            self._save_record()
            return {"ok": False, "error": error.to_dict()}
        self.server_error = None
        self._save_record()
        reach.remember(self.settings)
        log.info("upgraded the remote server: pid %s -> %s", old and old.pid, self.server.pid)
        return {"ok": True, "old": old.to_dict() if old else None, "server": self.server.to_dict()}

    async def _stop_remote_server(self) -> dict[str, Any]:
        try:
            conn = await self.link.wait_connected(5.0)
            await remote_relay.stop_relay(conn, self.settings.remote_port)
        except GtRemoteError as error:
            log.warning("could not stop the relay: %s", error)
        server = self.server
        if server is None or not server.started_by_gt_remote:
            return {"server_stopped": None, "server_note": "the remote server was not started by gt-remote; left running"}
        try:
            conn = await self.link.wait_connected(5.0)
            pid = await remote_server.stop(conn, self.settings.server, self.settings.remote_port, only_pid=server.pid)
        except GtRemoteError as error:
            return {"server_stopped": None, "server_note": f"could not stop the remote server: {error}"}
        reach.forget(self.settings.name)
        return {"server_stopped": pid, "server_note": f"stopped the remote server (pid {pid})" if pid else "the remote server was not running"}

    def status(self) -> dict[str, Any]:
        link, server = self.link, self.server
        last_error = self.server_error or link.last_error
        return {
            "host": self.settings.name,
            "destination": self.settings.destination,
            "state": link.state.value,
            "local": self.settings.local_url,
            "remote_port": self.settings.remote_port,
            "supervisor_pid": os.getpid(),
            "uptime_s": None if link.state != LinkState.UP or link.up_since is None else round(time.time() - link.up_since, 1),
            "reconnects": link.reconnects,
            "server_restarts": self.server_restarts,
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3),
            "server": {
                "name": self.settings.server,
                "pid": server.pid if server else None,
                "version": server.version if server else None,
                "started_by_gt_remote": server.started_by_gt_remote if server else False,
                "path": server.path if server else None,
                "build": server.build if server else None,
                "other_build": server.other_build if server else None,
            },
            "settings": json.loads(self.settings.to_json()),
            "last_error": str(last_error) if last_error else None,
            "since": iso(link.since),
            "next_attempt_at": iso(link.next_attempt_at),
            "clients": len(self.forwarder.clients),
            **self.resume_status(),
            "last_wake": self._last_wake_status(),
            "last_recovery_s": None if link.last_recovery_s is None else round(link.last_recovery_s, 3),
            "exports": export_lines(self.settings.local_url, self.settings.server),
            "internals": {
                "asyncio_tasks": len(asyncio.all_tasks()),
                "open_fds": _open_fds(),
                "resume_buffered_bytes": self.relay.buffered(),
                "resume_peak_unacked_bytes": self.relay.peak_unacked,
            },
        }

    def resume_status(self) -> dict[str, Any]:
        return {
            "resumable": self.forwarder.relay is not None,
            "resumable_reason": self.resume_reason,
            "resume_window_s": self.settings.resume_window,
            "streams_open": len(self.relay.streams),
            "streams_resumed": self.relay.streams_resumed,
            "bytes_replayed": self.relay.bytes_replayed,
        }

    def _last_wake_status(self) -> dict[str, Any] | None:
        event = self.last_wake
        if event is None:
            return None
        outcome = self.last_wake_outcome
        return {"at": iso(event.at), "kind": event.kind, "detail": event.detail, "outcome": outcome.value if outcome else "checking"}

    def _save_record(self) -> None:
        """What `status` shows if this process dies without a word."""
        record = {"host": self.settings.name, "settings": json.loads(self.settings.to_json()), "status": self.status()}
        write_private(self.files.record, json.dumps(record, indent=2))

    def _save_record_if_changed(self) -> None:
        key = (self.link.state, str(self.link.last_error), self.server_restarts, self.server and self.server.pid)
        if key != self._saved:
            try:
                self._save_record()
                self._saved = key
            except OSError as exc:  # a full disk must not stop the supervision
                log.warning("cannot save the status record: %s", exc)

    async def _shutdown(self) -> None:
        if self._control is not None:
            self._control.close()
            self.files.control.unlink(missing_ok=True)
        await self.relay.close_detached()  # streams waiting for the link end now, not after the window
        await self.forwarder.close()
        await self.link.close()
        self.files.record.unlink(missing_ok=True)
        log.info("stopped")


async def run(settings: HostSettings, say: Say, on_ready: Callable[[dict[str, Any]], None]) -> None:
    supervisor = Supervisor(settings, say)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, supervisor.request_stop)
    loop.add_signal_handler(signal.SIGUSR1, lambda: supervisor.on_wake(WakeEvent("signal", "SIGUSR1", time.time())))
    await supervisor.bring_up()
    on_ready(supervisor.status())
    await supervisor.serve_forever()


def setup_logging(files: HostFiles, also_stderr: bool = False) -> None:
    """A size-capped, rotated log per host. Rotation makes new files: umask keeps them 0600."""
    os.umask(0o077)
    path = files.log
    if not path.exists():
        path.touch(mode=0o600)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handlers: list[logging.Handler] = [handler]
    if also_stderr:  # `up --foreground`: the service manager's journal gets the same lines
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(logging.Formatter("gt-remote: %(message)s"))
        stderr.addFilter(lambda record: not getattr(record, "file_only", False))
        handlers.append(stderr)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


class EventPipe:
    """Progress for the waiting `up` as JSON lines on stdout, closed once the tunnel is up."""

    def emit(self, event: str, **fields: Any) -> None:
        try:
            sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass  # `up` went away (Ctrl-C); carry on, the log has it all

    def progress(self, message: str) -> None:
        log.info("%s", message)
        self.emit("progress", message=message)

    def ready(self, status: dict[str, Any]) -> None:
        self.emit("ready", status=status)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(argv: list[str]) -> int:
    settings = HostSettings.from_json(argv[1])
    files = HostFiles(settings.name)
    events = EventPipe()
    if control.hold_pid_lock(files.pid) is None:
        events.emit("error", error={"kind": "GtRemoteError", "cause": f"a supervisor for {settings.name} is already running", "fix": "use it, or run 'gt-remote down' first"})
        return 1
    setup_logging(files)
    progress.show_steps(lambda message: events.emit("progress", message=message))
    progress.relay_transfers(lambda done, total, elapsed: events.emit("transfer", done=done, total=total, elapsed=elapsed))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        asyncio.run(run(settings, events.progress, events.ready))
    except GtRemoteError as error:
        log.error("%s", error)
        events.emit("error", error=error.to_dict())
        return 1
    except Exception as exc:  # report, never vanish silently
        log.exception("supervisor crashed")
        events.emit("error", error={"kind": "GtRemoteError", "cause": f"internal error: {exc!r}", "fix": f"see {files.log}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
