"""Switching the remote server to another build: upload it, stop ours, start the new one.

Only a server gt-remote started (its pid file says so) is ever replaced; restarting ends
the panes' processes, so the caller asks the user first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import asyncssh

from gt_remote.base.config import HostSettings
from gt_remote.base.errors import NotOurServer
from gt_remote.bootstrap import server as remote_server
from gt_remote.bootstrap.ensure import ServerInfo
from gt_remote.bootstrap.install import check_platform, upload_server
from gt_remote.bootstrap.probe import PortState, file_digest, parse_version, port_state, probe

Say = Callable[[str], None]


async def replace_server(conn: asyncssh.SSHClientConnection, settings: HostSettings, binary: str, say: Say) -> ServerInfo:
    """Run `binary` as the host's server; a no-op when that build already runs."""
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
    upgraded = dataclasses.replace(settings, server_binary=binary)
    pid = await remote_server.start(conn, path, upgraded.server, upgraded.remote_port)
    await remote_server.wait_until_answering(conn, pid, upgraded.server, upgraded.remote_port, upgraded.name)
    return ServerInfo(path, version, pid, started_by_gt_remote=True, reused=False)
