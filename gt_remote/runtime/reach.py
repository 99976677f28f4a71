"""Reaching a host's remote when no supervisor holds a connection: after `down`, for
`down --stop-server` and `clean`.

Each successful `up` remembers how it reached the remote and which server it started
(HostFiles.remote); that record outlives `down`, so the server can be stopped later, and
`down --stop-server` forgets it (the server is gone, and `down --all --stop-server` then skips
the host). A second record, the host's "reached" file, says only how to reach a remote gt-remote
has brought up: the builds it uploaded there outlive the server, so `clean` reaches it until
`clean HOST --forget`.

The record is read by light commands (`down` without --stop-server), so asyncssh and the
modules that connect are imported only by the functions that connect (docs/benchmarks.md, CLI).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from gt_remote.base.config import HostSettings
from gt_remote.base.paths import HostFiles, host_key, state_dir, write_private

if TYPE_CHECKING:
    import asyncssh

T = TypeVar("T")
Fallback = Callable[[str], HostSettings]


def remember(settings: HostSettings) -> None:
    write_private(HostFiles(settings.name).remote, _record(settings))
    # Only how to reach the remote and where its files are: no install command (it may hold a
    # token), no local build path, no back tunnels; kept long after the tunnel.
    reaching = dataclasses.replace(settings, server_binary=None, install_command=None, sync=(), back=(), restart_server=False)
    write_private(_reached_file(settings.name), _record(reaching))


def _record(settings: HostSettings) -> str:
    return json.dumps({"host": settings.name, "settings": json.loads(settings.to_json())}, indent=2)


def remembered(name: str) -> HostSettings | None:
    return _read(HostFiles(name).remote)


def forget(name: str) -> None:
    """The server gt-remote started there is stopped: only the reached record stays, for `clean`."""
    HostFiles(name).remote.unlink(missing_ok=True)


def _reached_file(name: str) -> Path:
    """Outside the directories `clean` removes a host's local files from (paths.HostFiles):
    only `clean HOST --forget` ends it."""
    return state_dir() / "reached" / f"{host_key(name)}.json"


def reached(name: str) -> HostSettings | None:
    """How gt-remote last reached this host's remote, kept until `clean HOST --forget`."""
    return _read(_reached_file(name))


def reached_host_names() -> list[str]:
    """Every host gt-remote has brought up and not been told to forget, in name order."""
    names = []
    for path in sorted((state_dir() / "reached").glob("*.json")):
        try:
            names.append(str(json.loads(path.read_text())["host"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(names)


def forget_reached(name: str) -> bool:
    """`clean HOST --forget`: no record of how to reach the remote stays; whether there was one."""
    had = _reached_file(name).exists() or HostFiles(name).remote.exists()
    _reached_file(name).unlink(missing_ok=True)
    HostFiles(name).remote.unlink(missing_ok=True)
    return had


def _read(path: Path) -> HostSettings | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return HostSettings.from_json(json.dumps(data["settings"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def settings_for(name: str, fallback: Fallback | None, ssh_config: str | None) -> HostSettings | None:
    """What `up` used last (where the server runs, or ran: the reached record), else the config;
    an -F given now wins."""
    settings = remembered(name) or reached(name)
    if settings is None:
        return fallback(name) if fallback else None
    return dataclasses.replace(settings, ssh_config=ssh_config) if ssh_config else settings


def run_on(settings: HostSettings, action: Callable[[asyncssh.SSHClientConnection], Awaitable[T]]) -> T:
    """Connect once (host keys checked as always), run `action`, close."""
    import asyncio

    from gt_remote.remote import scripts as remote_scripts
    from gt_remote.tunnel.connection import SshTarget, connect

    async def main() -> T:
        conn = await connect(SshTarget(settings.destination, settings.ssh_config, settings.keepalive))
        remote_scripts.use_install_dir(conn, settings.install_dir)  # clean and --stop-server follow `up`'s choice
        try:
            return await action(conn)
        finally:
            conn.close()
            await conn.wait_closed()

    return asyncio.run(main())


def stop_server(settings: HostSettings, force: bool = False) -> str:
    """Stop the server gt-remote started for this host, found by its pid file there, and its
    relay (whose streams end with the server anyway); say what happened. Refused while
    another tunnel holds a live lease on it, unless `force`."""
    from gt_remote.remote import lease as remote_lease
    from gt_remote.remote import server as remote_server
    from gt_remote.remote.relay import deploy as remote_relay

    async def stop_both(conn: asyncssh.SSHClientConnection) -> int | None:
        await remote_lease.check_stop_allowed(conn, settings, force)
        pid = await remote_server.stop(conn, settings.server, settings.remote_port)
        await remote_relay.stop_relay(conn, settings.remote_port)
        return pid

    pid = run_on(settings, stop_both)
    forget(settings.name)
    if pid is None:
        return f"no server that gt-remote started runs on {settings.name} at 127.0.0.1:{settings.remote_port}; nothing to stop"
    return f"stopped the remote server (pid {pid})"
