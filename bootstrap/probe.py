"""One round trip that learns everything `up` needs about the remote."""

from __future__ import annotations

import asyncio
import enum
import hashlib
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from gt_remote.base.errors import PingFailed
from gt_remote.bootstrap.remote import run_script
from gt_remote.tunnel import wire

PROBE_SCRIPT = r"""
server=$1 port=$2 digest=$3
found=""
if [ -n "$digest" ] && [ -x "$install_root/$digest/$server" ]; then
    found="$install_root/$digest/$server"
elif [ -z "$digest" ]; then
    found=$(command -v "$server" 2>/dev/null) || found=""
    case "$found" in /*) ;; *) found="" ;; esac
    # A non-interactive shell's PATH often lacks where cargo and pipx put things.
    for candidate in "$HOME/.cargo/bin/$server" "$HOME/.local/bin/$server"; do
        if [ -z "$found" ] && [ -x "$candidate" ]; then found=$candidate; fi
    done
    if [ -z "$found" ]; then
        for candidate in "$install_root"/*/"$server"; do
            [ -x "$candidate" ] || continue
            if [ -z "$found" ] || [ "$candidate" -nt "$found" ]; then found=$candidate; fi
        done
    fi
fi
echo "path=$found"
if [ -n "$found" ]; then echo "version=$("$found" --version 2>&1 | head -n 1)"; fi
echo "arch=$(uname -m)"
echo "os=$(uname -s)"
pidfile="$state_dir/$server-$port.pid"
if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    if is_our_server "$pid" "$port"; then
        echo "pid=$pid"
        # The build it runs: the word of its command line that names the server program.
        for word in $(cmdline_of "$pid"); do
            case "$word" in */"$server") echo "running=$word"; [ -x "$word" ] && echo "running_version=$("$word" --version 2>&1 | head -n 1)"; break ;; esac
        done
    fi
fi
# One server per user owns the Unix socket: is ours already serving another port?
for other in "$state_dir/$server"-*.pid; do
    [ -f "$other" ] || continue
    other_port=${other##*/"$server"-}; other_port=${other_port%.pid}
    case "$other_port" in "$port"|''|*[!0-9]*) continue ;; esac
    other_pid=$(cat "$other")
    if is_our_server "$other_pid" "$other_port"; then echo "other=$other_port:$other_pid"; fi
done
"""


@dataclass(frozen=True)
class RemoteFacts:
    path: str | None
    version: str | None
    arch: str
    os: str
    pid: int | None
    running_path: str | None = None  # the binary our live server was started from
    running_version: str | None = None
    other_port: int | None = None  # our live server for this user on another port, if any
    other_pid: int | None = None

    @property
    def running_build(self) -> str | None:
        """The content hash naming the running binary's install directory, if we uploaded it."""
        return build_of(self.running_path)


PORT_CHECK_TIMEOUT = 3.0


class PortState(enum.Enum):
    ANSWERS = "answers"  # a ccmux server answered a Ping
    CLOSED = "closed"  # nothing listens
    BUSY = "busy"  # something listens, and it is not a ccmux server
    SILENT = "silent"  # something accepts connections, and sent nothing back in time (hung, or not ccmux)


def file_digest(path: str) -> str:
    """Names the versioned install directory, so one binary is uploaded once."""
    sha = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


def build_of(path: str | None) -> str | None:
    """`.../gt-remote/servers/<hash>/ccmux-server` -> `<hash>`; None for other paths."""
    parts = (path or "").split("/")
    return parts[-2] if len(parts) >= 3 and "/".join(parts[-4:-2]) == "gt-remote/servers" else None


def parse_version(output: str | None) -> str | None:
    """`ccmux-server 0.1.1` -> `0.1.1`: the last word of the first line."""
    words = (output or "").split()
    return words[-1] if words else None


async def probe(conn: asyncssh.SSHClientConnection, server: str, port: int, digest: str = "") -> RemoteFacts:
    fields = (await run_script(conn, PROBE_SCRIPT, server, str(port), digest)).fields
    pid = fields.get("pid", "")
    other_port, _, other_pid = fields.get("other", "").partition(":")
    return RemoteFacts(
        path=fields.get("path") or None,
        version=parse_version(fields.get("version")),
        arch=fields.get("arch", "unknown"),
        os=fields.get("os", "unknown"),
        pid=int(pid) if pid.isdigit() else None,
        running_path=fields.get("running") or None,
        running_version=parse_version(fields.get("running_version")),
        other_port=int(other_port) if other_port.isdigit() else None,
        other_pid=int(other_pid) if other_pid.isdigit() else None,
    )


async def ping_remote(conn: asyncssh.SSHClientConnection, port: int, timeout: float = 3.0) -> float:
    """Ping the server on the remote loopback port through a direct-tcpip channel."""
    reader, writer = await asyncio.wait_for(conn.open_connection("127.0.0.1", port), timeout)
    try:
        return await wire.ping(reader, writer, timeout)
    finally:
        writer.close()


async def port_state(conn: asyncssh.SSHClientConnection, port: int, timeout: float = PORT_CHECK_TIMEOUT) -> PortState:
    """What listens on the remote port. A channel that does not even open in time raises
    TimeoutError: the SSH connection is what does not answer, not the port."""
    try:
        reader, writer = await asyncio.wait_for(conn.open_connection("127.0.0.1", port), timeout)
    except asyncssh.ChannelOpenError:
        return PortState.CLOSED
    try:
        await wire.ping(reader, writer, timeout)
        return PortState.ANSWERS
    except wire.NoPong:
        return PortState.SILENT
    except PingFailed:
        return PortState.BUSY
    finally:
        writer.close()
