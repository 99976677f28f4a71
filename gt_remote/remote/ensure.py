"""The decision `up` and every reconnect make: reuse, install, start, or fail with a reason."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import asyncssh

from gt_remote.base import backs, progress
from gt_remote.base.config import HostSettings
from gt_remote.base.errors import BinaryIncompatible, RemoteError, RemotePortBusy, ServerHung, ServerMissing, ServerOnOtherPort, ServerWithoutTcp, install_dir_unsafe, shell_word
from gt_remote.remote import server as remote_server
from gt_remote.remote.install import check_platform, run_install_command, upload_server
from gt_remote.remote.ownership import Holder, Owner, PortNotOurs, check_owner, refusal
from gt_remote.remote.probe import PORT_CHECK_TIMEOUT, PortState, RemoteFacts, Survey, build_of, file_digest, no_channel_to, parse_version, port_state, probe, survey
from gt_remote.remote.scripts import run_script, to_the_end

log = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass
class ServerInfo:
    path: str | None
    version: str | None
    pid: int | None
    started_by_gt_remote: bool
    reused: bool
    other_build: dict[str, str | None] | None = None  # a build installed there that is not the running one
    socket: str | None = None  # its own Unix socket, which Pings and plain forwarding use (ownership.py)

    @property
    def build(self) -> str | None:
        return build_of(self.path)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "build": self.build}


def other_build(facts: RemoteFacts, running_path: str | None) -> dict[str, str | None] | None:
    """The build `up` would start now, when it is not the one running: `status` shows it."""
    if facts.path and running_path and facts.path != running_path:
        return {"path": facts.path, "build": build_of(facts.path), "version": facts.version}
    return None


@dataclass
class BringUp:
    """What `up`'s one bring-up round trip found and did."""

    server: ServerInfo
    survey: Survey


async def bring_up(
    conn: asyncssh.SSHClientConnection,
    settings: HostSettings,
    say: Say,
    lease: str = "",
    lease_ttl: int = 0,
    relay_path: str = "",
    on_survey: Callable[[Survey], None] | None = None,
) -> BringUp:
    """One script learns the facts, the server, the port's owner, the leases and the relay
    (starting it if installed); a Ping rides beside it. Then reuse, install or start.

    `on_survey` hears what was found before any decision, so a caller can undo what the
    script started (the relay) if the bring-up then fails."""
    digest = file_digest(settings.server_binary) if settings.server_binary else ""
    progress.steps.debug("bring-up: one script for the facts, the server, the port's owner, the lease and the relay")

    async def surveyed() -> Survey:
        found = await survey(conn, settings.server, settings.remote_port, digest, relay_path, lease, lease_ttl)
        if on_survey is not None:
            on_survey(found)  # also when `up` was interrupted meanwhile: the undo must know what the script started
        return found

    found = await to_the_end(surveyed())  # it may start the relay: never cut off mid-way
    progress.steps.debug(
        "bring-up: %s %s, python3 %s, %s KiB free, install dir %s, port %s",
        found.facts.os, found.facts.arch, found.python_version or "none", found.free_kib, found.install_dir, found.owner.holder.value,
    )
    if found.install_dir == "unsafe":
        raise install_dir_unsafe(settings.name, found.unsafe_dir, found.unsafe_why)
    if found.facts.wsl:
        say(wsl_warning(settings.name, found.facts.wsl))
    state, socket = await state_of_port(conn, settings, found.owner)
    server = await _ensure(conn, settings, found.facts, found.owner, state, digest, say, socket)
    return BringUp(server, found)


