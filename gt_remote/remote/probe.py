"""One round trip that learns everything `up` needs about the remote."""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass
from typing import Any

import asyncssh

from gt_remote.base.builds import build_of
from gt_remote.base.errors import PingFailed
from gt_remote.base.sanitize import ascii_int, visible
from gt_remote.ccmux import wire
from gt_remote.remote import bridge
from gt_remote.remote.digest import file_digest as file_digest  # what the supervisor's modules import it as
from gt_remote.remote.lease import holders
from gt_remote.remote.ownership import Owner, owner_from
from gt_remote.remote.relay import deploy as relay_script
from gt_remote.remote.scripts import run_script
from gt_remote.tunnel import mux

log = logging.getLogger(__name__)

PROBE_SCRIPT = r"""
server=$1 port=$2 digest=$3
found=""
# An installed build counts only while it still hashes to its directory's name (build_intact).
# Builds under the install dir count only while no other account can change them (install_dir_safe).
check_install_dir; builds_ok=0; [ -n "$install_unsafe" ] || builds_ok=1
if [ -n "$digest" ]; then
    if [ "$builds_ok" = 1 ] && [ -x "$install_root/$digest/$server" ] && build_intact "$install_root/$digest/$server"; then
        found="$install_root/$digest/$server"
    fi
elif [ -z "$digest" ]; then
    found=$(command -v "$server" 2>/dev/null) || found=""
    case "$found" in /*) ;; *) found="" ;; esac
    # A non-interactive shell's PATH often lacks where cargo and pipx put things.
    for candidate in "$HOME/.cargo/bin/$server" "$HOME/.local/bin/$server"; do
        if [ -z "$found" ] && [ -x "$candidate" ]; then found=$candidate; fi
    done
    if [ -z "$found" ] && [ "$builds_ok" = 1 ]; then
        unproven=0  # builds that never answered a Ping (mark_answered): never "the newest"
        for candidate in "$install_root"/*/"$server"; do
            [ -x "$candidate" ] && [ ! -L "$candidate" ] || continue
            if [ ! -e "$candidate.answered" ]; then unproven=$((unproven + 1)); continue; fi
            fit_for_code "$candidate" >/dev/null && build_intact "$candidate" || continue
            if [ -z "$found" ] || [ "$candidate" -nt "$found" ]; then found=$candidate; fi
        done
        [ -n "$found" ] || [ "$unproven" = 0 ] || echo "unproven=$unproven"
    fi
fi
echo "path=$found"
version=""
if [ -n "$found" ]; then version=$(version_of "$found"); echo "version=$version"; fi
echo "arch=$(uname -m)"
echo "os=$(uname -s)"
# WSL2: Windows stops an idle distro, and the server with it.
case "$(uname -r | tr 'A-Z' 'a-z')" in
    *microsoft*) echo "wsl=${WSL_DISTRO_NAME:-unknown distro}" ;;
    *) if [ -n "${WSL_DISTRO_NAME:-}" ]; then echo "wsl=$WSL_DISTRO_NAME"; fi ;;
esac
pidfile="$state_dir/$server-$port.pid"
if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    if is_our_server "$pid" "$port"; then
        echo "pid=$pid"
        server_pid=$pid
        # The build it runs: the word of its command line that names the server program.
        for word in $(cmdline_of "$pid"); do
            case "$word" in */"$server")
                echo "running=$word"
                if [ "$word" = "$found" ]; then echo "running_version=$version"
                elif [ -x "$word" ]; then echo "running_version=$(version_of "$word")"; fi
                [ -e "$word.answered" ] && echo "running_answered=1"
                break ;;
            esac
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


# What the machine is: who we are there, python3, and whether the install dir can hold and run a build.
FACTS_SCRIPT = r"""
me=$(id -u)
echo "uid=$me"
py=$(command -v python3 2>/dev/null) || py=""
case "$py" in /*) pyv=$("$py" -V 2>&1 | head -n 1) ;; *) py="" pyv="" ;; esac
echo "python_version=$pyv"
dir=$install_root; [ -d "$dir" ] || dir=$HOME
# Free KiB and the mount point from one df; the mount's options say whether builds may run there.
df_line=$(df -Pk "$dir" 2>/dev/null | awk 'NR == 2 { print $4, $6 }')
echo "free_kib=${df_line%% *}"
check_install_dir
if [ -n "$install_unsafe" ]; then
    printf '%s\n' "$install_unsafe"
    echo "install_dir=unsafe"
elif [ ! -w "$dir" ]; then
    echo "install_dir=readonly"
elif [ -r /proc/mounts ] && awk -v m="${df_line#* }" '$2 == m { o = $4 } END { exit !(o ~ /(^|,)noexec(,|$)/) }' /proc/mounts; then
    echo "install_dir=noexec"
else
    echo "install_dir=ok"
fi
"""

# `up`'s one round trip: the facts, the server, who holds the port, this tunnel's lease and
# the others', and the relay (started here when it is installed but not running).
# Arguments: server port digest relay_path want_relay(1/0) lease ttl.
BRINGUP_SCRIPT = (
    FACTS_SCRIPT
    + PROBE_SCRIPT
    + r"""
( port_owner "$2" "${server_pid:-}" )
if [ -n "$6" ]; then
    lease_touch "$2" "$6" "$7" && echo "lease_ok=1"
    lease_others "$2" "$6"
fi
"""
    + relay_script.BRINGUP_FRAGMENT
)


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
    wsl: str | None = None  # the WSL distro's name, when the remote is WSL
    running_answered: bool = False  # the running build is marked as one that answered a Ping (mark_answered)
    unproven: int = 0  # uploaded builds never found because none answered a Ping yet

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


def parse_version(output: str | None, server: str | None = None) -> str | None:
    """`ccmux-server 0.1.1` -> `0.1.1`: the last word of the first line, escapes made visible
    (it is only ever shown, and the far side's binary chose it). With `server`, only an answer
    that names that program is a version: `/bin/true --version` says `true (GNU coreutils)
    9.1`, which is no ccmux-server's version 9.1."""
    words = (output or "").split()
    if server is not None and not names_server(output, server):
        return None
    return visible(words[-1]) if words else None


def names_server(output: str | None, server: str) -> bool:
    """Whether a `--version` answer names the server program (`ccmux-server X`, `fugue-server X`):
    its first word is the program's name, or a path ending in it."""
    words = (output or "").split()
    return len(words) >= 2 and words[0].rsplit("/", 1)[-1] == server


async def probe(conn: asyncssh.SSHClientConnection, server: str, port: int, digest: str = "") -> RemoteFacts:
    return facts_from_fields((await run_script(conn, PROBE_SCRIPT, server, str(port), digest)).fields, server)


def facts_from_fields(fields: dict[str, str], server: str | None = None) -> RemoteFacts:
    """The probe's `key=value` lines as facts; numbers only as ASCII digits of bounded length.
    `server` (the program's name): a version line that does not name it is no version."""
    other_port, _, other_pid = fields.get("other", "").partition(":")
    return RemoteFacts(
        path=fields.get("path") or None,
        version=parse_version(fields.get("version"), server),
        arch=fields.get("arch", "unknown"),
        os=fields.get("os", "unknown"),
        pid=ascii_int(fields.get("pid")),
        running_path=fields.get("running") or None,
        running_version=parse_version(fields.get("running_version"), server),
        other_port=ascii_int(other_port, 5),
        other_pid=ascii_int(other_pid),
        wsl=_printable(fields["wsl"]) if "wsl" in fields else None,
        running_answered=fields.get("running_answered") == "1",
        unproven=ascii_int(fields.get("unproven"), 6) or 0,
    )


def _install_dir(answer: str) -> str:
    return answer if answer in ("ok", "noexec", "readonly", "unsafe") else "unknown"


def _printable(text: str, limit: int = 64) -> str:
    """A short remote string shown to the user: printable ASCII only."""
    return "".join(char if " " <= char <= "~" else "?" for char in text[:limit]) or "?"


@dataclass(frozen=True)
class Survey:
    """Everything `up` learns in its one bring-up script."""

    facts: RemoteFacts
    owner: Owner
    relay: dict[str, str]  # the relay_* answers, for bootstrap.relay.ensure_relay(known=...)
    lease_holders: list[str]  # the other live tunnels sharing this server
    python_version: str | None
    free_kib: int | None
    install_dir: str  # ok, noexec, readonly, unsafe (another account could change it) or unknown
    unsafe_dir: str | None = None  # when unsafe: the first directory that is not the user's own
    unsafe_why: str | None = None


async def survey(
    conn: asyncssh.SSHClientConnection, server: str, port: int, digest: str = "", relay_path: str = "", lease: str = "", lease_ttl: int = 0
) -> Survey:
    """One round trip for the whole bring-up; `relay_path` empty means no relay is wanted."""
    result = await run_script(conn, BRINGUP_SCRIPT, server, str(port), digest, relay_path, "1" if relay_path else "0", lease, str(lease_ttl))
    fields = result.fields
    words = fields.get("python_version", "").split()
    return Survey(
        facts=facts_from_fields(fields, server),
        owner=owner_from(fields),
        relay={key: value for key, value in fields.items() if key.startswith("relay_")},
        lease_holders=holders(result.stdout.splitlines()),
        python_version=_printable(words[-1], 16) if words else None,
        free_kib=ascii_int(fields.get("free_kib"), 15),
        install_dir=_install_dir(fields.get("install_dir", "")),
        unsafe_dir=visible(fields["unsafe_dir"]) if "unsafe_dir" in fields else None,
        unsafe_why=visible(fields["unsafe_why"]) if "unsafe_why" in fields else None,
    )


async def open_server(conn: asyncssh.SSHClientConnection, port: int, socket: str | None = None) -> tuple[Any, Any]:
    """A channel to the server: through its own Unix socket when known (a name in a directory
    only the user can change: no other account can be behind it, as one can be behind a TCP
    port the instant after a check), else to its port. A remote sshd that forbids
    streamlocal channels gets the port, as it always did (docs/security.md); one that forwards
    nothing goes through the stdio transport, or an exec bridge (gt_remote/remote/bridge.py)."""
    way = await mux.opener(conn)
    if way is not conn:  # the stdio transport: its bridge checks whose a port's listener is
        return await (way.open_unix_connection(socket) if socket else way.open_connection("127.0.0.1", port))
    if socket and mux.refused(conn, "unix") is None:
        try:
            return await conn.open_unix_connection(socket)
        except asyncssh.ChannelOpenError as exc:
            if exc.code != asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                raise
            mux.note_refused(conn, "unix", exc)
    if mux.refused(conn, "tcp") is None:
        try:
            return await conn.open_connection("127.0.0.1", port)
        except asyncssh.ChannelOpenError as exc:
            if exc.code != asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                raise
            log.warning("%s; Pings and plain forwarding go through exec bridges", mux.note_refused(conn, "tcp", exc))
    return await bridge.open_bridge(conn, socket, port)


def no_channel_to(socket: str, port: int) -> None:
    """The server was just seen listening on `socket`, yet this sshd opened no channel to it:
    OpenSSH refuses them (AllowStreamLocalForwarding no) with a bare "open failed", the words
    of a dead socket too. From now on the port, whose listener was just seen to be ours."""
    log.warning("the remote sshd opens no channel to %s (AllowStreamLocalForwarding?); Pings and plain forwarding use 127.0.0.1:%d", socket, port)


async def ping_remote(conn: asyncssh.SSHClientConnection, port: int, timeout: float = 3.0, socket: str | None = None) -> float:
    """Ping the server on the remote, through its Unix socket when known (open_server)."""
    reader, writer = await asyncio.wait_for(open_server(conn, port, socket), timeout)
    try:
        return await wire.ping(reader, writer, timeout)
    finally:
        writer.close()


async def port_state(conn: asyncssh.SSHClientConnection, port: int, timeout: float = PORT_CHECK_TIMEOUT, socket: str | None = None) -> PortState:
    """What answers on the remote port: ask only once the listener is known to be the user's
    (its uid), and through the server's Unix socket when there is one. A channel that does
    not even open in time raises TimeoutError: the SSH connection is what does not answer."""
    try:
        reader, writer = await asyncio.wait_for(open_server(conn, port, socket), timeout)
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
