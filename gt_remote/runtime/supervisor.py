"""The supervisor: one process per host that keeps its tunnel alive.

It binds the local address first (a taken port fails before anything remote is touched),
connects, makes sure the remote server answers, proves the path end to end with a Ping,
and then watches: the link reconnects on loss, the health loop Pings the server through
the tunnel and restarts it only if it died. `status` and `down` talk to its control socket.

Run detached by `gt-remote up` as `python -m gt_remote.runtime.supervisor HOST`, its settings as
JSON on stdin (never on the command line, which every local account can read), which
reports progress as JSON lines on stdout until the tunnel is up, or in-process with
`up --foreground` (systemd, launchd).

Still about 780 lines: the relay keeper (relay_keeper.py) and the process around it
(process.py) are apart, but the health loop, the server's revival, the control API and the
status it reports are still methods of this class, sharing its state (the link, the server,
the port's refusal, the round trip). Splitting them needs a typed status first (issue #28's
HostStatus), which is the next step.
"""

from __future__ import annotations

if __name__ == "__main__":  # this process is a supervisor: before asyncio, leave out what it never uses (see there)
    from gt_remote.base.lean import leave_out_unused

    leave_out_unused()

# isort: split
import asyncio
import dataclasses
import json
import logging
import logging.handlers
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

# First, before anything imports asyncssh: it then loads without ctypes' compiler runs (see there).
import gt_remote.tunnel.quick_import  # noqa: F401

# isort: split
import asyncssh

from gt_remote.base import progress
from gt_remote.base.addresses import export_lines
from gt_remote.base.backs import environment as backs_environment
from gt_remote.base.config import HostSettings
from gt_remote.base.errors import CancelledByDown, ConnectFailed, GtRemoteError, Interrupted, PingFailed, SupervisorTaskEnded, shell_word
from gt_remote.base.load import LoadMeter, facts_from
from gt_remote.base.paths import HostFiles, runtime_path, write_private
from gt_remote.ccmux.wire import ping_address
from gt_remote.remote import lease as remote_lease
from gt_remote.remote import load as remote_load
from gt_remote.remote import scripts as remote_scripts
from gt_remote.remote import server as remote_server
from gt_remote.remote.bridge import create_bridge
from gt_remote.remote.ensure import ServerInfo, bring_up, revive_server
from gt_remote.remote.ownership import PortNotOurs, refusal
from gt_remote.remote.probe import Survey, ping_remote
from gt_remote.remote.relay import deploy as remote_relay
from gt_remote.remote.upgrade import replace_server, restart_server
from gt_remote.runtime import control, reach
from gt_remote.runtime.back_keeper import BackKeeper
from gt_remote.runtime.process import EventPipe, settings_from_stdin, setup_logging
from gt_remote.runtime.relay_keeper import RelayKeeper
from gt_remote.runtime.words import iso, reason
from gt_remote.tunnel.connection import SshTarget, classify
from gt_remote.tunnel.forwarder import Forwarder
from gt_remote.tunnel.link import CheckOutcome, Link, LinkState
from gt_remote.tunnel.resumable import StreamGone
from gt_remote.tunnel.wake import WakeEvent, WakeWatcher

log = logging.getLogger("gt_remote.runtime.supervisor")

Say = Callable[[str], None]
RECONNECT_WAIT = 15.0  # how long `gt-remote reconnect` waits for a dropped link to come back
RUNTIME_CHECK_INTERVAL = 2.0  # how often the supervisor checks its socket and pid file still exist
UNDO_TIMEOUT = 20.0  # how long undoing a cancelled bring-up may take on the remote
UNDO_MARGIN = 5.0  # beyond UNDO_TIMEOUT: closing the link and the control socket after an undo that ran out
STEPS = (("uploading", "uploading"), ("running the install command", "installing the server"), ("starting", "starting server"), ("restarting", "starting server"))


def _open_fds() -> int | None:
    try:
        return len(os.listdir(f"/proc/{os.getpid()}/fd"))
    except OSError:
        return None


def _fd_kinds() -> dict[str, int]:
    """What the open fds are (socket, pipe, anon_inode:[eventpoll], a path), counted: when the
    count grows, this says what leaked without attaching a debugger to a supervisor."""
    kinds: dict[str, int] = {}
    fd_dir = f"/proc/{os.getpid()}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return kinds
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        kind = target.split(":[", 1)[0] if ":[" in target else target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _task_kinds() -> dict[str, int]:
    """The running asyncio tasks by coroutine name, counted, for the same reason as _fd_kinds."""
    kinds: dict[str, int] = {}
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", None) or type(coro).__name__
        kinds[name] = kinds.get(name, 0) + 1
    return kinds


