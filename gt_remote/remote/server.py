"""Starting and stopping the ccmux server on the remote.

The server runs detached (setsid, nohup, stdin from /dev/null, output to its log) so it
outlives the SSH connection; its pid file and log live under ~/.local/state/gt-remote/.
A live process proves nothing (a TCP bind failure is only logged), so readiness is a Ping.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping

import asyncssh

from gt_remote.base.errors import GtRemoteError, PingFailed, RemoteError, RemotePortBusy, ServerNotAnswering, ServerWithoutTcp, shell_word
from gt_remote.base.sanitize import ascii_int, visible
from gt_remote.remote.bridge import no_way_to_server
from gt_remote.remote.ownership import Holder, Owner, owner_from
from gt_remote.remote.probe import no_channel_to, ping_remote
from gt_remote.remote.scripts import run_script
from gt_remote.tunnel.mux import BridgeFailed

LOG_CAP_BYTES = 1024 * 1024
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*\Z")

ENVIRONMENT_SCRIPT = r"""
pid=$1; shift
[ -r "/proc/$pid/environ" ] || { echo "environ=unreadable"; exit 0; }
echo "environ=read"
for name in "$@"; do
    value=$(tr '\000' '\n' < "/proc/$pid/environ" | sed -n "s/^$name=//p" | head -n 1)
    [ -n "$value" ] && printf 'env_%s=%s\n' "$name" "$value"
done
exit 0
"""

START_SCRIPT = r"""
path=$1 server=$2 port=$3
shift 3
for pair in "$@"; do export "$pair"; done  # the back tunnels' variables, which the panes inherit
umask 077
mkdir -p "$state_dir" && chmod 700 "$state_dir"
log="$state_dir/$server-$port.log"
pidfile="$state_dir/$server-$port.pid"
if [ -f "$log" ] && [ "$(wc -c < "$log")" -gt %(cap)d ]; then mv -f "$log" "$log.1"; fi
echo "--- $(date -u +%%Y-%%m-%%dT%%H:%%M:%%SZ) gt-remote starting $path on 127.0.0.1:$port" >> "$log"
if command -v setsid >/dev/null 2>&1; then
    setsid nohup "$path" --listen-tcp "127.0.0.1:$port" </dev/null >>"$log" 2>&1 &
else
    nohup "$path" --listen-tcp "127.0.0.1:$port" </dev/null >>"$log" 2>&1 &
fi
pid=$!
echo "$pid" > "$pidfile.tmp" && mv -f "$pidfile.tmp" "$pidfile"
echo "pid=$pid"
# Wait (up to 15 s) until it holds its port, exits, or says it could not bind: then who holds
# the port, in port_owner's words, so the first Ping goes to it, never to whoever took the port.
me=$(id -u); echo "uid=$me"
i=0
while [ "$i" -lt 150 ]; do
    owner=$(port_owner "$port" "$pid")
    case "$owner" in *"listen_pid=$pid"*|*listen_user=*|*listen=unknown*) printf '%%s\n' "$owner"; exit 0 ;; esac
    kill -0 "$pid" 2>/dev/null || exit 0
    tail -n 5 "$log" 2>/dev/null | grep -q "Failed to bind TCP listener" && exit 0
    sleep 0.1; i=$((i + 1))
done
""" % {"cap": LOG_CAP_BYTES}

STATUS_SCRIPT = r"""
pid=$1 server=$2 port=$3
if kill -0 "$pid" 2>/dev/null; then echo "alive=1"; else echo "alive=0"; fi
log="$state_dir/$server-$port.log"
# The log since our last start marker, last lines only.
[ -f "$log" ] && awk '/^--- .* gt-remote starting/ { n = 0; delete lines; next } { lines[n++] = $0 } END { s = n > 15 ? n - 15 : 0; for (i = s; i < n; i++) print "log=" lines[i] }' "$log"
"""

STOP_SCRIPT = r"""
server=$1 port=$2 only_pid=$3
pidfile="$state_dir/$server-$port.pid"
[ -f "$pidfile" ] || { echo "stopped=none"; exit 0; }
pid=$(cat "$pidfile")
if [ -n "$only_pid" ] && [ "$pid" != "$only_pid" ]; then echo "stopped=none"; exit 0; fi
if is_our_server "$pid" "$port"; then
    kill -TERM "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "stopped=$pid"
else
    echo "stopped=none"
