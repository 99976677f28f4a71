"""Leases: tunnels that share one remote server know about each other.

Two ssh aliases (or two laptops) that reach the same remote user and port share one
ccmux-server. Each supervisor keeps a file under the remote state dir,
`leases/<port>/<laptop>-<alias>`, touched at least every LEASE_TOUCH_KEEPALIVES health checks
and live for twice that. `down --stop-server` stops the server only when no other lease is live.

A health check touches it through the relay when there is one (its lease op writes the same
file and reads the others the same way): that starts no login shell on the remote. The
remote script does it otherwise, and whenever the relay cannot.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable

import asyncssh

from gt_remote.base.config import HostSettings
from gt_remote.base.errors import RemoteError
from gt_remote.base.paths import machine_tag
from gt_remote.remote.load import LOAD_FACTS, load_fields
from gt_remote.remote.ownership import Owner, owner_from
from gt_remote.remote.scripts import run_script
from gt_remote.tunnel.resumable import StreamGone, relay_request

LEASE_TOUCH_KEEPALIVES = 3  # a supervisor touches its lease at least this often (its health checks)
LIVE_KEEPALIVES = 6  # a lease not touched for this many keepalives is gone: twice the touch interval
MIN_TTL_S = 15
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_LEASE_NAME = re.compile(r"[A-Za-z0-9._-]{1,120}")

OTHERS_SCRIPT = r"""
lease_others "$1" "$2"
"""

# A health check's one script: is the port still ours, and refresh the lease; and, read with
# the shell's builtins, the machine's load for `pick` (the relay's load op, where there is one).
UPKEEP_SCRIPT = r"""
me=$(id -u)
echo "uid=$me"
( port_owner "$1" "$4" )
lease_touch "$1" "$2" "$3"
lease_others "$1" "$2"
""" + LOAD_FACTS

RELEASE_SCRIPT = r"""
rm -f "$state_dir/leases/$1/$2"
"""


def lease_name(settings: HostSettings) -> str:
    """`<laptop>.<tag>-<alias>`: names the holder to whoever is refused because of it; the tag
    (paths.machine_tag) keeps two laptops of one hostname apart."""
    laptop = _UNSAFE.sub("_", socket.gethostname().split(".")[0]) or "laptop"
    alias = _UNSAFE.sub("_", settings.name).strip("._") or "host"
    name = f"{laptop}.{machine_tag()}-{alias}"[:120]
    return name[:-4] + "_tmp" if name.endswith(".tmp") else name  # *.tmp: what every lister skips


def lease_ttl(settings: HostSettings) -> int:
    return max(MIN_TTL_S, int(settings.keepalive * LIVE_KEEPALIVES) + 1)


def holders(stdout_lines: list[str]) -> list[str]:
    """The `lease=NAME` lines of a script's output; names outside the safe alphabet are dropped."""
    return safe_names(line[6:] for line in stdout_lines if line.startswith("lease="))


def safe_names(names: Iterable[object]) -> list[str]:
    """Lease names as the remote gave them, sorted; any outside the safe alphabet is dropped."""
    return sorted({name for name in names if isinstance(name, str) and _LEASE_NAME.fullmatch(name)})


async def touch_through_relay(conn: asyncssh.SSHClientConnection, socket_path: str, settings: HostSettings) -> tuple[list[str], int | None]:
    """Refresh this supervisor's lease with the relay's lease op: the other live holders, and
    how many streams the relay holds for this supervisor (its lease name owns them).
    StreamGone when the relay cannot (the caller runs the script instead)."""
    hello = {"op": "lease", "name": lease_name(settings), "ttl": lease_ttl(settings)}
    answer = await relay_request(conn, socket_path, hello, timeout=max(5.0, settings.keepalive))
    names = answer.get("holders")
    if not isinstance(names, list):
        raise StreamGone("the relay's lease reply names no holders")
    streams = answer.get("streams")
    return safe_names(names), streams if isinstance(streams, int) and not isinstance(streams, bool) and streams >= 0 else None


async def upkeep(conn: asyncssh.SSHClientConnection, settings: HostSettings, server_pid: int | None = None) -> tuple[Owner, list[str], dict[str, str]]:
    """Who holds the port now, and the other live holders; refreshes this tunnel's lease.
    `server_pid`, the server we know of, is tried first as the listener: cheaper than a scan.
    Third, the machine's load facts (gt_remote/remote/load.py)."""
    args = (str(settings.remote_port), lease_name(settings), str(lease_ttl(settings)), str(server_pid or ""))
    result = await run_script(conn, UPKEEP_SCRIPT, *args, timeout=max(10.0, settings.keepalive * 2))
    return owner_from(result.fields), holders(result.stdout.splitlines()), load_fields(result.fields)


async def others(conn: asyncssh.SSHClientConnection, settings: HostSettings) -> list[str]:
    result = await run_script(conn, OTHERS_SCRIPT, str(settings.remote_port), lease_name(settings))
    return holders(result.stdout.splitlines())


async def release(conn: asyncssh.SSHClientConnection, settings: HostSettings) -> None:
    await run_script(conn, RELEASE_SCRIPT, str(settings.remote_port), lease_name(settings), timeout=5.0)


class ServerShared(RemoteError):
    """Another live tunnel uses the server `down --stop-server` was asked to stop."""


def shared_refusal(settings: HostSettings, other_holders: list[str]) -> ServerShared:
    named = ", ".join(other_holders)
    return ServerShared(
        f"the server on {settings.name}:127.0.0.1:{settings.remote_port} is shared with {len(other_holders)} other tunnel(s) ({named}); stopping it would end their panes",
        f"bring those down first, or stop it anyway with 'gt-remote down {settings.name} --stop-server --force'",
    )


async def check_stop_allowed(conn: asyncssh.SSHClientConnection, settings: HostSettings, force: bool) -> None:
    """Refuse to stop a server another live lease holds, unless forced."""
    if force:
        return
    other_holders = await others(conn, settings)
    if other_holders:
        raise shared_refusal(settings, other_holders)
