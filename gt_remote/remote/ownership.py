"""Whose listener is on the remote port: gt-remote forwards only to the login user's server.

If ccmux-server dies and another account on the remote binds 127.0.0.1:PORT first, a
blind forwarder would hand it every keystroke typed into a pane. So before reuse, after
each (re)start and on every health check, the listener's uid (from /proc/net/tcp and tcp6,
else lsof or ss) must be the login user's, and the listening process one of that user's
started with `--listen-tcp 127.0.0.1:PORT`. A listing is only a picture of a moment, though:
another account may bind the port the instant after. So no byte goes to the TCP port
unchecked: the relay checks whose socket answered each connection it makes before it sends
anything (relay_agent.peer_uid), and Pings and plain forwarding go to the server's own Unix
socket (Owner.socket), a name in a directory only the user can change, whenever there is one.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import asyncssh

from gt_remote.base.errors import RemoteError
from gt_remote.base.sanitize import ascii_int
from gt_remote.remote.scripts import run_script

_USER_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._@-]{0,63}")

OWNER_SCRIPT = r"""
owner=$( port_owner "$1" "$2" )
printf '%s\n' "$owner"
# $3: the build of server $2, which has just answered its first Ping; marked once the port is its own.
if [ -n "$3" ] && printf '%s\n' "$owner" | grep -qx "listen_pid=$2"; then mark_answered "$3"; fi
"""



class Holder(enum.Enum):
    NONE = "none"  # nothing listens
    UNKNOWN = "unknown"  # the remote has no /proc, lsof or ss to ask
    OURS = "ours"  # the login user's process started with --listen-tcp on the port
    MINE_OTHER = "mine-other"  # the login user's, but not a server started for this port
    FOREIGN = "foreign"  # another account's


@dataclass(frozen=True)
class Owner:
    holder: Holder
    uid: int | None = None
    user: str | None = None
    pid: int | None = None
    socket: str | None = None  # our server's own Unix socket, in a directory only we can change

    def describe(self) -> str:
        name = f", {self.user}" if self.user else ""
        return f"uid {self.uid if self.uid is not None else '?'}{name}"


def owner_from(fields: dict[str, str], my_uid: int | None = None) -> Owner:
    """Read port_owner's answer; `my_uid` (the login user's) comes from the same script."""
    if fields.get("listen") == "none":
        return Owner(Holder.NONE)
    uid = ascii_int(fields.get("listen_uid"))
    if uid is None:
        return Owner(Holder.UNKNOWN)
    raw_user = fields.get("listen_user", "")
    user = raw_user if _USER_NAME.fullmatch(raw_user) else None
    me = my_uid if my_uid is not None else ascii_int(fields.get("uid"))
    if me is not None and uid != me:
        return Owner(Holder.FOREIGN, uid, user)
    pid = ascii_int(fields.get("listen_pid"))
    if pid is None:
        return Owner(Holder.MINE_OTHER, uid, user)
    return Owner(Holder.OURS, uid, user, pid, _socket_path(fields.get("listen_socket", "")))


def _socket_path(text: str) -> str | None:
    """An absolute path of printable characters that fits a Unix socket, else none at all."""
    ok = text.startswith("/") and len(text.encode()) <= 107 and all(" " <= char <= "~" for char in text)
    return text if ok else None


class PortNotOurs(RemoteError):
    """The remote port's listener is not the login user's ccmux server: never forwarded to."""


def refusal(owner: Owner, host: str, port: int) -> PortNotOurs | None:
    """Why nothing may be forwarded to this listener, or None when it may."""
    if owner.holder is Holder.FOREIGN:
        return PortNotOurs(
            f"127.0.0.1:{port} on {host} is held by another account ({owner.describe()}), not by the login user; gt-remote will not forward to it",
            "ask that account's owner (or an admin) to stop it, or pick another port with --remote-port; gt-remote goes on once the port is yours again",
        )
    if owner.holder is Holder.MINE_OTHER:
        return PortNotOurs(
            f"127.0.0.1:{port} on {host} is held by a program of yours ({owner.describe()}) that is not a server started with --listen-tcp 127.0.0.1:{port}",
            "stop that program, or pick another port with --remote-port",
        )
    return None


async def check_owner(conn: asyncssh.SSHClientConnection, port: int, pid: int | None = None, answered: str = "") -> Owner:
    """One round trip: who holds the port now (after a start, or when a reconnect finds it);
    `pid`, the server's last known, is looked at first. `answered`: the build server `pid` was
    started from, which has just answered a Ping: marked so (mark_answered) when `pid` holds the port."""
    fields = (await run_script(conn, 'echo "uid=$(id -u)"' + OWNER_SCRIPT, str(port), str(pid or ""), answered if pid else "")).fields
    return owner_from(fields)
