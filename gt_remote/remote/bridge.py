"""Exec bridges: one connection to the server, carried by the stdin and stdout of a command
on the remote, for an sshd that forwards nothing (OpenSSH under `DisableForwarding yes` or
`AllowTcpForwarding no`, Dropbear started with -j) and a remote where the relay cannot run.

The command is what the remote has, in this order: python3 (any 3.x), socat, nc, bash's
/dev/tcp. It reaches the server's own Unix socket when known (no other account can be behind
it), else 127.0.0.1:PORT, whose holder the port checks vouch for, as for plain forwarding.
Each bridge is a login shell and a program start on the remote, so resumable streams never use
it: they go through the relay's multiplexer (gt_remote/tunnel/mux.py). It carries Pings and
plain forwarding only where nothing better exists.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any

import asyncssh

from gt_remote.base.errors import RemoteError
from gt_remote.remote import scripts
from gt_remote.tunnel import mux
from gt_remote.tunnel.mux import BridgeFailed, StreamSession

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 15.0
READY = b"GT-REMOTE-BRIDGE-READY\n"
NOISE_CAP = 1024 * 1024

# $1: unix or tcp, $2: the socket's path or the port.
PYTHON_BRIDGE = r"""
import os, socket, sys, threading
kind, where = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX) if kind == "unix" else socket.socket()
try:
    s.connect(where if kind == "unix" else ("127.0.0.1", int(where)))
except OSError as e:
    sys.stdout.write("bridge_error=cannot reach %s: %s\n" % (where, e.strerror or e)); sys.exit(1)
sys.stdout.write("GT-REMOTE-BRIDGE-READY\n"); sys.stdout.flush()
def up():
    while True:
        d = os.read(0, 65536)
        if not d:
            try: s.shutdown(socket.SHUT_WR)
            except OSError: pass
            return
        s.sendall(d)
threading.Thread(target=up, daemon=True).start()
while True:
    d = s.recv(65536)
    if not d:
        break
    v = memoryview(d)
    while v:
        v = v[os.write(1, v):]
"""

BRIDGE_SCRIPT = r"""
kind=$1 where=$2 code=$3
if command -v python3 >/dev/null 2>&1; then exec python3 -I -c "$code" "$kind" "$where"; fi
if command -v socat >/dev/null 2>&1; then
    printf 'GT-REMOTE-BRIDGE-READY\n'
    if [ "$kind" = unix ]; then exec socat - "UNIX-CONNECT:$where"; else exec socat - "TCP:127.0.0.1:$where"; fi
fi
if command -v nc >/dev/null 2>&1; then
    nc_help=$(nc -h 2>&1)
    case "$kind:$nc_help" in unix:*-U*) nc_to="-U $where" ;; tcp:*) nc_to="127.0.0.1 $where" ;; *) nc_to="" ;; esac
    if [ -n "$nc_to" ]; then
        # nc alone waits for the server to close, which ccmux never does: it reads a FIFO this
        # shell fills from stdin, and is ended 5 s after stdin ends (-N gives the server its end
        # first); when the server closes, nc ends and so does the bridge
        nc_end=""; case "$nc_help" in *-N*) nc_end="-N" ;; esac
        d=$(mktemp -d) && mkfifo "$d/in" || { echo "bridge_error=cannot make a FIFO for nc"; exit 1; }
        printf 'GT-REMOTE-BRIDGE-READY\n'
        exec 4<&0  # an asynchronous list's stdin is /dev/null: stdin goes to it as fd 4
        nc $nc_end $nc_to < "$d/in" & nc_pid=$!
        { cat <&4 > "$d/in"; sleep 5; kill "$nc_pid" 2>/dev/null; } & w=$!
        wait "$nc_pid"; kill "$w" 2>/dev/null; rm -rf "$d"; exit 0
    fi
