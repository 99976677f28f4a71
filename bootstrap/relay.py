"""The remote relay that makes streams resumable: upload by content hash, start, reuse, stop.

Like the server, it runs detached (setsid nohup) with its pid file and log under the remote
state dir, so it outlives the SSH connection. It needs python3 3.8 or newer on the remote;
where that is missing or the relay will not start, forwarding stays plain and the reason
is kept for `status` and `doctor`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from gt_remote.base.sanitize import ascii_int
from gt_remote.bootstrap import remote
from gt_remote.bootstrap.remote import run_script

log = logging.getLogger(__name__)

AGENT = Path(__file__).with_name("relay_agent.py")
SOCKET_PATH_LIMIT = 100  # sun_path is 104 to 108 bytes

CHECK_SCRIPT = r"""
path=$1 port=$2
py=$(command -v python3 2>/dev/null) || py=""
case "$py" in /*) ;; *) echo "python=none"; exit 0 ;; esac
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' >/dev/null 2>&1; then
    echo "python=old"; echo "pyversion=$("$py" -V 2>&1 | head -n 1)"; exit 0
fi
echo "python=$py"
echo "home=$HOME"
intact=0
build_intact "$relay_root/$path" && intact=1  # the file still hashes to its directory's name
[ "$intact" = 1 ] && echo "installed=1"
sock="$state_dir/relay-$port/sock"
pidfile="$state_dir/relay-$port.pid"
if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        case " $(cmdline_of "$pid") " in
            *" $relay_root/$path --socket $sock "*) [ -S "$sock" ] && [ "$intact" = 1 ] && echo "running=$pid" || echo "stale=$pid" ;;
            *"relay_agent.py --socket $sock "*) echo "stale=$pid" ;;
        esac
    fi
fi
"""

# Runs right after remote.UPLOAD_SCRIPT verified the bytes ($part and $final set there).
PLACE_SCRIPT = r"""
chmod 600 "$part" && mv -f "$part" "$final" && echo "placed=1"
"""

START_SCRIPT = r"""
py=$1 path=$2 port=$3 stale=$4
umask 077
mkdir -p "$state_dir/relay-$port" && chmod 700 "$state_dir" "$state_dir/relay-$port"
if [ -n "$stale" ]; then
    kill -TERM "$stale" 2>/dev/null
    i=0; while kill -0 "$stale" 2>/dev/null && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
fi
sock="$state_dir/relay-$port/sock"
log="$state_dir/relay-$port.log"
pidfile="$state_dir/relay-$port.pid"
if [ -f "$log" ] && [ "$(wc -c < "$log")" -gt 1048576 ]; then mv -f "$log" "$log.1"; fi
rm -f "$sock"
if command -v setsid >/dev/null 2>&1; then
    setsid nohup "$py" "$relay_root/$path" --socket "$sock" --port "$port" </dev/null >>"$log" 2>&1 &
else
    nohup "$py" "$relay_root/$path" --socket "$sock" --port "$port" </dev/null >>"$log" 2>&1 &
fi
pid=$!
echo "$pid" > "$pidfile.tmp" && mv -f "$pidfile.tmp" "$pidfile"
i=0
while [ "$i" -lt 50 ]; do
    if [ -S "$sock" ]; then echo "pid=$pid"; echo "socket=$sock"; exit 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1; i=$((i + 1))
done
kill "$pid" 2>/dev/null
echo "error=$(tail -n 3 "$log" 2>/dev/null | tr '\n' ' ')"
"""

STOP_SCRIPT = r"""
port=$1 only_pid=$2
pidfile="$state_dir/relay-$port.pid"
[ -f "$pidfile" ] || { echo "stopped=none"; exit 0; }
pid=$(cat "$pidfile")
if [ -n "$only_pid" ] && [ "$pid" != "$only_pid" ]; then echo "stopped=none"; exit 0; fi
case " $(cmdline_of "$pid") " in
    *"relay_agent.py --socket "*)
        kill -TERM "$pid"
        i=0; while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        echo "stopped=$pid" ;;
    *) echo "stopped=none" ;;
esac
rm -f "$pidfile" "$state_dir/relay-$port/sock"
"""


@dataclass(frozen=True)
class RelayState:
    """The relay as the supervisor knows it: a socket to reach, or why there is none."""

    socket: str | None
    pid: int | None = None
    reason: str | None = None
    started: bool = False  # by this call, not reused

    @property
    def usable(self) -> bool:
        return self.socket is not None


def agent_digest() -> str:
    return hashlib.sha256(AGENT.read_bytes()).hexdigest()[:16]


def remote_agent_path() -> str:
    """Relative to $relay_root (<install dir>/gt-remote/relay on the remote)."""
    return f"{agent_digest()}/relay_agent.py"


async def ensure_relay(conn: asyncssh.SSHClientConnection, port: int) -> RelayState:
    """The running relay for `port`, started (and uploaded) if needed; never raises for a remote
    that cannot run it, only for a broken connection (asyncssh errors, ConnectFailed)."""
    path = remote_agent_path()
    facts = (await run_script(conn, CHECK_SCRIPT, path, str(port))).fields
    python = facts.get("python", "none")
    if python == "none":
        return RelayState(None, reason="the remote has no python3 (3.8 or newer) to run the relay")
    if python == "old":
        return RelayState(None, reason=f"the remote python3 is too old for the relay ({facts.get('pyversion', '?')}; 3.8 or newer needed)")
    socket = f"{facts.get('home', '')}/.local/state/gt-remote/relay-{port}/sock"
    if len(socket.encode()) > SOCKET_PATH_LIMIT:
        return RelayState(None, reason=f"the relay socket path {socket} is too long for a Unix socket")
    running = ascii_int(facts.get("running"))  # isdigit() takes '²', which int() refuses
    if running is not None:
        return RelayState(socket, pid=running)
    if facts.get("installed") != "1":
        reason = await _upload(conn, path)
        if reason:
            return RelayState(None, reason=reason)
    started = (await run_script(conn, START_SCRIPT, python, path, str(port), facts.get("stale", ""))).fields
    pid = ascii_int(started.get("pid"))
    if pid is None:
        return RelayState(None, reason=f"the relay did not start on the remote: {started.get('error', '').strip() or 'no output'}")
    log.info("relay started on the remote (pid %s)", pid)
    return RelayState(started.get("socket", socket), pid=pid, started=True)


async def channel_refused(conn: asyncssh.SSHClientConnection, socket: str, timeout: float = 5.0) -> str | None:
    """Why this SSH connection cannot open a channel to the relay's socket, or None if it can.

    sshd's AllowStreamLocalForwarding (on by default) may be off: then no stream could reach
    the relay, and forwarding must stay plain instead of closing every new client.
    """
    try:
        _, writer = await asyncio.wait_for(conn.open_unix_connection(socket), timeout)
    except asyncssh.ChannelOpenError as exc:
        return f"the remote sshd refused a channel to the relay ({exc.reason}); allow it with 'AllowStreamLocalForwarding yes' in the remote sshd_config"
    writer.close()
    return None


async def _upload(conn: asyncssh.SSHClientConnection, path: str) -> str | None:
    """Send it over an exec channel (never SFTP, which a chatty login shell corrupts), verified
    there for size and SHA-256 under a temporary name, then renamed: never a half-written or
    altered agent in place, and nothing left behind on a full disk."""
    result = await remote.upload(conn, str(AGENT), "relay", AGENT.name, then=PLACE_SCRIPT)
    fields = result.fields
    error = fields.get("error")
    if error in ("write", "size"):
        free = remote.ascii_int(fields.get("free"), 15)
        shown = f"{free} KiB free there" if free is not None else "free space there unknown"
        return f"uploading the relay failed (disk full? {shown}, {(AGENT.stat().st_size + 1023) // 1024} KiB needed); the partial file was removed"
    if error:
        return f"uploading the relay failed ({remote.visible(error)})"
    if fields.get("placed") != "1":
        return "placing the relay on the remote failed"
    return None


async def stop_relay(conn: asyncssh.SSHClientConnection, port: int, only_pid: int | None = None) -> int | None:
    """Stop the relay for `port` (only if it is `only_pid`, when given); its streams end."""
    fields = (await run_script(conn, STOP_SCRIPT, str(port), str(only_pid or ""))).fields
    return ascii_int(fields.get("stopped"))