async def state_of_port(conn: asyncssh.SSHClientConnection, settings: HostSettings, owner: Owner) -> tuple[PortState, str | None]:
    """Ping the port only once its listener is known to be the user's: another account's program
    never gets even a Ping. A listener no tool on the remote can name is Pinged, then refused;
    a program of the user's own that is not our server is Pinged, to say what it is."""
    refused = refusal(owner, settings.name, settings.remote_port)
    if refused and owner.holder is Holder.FOREIGN:
        raise refused
    if owner.holder is Holder.NONE:
        return PortState.CLOSED, None
    socket = owner.socket
    state = await port_state(conn, settings.remote_port, socket=socket)
    if state is PortState.CLOSED and socket is not None:
        # The script has just seen our server listen on that socket: this sshd opens no
        # channel to it (OpenSSH says only "open failed"). The port, which it holds, then.
        state = await port_state(conn, settings.remote_port)
        if state is not PortState.CLOSED:
            no_channel_to(socket, settings.remote_port)
            socket = None
    if owner.holder is Holder.UNKNOWN and state is not PortState.CLOSED:
        raise PortNotOurs(
            f"something answers on 127.0.0.1:{settings.remote_port} on {settings.name}, and nothing there can tell whose it is (no /proc, lsof or ss); gt-remote will not forward to it",
            "install lsof (or ss) on the remote so gt-remote can check the port's owner, or pick another port with --remote-port",
        )
    return state, socket


def wsl_warning(host: str, distro: str) -> str:
    """The distro's own idle timer (`[general] instanceIdleTimeout`, WSL 2.5.4+) is what stops it
    about 15 s after its last Windows-side session ends, systemd services or not; `[wsl2]
    vmIdleTimeout` only times the VM once every distro has stopped (microsoft/WSL 8654, 9968)."""
    return (
        f"warning: {host} is WSL2 ({distro}): Windows stops an idle distro, and ccmux-server and its panes with it; "
        "set instanceIdleTimeout=-1 under [general] in %UserProfile%\\.wslconfig (WSL 2.5.4 or newer; vmIdleTimeout keeps only the VM), then run 'wsl --shutdown' once (see docs/wsl.md)"
    )


async def ensure_server(conn: asyncssh.SSHClientConnection, settings: HostSettings, say: Say) -> ServerInfo:
    """Make a ccmux server answer on the remote loopback port, touching a healthy one never."""
    return (await bring_up(conn, settings, say)).server


async def _ensure(
    conn: asyncssh.SSHClientConnection, settings: HostSettings, facts: RemoteFacts, owner: Owner, state: PortState, digest: str, say: Say, socket: str | None
) -> ServerInfo:
    """`state` and `socket` come from state_of_port: the port is free, or the user's."""
    if state is PortState.ANSWERS:
        refused = refusal(owner, settings.name, settings.remote_port)  # a program of the user's that is not our server
        if refused:
            raise refused
        server = _reuse(facts, settings, digest, say, socket)
        if server.started_by_gt_remote and server.path and not facts.running_answered and owner.pid == facts.pid:
            await run_script(conn, 'mark_answered "$1"', server.path)  # it answers; started before builds were marked
        return server
    if state is PortState.BUSY:  # no Ping answer: a program of the user's that is not ccmux
        raise _port_busy(settings)
    if state is PortState.SILENT:  # connects, never answers: our hung server, or a silent program
        raise _port_silent(settings, facts)
    if facts.other_port is not None:
        raise _one_server_per_user(settings, facts)
    if facts.pid is not None:
        await _restart_tcpless(conn, facts.pid, settings, say)
    path, version = facts.path, facts.version
    if path is None:
        path, version = await _install(conn, settings, facts, digest, say)
    say(f"starting {settings.server} {version or '(unknown version)'} on {settings.name}, 127.0.0.1:{settings.remote_port}")
    try:
        pid, socket = await start_and_wait(conn, path, settings)
    except ServerWithoutTcp:
        if not settings.restart_server:
            raise
        stopped = await remote_server.stop_other(conn, settings.server)
        say(f"stopped the {settings.server} that ran without TCP (pid {stopped}), as --restart-server asked; its panes ended")
        pid, socket = await start_and_wait(conn, path, settings)
    return ServerInfo(path, version, pid, started_by_gt_remote=True, reused=False, socket=socket)


