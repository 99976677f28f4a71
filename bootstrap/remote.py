"""Running our own shell scripts on the remote, safely.

The login shell only ever sees `sh -s`: the script and its arguments travel on stdin,
arguments quoted for POSIX sh, so an odd login shell (fish, csh) or a path with spaces
cannot change what runs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

import asyncssh

from gt_remote.base.errors import ConnectFailed

REMOTE_INSTALL_ROOT = ".local/share/gt-remote/servers"  # relative to the remote home
REMOTE_RELAY_ROOT = ".local/share/gt-remote/relay"
REMOTE_STATE_DIR = ".local/state/gt-remote"

PRELUDE = f"""
install_root="$HOME/{REMOTE_INSTALL_ROOT}"
state_dir="$HOME/{REMOTE_STATE_DIR}"
""" + r"""cmdline_of() { ps -o args= -p "$1" 2>/dev/null || tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null; }
# Is pid $1 alive and a server we started for port $2?
is_our_server() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    case " $(cmdline_of "$1") " in *" --listen-tcp 127.0.0.1:$2 "*) return 0 ;; esac
    return 1
}
# Who takes connections to 127.0.0.1:$1 ($2: a pid to try first, our server's). Prints
# listen=none, listen=unknown (no /proc, lsof or ss to ask), or listen_uid (another account's
# listener first: it may take connections), listen_user for another account, and listen_pid
# when the listener is this user's process started with --listen-tcp 127.0.0.1:$1.
# Call it in a subshell: it sets variables.
port_owner() {
    me=${me:-$(id -u)}
    if [ -r /proc/net/tcp ]; then
        files=/proc/net/tcp; [ -r /proc/net/tcp6 ] && files="$files /proc/net/tcp6"
        # LISTEN (0A) on 127.0.0.1, 0.0.0.0, :: or ::ffff:127.0.0.1; the uid and inode columns.
        lines=$(awk -v p="$(printf '%04X' "$1")" '$4 == "0A" { split($2, a, ":"); if (a[2] == p && (a[1] == "0100007F" || a[1] ~ /^0+$/ || a[1] == "0000000000000000FFFF00000100007F")) print $8, "ino", $10 }' $files)
    elif command -v lsof >/dev/null 2>&1; then
        lines=$(lsof -nP -iTCP:"$1" -sTCP:LISTEN -Fpu 2>/dev/null | awk '/^p/ { pid = substr($0, 2) } /^u/ { print substr($0, 2), "pid", pid }')
    elif command -v ss >/dev/null 2>&1; then
        lines=$(ss -Hltne "sport = :$1" 2>/dev/null | sed -n 's/.*uid:\([0-9]*\).*ino:\([0-9]*\).*/\1 ino \2/p')
    else
        echo "listen=unknown"; return 0
    fi
    [ -n "$lines" ] || { echo "listen=none"; return 0; }
    uid=$(printf '%s\n' "$lines" | awk -v me="$me" '$1 != me { print $1; exit }')
    if [ -n "$uid" ]; then
        echo "listen_uid=$uid"
        echo "listen_user=$( (getent passwd "$uid" || grep "^[^:]*:[^:]*:$uid:" /etc/passwd) 2>/dev/null | head -n 1 | cut -d: -f1)"
        return 0
    fi
    echo "listen_uid=$me"
    printf '%s\n' "$lines" | while read -r _uid kind id; do
        if [ "$kind" = pid ]; then
            case " $(cmdline_of "$id") " in *" --listen-tcp 127.0.0.1:$1 "*) echo "listen_pid=$id"; break ;; esac
            continue
        fi
        # Our server's pid first: most checks then need no scan of every process.
        if [ -n "$2" ] && holds_listener "$2" "$id" "$1"; then echo "listen_pid=$2"; break; fi
        for pid in $(pgrep -u "$me" -f -- "--listen-tcp 127.0.0.1:$1( |\$)" 2>/dev/null); do
            if holds_listener "$pid" "$id" "$1"; then echo "listen_pid=$pid"; break 2; fi
        done
    done
}
# Does pid $1 hold the socket with inode $2, and was it started with --listen-tcp 127.0.0.1:$3?
holds_listener() {
    ls -l "/proc/$1/fd" 2>/dev/null | grep -q "socket:\[$2\]" || return 1
    case " $(tr '\0' ' ' < "/proc/$1/cmdline") " in *" --listen-tcp 127.0.0.1:$3 "*) return 0 ;; esac
    return 1
}
# Leases: a file per supervisor sharing the server on port $1, named $2, holding how many
# seconds it stays live ($3); each health check writes it again (its mtime is the lease).
lease_touch() {
    umask 077
    [ -d "$state_dir/leases/$1" ] || { mkdir -p "$state_dir/leases/$1" && chmod 700 "$state_dir" "$state_dir/leases" "$state_dir/leases/$1"; } || return 1
    echo "$3" > "$state_dir/leases/$1/$2"
}
# The live leases on port $1 other than $2, as lease=NAME lines; expired ones are removed.
lease_others() {
    now=$(date +%s)
    for f in "$state_dir/leases/$1"/*; do
        [ -f "$f" ] || continue
        name=${f##*/}
        case "$name" in "$2"|*.tmp) continue ;; esac
        ttl=$(head -c 12 "$f" | tr -cd 0-9); [ -n "$ttl" ] || ttl=60
        m=$(stat -c %Y "$f" 2>/dev/null || stat -f %m "$f" 2>/dev/null) || continue
        if [ $((now - m)) -le "$ttl" ]; then echo "lease=$name"; else rm -f "$f"; fi
    done
}
"""


@dataclass(frozen=True)
class ScriptResult:
    exit_status: int
    stdout: str
    stderr: str
    fields: dict[str, str] = field(default_factory=dict)


def script_text(script: str, args: tuple[str, ...]) -> str:
    assignment = "set -- " + " ".join(shlex.quote(arg) for arg in args) if args else "set --"
    return f"{assignment}\n{PRELUDE}\n{script}\n"


def parse_fields(stdout: str) -> dict[str, str]:
    """`key=value` lines; the last of a key wins."""
    fields: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            fields[key] = value
    return fields


async def run_script(conn: asyncssh.SSHClientConnection, script: str, *args: str, timeout: float = 60.0) -> ScriptResult:
    try:
        result = await conn.run("sh -s", input=script_text(script, args), check=False, timeout=timeout)
    except asyncssh.TimeoutError:
        raise ConnectFailed(f"a remote command took longer than {timeout:g} s", "is the remote overloaded?") from None
    except (asyncssh.Error, OSError) as exc:
        raise ConnectFailed(f"running a remote command failed: {exc}", "check the connection") from None
    stdout = str(result.stdout or "")
    return ScriptResult(result.exit_status or 0, stdout, str(result.stderr or ""), parse_fields(stdout))
