"""The remote relay that makes streams resumable: upload by content hash, start, reuse, stop.

Like the server, it runs detached (setsid nohup) with its pid file and log under the remote
state dir, so it outlives the SSH connection. It needs python3 3.8 or newer on the remote;
where that is missing or the relay will not start, forwarding stays plain and the reason
is kept for `status` and `doctor`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
from dataclasses import dataclass

import asyncssh

from gt_remote.base.sanitize import ascii_int, visible
from gt_remote.remote import scripts as remote
from gt_remote.remote.relay import build as relay_build
from gt_remote.remote.scripts import run_script
from gt_remote.tunnel.mux import StdioMux, note_refused, refused, server_software

log = logging.getLogger(__name__)

SOCKET_PATH_LIMIT = 100  # sun_path is 104 to 108 bytes
LEASE_NAME = re.compile(r"[A-Za-z0-9._-]{1,120}")  # as gt_remote/remote/lease.py writes them

# Shell functions for checking and starting the relay; `up` runs them inside its one
# bring-up script (gt_remote/remote/probe.py), reconnects and health checks on their own.
RELAY_FUNCTIONS = r"""
# The python3 that can run the relay: relay_python=PATH, or none, or old (with relay_pyversion).
relay_python() {
    py=$(command -v python3 2>/dev/null) || py=""
    case "$py" in /*) ;; *) echo "relay_python=none"; return 1 ;; esac
    if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' >/dev/null 2>&1; then
        echo "relay_python=old"; echo "relay_pyversion=$("$py" -V 2>&1 | head -n 1)"; return 1
    fi
    echo "relay_python=$py"
}
# The same answer from python3's path $1 and its `-V` line $2, without starting python again.
relay_python_of() {
    case "$1" in /*) ;; *) echo "relay_python=none"; return 1 ;; esac
    v=${2#Python }; major=${v%%.*}; rest=${v#*.}; minor=${rest%%.*}
    case "$major:$minor" in [0-9]:[0-9]|[0-9]:[0-9][0-9]|[0-9]:[0-9][0-9][0-9])
        if [ "$major" -gt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -ge 8 ]; }; then echo "relay_python=$1"; return 0; fi ;;
    esac
    echo "relay_python=old"; echo "relay_pyversion=$2"; return 1
}
# Is the agent at $relay_root/$1 installed (and intact), and its relay for port $2 running (or stale)?
# $3 is the caller's own lease name. A relay another gt-remote started (another version, or
# another install dir) is stale only when no other supervisor holds a live lease on the port:
# while one does, its streams are that tunnel's, so it is reported (relay_foreign=PID and
# relay_foreign_leases=NAMES) and never stopped.
relay_check() {
    echo "relay_home=$HOME"
    # Code another account could swap after the hash check is never run (install_dir_safe).
    check_install_dir
    if [ -n "$install_unsafe" ]; then echo "relay_unsafe=$(unsafe_dir)"; return 1; fi
    intact=0
    build_intact "$relay_root/$1" && intact=1  # the file still hashes to its directory's name
    [ "$intact" = 1 ] && echo "relay_installed=1"
    sock="$state_dir/relay-$2/sock"
    pidfile="$state_dir/relay-$2.pid"
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    case " $(cmdline_of "$pid") " in
        *" -I $relay_root/$1 --socket $sock "*) [ -S "$sock" ] && [ "$intact" = 1 ] && echo "relay_running=$pid" || echo "relay_stale=$pid" ;;
        *"relay_agent.py --socket $sock "*)
            others=$(lease_others "$2" "$3" | sed -n 's/^lease=//p' | tr '\n' ' ')
            if [ -n "$others" ]; then echo "relay_foreign=$pid"; echo "relay_foreign_leases=$others"; else echo "relay_stale=$pid"; fi ;;
    esac
}
# Start the relay: python $1, agent $relay_root/$2, port $3, a stale relay's pid $4 to stop first.
relay_start() {
    umask 077
    check_install_dir
    if [ -n "$install_unsafe" ]; then echo "relay_error=$(unsafe_dir) is not this user's own"; return 1; fi
    mkdir -p "$state_dir/relay-$3" && chmod 700 "$state_dir" "$state_dir/relay-$3"
    if [ -n "$4" ]; then
        kill -TERM "$4" 2>/dev/null
        i=0; while kill -0 "$4" 2>/dev/null && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    sock="$state_dir/relay-$3/sock"
    log="$state_dir/relay-$3.log"
    pidfile="$state_dir/relay-$3.pid"
    if [ -f "$log" ] && [ "$(wc -c < "$log")" -gt 1048576 ]; then mv -f "$log" "$log.1"; fi
    rm -f "$sock"
    if command -v setsid >/dev/null 2>&1; then
        setsid nohup "$1" -I "$relay_root/$2" --socket "$sock" --port "$3" --leases "$state_dir/leases/$3" </dev/null >>"$log" 2>&1 &
    else
        nohup "$1" -I "$relay_root/$2" --socket "$sock" --port "$3" --leases "$state_dir/leases/$3" </dev/null >>"$log" 2>&1 &
    fi
    pid=$!
    echo "$pid" > "$pidfile.tmp" && mv -f "$pidfile.tmp" "$pidfile"
    i=0
    while [ "$i" -lt 50 ]; do
        if [ -S "$sock" ]; then echo "relay_pid=$pid"; echo "relay_socket=$sock"; return 0; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1; i=$((i + 1))
    done
    kill "$pid" 2>/dev/null
    echo "relay_error=$(tail -n 3 "$log" 2>/dev/null | tr '\n' ' ')"
}
"""

CHECK_SCRIPT = RELAY_FUNCTIONS + r"""
relay_python || exit 0
relay_check "$1" "$2" "$3"
"""

# Inside the bring-up script: check, and start the relay when it is installed but not running.
# Arguments there: $4 the agent's path, $5 whether resumable streams are wanted, $6 this
# supervisor's lease name; $py and $pyv come from the facts part before it.
BRINGUP_FRAGMENT = RELAY_FUNCTIONS + r"""
if [ "$5" = 1 ]; then
    relay_py_out=$(relay_python_of "$py" "$pyv"); relay_py_ok=$?  # py, pyv: from the facts part
    printf '%s\n' "$relay_py_out"
    if [ "$relay_py_ok" = 0 ]; then
        relay_py=${relay_py_out#relay_python=}
        relay_facts=$(relay_check "$4" "$2" "$6")
        printf '%s\n' "$relay_facts"
        case "$relay_facts" in
            *relay_running=*|*relay_foreign=*) ;;
            *relay_installed=1*) relay_start "$relay_py" "$4" "$2" "$(printf '%s\n' "$relay_facts" | sed -n 's/^relay_stale=//p')" ;;
        esac
    fi
fi
"""

# Runs right after remote.UPLOAD_SCRIPT verified the bytes ($part and $final set there).
PLACE_SCRIPT = r"""
chmod 600 "$part" && mv -f "$part" "$final" && echo "placed=1"
"""

START_SCRIPT = RELAY_FUNCTIONS + r"""
relay_start "$@"
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
    uploaded: bool = False  # by this call: a failed bring-up removes it again (remove_upload)

    @property
    def usable(self) -> bool:
        return self.socket is not None


def agent_digest() -> str:
    return relay_build.digest()


def remote_agent_path() -> str:
    """Relative to $relay_root (<install dir>/gt-remote/relay on the remote)."""
    return f"{agent_digest()}/{relay_build.NAME}"


async def ensure_relay(conn: asyncssh.SSHClientConnection, port: int, known: dict[str, str] | None = None, lease: str = "") -> RelayState:
    """The running relay for `port`, started (and uploaded) if needed; never raises for a remote
    that cannot run it, only for a broken connection (asyncssh errors, ConnectFailed).

    `known`: the relay_* answers of `up`'s bring-up script, which checked (and perhaps started)
    the relay already; then only an upload is left to do, if that.
    `lease`: this supervisor's lease name, so that only other tunnels' leases keep a relay
    of another gt-remote running (relay_check); empty counts every lease as another's.
    """
    path = remote_agent_path()
    facts = known if known is not None else (await run_script(conn, CHECK_SCRIPT, path, str(port), lease)).fields
    state = relay_state_from(facts, port)
    if state is not None:
        return state
    python = facts.get("relay_python", "")
    uploaded = facts.get("relay_installed") != "1"
    if uploaded:
        reason = await _upload(conn, path)
        if reason:
            return RelayState(None, reason=reason)
    start = run_script(conn, START_SCRIPT, python, path, str(port), str(ascii_int(facts.get("relay_stale")) or ""))
    started = (await remote.to_the_end(start)).fields  # never cut off mid-way: a relay it starts must be known
    state = _started(started, port, facts) or RelayState(None, reason="the relay did not start on the remote: no output")
    return dataclasses.replace(state, uploaded=uploaded)


def relay_state_from(facts: dict[str, str], port: int) -> RelayState | None:
    """What the check (and perhaps start) found; None when the relay still has to be uploaded or started."""
    python = facts.get("relay_python", "none")
    if python == "old":
        return RelayState(None, reason=f"the remote python3 is too old for the relay ({facts.get('relay_pyversion', '?')}; 3.8 or newer needed)")
    if not python.startswith("/"):
        return RelayState(None, reason="the remote has no python3 (3.8 or newer) to run the relay")
    if "relay_unsafe" in facts:
        return RelayState(None, reason=f"the relay is not run from {visible(facts['relay_unsafe'])}: another account could change files there")
    socket = _socket_path(facts, port)
    if len(socket.encode()) > SOCKET_PATH_LIMIT:
        return RelayState(None, reason=f"the relay socket path {socket} is too long for a Unix socket")
    foreign = ascii_int(facts.get("relay_foreign"))
    if foreign is not None:
        return RelayState(None, reason=foreign_relay_reason(foreign, facts.get("relay_foreign_leases", "")))
    running = ascii_int(facts.get("relay_running"))
    if running is not None:
        return RelayState(socket, pid=running)
    return _started(facts, port, facts)


def foreign_relay_reason(pid: int, leases: str) -> str:
    """Why streams stay plain beside another gt-remote's relay. Both use the port's one socket
    path, so only one relay can serve it; stopping that one would end the other laptop's
    streams, so ours wait for it to go (the next reconnect, or `up`, starts ours then).
    Lease names come from the remote's file names: only the safe alphabet is shown."""
    names = [name for name in leases.split() if LEASE_NAME.fullmatch(name)][:3] or ["?"]
    return (
        f"a relay of another gt-remote version or install dir (pid {pid}) serves another tunnel on this port (lease {', '.join(names)}); "
        "new connections stay plain, not resumable, until that tunnel ends and this one reconnects"
    )


def _socket_path(facts: dict[str, str], port: int) -> str:
    return f"{facts.get('relay_home', '')}/.local/state/gt-remote/relay-{port}/sock"


def _started(fields: dict[str, str], port: int, facts: dict[str, str]) -> RelayState | None:
    """A relay_start's answer: the new relay, a reason it did not start, or None if none ran."""
    pid = ascii_int(fields.get("relay_pid"))
    if pid is not None:
        log.info("relay started on the remote (pid %s)", pid)
        return RelayState(fields.get("relay_socket") or _socket_path(facts, port), pid=pid, started=True)
    if "relay_error" in fields:
        return RelayState(None, reason=f"the relay did not start on the remote: {fields['relay_error'].strip() or 'no output'}")
    return None


# The stdio transport's bridge: the relay's own file, run with --mux on this exec channel's
# stdio; its script comes first on stdin (data_command), the frames after it.
MUX_SCRIPT = RELAY_FUNCTIONS + r"""
out=$(relay_python) || { echo "mux_error=the remote has no python3 3.8 or newer"; exit 1; }
py=${out#relay_python=}
check_install_dir
if [ -n "$install_unsafe" ]; then echo "mux_error=$(unsafe_dir) is not this user's own"; exit 1; fi
build_intact "$relay_root/$1" || { echo "mux_error=the relay is not installed there"; exit 1; }
exec "$py" -I "$relay_root/$1" --mux
"""


async def start_mux(conn: asyncssh.SSHClientConnection) -> StdioMux:
    """Start the stdio transport's bridge on this connection (MuxUnavailable if it cannot)."""
    token = secrets.token_hex(16)
    command, text = remote.data_command(MUX_SCRIPT, (remote_agent_path(),), remote.install_dir_of(conn), token)
    return await StdioMux.start(conn, command, text, (remote.MARKER_PREFIX + token).encode())


async def channel_refused(conn: asyncssh.SSHClientConnection, socket: str, timeout: float = 5.0) -> str | None:
    """Why this SSH connection cannot open a channel to the relay's socket, or None if it can.

    sshd's AllowStreamLocalForwarding (on by default) may be off, or DisableForwarding on, and
    Dropbear has no such channels at all: then streams go through the stdio transport, or stay
    plain, instead of closing every new client. A refusal is the server's own answer (its
    reason and code), never a timeout; Dropbear is known by its version string and not asked."""
    known = refused(conn, "unix")
    if known is not None:
        return known
    try:
        _, writer = await asyncio.wait_for(conn.open_unix_connection(socket), timeout)
    except asyncssh.ChannelOpenError as exc:
        return note_refused(conn, "unix", exc)
    except TimeoutError:
        return f"{server_software(conn)} did not answer a channel to the relay's socket within {timeout:g} s"
    writer.close()
    return None


async def _upload(conn: asyncssh.SSHClientConnection, path: str) -> str | None:
    """Send it over an exec channel (never SFTP, which a chatty login shell corrupts), verified
    there for size and SHA-256 under a temporary name, then renamed: never a half-written or
    altered agent in place, and nothing left behind on a full disk."""
    agent = relay_build.agent()
    result = await remote.upload(conn, agent, "relay", relay_build.NAME, then=PLACE_SCRIPT)
    fields = result.fields
    error = fields.get("error")
    if error in ("write", "size"):
        free = remote.ascii_int(fields.get("free"), 15)
        shown = f"{free} KiB free there" if free is not None else "free space there unknown"
        return f"uploading the relay failed (disk full? {shown}, {(len(agent) + 1023) // 1024} KiB needed); the partial file was removed"
    if error:
        return f"uploading the relay failed ({remote.visible(error)})"
    if fields.get("placed") != "1":
        return "placing the relay on the remote failed"
    return None


# A failed bring-up takes back the agent it uploaded, unless a relay (another tunnel's) runs it.
REMOVE_UPLOAD_SCRIPT = r"""
agent="$relay_root/$1"
[ -d /proc/self ] || { echo "removed=0"; exit 0; }  # no /proc to look in: keep it
# Every command line, matched as a fixed string (pgrep -f reads the path as a regular expression),
# handed to awk in its environment: in its arguments, awk's own command line would match.
if cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\000' ' ' \
    | WANTED="$agent --socket " awk 'index($0, ENVIRON["WANTED"]) { found = 1 } END { exit !found }'; then
    echo "removed=0"; exit 0
fi
rm -f "$agent" && rmdir "${agent%/*}" 2>/dev/null
echo "removed=1"
"""


async def remove_upload(conn: asyncssh.SSHClientConnection) -> bool:
    """Remove the agent this gt-remote uploaded, when no relay runs it; True if removed."""
    return (await run_script(conn, REMOVE_UPLOAD_SCRIPT, remote_agent_path())).fields.get("removed") == "1"


async def stop_relay(conn: asyncssh.SSHClientConnection, port: int, only_pid: int | None = None) -> int | None:
    """Stop the relay for `port` (only if it is `only_pid`, when given); its streams end."""
    fields = (await run_script(conn, STOP_SCRIPT, str(port), str(only_pid or ""))).fields
    return ascii_int(fields.get("stopped"))