async def start_and_wait(conn: asyncssh.SSHClientConnection, path: str, settings: HostSettings) -> tuple[int, str | None]:
    """Start the server, and wait for its first Pong: through its own Unix socket once the
    start script saw it hold the port (so a Ping never goes to whoever took the port first)."""
    # Never cut off mid-way: its pid file is written by then, so the undo of an interrupted `up` finds the server.
    pid, owner = await to_the_end(remote_server.start(conn, path, settings.server, settings.remote_port, backs.environment(settings.back)))
    refused = refusal(owner, settings.name, settings.remote_port)
    if refused:
        await remote_server.stop(conn, settings.server, settings.remote_port, only_pid=pid)
        raise refused
    socket = owner.socket if owner.pid == pid else None
    socket = await remote_server.wait_until_answering(conn, pid, settings.server, settings.remote_port, settings.name, socket=socket)
    await verify_started(conn, settings, pid, path)
    return pid, socket


async def verify_started(conn: asyncssh.SSHClientConnection, settings: HostSettings, pid: int, path: str = "") -> None:
    """What answered may be another account's program that took the port first: check, after every
    start. When it is the server just started, its build `path` answered: marked so, in the same
    script (only such a build is "the newest" a plain `up` starts: probe.py)."""
    refused = refusal(await check_owner(conn, settings.remote_port, pid, answered=path), settings.name, settings.remote_port)
    if refused:
        await remote_server.stop(conn, settings.server, settings.remote_port, only_pid=pid)
        raise refused


async def revive_server(conn: asyncssh.SSHClientConnection, settings: HostSettings, known: ServerInfo) -> ServerInfo | None:
    """After a reconnect: None if the server still answers; a new ServerInfo if it had died."""
    owner = await check_owner(conn, settings.remote_port, known.pid)
    refused = refusal(owner, settings.name, settings.remote_port)
    if refused:
        raise refused  # never forward to a listener that is not our server, whatever it answers
    state, socket = await state_of_port(conn, settings, owner)
    if state is PortState.ANSWERS:
        known.socket = socket
        return None
    if state is PortState.BUSY:
        raise _port_busy(settings)
    facts = await probe(conn, settings.server, settings.remote_port, file_digest(settings.server_binary) if settings.server_binary else "")
    if state is PortState.SILENT:
        raise _port_silent(settings, facts)
    if facts.pid is not None:
        # Alive but not answering on TCP: never kill a server that may hold panes.
        raise ServerWithoutTcp(f"{settings.server} (pid {facts.pid}) runs on {settings.name} but does not answer on 127.0.0.1:{settings.remote_port}", "read its log under ~/.local/state/gt-remote/ there")
    path = facts.path  # what is there now; the path we started last time may be gone
    if path is None:
        raise ServerMissing(
            f"{settings.server} died on {settings.name} and its binary is gone, so it cannot be restarted",
            f"reinstall it, then run 'gt-remote down {shell_word(settings.name)}' and 'gt-remote up {shell_word(settings.name)}' (with --server-binary to upload it)",
        )
    log.warning("remote server is not running; starting it again")
    pid, socket = await start_and_wait(conn, path, settings)
    return ServerInfo(path, known.version or facts.version, pid, started_by_gt_remote=True, reused=False, socket=socket)


def _reuse(facts: RemoteFacts, settings: HostSettings, digest: str, say: Say, socket: str | None) -> ServerInfo:
    ours = facts.pid is not None
    if ours:
        shown = f", version {facts.running_version}" if facts.running_version else ""
        say(f"reusing the running {settings.server} (pid {facts.pid}) on {settings.name}{shown}")
        if digest and facts.running_build != digest:
            say(_not_the_offered_build(facts, settings, digest))
        path, version = facts.running_path, facts.running_version
    else:
        say(f"reusing a ccmux server on {settings.name}:127.0.0.1:{settings.remote_port} that gt-remote did not start; --stop-server will leave it alone")
        path, version = facts.path, facts.version
    return ServerInfo(path, version, facts.pid, started_by_gt_remote=ours, reused=True, other_build=other_build(facts, path) if ours else None, socket=socket)


def _not_the_offered_build(facts: RemoteFacts, settings: HostSettings, digest: str) -> str:
    running = f"{facts.running_version or 'unknown version'}, build {facts.running_build or facts.running_path}"
    offered = f"build {digest}"
    try:
        check_platform(str(settings.server_binary), settings.name, facts.os, facts.arch)
    except BinaryIncompatible as error:  # never suggest switching to a build that cannot run there
        return f"note: {settings.name} keeps running {settings.server} {running}; the offered {offered} cannot run there: {error.cause}"
    return (
        f"note: {settings.name} keeps running {settings.server} {running}, not the offered {settings.server_binary} ({offered}); "
        f"to switch run 'gt-remote upgrade {shell_word(settings.name)} --server-binary {shell_word(settings.server_binary)}' (restarting ends the panes' processes)"
    )


