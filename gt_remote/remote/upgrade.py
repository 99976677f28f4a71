"""Switching the remote server to another build: upload it, stop ours, start the new one.

Only a server gt-remote started (its pid file says so) is ever replaced; restarting ends
the panes' processes, so the caller asks the user first.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncssh

from gt_remote.base.config import HostSettings
from gt_remote.base.errors import GtRemoteError, NotOurServer
from gt_remote.remote import server as remote_server
from gt_remote.remote.ensure import ServerInfo, start_and_wait
from gt_remote.remote.install import check_platform, upload_server
from gt_remote.remote.ownership import Holder, check_owner
from gt_remote.remote.probe import file_digest, parse_version, probe

Say = Callable[[str], None]


async def replace_server(conn: asyncssh.SSHClientConnection, settings: HostSettings, binary: str, say: Say, restored: Callable[[ServerInfo], None]) -> ServerInfo:
    """Run `binary` as the host's server; a no-op when that build already runs.

    If the new build does not start, the previous one is started again and `restored` told.
    """
    digest = file_digest(binary)
    facts = await probe(conn, settings.server, settings.remote_port, digest)
    if facts.pid is None and (await check_owner(conn, settings.remote_port)).holder is not Holder.NONE:  # no Ping to whoever holds it
        raise NotOurServer(
            f"the server on {settings.name}:127.0.0.1:{settings.remote_port} was not started by gt-remote, so gt-remote will not replace it",
            "stop it yourself, then run 'gt-remote up' with --server-binary",
        )
    if facts.pid is not None and facts.running_build == digest:
        say(f"{settings.name} already runs that build ({digest})")
        return ServerInfo(facts.running_path, facts.running_version, facts.pid, started_by_gt_remote=True, reused=True)
    path, version = facts.path, facts.version
    if path is None:
        check_platform(binary, settings.name, facts.os, facts.arch)
        say(f"uploading {binary} to {settings.name}")
        path, version_line = await upload_server(conn, binary, settings.server, digest, settings.name)
        version = parse_version(version_line, settings.server)
    if facts.pid is not None:
        say(f"stopping {settings.server} {facts.running_version or ''} (pid {facts.pid}) on {settings.name}")
        await remote_server.stop(conn, settings.server, settings.remote_port, only_pid=facts.pid)
    say(f"starting {settings.server} {version or '(unknown version)'} on {settings.name}, 127.0.0.1:{settings.remote_port}")
    try:
        pid, socket = await start_and_wait(conn, path, settings)  # what answers must be ours, not another account's
    except GtRemoteError as error:
        if facts.pid is None or not facts.running_path:
            raise
        old_pid, old_socket = await start_and_wait(conn, facts.running_path, settings)  # never leave the host without its server
        restored(ServerInfo(facts.running_path, facts.running_version, old_pid, started_by_gt_remote=True, reused=False, socket=old_socket))
        raise type(error)(f"{error.cause}; the previous build runs again", error.fix) from None
    return ServerInfo(path, version, pid, started_by_gt_remote=True, reused=False, socket=socket)


async def restart_server(conn: asyncssh.SSHClientConnection, settings: HostSettings, known: ServerInfo) -> ServerInfo:
    """`gt-remote restart-server`: stop the server gt-remote started and start the same build
    again, with the back tunnels' variables (start_and_wait passes them)."""
    if known.pid is None or not known.started_by_gt_remote or not known.path:
        raise NotOurServer(f"the server on {settings.name} was not started by gt-remote, so gt-remote will not restart it", "restart it yourself on the remote")
    await remote_server.stop(conn, settings.server, settings.remote_port, only_pid=known.pid)
    pid, socket = await start_and_wait(conn, known.path, settings)
    return ServerInfo(known.path, known.version, pid, started_by_gt_remote=True, reused=False, socket=socket)
