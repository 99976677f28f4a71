"""Switching the remote server to another build: upload it, stop ours, start the new one.

Only a server gt-remote started (its pid file says so) is ever replaced; restarting ends
the panes' processes, so the caller asks the user first.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncssh

from gt_remote.base.config import HostSettings
from gt_remote.base.errors import GtRemoteError, NotOurServer
from gt_remote.bootstrap import server as remote_server
from gt_remote.bootstrap.ensure import ServerInfo, verify_started
from gt_remote.bootstrap.install import check_platform, upload_server
from gt_remote.bootstrap.probe import PortState, file_digest, parse_version, port_state, probe

Say = Callable[[str], None]


async def replace_server(conn: asyncssh.SSHClientConnection, settings: HostSettings, binary: str, say: Say, restored: Callable[[ServerInfo], None]) -> ServerInfo:
    """Run `binary` as the host's server; a no-op when that build already runs.

    If the new build does not start, the previous one is started again and `restored` told.
    """
    digest = file_digest(binary)
    facts = await probe(conn, settings.server, settings.remote_port, digest)
    if facts.pid is None and await port_state(conn, settings.remote_port) is not PortState.CLOSED:
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
        version = parse_version(version_line)
    if facts.pid is not None:
        say(f"stopping {settings.server} {facts.running_version or ''} (pid {facts.pid}) on {settings.name}")
        await remote_server.stop(conn, settings.server, settings.remote_port, only_pid=facts.pid)
    say(f"starting {settings.server} {version or '(unknown version)'} on {settings.name}, 127.0.0.1:{settings.remote_port}")
    try:
        pid = await _start(conn, path, settings)
    except GtRemoteError as error:
        if facts.pid is None or not facts.running_path:
            raise
        old_pid = await _start(conn, facts.running_path, settings)  # never leave the host without its server
        restored(ServerInfo(facts.running_path, facts.running_version, old_pid, started_by_gt_remote=True, reused=False))
        raise type(error)(f"{error.cause}; the previous build runs again", error.fix) from None
    return ServerInfo(path, version, pid, started_by_gt_remote=True, reused=False)


async def _start(conn: asyncssh.SSHClientConnection, path: str, settings: HostSettings) -> int:
    pid = await remote_server.start(conn, path, settings.server, settings.remote_port)
    await remote_server.wait_until_answering(conn, pid, settings.server, settings.remote_port, settings.name)
    await verify_started(conn, settings, pid)  # what answered must be ours, not another account's
    return pid