def _one_server_per_user(settings: HostSettings, facts: RemoteFacts) -> ServerOnOtherPort:
    return ServerOnOtherPort(
        f"gt-remote's {settings.server} (pid {facts.other_pid}) already runs on {settings.name} for this user, serving 127.0.0.1:{facts.other_port}, "
        f"and a second one cannot start beside it (it owns the user's Unix socket)",
        f"use that port: 'gt-remote up {shell_word(settings.name)} --remote-port {facts.other_port}', or stop it first with 'gt-remote down HOST --stop-server' for the host that started it",
    )


async def _install(conn: asyncssh.SSHClientConnection, settings: HostSettings, facts: RemoteFacts, digest: str, say: Say) -> tuple[str, str | None]:
    if settings.server_binary:
        check_platform(settings.server_binary, settings.name, facts.os, facts.arch)
        say(f"uploading {settings.server_binary} to {settings.name}")
        path, version_line = await upload_server(conn, settings.server_binary, settings.server, digest, settings.name)
        return path, parse_version(version_line, settings.server)
    if settings.install_command:
        say(f"running the install command on {settings.name}: {settings.install_command}")
        await run_install_command(conn, settings.install_command, settings.name)
        facts = await probe(conn, settings.server, settings.remote_port)
        if facts.path:
            return facts.path, facts.version
        raise ServerMissing(
            f"the install command ran on {settings.name} but {settings.server} is still not found",
            "make it install into PATH, ~/.cargo/bin or ~/.local/bin",
        )
    unproven = f"; gt-remote's install dir holds {facts.unproven} build(s) that never answered a Ping, which are not started by themselves" if facts.unproven else ""
    raise ServerMissing(
        f"{settings.server} is not installed on {settings.name} (looked in PATH, ~/.cargo/bin, ~/.local/bin and gt-remote's install dir){unproven}",
        "pass --server-binary PATH (a build for the remote) or --install-command CMD (e.g. 'cargo install --git ...')",
    )


async def _restart_tcpless(conn: asyncssh.SSHClientConnection, pid: int, settings: HostSettings, say: Say) -> None:
    """A server we started lives but does not answer on its port: restart only if asked."""
    if not settings.restart_server:
        raise ServerWithoutTcp(
            f"{settings.server} (pid {pid}) runs on {settings.name} but does not answer on 127.0.0.1:{settings.remote_port}",
            f"restarting it ends its panes: run 'gt-remote up {shell_word(settings.name)} --restart-server' to restart it",
        )
    say(f"restarting {settings.server} (pid {pid}) on {settings.name}, as --restart-server asked")
    await remote_server.stop(conn, settings.server, settings.remote_port, only_pid=pid)


def _port_busy(settings: HostSettings) -> RemotePortBusy:
    return RemotePortBusy(
        f"127.0.0.1:{settings.remote_port} on {settings.name} is held by a program that is not a ccmux server",
        "pick another port with --remote-port, or stop that program",
    )


def _port_silent(settings: HostSettings, facts: RemoteFacts) -> RemoteError:
    """Connected, no answer in time: a hung server of ours is not "another program"."""
    if facts.pid is not None:
        return ServerHung(
            f"{settings.server} (pid {facts.pid}) on {settings.name} accepts connections but did not answer a Ping within {PORT_CHECK_TIMEOUT:g} s: hung or overloaded",
            f"see its log under ~/.local/state/gt-remote/ there; if it stays hung, 'gt-remote down {settings.name} --stop-server' ends it (and its panes)",
        )
    return RemotePortBusy(
        f"127.0.0.1:{settings.remote_port} on {settings.name} accepts connections but nothing answered a ccmux Ping within {PORT_CHECK_TIMEOUT:g} s: a hung server gt-remote did not start, or another program",
        "check what listens there (ss -ltnp on the remote); pick another port with --remote-port, or stop that program",
    )