fi
if [ "$kind" = tcp ] && command -v bash >/dev/null 2>&1; then
    printf 'GT-REMOTE-BRIDGE-READY\n'
    # bash cannot half-close: once stdin ends, the reader gets 5 s for the answer, then goes
    exec bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1; cat <&3 & r=$!; cat >&3; (sleep 5; kill $r 2>/dev/null) & wait $r' bridge "$where"
fi
echo "bridge_error=none of python3, socat, nc or bash is there to reach $where"
exit 1
"""


class _BridgeSession(asyncssh.SSHClientSession[bytes]):
    """Skips the login shell's noise and the script's marker, then hands the server's bytes
    to the inner session, as a forwarded channel would."""

    def __init__(self, inner: Any, marker: bytes) -> None:
        self.inner = inner
        self.marker = marker
        self.seen = bytearray()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.channel: Any = None

    def connection_made(self, chan: Any) -> None:
        self.channel = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            return
        if not self.ready.done():
            self.seen += data
            start = self.seen.find(self.marker)
            at = self.seen.find(READY, start) if start >= 0 else -1
            if at < 0:
                if len(self.seen) > NOISE_CAP:
                    self._fail("the remote login shell printed more than 1 MiB before the bridge")
                return
            data = bytes(self.seen[at + len(READY) :])
            self.seen.clear()
            self.inner.connection_made(self.channel)
            self.ready.set_result(None)
            if not data:
                return
        self.inner.data_received(data, None)

    def eof_received(self) -> bool:
        if not self.ready.done():
            self._fail(self._reason())
            return False
        return bool(self.inner.eof_received())

    def pause_writing(self) -> None:
        if self.ready.done():
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.ready.done():
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self._fail(self._reason() if exc is None else str(exc))
            return
        self.inner.connection_lost(exc)

    def _reason(self) -> str:
        for line in bytes(self.seen).decode(errors="replace").splitlines():
            if line.startswith("bridge_error="):
                return line[len("bridge_error=") :]
        return "the bridge ended before it was ready"

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(BridgeFailed(why))


def forwarding_advice(conn: asyncssh.SSHClientConnection) -> str:
    """How to let this SSH server forward, in its own terms."""
    if mux.is_dropbear(conn):
        return "start dropbear without -j (it then forwards TCP), or install python3 (3.8 or newer) there for the relay"
    return "set 'AllowTcpForwarding yes' (and no 'DisableForwarding yes') in the remote sshd_config, or install python3 (3.8 or newer) there for the relay"


def no_way_to_server(conn: asyncssh.SSHClientConnection, failed: BridgeFailed, port: int) -> RemoteError:
    """One line for a remote where neither sshd nor a program there can reach the server."""
    refusal = mux.refused(conn, "tcp") or f"{mux.server_software(conn)} forwards nothing"
    return RemoteError(f"no way to the server on 127.0.0.1:{port}: {refusal}; {failed}", forwarding_advice(conn))


async def create_bridge(conn: asyncssh.SSHClientConnection, session_factory: Callable[[], Any], socket: str | None, port: int) -> tuple[Any, Any]:
    """A channel to the server through an exec bridge, and its session (as create_connection
    returns them). BridgeFailed when the remote cannot reach it this way."""
    token = secrets.token_hex(16)
    kind, where = ("unix", socket) if socket else ("tcp", str(port))
    command, text = scripts.data_command(BRIDGE_SCRIPT, (kind, where, PYTHON_BRIDGE), scripts.install_dir_of(conn), token)
    inner = session_factory()
    session = _BridgeSession(inner, (scripts.MARKER_PREFIX + token).encode())
    channel, _ = await conn.create_session(lambda: session, command, encoding=None)
    channel.write(text)
    try:
        await asyncio.wait_for(asyncio.shield(session.ready), OPEN_TIMEOUT)
    except BaseException:
        channel.close()
        raise
    return channel, inner


async def open_bridge(conn: asyncssh.SSHClientConnection, socket: str | None, port: int) -> tuple[asyncio.StreamReader, Any]:
    """The same as a (reader, writer) pair, for a Ping."""
    channel, session = await create_bridge(conn, StreamSession, socket, port)
    return session.reader, channel