fi
rm -f "$pidfile"
"""

# A server of this user's that owns the Unix socket: the one that keeps ours from starting.
STOP_OTHER_SCRIPT = r"""
server=$1
pids=$(pgrep -u "$(id -u)" -f "(^|/)$server( |\$)") || { echo "stopped=none"; exit 0; }
for pid in $pids; do kill -TERM "$pid"; done
i=0
for pid in $pids; do
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
done
echo "stopped=$(echo $pids | tr ' ' ',')"
"""


async def start(conn: asyncssh.SSHClientConnection, path: str, server: str, port: int, environment: Mapping[str, str] | None = None) -> tuple[int, Owner]:
    """Start it detached, with `environment` added to its own (the panes inherit it); its pid,
    and who holds the port once it listens (or gave up)."""
    pairs = [f"{name}={value}" for name, value in sorted((environment or {}).items()) if ENV_NAME.match(name) and "\0" not in value]
    fields = (await run_script(conn, START_SCRIPT, path, server, str(port), *pairs)).fields
    pid = ascii_int(fields.get("pid"))
    if pid is None:
        raise RemoteError(f"could not start {path} on the remote", "check that the remote home directory is writable")
    return pid, owner_from(fields) if "listen" in fields or "listen_uid" in fields else Owner(Holder.NONE)


async def environment_lacking(conn: asyncssh.SSHClientConnection, pid: int, wanted: Mapping[str, str]) -> dict[str, str] | None:
    """Of `wanted`, the variables the running server (and so its panes) lacks or has with
    another value; None when its environment cannot be read (no /proc there)."""
    names = [name for name in sorted(wanted) if ENV_NAME.match(name)]
    fields = (await run_script(conn, ENVIRONMENT_SCRIPT, str(pid), *names)).fields
    if fields.get("environ") != "read":
        return None
    return {name: wanted[name] for name in names if fields.get(f"env_{name}") != wanted[name]}


async def stop(conn: asyncssh.SSHClientConnection, server: str, port: int, only_pid: int | None = None) -> int | None:
    """Stop the server gt-remote started on `port` (TERM, then KILL after 5 s); None if none."""
    fields = (await run_script(conn, STOP_SCRIPT, server, str(port), str(only_pid or ""))).fields
    return ascii_int(fields.get("stopped"))


async def stop_other(conn: asyncssh.SSHClientConnection, server: str) -> str:
    """Stop the user's running server that lacks TCP; only on --restart-server."""
    return (await run_script(conn, STOP_OTHER_SCRIPT, server)).fields.get("stopped", "none")


async def wait_until_answering(conn: asyncssh.SSHClientConnection, pid: int, server: str, port: int, host: str, deadline_s: float = 15.0, socket: str | None = None) -> str | None:
    """Wait for the first Pong (through its Unix socket when known); on failure stop what we
    started and say why. Returns the socket later Pings may use: None when this sshd will not
    open a channel to it (OpenSSH says only "open failed"), though the start script had just
    seen the server listen there; then the port, which it had seen the server hold."""
    deadline = time.monotonic() + deadline_s
    next_liveness_check = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        try:
            await ping_remote(conn, port, timeout=2.0, socket=socket)
            return socket
        except asyncssh.ChannelOpenError:
            if socket is not None:
                no_channel_to(socket, port)
                socket = None
                continue
        except BridgeFailed as failed:  # sshd forwards nothing, and nothing on the remote can bridge
            await stop(conn, server, port, only_pid=pid)
            raise no_way_to_server(conn, failed, port) from None
        except (TimeoutError, PingFailed):
            pass
        if time.monotonic() >= next_liveness_check:
            alive, log_tail = await _status(conn, pid, server, port)
            if not alive:
                await stop(conn, server, port, only_pid=pid)  # removes its pid file: nothing stale left
                raise _exited(server, port, host, log_tail)
            if _bind_failed(log_tail):
                await stop(conn, server, port, only_pid=pid)
                raise _never_answered(server, port, host, log_tail)
            next_liveness_check = time.monotonic() + 1.0
        await asyncio.sleep(0.05)
    alive, log_tail = await _status(conn, pid, server, port)
    await stop(conn, server, port, only_pid=pid)
    raise _never_answered(server, port, host, log_tail)


async def _status(conn: asyncssh.SSHClientConnection, pid: int, server: str, port: int) -> tuple[bool, list[str]]:
    result = await run_script(conn, STATUS_SCRIPT, str(pid), server, str(port))
    lines = [line[4:] for line in result.stdout.splitlines() if line.startswith("log=")]
    return result.fields.get("alive") == "1", lines


def _tail(lines: list[str]) -> str:
    return " | ".join(visible(line.strip()) for line in lines[-3:] if line.strip()) or "no log output"


def _exited(server: str, port: int, host: str, log_tail: list[str]) -> GtRemoteError:
    text = "\n".join(log_tail)
    if "already running" in text:
        return ServerWithoutTcp(
            f"a {server} already runs on {host} without TCP, so a second one cannot start",
            f"restarting it ends its panes: run 'gt-remote up {shell_word(host)} --restart-server' to restart it "
            f"with --listen-tcp 127.0.0.1:{port}, or restart it yourself with that option",
        )
    return RemoteError(f"{server} exited right after starting on {host}: {_tail(log_tail)}", f"read ~/.local/state/gt-remote/{server}-{port}.log on {host}")


def _bind_failed(log_tail: list[str]) -> bool:
    return any("Failed to bind TCP listener" in line for line in log_tail)


def _never_answered(server: str, port: int, host: str, log_tail: list[str]) -> GtRemoteError:
    if _bind_failed(log_tail):
        return RemotePortBusy(
            f"{server} could not bind 127.0.0.1:{port} on {host}: another program holds that port ({_tail(log_tail)})",
            "pick another port with --remote-port, or stop that program",
        )
    return ServerNotAnswering(
        f"{server} started on {host} but never answered a Ping on 127.0.0.1:{port}: {_tail(log_tail)}",
        f"read ~/.local/state/gt-remote/{server}-{port}.log on {host}",
    )
