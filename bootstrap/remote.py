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