async def refuse_unknown_host(target: SshTarget) -> None:
    """Raise UnknownHost (the connection's own error) when the destination's name, after
    ssh_config, does not resolve here. Asked only once the local address refused: a mistyped
    alias (`up gamng-pc`) is then named, not the default address it collided with (the user's
    tunnel to another host holds 127.0.0.1:9999). No connection: ssh_config read here, and
    one name lookup. A name behind ProxyJump or ProxyCommand is resolved over there: skipped."""
    _user, host, port = target.parts()
    try:
        options = asyncssh.SSHClientConnectionOptions(host=host, config=[target.ssh_config] if target.ssh_config else (), **({"port": port} if port else {}))
    except (ValueError, OSError, asyncssh.Error):
        return  # unreadable settings: the local address's error stands
    if options.tunnel or options.proxy_command:
        return
    try:
        await asyncio.get_running_loop().getaddrinfo(options.host, options.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise classify(exc, target.destination) from None
    except (OSError, UnicodeError):
        return


class Supervisor:
    def __init__(self, settings: HostSettings, say: Say) -> None:
        self.settings = settings
        self.say = say
        self.files = HostFiles(settings.name)
        target = SshTarget(settings.destination, settings.ssh_config, settings.keepalive)
        self.link = Link(target, after_reconnect=self._after_reconnect)
        self.forwarder = Forwarder(settings.local, settings.remote_port, self.link)
        self.forwarder.server_socket = self._server_socket  # plain forwarding's way in, as Pings'
        self.forwarder.bridge = create_bridge  # and where sshd forwards nothing: an exec bridge
        self.relay = RelayKeeper(lambda: self.settings, self.link, self.forwarder, say)  # resumable streams, or why not
        self.backs = BackKeeper(settings, self.link, self.relay)  # the gaming PC's ports that reach the laptop
        self.server_env_lacking: dict[str, str] = {}  # back tunnels' variables the running server was started without
        self.server: ServerInfo | None = None
        self.server_restarts = 0
        self.last_server_restart: dict[str, Any] | None = None  # when, why, old and new pid: `status` says the panes ended
        self.server_error: GtRemoteError | None = None
        self.port_refusal: PortNotOurs | None = None  # the remote port is not the user's: nothing is forwarded
        self.lease_holders: list[str] = []  # other live tunnels sharing the remote server
        self._rtt_ms: float | None = None
        self._rtt_at = 0.0
        self._past_loss: tuple[int, float | None, float | None] | None = None
        self._stop = asyncio.Event()
        self._control: asyncio.AbstractServer | None = None
        self._saved: tuple[object, ...] = ()
        self._server_lock = asyncio.Lock()  # an upgrade and a revive never touch the server at once
        self.last_wake: WakeEvent | None = None
        self.last_wake_outcome: CheckOutcome | None = None
        self._checking = asyncio.Lock()
        self._wake_checks: set[asyncio.Task[CheckOutcome]] = set()  # held, so they are not collected mid-run
        self.bring_up_task: asyncio.Task[None] | None = None  # cancelled by SIGINT/SIGTERM or a `stop` request
        self.ready = False  # the bring-up finished: until then `status` says connecting and its step
        self.cancelled_by_down = False  # a `stop` request (gt-remote down) cancelled the bring-up, not a signal
        self.undo_requested = False  # SIGUSR2: the `up` that started us was interrupted; undo the bring-up, even a finished one
        self.undone = True  # whether the undo of a failed bring-up stopped everything it started
        self.step = "starting"
        self._starting_server = False  # a server start was begun by this bring-up (stopped if it is cancelled)
        self._runtime_ids: tuple[int, int] | None = None  # inodes of our control socket and pid file
        progress.relay_transfers(self._on_transfer)
        self.exit_cause: str | None = None  # why the watchdog ended the supervisor, for the record
        self.health_check_running = False  # shown in status internals: figures read mid-check include its streams
        self._relay_vouched = False  # the last health Ping went through the relay, which checked the port's holder
        self._last_upkeep = 0.0  # loop time of the last lease touch: the script's, or the relay's
        self._load_meter = LoadMeter()
        self._load: dict[str, Any] | None = None  # the figures `pick` reads, from the last health check
        self._load_at = 0.0  # when they were read (time.time())
        self._script_load: dict[str, str] | None = None  # this check's load facts, if its script ran
        self._direct_sessions: int | None = None  # the session count after this check's direct Ping
        self._relay_has_load = True  # the relay's load op answered last time (a change is logged)

    # --- bring-up -------------------------------------------------------------------

    async def bring_up(self) -> None:
        """Everything `up` promises, or nothing left behind.

        The control socket answers from the first moment, so `status` (and a second `up`)
        see `connecting` and the step, not a silent supervisor.
        """
        try:
            await self.forwarder.start()
        except GtRemoteError:
            await refuse_unknown_host(self.link.target)  # a mistyped alias is named first, not the address it collided with
            raise
        progress.steps.debug("forward: listening on %s for 127.0.0.1:%d on the remote", self.settings.local_url, self.settings.remote_port)
        try:
            await self._serve_control()
            self._save_record()
            self._set_step("connecting")
            self.say(f"connecting to {self.settings.destination}")
            conn = await self.link.open()
            remote_scripts.use_install_dir(conn, self.settings.install_dir)
            self._set_step("checking the remote")
            relay_path = remote_relay.remote_agent_path() if self.settings.resume else ""
            lease, ttl = remote_lease.lease_name(self.settings), remote_lease.lease_ttl(self.settings)
            found = await bring_up(conn, self.settings, self._say_step, lease, ttl, relay_path, on_survey=lambda survey: self._surveyed(conn, survey))
            self.server = found.server
            self._set_step("starting relay")
            await self.relay.wait_for_setup()
            self._set_step("checking")
            self.say(f"checking {self.settings.local_url} end to end with a ccmux Ping")
            self.rtt_ms = await self._prove_end_to_end(conn) * 1000
            if self.backs.tunnels:
                self._set_step("opening back tunnels")
                await self.backs.start(self.say)
                await self._check_server_environment(conn)
        except TimeoutError as exc:
            await self._undo()
            raise ConnectFailed(f"{self.settings.destination} did not answer in time while {self.step}", "check the network and the remote, then run up again") from exc
        except BaseException:
            await self._undo()
            raise
        self.ready = True
        self.step = "up"
        self._save_record()
        reach.remember(self.settings)
        log.info("up: %s -> %s:127.0.0.1:%d", self.settings.local_url, self.settings.destination, self.settings.remote_port)

    async def _check_server_environment(self, conn: asyncssh.SSHClientConnection) -> None:
        """A server that was running already may lack the back tunnels' variables, which its
        panes inherit: never restarted silently (its panes would end), but said, with the way
        to restart it on purpose."""
        wanted = backs_environment(self.settings.back)
        server = self.server
        if not wanted or server is None or not server.reused or server.pid is None:
            return
        try:
            lacking = await remote_server.environment_lacking(conn, server.pid, wanted)
        except (GtRemoteError, asyncssh.Error, OSError, TimeoutError) as exc:  # advice only: never fails `up`
            log.warning("could not read the server's environment: %s", reason(exc))
            return
        self.server_env_lacking = lacking or {}
        if lacking:
            shown = " ".join(f"{name}={value}" for name, value in sorted(lacking.items()))
            self.say(
                f"warning: {self.settings.server} (pid {server.pid}) on {self.settings.name} was started without {shown}, so its panes do not find the back tunnels; "
                f"restart it on purpose with 'gt-remote restart-server {shell_word(self.settings.name)} --yes' (its panes' processes end)"
            )

    def _surveyed(self, conn: asyncssh.SSHClientConnection, survey: Survey) -> None:
        """Before any decision: what the bring-up script started is stopped again if `up` fails.

        The relay is set up from here, beside the server's install and start rather than after
        them: the two are independent (the relay dials the port only when a stream opens), and
        on a fresh remote each is an upload and a program start."""
        self.lease_holders = survey.lease_holders
        if self.stop_requested:  # interrupted while the script ran: only what it started matters now, for the undo
            self.relay.note_started(survey.relay)
            return
        self.relay.set_up_beside_the_server(conn, survey.relay)

    async def _prove_end_to_end(self, conn: asyncssh.SSHClientConnection) -> float:
        """A Ping through the local address; beside it, whether sshd lets channels reach the relay.

        Both at once: the channel check costs no round trip of its own. If sshd refuses it,
        forwarding falls back to plain and the Ping is made again that way.
        """
        if not self.relay.in_use:
            return await ping_address(self.settings.local, timeout=10.0)
        ping = asyncio.create_task(ping_address(self.settings.local, timeout=10.0))
        try:
            refused = await self.relay.channel_refused(conn)
        except BaseException:
            ping.cancel()
            raise
        if not refused:
            return await ping
        ping.cancel()
        await asyncio.gather(ping, return_exceptions=True)
        return await ping_address(self.settings.local, timeout=10.0)

    async def _release_lease(self, conn: asyncssh.SSHClientConnection | None) -> None:
        """Best effort: a lease left behind expires after a few keepalives anyway."""
        if conn is None:
            return
        try:
            await asyncio.wait_for(remote_lease.release(conn, self.settings), 5.0)
        except (GtRemoteError, asyncssh.Error, OSError, TimeoutError) as exc:
            log.info("could not release the lease: %s", exc)

    def _set_step(self, step: str) -> None:
        self.step = step

    def _say_step(self, message: str) -> None:
        """Progress from the server's bring-up also names the step `status` shows."""
        for prefix, step in STEPS:
            if message.startswith(prefix):
                self.step = "uploading 0 %" if step == "uploading" else step
                self._starting_server = self._starting_server or step == "starting server"
        self.say(message)

    def _on_transfer(self, done: int, total: int, _elapsed: float) -> None:
        if not self.ready and self.step.startswith("uploading"):
            self.step = f"uploading {100 * done // total if total else 100} %"

    async def _undo(self) -> None:
        """A failed or cancelled bring-up (or one the interrupted `up` disowned as it finished):
        stop what it started, remove what it wrote. `undone` says whether that all went."""
        try:
            await asyncio.wait_for(self._abandon(), UNDO_TIMEOUT)
        except (TimeoutError, GtRemoteError, asyncssh.Error, OSError) as exc:
            self.undone = False
            log.warning("could not undo everything this bring-up started on the remote: %s", reason(exc))
            await self.forwarder.close()
            await self.link.close()
        finally:
            self._stop_control()
            self.files.record.unlink(missing_ok=True)

    async def _abandon(self) -> None:
        """The server and the lease first; then, once the relay's setup has finished (it may be
        an upload: _undo's time limit bounds the wait), the relay it started and its upload."""
        server = self.server
        conn = self.link.connection
        started = server is not None and server.started_by_gt_remote and not server.reused
        if conn is None and (started or self._starting_server or self.relay.started_pid is not None):
            self.undone = False  # no connection left to stop them with
        await self._release_lease(conn)
        if server and started and conn is not None:
            await remote_server.stop(conn, self.settings.server, self.settings.remote_port, only_pid=server.pid)
            if self.ready:  # `up` was interrupted as the bring-up finished: the server it remembered is gone
                reach.forget(self.settings.name)
        elif server is None and self._starting_server and conn is not None:
            # Cancelled while the server started: the pid file for this port names the one we started.
            await remote_server.stop(conn, self.settings.server, self.settings.remote_port)
        await self.backs.close()
        if self.backs.tunnels:
            await self.relay.path.close_detached()  # the relay's listeners this bring-up opened
        await self.relay.abandon(conn)
        await self.forwarder.close()
        await self.link.close()

    # --- the runtime files: control socket and pid file --------------------------------

    async def _serve_control(self) -> None:
        self._control = await control.serve(self.files.control, self._on_request)
        self._runtime_ids = (os.stat(self.files.control).st_ino, os.stat(self.files.pid).st_ino)

    def _stop_control(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
            self.files.control.unlink(missing_ok=True)

    def _runtime_files_intact(self) -> bool:
        try:
            return self._runtime_ids == (os.stat(self.files.control).st_ino, os.stat(self.files.pid).st_ino)
        except OSError:
            return False

    async def keep_runtime_files(self) -> None:
        """logind removes /run/user/UID at the last logout while we live on: make the socket,
        pid file (and so the lock) again, so `status` and `down` still find us."""
        while True:
            await asyncio.sleep(RUNTIME_CHECK_INTERVAL)
            if self._stop.is_set():
                return  # shutting down: the files go, and stay gone
            if self._control is None or self._runtime_files_intact():
                continue
            try:
                await self._recreate_runtime_files()
            except OSError as exc:
                log.error("the runtime directory %s vanished and cannot be made again (%s); stopping", runtime_path(), reason(exc))
                self.request_stop()
                return

    async def _recreate_runtime_files(self) -> None:
        gone = runtime_path()
        try:
            self.files.control.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            os.environ.pop("XDG_RUNTIME_DIR", None)  # its parent is gone too: use /tmp/gt-remote-UID
        if control.hold_pid_lock(self.files.pid) is None:
            log.error("the runtime directory %s vanished and another supervisor for %s took its place; stopping", gone, self.settings.name)
            self.request_stop()
            return
        if self._control is not None:
            self._control.close()
        await self._serve_control()
        self._save_record()
        log.warning("the runtime directory %s vanished; made the control socket and pid file again in %s", gone, runtime_path())

    # --- running --------------------------------------------------------------------

    def _background(self) -> dict[str, Coroutine[Any, Any, None]]:
        """The tasks that keep the tunnel alive; each runs until `down`, and none may end before."""
        return {
            "link watcher": self.link.run(),
            "health loop": self._health_loop(),
            "wake watcher": WakeWatcher(self.on_wake).run(),
        }

    async def serve_forever(self) -> None:
        """Run the background tasks under a watchdog until `down`.

        A task that ends early (a bug, an unexpected exception) would leave a supervisor that
        says "up" while nothing watches the link or the server. So the first one to end
        stops everything: its traceback goes to the log, its cause to the record `status`
        reads, and the process exits non-zero for the service manager to restart it.
        """
        tasks: dict[asyncio.Future[Any], str] = {asyncio.create_task(coro, name=name): name for name, coro in self._background().items()}
        stop: asyncio.Future[Any] = asyncio.create_task(self._stop.wait(), name="stop request")
        done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        ended = [task for task in done if task is not stop]
        for task in [stop, *tasks]:
            task.cancel()
        await asyncio.gather(stop, *tasks, return_exceptions=True)
        if ended:
            self.exit_cause = self._task_ended(tasks[ended[0]], ended[0])
        await self._shutdown()
        if self.exit_cause is not None:
            raise SupervisorTaskEnded(self.exit_cause, f"the supervisor exits for its service manager to restart it; the traceback is in {self.files.log}")

    def _task_ended(self, name: str, task: asyncio.Future[Any]) -> str:
        error = None if task.cancelled() else task.exception()
        cause = f"the supervisor's {name} ended unexpectedly: " + (f"{type(error).__name__}: {error}" if error else "it returned")
        log.error("%s", cause, exc_info=error)
        return cause

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    async def _health_loop(self) -> None:
        """Ping the server through the tunnel; revive it if it died while the link stayed up.

        The port-and-lease script runs on the remote only when it has to: it starts the
        login shell (and its start-up files) and a dozen small programs each time, and the
        relay already checks who holds the port whenever it dials it, the health Ping's
        stream included. So after a health Ping through the relay, the next check skips the
        script until the lease needs touching (remote_lease.LEASE_TOUCH_KEEPALIVES), and the
        relay's lease op touches it then: an idle tunnel starts no shell on the remote at all.
        Without a relay, or when its Ping or its lease op fails, the script runs, before any
        direct Ping."""
        delay = 0.0  # the first check at once: its load figures are what `pick` reads
        while True:
            await asyncio.sleep(delay)
            delay = self.settings.keepalive
            self.health_check_running = True
            try:
                await self._check_health()
            finally:
                self.health_check_running = False

    async def _check_health(self) -> None:
        """One health check: the body of _health_loop's tick."""
        conn = self.link.connection
        checked_port = False
        self._script_load = self._direct_sessions = None
        if conn is not None and not await self._relay_kept_port_and_lease(conn):
            await self._upkeep(conn)
            checked_port = True
        if self.port_refusal is not None:
            conn = None  # never forward to (or Ping) another account's listener
        if conn is not None and self.relay.path.missing:  # a stream found no relay while the link stayed up
            await self.relay.restart("a stream found no relay")
        self._relay_vouched = conn is not None and await self._relay_answers()
        if conn is not None and not self._relay_vouched:
            if not checked_port:
                await self._upkeep(conn)  # who holds the port, before a direct Ping goes to it
            if self.port_refusal is not None:
                self.relay.error = None  # the relay refused the port for the same reason
            else:
                await self._ping_directly(conn)
        if conn is not None and self.port_refusal is None and self.rtt_ms is not None:
            await self._read_load(conn)
        self._save_record_if_changed()

    async def _relay_kept_port_and_lease(self, conn: asyncssh.SSHClientConnection) -> bool:
        """Can this check skip the script? Yes when the last health Ping went through the relay
        (which checked the port as it dialled) and the lease is not due, or the relay touched it."""
        if not self._relay_vouched:
            return False
        return not self._lease_touch_due() or await self._touch_lease_through_relay(conn)

    def _lease_touch_due(self) -> bool:
        """Half a second of slack: checks are a keepalive apart, so the third one is due."""
        return asyncio.get_running_loop().time() - self._last_upkeep >= remote_lease.LEASE_TOUCH_KEEPALIVES * self.settings.keepalive - 0.5

    async def _ping_directly(self, conn: asyncssh.SSHClientConnection) -> None:
        """A Ping straight to the server's port: the server down, or only the relay?"""
        try:
            rtt, self._direct_sessions = await remote_load.ping_and_count(conn, self.settings.remote_port, max(2.0, self.settings.keepalive), self._server_socket())
            self.rtt_ms = rtt * 1000
            self.server_error = None
        except (TimeoutError, asyncssh.Error, PingFailed, OSError) as exc:
            log.warning("health Ping failed: %s", reason(exc))
            self.relay.error = None  # the server (or the link) failed, not the relay
            await self._check_server(conn)
        else:
            await self.relay.answered_directly(conn)

    async def _touch_lease_through_relay(self, conn: asyncssh.SSHClientConnection) -> bool:
        """The lease, refreshed by the relay: no shell started on the remote. False when the
        relay could not; the touch stays due, so the script does it in the same health check."""
        holders = await self.relay.touch_lease(conn)
        if holders is None:
            return False
        self.lease_holders = holders
        self._last_upkeep = asyncio.get_running_loop().time()
        return True

    async def _upkeep(self, conn: asyncssh.SSHClientConnection) -> None:
        """One script: is the port still the user's; refresh this tunnel's lease."""
        try:
            owner, self.lease_holders, self._script_load = await remote_lease.upkeep(conn, self.settings, self.server.pid if self.server else None)
        except (GtRemoteError, asyncssh.Error, OSError, TimeoutError) as exc:
            log.warning("port and lease check failed: %s", exc)
            return  # not counted as a touch: the next health check tries again
        self._last_upkeep = asyncio.get_running_loop().time()
        self._refuse(refusal(owner, self.settings.name, self.settings.remote_port))

    def _server_socket(self) -> str | None:
        """The server's own Unix socket, for Pings and plain forwarding: no other account can be
        behind it (gt_remote/remote/ownership.py). None where the remote has none to offer."""
        return self.server.socket if self.server is not None else None

    def _refuse(self, error: PortNotOurs | None) -> None:
        """Stop forwarding while another account holds the port; go on once it is the user's again."""
        if error is not None and self.port_refusal is None:
            log.error("not forwarding: %s", error)
        elif error is None and self.port_refusal is not None:
            log.warning("127.0.0.1:%d on %s is the user's again; forwarding again", self.settings.remote_port, self.settings.name)
        self.port_refusal = error
        self.forwarder.refusal = error

    async def _read_load(self, conn: asyncssh.SSHClientConnection) -> None:
        """The load figures `pick` reads, after a health Ping that went through: the session
        count came with the Ping; the machine's figures from the relay's load op (no process on
        the remote), else from this check's port-and-lease script, else a script of their own."""
        facts, read_by = self._script_load, "script"
        if self._relay_vouched:
            try:
                facts, read_by = await self.relay.load(conn), "relay"
                self._relay_has_load = True
            except StreamGone as exc:
                if self._relay_has_load:
                    log.warning("the relay gives no load figures (%s); a script reads them, until it can again", exc)
                self._relay_has_load = False
        if facts is None:
            try:
                facts, read_by = await remote_load.read_by_script(conn, max(10.0, 2 * self.settings.keepalive)), "script"
            except (GtRemoteError, asyncssh.Error, OSError, TimeoutError) as exc:
                log.warning("reading the load figures failed: %s", reason(exc))
                return
        sessions = self.relay.sessions if self._relay_vouched else self._direct_sessions
        self._load = self._load_meter.figures(facts_from(facts), sessions, read_by)
        self._load_at = time.time()

    def _load_status(self) -> dict[str, Any] | None:
        """The last figures, while they were read over the live link and its health Ping went through."""
        rtt, link = self.rtt_ms, self.link
        if self._load is None or rtt is None or (link.up_since is not None and self._load_at < link.up_since):
            return None
        return {**self._load, "rtt_ms": round(rtt, 3), "at": iso(self._load_at), "age_s": round(time.time() - self._load_at, 1)}

    async def _relay_answers(self) -> bool:
        """A health Ping through the relay, the way clients reach the server (RelayKeeper.ping)."""
        rtt = await self.relay.ping()
        if rtt is None:
            return False
        self.rtt_ms = rtt * 1000
        self.server_error = None
        return True

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
        self.rtt_ms = None  # the last Ping failed: an old round trip would mislead
        try:
            await self._revive(conn, "at a health check")
        except PortNotOurs as error:
            self._refuse(error)
        except ConnectFailed as error:  # the SSH connection failed, not the server: the link reports that
            log.warning("remote server check interrupted: %s", error)
        except GtRemoteError as error:
            log.error("remote server check failed: %s", error)
            self.server_error = error
        except (TimeoutError, asyncssh.Error, OSError) as exc:
            log.warning("remote server check interrupted: %s", reason(exc))  # the link notices a dead connection itself

    async def _after_reconnect(self, conn: asyncssh.SSHClientConnection) -> None:
        """Runs on every new connection before it is used; errors count as a failed attempt."""
        remote_scripts.use_install_dir(conn, self.settings.install_dir)
        try:
            await self._revive(conn, "after a reconnect")
        except PortNotOurs as error:
            self._refuse(error)  # the link is fine: the health loop sees when the port is ours again
        self.server_error = None  # the server was just checked (and revived if it had died)
        await self.relay.ensure(conn)

    async def _revive(self, conn: asyncssh.SSHClientConnection, found_at: str) -> None:
        assert self.server is not None
        async with self._server_lock:
            old_pid = self.server.pid
            revived = await revive_server(conn, self.settings, self.server)
        self._refuse(None)  # the port is the user's (revive_server checked)
        if revived is not None:
            self.server = revived
            self.server_env_lacking = {}  # started again by gt-remote: with the back tunnels' variables
            self._count_server_restart(f"the server (pid {old_pid}) had stopped (it crashed, was killed, or the gaming PC restarted); found {found_at} and started again", old_pid)
            log.warning("remote server restarted (pid %s), restart #%d; the old one's panes had ended with it", revived.pid, self.server_restarts)

    # --- control --------------------------------------------------------------------

    async def _on_request(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, "status": self.status()}
        if not self.ready and op in ("reconnect", "upgrade", "restart_server"):
            cause, fix = f"{self.settings.name} is still coming up ({self.step})", f"try again once 'gt-remote status {self.settings.name}' says up"
            return {"ok": False, "coming_up": True, "error": {"kind": "NotUp", "cause": cause, "fix": fix}}
        if op == "reconnect":
            return await self._reconnect_request(bool(request.get("force")), float(request.get("wait", RECONNECT_WAIT)))
        if op == "stop":
            if not self.ready and self.bring_up_task is not None:  # `down` from another shell during the bring-up
                if not self.stop_requested:  # once: a second cancel would cut the undo short
                    self.cancelled_by_down = True
                    self._stop.set()
                    self.bring_up_task.cancel()
                # `down` waits this long before SIGKILL: undoing may wait for an upload to end.
                return {"ok": True, "server_note": "the bring-up was cancelled, and what it had started undone", "bring_up_cancelled": True, "stop_within_s": UNDO_TIMEOUT + UNDO_MARGIN}
            if request.get("bring_up_only"):  # `down` asking past the lock of an `up` in another shell: no bring-up here
                return {"ok": True, "bring_up_cancelled": False}
            if request.get("stop_server"):
                shared = await self._shared_refusal(bool(request.get("force")))
                if shared is not None:
                    return {"ok": False, "error": shared.to_dict()}
            stopped = await self._stop_remote_server() if request.get("stop_server") else None
            self._stop.set()
            return {"ok": True, **(stopped or {})}
        if op == "upgrade":
            install_dir = request.get("install_dir")
            return await self._upgrade(str(request.get("server_binary")), install_dir if isinstance(install_dir, str) else None)
        if op == "diagnose":
            return await self._diagnose()
        if op == "restart_server":
            return await self._restart_server()
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _diagnose(self) -> dict[str, Any]:
        """For `gt-remote ping` after a failed Ping: which hop does not answer? The link, the
        server (Pinged directly over SSH), or else what lies between (relay or forwarding)."""
        conn = self.link.connection
        cause = self.link.last_error.cause if self.link.last_error else None
        found: dict[str, Any] = {"ok": True, "state": self.state, "last_cause": cause, "resumable": self.relay.in_use}
        if not self.ready or conn is None:
            return {**found, "link_up": False}
        if self.port_refusal is not None:  # never Ping another account's listener, not even to diagnose
            return {**found, "link_up": True, "server_answers": False, "server_reason": self.port_refusal.cause}
        try:
            rtt = await ping_remote(conn, self.settings.remote_port, timeout=3.0, socket=self._server_socket())
            return {**found, "link_up": True, "server_answers": True, "server_rtt_ms": round(rtt * 1000, 3)}
        except (TimeoutError, asyncssh.Error, PingFailed, OSError) as exc:
            return {**found, "link_up": True, "server_answers": False, "server_reason": reason(exc)}

    async def _upgrade(self, binary: str, install_dir: str | None = None) -> dict[str, Any]:
        """Replace the running server with another build; the tunnel and its link stay."""
        old = self.server

        def restored(server: ServerInfo) -> None:
            self.server = server

        try:
            conn = await self.link.wait_connected(10.0)
            async with self._server_lock:
                if install_dir is not None:  # the new build and later ones go there
                    self.settings = dataclasses.replace(self.settings, install_dir=install_dir)
                    remote_scripts.use_install_dir(conn, install_dir)
                self.server = await replace_server(conn, self.settings, binary, log.info, restored)
                self.settings = dataclasses.replace(self.settings, server_binary=binary)
                self.server_env_lacking = {}  # the new build was started with the back tunnels' variables
        except GtRemoteError as error:
            log.error("upgrade failed: %s", error)
            self._save_record()
            return {"ok": False, "error": error.to_dict()}
        self.server_error = None
        self._save_record()
        reach.remember(self.settings)
        log.info("upgraded the remote server: pid %s -> %s", old and old.pid, self.server.pid)
        return {"ok": True, "old": old.to_dict() if old else None, "server": self.server.to_dict()}

    async def _restart_server(self) -> dict[str, Any]:
        """Restart the server on purpose (`gt-remote restart-server`): its panes end, and the
        new one has the back tunnels' variables."""
        old = self.server
        try:
            conn = await self.link.wait_connected(10.0)
            if old is None:
                raise GtRemoteError(f"{self.settings.name} has no server to restart yet", "wait until 'gt-remote status' says up")
            async with self._server_lock:
                self.server = await restart_server(conn, self.settings, old)
        except GtRemoteError as error:
            log.error("restarting the server failed: %s", error)
            return {"ok": False, "error": error.to_dict()}
        self._count_server_restart("restarted on request ('gt-remote restart-server')", old.pid)
        self.server_env_lacking = {}
        self.server_error = None
        self._save_record()
        log.warning("the server was restarted on request: pid %s -> %s", old.pid, self.server.pid)
        return {"ok": True, "server": {**self.server.to_dict(), "name": self.settings.server}}

    def _count_server_restart(self, cause: str, old_pid: int | None) -> None:
        """Every server restart ends the panes' processes (they die with the server): `status`
        says so, with when and why, next to the count."""
        self.server_restarts += 1
        self.last_server_restart = {"at": iso(time.time()), "cause": cause, "old_pid": old_pid, "pid": self.server.pid if self.server else None}

    async def _shared_refusal(self, force: bool) -> GtRemoteError | None:
        """`down --stop-server` while another tunnel holds a live lease: refuse, unless forced."""
        try:
            conn = await self.link.wait_connected(5.0)
            await remote_lease.check_stop_allowed(conn, self.settings, force)
        except remote_lease.ServerShared as error:
            return error
        except (GtRemoteError, asyncssh.Error, OSError) as exc:
            log.warning("could not check the server's other tunnels: %s", exc)
        return None

    async def _stop_remote_server(self) -> dict[str, Any]:
        await self.relay.stop()
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

    @property
    def rtt_ms(self) -> float | None:
        """The last Ping's round trip, only while the connection it went over is the live one."""
        link = self.link
        if self._rtt_ms is None or not self.ready or link.state is not LinkState.UP or self.server_error is not None:
            return None
        if link.up_since is not None and self._rtt_at < link.up_since:
            return None  # measured over a connection that has since been replaced
        return self._rtt_ms

    @rtt_ms.setter
    def rtt_ms(self, value: float | None) -> None:
        self._rtt_ms, self._rtt_at = value, time.time()

    @property
    def state(self) -> str:
        return self.link.state.value if self.ready else LinkState.CONNECTING.value

    def _last_error(self) -> str | None:
        """Now-errors as they are; an outage already recovered from, in the past tense."""
        if self.server_error is not None:
            return str(self.server_error)
        error, link = self.link.last_error, self.link
        if error is None:
            return None
        if not self.ready or link.state is not LinkState.UP:
            return str(error)
        if self._past_loss is None or self._past_loss[0] != link.reconnects:
            recovered = link.last_recovery_s
            lost_at = link.up_since - recovered if link.up_since is not None and recovered is not None else None
            self._past_loss = (link.reconnects, lost_at, recovered)
        _, lost_at, recovered = self._past_loss
        cause = error.cause
        if cause.startswith("connection lost"):
            detail = cause.removeprefix("connection lost").lstrip(": ")
            cause = f"connection lost at {iso(lost_at) or '?'}" + (f" ({detail})" if detail else "")
        else:
            cause = f"{cause} (at {iso(lost_at) or '?'})"
        return f"{cause}, recovered in {recovered:.2f} s" if recovered is not None else f"{cause}, recovered at {iso(link.up_since)}"

    def _next_attempt_at(self) -> str | None:
        """Only a time still ahead: while an attempt runs there is no next one yet."""
        at = self.link.next_attempt_at
        return iso(math.ceil(at)) if at is not None and at > time.time() and self.link.state is not LinkState.UP else None  # ceil: whole seconds, never shown as past

    def status(self) -> dict[str, Any]:
        link, server = self.link, self.server
        rtt = self.rtt_ms
        return {
            "host": self.settings.name,
            "destination": self.settings.destination,
            "state": LinkState.FAILED.value if self.port_refusal else self.state,
            "step": None if self.ready else self.step,
            "local": self.settings.local_url,
            "remote_port": self.settings.remote_port,
            "supervisor_pid": os.getpid(),
            "uptime_s": None if not self.ready or link.state != LinkState.UP or link.up_since is None else round(time.time() - link.up_since, 1),
            "reconnects": link.reconnects,
            "server_restarts": self.server_restarts,
            "last_server_restart": self.last_server_restart,
            "rtt_ms": None if rtt is None else round(rtt, 3),
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
            "last_error": str(self.port_refusal) if self.port_refusal else self.exit_cause or self._last_error(),
            "port_refused": self.port_refusal.to_dict() if self.port_refusal else None,
            "last_error_past": self.server_error is None and link.last_error is not None and self.ready and link.state is LinkState.UP,
            "exit_cause": self.exit_cause,
            "since": iso(link.since),
            "next_attempt_at": self._next_attempt_at(),
            "clients": len(self.forwarder.clients),
            "tunnels_sharing_server": 1 + len(self.lease_holders),
            "shared_with": list(self.lease_holders),
            **self.relay.status(),
            "back": self.backs.status(),
            "server_env_lacking": self.server_env_lacking,
            "last_wake": self._last_wake_status(),
            "last_recovery_s": None if link.last_recovery_s is None else round(link.last_recovery_s, 3),
            "exports": export_lines(self.settings.local_url, self.settings.server),
            "load": self._load_status(),
            "internals": {
                "asyncio_tasks": len(asyncio.all_tasks()),
                "open_fds": _open_fds(),
                "health_check_running": self.health_check_running,
                "task_kinds": _task_kinds(),
                "fd_kinds": _fd_kinds(),
                "resume_buffered_bytes": self.relay.path.buffered(),
                "resume_peak_unacked_bytes": self.relay.path.peak_unacked,
            },
        }

    def _last_wake_status(self) -> dict[str, Any] | None:
        event = self.last_wake
        if event is None:
            return None
        outcome = self.last_wake_outcome
        return {"at": iso(event.at), "kind": event.kind, "detail": event.detail, "outcome": outcome.value if outcome else "checking"}

    def _save_record(self) -> None:
        """What `status` shows if this process dies without a word, and how any shell of this
        user finds this process: its pid, start time and control socket."""
        record = {
            "host": self.settings.name,
            "settings": json.loads(self.settings.to_json()),
            "status": self.status(),
            "supervisor": {"pid": os.getpid(), "start_time": control.process_start_time(os.getpid()), "control": str(self.files.control), "pid_file": str(self.files.pid)},
        }
        write_private(self.files.record, json.dumps(record, indent=2))

    def _save_record_if_changed(self) -> None:
        key = (self.link.state, str(self.link.last_error), self.server_restarts, self.server and self.server.pid, str(self.port_refusal), tuple(self.lease_holders), self.relay.restarts, self.relay.error)
        if key != self._saved:
            try:
                self._save_record()
                self._saved = key
            except OSError as exc:  # a full disk must not stop the supervision
                log.warning("cannot save the status record: %s", exc)

    async def _shutdown(self) -> None:
        if self.undo_requested:  # the `up` that started us was interrupted before it could hand the tunnel out
            log.warning("the up that started this supervisor was interrupted as the bring-up finished; undoing what it started")
            await self._undo()
            log.info("stopped" if self.undone else "stopped; some of what the bring-up started may still run on the remote")
            return
        await self._release_lease(self.link.connection)
        if self._control is not None:
            self._control.close()
            self.files.control.unlink(missing_ok=True)
        await self.backs.close()
        await self.relay.path.close_detached()  # streams waiting for the link end now, and the relay's back listeners
        await self.forwarder.close()
        await self.link.close()
        if self.exit_cause is None:
            self.files.record.unlink(missing_ok=True)
            log.info("stopped")
        else:  # kept, so `status` names the cause after this process is gone
            self._save_record()


def interrupted(supervisor: Supervisor) -> Interrupted | CancelledByDown:
    """What an interrupted bring-up left: nothing, or (its undo cut short) what to do about it."""
    name, step = supervisor.settings.name, supervisor.step
    if supervisor.cancelled_by_down:
        kind: type[Interrupted | CancelledByDown] = CancelledByDown
        what = f"the bring-up of {name} was cancelled by 'gt-remote down' while {step}"
    else:
        kind, what = Interrupted, f"the bring-up of {name} was interrupted while {step}"
    if supervisor.undone:
        return kind(what, "nothing it started was left running; run up again when ready")
    return kind(
        f"{what}, and undoing it did not finish",
        f"what it started may still run on {name}: see 'gt-remote logs {shell_word(name)}'; 'gt-remote down {shell_word(name)} --stop-server' stops it",
    )


async def run(settings: HostSettings, say: Say, on_ready: Callable[[dict[str, Any]], None]) -> None:
    supervisor = Supervisor(settings, say)
    loop = asyncio.get_running_loop()
    bring_up = supervisor.bring_up_task = asyncio.create_task(supervisor.bring_up())

    def stop() -> None:
        """SIGINT/SIGTERM: during the bring-up, cancel it now (it undoes itself); after, stop."""
        if not supervisor.stop_requested and not bring_up.done():
            log.warning("interrupted while %s; undoing what this bring-up started", supervisor.step)
            bring_up.cancel()
        supervisor.request_stop()

    def undo() -> None:
        """SIGUSR2, from the `up` that started this supervisor (host/spawn.py): it was interrupted
        before it handed the tunnel out, so nothing of this bring-up may stay, even when the
        bring-up has just finished (its `ready` in flight): then the stop undoes it too."""
        supervisor.undo_requested = True
        stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    loop.add_signal_handler(signal.SIGUSR2, undo)
    loop.add_signal_handler(signal.SIGUSR1, lambda: supervisor.on_wake(WakeEvent("signal", "SIGUSR1", time.time())))
    keeper = asyncio.create_task(supervisor.keep_runtime_files())
    try:
        try:
            await bring_up
        except asyncio.CancelledError:
            if not supervisor.stop_requested:
                raise
            raise interrupted(supervisor) from None
        if supervisor.undo_requested:  # interrupted as the bring-up finished: nothing to hand out
            await supervisor._undo()
            raise interrupted(supervisor)
        on_ready(supervisor.status())
        await supervisor.serve_forever()
    finally:
        keeper.cancel()


def main(argv: list[str]) -> int:
    events = EventPipe()
    try:
        settings = settings_from_stdin(argv[1])
    except (ValueError, TypeError, IndexError) as exc:  # a garbled or cut-short hand-over (`up` killed mid-write)
        events.emit("error", error={"kind": "GtRemoteError", "cause": f"the supervisor got no usable settings: {exc}", "fix": "run 'gt-remote up' again"})
        return 1
    files = HostFiles(settings.name)
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
