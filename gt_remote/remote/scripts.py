"""Running our own shell scripts on the remote, safely, whatever the login shell prints.

The login shell only ever sees `sh -s`: the script and its arguments travel on stdin,
arguments quoted for POSIX sh, so an odd login shell (fish, csh) or a path with spaces
cannot change what runs.

A gaming PC's login shell is chatty: `.bashrc`, `.zshenv`, fish's `config.fish` or
`~/.ssh/rc` print banners on stdout before our script starts, and some of their lines look
like our `key=value` answers. So every script first prints a start marker unique to the
run, and only what follows it is read; stderr is never parsed. Output is read through the
channel with a byte cap: a start-up file printing hundreds of megabytes ends the command
with an error saying so, it never fills the laptop's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import secrets
import shlex
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncssh

from gt_remote.base.errors import ConnectFailed, NonPosixShell, RemoteError, RemoteOutputTooLarge
from gt_remote.base.sanitize import ascii_int, visible  # noqa: F401 (callers use remote.ascii_int, remote.visible)
from gt_remote.remote.digest import file_sha256

DEFAULT_INSTALL_DIR = "~/.local/share"  # gt-remote's files go to <install dir>/gt-remote/{servers,relay}
REMOTE_INSTALL_ROOT = ".local/share/gt-remote/servers"  # the default, relative to the remote home
REMOTE_RELAY_ROOT = ".local/share/gt-remote/relay"
REMOTE_STATE_DIR = ".local/state/gt-remote"

OUTPUT_CAP = 1 << 20  # stdout bytes read from one remote command; our scripts print a few lines
STDERR_KEPT = 64 << 10  # stderr is drained to the end, but only this much is kept (for messages)
MARKER_PREFIX = "gt-remote-start-"

PRELUDE = r"""
gt_base=$GT_INSTALL_DIR
case $gt_base in
    "~") gt_base=$HOME ;;
    "~/"*) gt_base="$HOME/${gt_base#??}" ;;
    /*) ;;
    *) gt_base="$HOME/$gt_base" ;;
esac
install_root="$gt_base/gt-remote/servers"
relay_root="$gt_base/gt-remote/relay"
state_dir="$HOME/.local/state/gt-remote"
# A process's command line: from /proc where there is one (a read, where ps is a program to
# start), else from ps (macOS, the BSDs).
cmdline_of() {
    if [ -r "/proc/$1/cmdline" ]; then tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null; else ps -o args= -p "$1" 2>/dev/null; fi
}
# Is pid $1 alive and a server we started for port $2?
is_our_server() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    case " $(cmdline_of "$1") " in *" --listen-tcp 127.0.0.1:$2 "*) return 0 ;; esac
    return 1
}
# SHA-256 of file $1 in hex, with whatever this machine has; nothing printed if it has none.
sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum < "$1" | cut -c1-64
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 < "$1" | cut -c1-64
    elif command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r < "$1" | cut -c1-64
    elif command -v python3 >/dev/null 2>&1; then
        python3 -c 'import hashlib, sys
h = hashlib.sha256()
for block in iter(lambda: sys.stdin.buffer.read(1 << 20), b""): h.update(block)
print(h.hexdigest())' < "$1"
    fi
}
# Is the file $1, in a directory named by the first 16 hex digits of its SHA-256, still what
# was uploaded there? (Exit 1: changed or unreadable. A machine with no SHA-256 tool at all
# cannot check, and passes.)
build_intact() {
    [ -f "$1" ] || return 1
    want=${1%/*}; want=${want##*/}
    [ "${#want}" -eq 16 ] || return 1
    got=$(sha256_of "$1") || return 1
    [ -n "$got" ] || return 0
    case $got in "$want"*) return 0 ;; esac
    return 1
}
# Owner uid and permission bits (octal) of $1 itself, never of what a link points to.
owner_mode_of() {
    stat -c '%u %a' -- "$1" 2>/dev/null || stat -f '%u %Lp' -- "$1" 2>/dev/null
}
# Can no account but this user (or root) change what path $1 holds? Its owner is us or root,
# and no one else may write to it; $2 = sticky: a shared directory (/var/tmp, /tmp) whose
# sticky bit keeps others from renaming what we made in it. Prints the reason on failure.
fit_for_code() {
    om=$(owner_mode_of "$1") || { echo "cannot be checked (no stat)"; return 1; }
    o=${om%% *} m=${om#* }
    case "$o:$m" in *[!0-9:]*|:*|*:) echo "cannot be checked (stat said '$om')"; return 1 ;; esac
    if [ "$o" != "${me:-$(id -u)}" ] && [ "$o" != 0 ]; then echo "belongs to uid $o"; return 1; fi
    [ $((0$m & 022)) -eq 0 ] && return 0
    [ "$2" = sticky ] && [ $((0$m & 01000)) -ne 0 ] && return 0
    echo "is writable by other accounts (mode $m)"; return 1
}
# Is every directory we keep code in (<install dir>/gt-remote, servers, relay and each build's
# directory) a real directory (no link), ours (or root's) and writable by no one else? Another
# account that could write there could swap a verified build or relay before it runs. Prints
# unsafe_dir= and unsafe_why= for the first that is not; directories not made yet pass (they
# are made 0700). The install dir itself may be shared if it is sticky (/var/tmp).
install_dir_safe() {
    if [ -L "$gt_base" ] && ! why=$(fit_for_code "$gt_base"); then
        echo "unsafe_dir=$gt_base"; echo "unsafe_why=the link $why"; return 1
    fi
    if [ -d "$gt_base" ] && ! why=$(fit_for_code "$gt_base/." sticky); then
        echo "unsafe_dir=$gt_base"; echo "unsafe_why=$why"; return 1
    fi
    for d in "$gt_base/gt-remote" "$install_root" "$relay_root" "$install_root"/* "$relay_root"/*; do
        [ -e "$d" ] || [ -L "$d" ] || continue
        case "$d" in "$install_root"/*|"$relay_root"/*) [ -d "$d" ] || [ -L "$d" ] || continue ;; esac
        if [ -L "$d" ]; then echo "unsafe_dir=$d"; echo "unsafe_why=is a symbolic link"; return 1; fi
        if [ ! -d "$d" ]; then echo "unsafe_dir=$d"; echo "unsafe_why=is not a directory"; return 1; fi
        if ! why=$(fit_for_code "$d"); then echo "unsafe_dir=$d"; echo "unsafe_why=$why"; return 1; fi
    done
    return 0
}
# Run `$1 --version`: its status, and the first line of its answer in $version_line. The answer
# is stdout (a loader's warning on stderr is not a version); a failure says why on either stream.
ask_version() {
    version_out=$("$1" --version 2>/dev/null) && { version_line=$(printf '%s\n' "$version_out" | head -n 1); return 0; }
    version_rc=$?
    version_line=$("$1" --version 2>&1 | head -n 1)
    return "$version_rc"
}
# The first line of `$1 --version`. A build under install_root lives in a directory named by
# its content hash, so its answer cannot change: it is kept beside it ($1.version, written at
# upload or on first ask) and a warm `up` starts no server process just to learn a version.
version_of() {
    case "$1" in "$install_root"/*/*) if [ -s "$1.version" ]; then head -n 1 "$1.version"; return 0; fi ;; esac
    # Only an answer is kept: a failure (noexec, a missing library) may be mended later.
    if ask_version "$1"; then case "$1" in "$install_root"/*/*) keep_version "$1" "$version_line" ;; esac; fi
    printf '%s\n' "$version_line"
    return 0
}
# Keep $2, build $1's --version answer, beside it (private, replaced in one rename).
keep_version() {
    [ -n "$2" ] && (umask 077; printf '%s\n' "$2" > "$1.version.$$" && mv -f "$1.version.$$" "$1.version") 2>/dev/null
    return 0
}
# The mount point holding path $1, if that mount forbids running programs (noexec).
noexec_mount_of() {
    [ -r /proc/mounts ] || return 0
    awk -v path="$1" '
        { mp = $2; gsub(/\\040/, " ", mp); gsub(/\\011/, "\t", mp)
          if ((path == mp || index(path, mp "/") == 1 || mp == "/") && length(mp) >= length(best)) { best = mp; opts = $4 } }
        END { if ("," opts "," ~ /,noexec,/) print best }' /proc/mounts
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
        # LISTEN (0A) on any address that takes connections to 127.0.0.1: 127.0.0.1, 0.0.0.0, ::,
        # and the v4-mapped ::ffff:127.0.0.1 and ::ffff:0.0.0.0 (an AF_INET6 socket bound there
        # takes IPv4 connections), each word as a little- or big-endian host prints it; the
        # uid and inode columns.
        lines=$(awk -v p="$(printf '%04X' "$1")" '$4 == "0A" { split($2, a, ":"); if (a[2] == p && (a[1] ~ /^0+$/ || a[1] ~ /^(0100007F|7F000001|0000000000000000FFFF0000(0100007F|00000000)|00000000000000000000FFFF(7F000001|00000000))$/)) print $8, "ino", $10 }' $files)
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
            case " $(cmdline_of "$id") " in *" --listen-tcp 127.0.0.1:$1 "*) listener_is "$id"; break ;; esac
            continue
        fi
        # Our server's pid first: most checks then need no scan of every process.
        if [ -n "$2" ] && holds_listener "$2" "$id" "$1"; then listener_is "$2"; break; fi
        for pid in $(pgrep -u "$me" -f -- "--listen-tcp 127.0.0.1:$1( |\$)" 2>/dev/null); do
            if holds_listener "$pid" "$id" "$1"; then listener_is "$pid"; break 2; fi
        done
    done
}
# Our server, pid $1, holds the port: listen_pid, and listen_socket, its own Unix socket, when
# that can be used instead of the port (unix_socket_of).
listener_is() {
    echo "listen_pid=$1"
    listen_socket=$(unix_socket_of "$1")
    [ -z "$listen_socket" ] || echo "listen_socket=$listen_socket"
}
# The Unix socket pid $1 listens on (ccmux's own, beside its TCP port), when no other account
# can put a socket of its own in its place: the socket and its directory are ours (or root's),
# no one else may write to the directory, and its parent is private or sticky. Anyone can take
# a free TCP port on 127.0.0.1; no one can take this name. Nothing printed otherwise.
unix_socket_of() {
    [ -r /proc/net/unix ] || return 0
    inodes=$(ls -l "/proc/$1/fd" 2>/dev/null | sed -n 's/.*socket:\[\([0-9]*\)\].*/\1/p' | tr '\n' ' ')
    [ -n "$inodes" ] || return 0
    # Listening (flags 00010000) sockets with a path, whose inode (column 7) the pid holds.
    path=$(awk -v inodes=" $inodes" '$4 == "00010000" && NF >= 8 && index(inodes, " " $7 " ") { line = $0; for (i = 0; i < 7; i++) sub(/^[^ ]+ +/, "", line); print line; exit }' /proc/net/unix)
    case "$path" in /*/*) ;; *) return 0 ;; esac
    dir=${path%/*}; parent=${dir%/*}
    [ -S "$path" ] && [ ! -L "$path" ] && [ ! -L "$dir" ] && [ -d "$dir" ] || return 0
    fit_for_code "$dir" >/dev/null && fit_for_code "${parent:-/}/." sticky >/dev/null || return 0
    om=$(owner_mode_of "$path") && [ "${om%% *}" = "${me:-$(id -u)}" ] || return 0
    printf '%s\n' "$path"
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
        # Only names a supervisor writes: a newline in a planted name would add answer lines.
        case "$name" in "$2"|*.tmp|.*|*[!A-Za-z0-9._-]*) continue ;; esac
        ttl=$(head -c 12 "$f" | tr -cd 0-9); [ -n "$ttl" ] || ttl=60
        m=$(stat -c %Y "$f" 2>/dev/null || stat -f %m "$f" 2>/dev/null) || continue
        if [ $((now - m)) -le "$ttl" ]; then echo "lease=$name"; else rm -f "$f"; fi
    done
}
"""

WINDOWS_SHELLS = (
    ("is not recognized as an internal or external command", "Windows' cmd.exe"),
    ("is not recognized as the name of a cmdlet", "Windows PowerShell"),
    ("The term '", "Windows PowerShell"),
)


@dataclass(frozen=True)
class ScriptResult:
    exit_status: int
    stdout: str  # what the script printed after its start marker; never the shell's banners
    stderr: str
    fields: dict[str, str] = field(default_factory=dict)


# --- where gt-remote's files live on the remote ----------------------------------------

_install_dirs: weakref.WeakKeyDictionary[asyncssh.SSHClientConnection, str] = weakref.WeakKeyDictionary()


def use_install_dir(conn: asyncssh.SSHClientConnection, install_dir: str | None) -> None:
    """Every script later run on `conn` finds server builds and the relay under `install_dir`
    (the host's `install_dir` setting; None for the default ~/.local/share)."""
    _install_dirs[conn] = install_dir or DEFAULT_INSTALL_DIR


def install_dir_of(conn: asyncssh.SSHClientConnection) -> str:
    return _install_dirs.get(conn, DEFAULT_INSTALL_DIR)


# --- numbers from the far side ----------------------------------------------------------



# --- scripts ----------------------------------------------------------------------------


def script_text(script: str, args: tuple[str, ...], install_dir: str = DEFAULT_INSTALL_DIR, token: str = "") -> str:
    """The whole text `sh -s` reads: arguments, the shared prelude, the start marker, the script.

    The marker is printed from two separate words, so the shell echoing its input (set -v)
    never shows the marker before the script has really started.
    """
    assignment = "set -- " + " ".join(shlex.quote(arg) for arg in args) if args else "set --"
    marker = f"printf '%s%s\\n' {shlex.quote(MARKER_PREFIX)} {shlex.quote(token)}\n" if token else ""
    return f"{assignment}\nGT_INSTALL_DIR={shlex.quote(install_dir)}\n{PRELUDE}\n{marker}{script}\n"


def parse_fields(stdout: str) -> dict[str, str]:
    """`key=value` lines; the last of a key wins."""
    fields: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            fields[key] = value
    return fields


Feed = Callable[["asyncssh.SSHWriter[bytes]"], Awaitable[None]]


async def run_script(conn: asyncssh.SSHClientConnection, script: str, *args: str, timeout: float = 60.0) -> ScriptResult:
    """Run `script` with `args` under `sh -s` and return what it printed after its marker."""
    token = secrets.token_hex(16)
    text = script_text(script, args, install_dir_of(conn), token).encode()

    async def feed(stdin: asyncssh.SSHWriter[bytes]) -> None:
        stdin.write(text)
        stdin.write_eof()

    return await run_command(conn, "sh -s", feed, token, timeout)


def data_command(script: str, args: tuple[str, ...], install_dir: str, token: str) -> tuple[str, bytes]:
    """A command whose script arrives first on stdin, leaving the rest of stdin to the script
    (an upload's bytes for `cat`).

    `sh -s` cannot do this: dash reads its script in blocks and would swallow the data. So sh
    reads exactly the script's length with dd, one byte at a time, and evals it. The command
    line holds only characters every login shell (sh, bash, zsh, fish, csh) reads the same.
    """
    text = script_text(script, args, install_dir, token).encode()
    command = f"sh -c 'eval \"$(dd bs=1 count={len(text)} 2>/dev/null)\"'"
    return command, text


async def run_command(conn: asyncssh.SSHClientConnection, command: str, feed: Feed, token: str, timeout: float) -> ScriptResult:
    try:
        return await asyncio.wait_for(_run(conn, command, feed, token), timeout)
    except TimeoutError:
        raise ConnectFailed(f"a remote command took longer than {timeout:g} s", "is the remote overloaded?") from None
    except (asyncssh.Error, OSError) as exc:
        raise ConnectFailed(f"running a remote command failed: {exc}", "check the connection") from None


async def _run(conn: asyncssh.SSHClientConnection, command: str, feed: Feed, token: str) -> ScriptResult:
    process = await conn.create_process(command, encoding=None)
    feeding = asyncio.create_task(_feed_quietly(feed, process.stdin))
    reading = asyncio.create_task(_read_capped(process.stdout))
    draining = asyncio.create_task(_read_kept(process.stderr))
    tasks: list[asyncio.Task[object]] = [feeding, reading, draining]  # type: ignore[list-item]
    try:
        stdout, stderr = await reading, await draining
        await feeding
        await process.wait_closed()
    finally:
        process.close()  # a capped or timed-out command ends here, and its reads with it
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return _result(process.exit_status, stdout, stderr, token)


async def _feed_quietly(feed: Feed, stdin: asyncssh.SSHWriter[bytes]) -> None:
    """The script may stop reading early (a full disk ends `cat`): its answers say why, not
    a broken pipe here."""
    try:
        await feed(stdin)
    except (BrokenPipeError, ConnectionError, asyncssh.Error):
        pass


async def _read_capped(stream: asyncssh.SSHReader[bytes]) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(65536):
        size += len(chunk)
        if size > OUTPUT_CAP:
            raise RemoteOutputTooLarge(
                f"a remote command printed more than {OUTPUT_CAP // (1 << 20)} MiB, where gt-remote's scripts print a few lines: "
                "a start-up file of the remote login shell prints that much",
                "make it print only in interactive shells: guard it with [ -t 1 ] in ~/.bashrc or ~/.zshenv, "
                "or 'status is-interactive' in ~/.config/fish/config.fish (and keep ~/.ssh/rc quiet)",
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_kept(stream: asyncssh.SSHReader[bytes]) -> bytes:
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < STDERR_KEPT:
            kept += chunk[: STDERR_KEPT - len(kept)]
    return bytes(kept)


async def _read_tail(stream: asyncssh.SSHReader[bytes], keep: int = STDERR_KEPT) -> str:
    """All of a stream read, only its last `keep` bytes kept: a build's chatter stays bounded."""
    tail = b""
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-keep:]
    return tail.decode(errors="replace")


async def run_tail(conn: asyncssh.SSHClientConnection, command: str) -> tuple[int | None, str, str]:
    """A user's own command, run in their login shell as written: (exit status, the last
    64 KiB of stdout, of stderr). Its output can be long (a cargo build), never held whole."""
    process = await conn.create_process(command, encoding=None, stdin=asyncssh.DEVNULL)
    try:
        stdout, stderr = await asyncio.gather(_read_tail(process.stdout), _read_tail(process.stderr))
        await process.wait_closed()
    finally:
        process.close()
    return process.exit_status, stdout, stderr


def _result(exit_status: int | None, stdout: bytes, stderr: bytes, token: str) -> ScriptResult:
    marker = (MARKER_PREFIX + token).encode()
    errors = stderr.decode(errors="replace")
    at = stdout.find(marker + b"\n")
    if at < 0:
        raise _no_marker(exit_status, stdout.decode(errors="replace"), errors)
    answers = stdout[at + len(marker) + 1 :].decode(errors="replace")
    return ScriptResult(exit_status or 0, answers, errors, parse_fields(answers))


def _no_marker(exit_status: int | None, stdout: str, stderr: str) -> Exception:
    """The script never started: a Windows shell, a broken login shell, or a lost connection."""
    for signature, shell in WINDOWS_SHELLS:
        for text in (stderr, stdout):
            line = next((line for line in text.splitlines() if signature in line), None)
            if line:
                return NonPosixShell(
                    f"the remote login shell is {shell}, not a POSIX shell, so gt-remote cannot run anything there (it answered: {visible(line.strip())[:200]})",
                    "run gt-remote against WSL2 on that Windows machine instead (sshd inside WSL, or OpenSSH's DefaultShell set to WSL's bash); see docs/wsl.md",
                )
    if exit_status is None:
        return ConnectFailed("the connection closed while a remote command ran", "check the connection")
    tail = visible(" | ".join(line.strip() for line in (stderr or stdout).strip().splitlines()[-2:]))[:300]
    return RemoteError(
        f"the remote login shell did not run gt-remote's script (exit {exit_status}: {tail or 'no output'})",
        "check that 'ssh HOST sh -c true' works there and that the account's login shell is a POSIX-style shell (bash, zsh, fish, dash, ash)",
    )



# --- uploads ----------------------------------------------------------------------------

UPLOAD_TIMEOUT = 6 * 3600.0  # a large build over a slow link; a dead link ends sooner, by keepalive
UPLOAD_BLOCK = 256 * 1024

# Bytes arrive on stdin after this script. They are written under a temporary name, their
# size and SHA-256 checked here, and only then may the caller's script place them: a failed,
# short or altered upload never lands where the probe would find it.
UPLOAD_SCRIPT = r"""
kind=$1 digest=$2 name=$3 size=$4 sha=$5 token=$6
dir="$gt_base/gt-remote/$kind/$digest"
part="$dir/.$name.part-$token"
final="$dir/$name"
free_kib() {
    d=$dir; while [ ! -d "$d" ] && [ -n "$d" ]; do d=${d%/*}; done
    df -Pk "${d:-/}" 2>/dev/null | awk 'NR == 2 { print $4 }'
}
umask 077
install_dir_safe >/dev/null || { echo "error=unsafe"; install_dir_safe; exit 0; }
if ! mkdir -p "$dir" 2>/dev/null || ! chmod 700 "$dir"; then
    echo "error=cannot create $dir"; exit 0
fi
install_dir_safe >/dev/null || { echo "error=unsafe"; install_dir_safe; exit 0; }
if ! cat > "$part"; then
    rm -f "$part"; rmdir "$dir" 2>/dev/null
    echo "error=write"; echo "free=$(free_kib)"; exit 0
fi
got=$(wc -c < "$part" | tr -d ' ')
if [ "$got" != "$size" ]; then
    rm -f "$part"; rmdir "$dir" 2>/dev/null
    echo "error=size"; echo "got=$got"; echo "free=$(free_kib)"; exit 0
fi
sum=$(sha256_of "$part")
if [ -n "$sum" ] && [ "$sum" != "$sha" ]; then
    rm -f "$part"; rmdir "$dir" 2>/dev/null
    echo "error=sha256"; echo "got=$sum"; exit 0
fi
[ -n "$sum" ] || echo "unverified=1"
echo "uploaded=$got"
"""



async def upload(
    conn: asyncssh.SSHClientConnection,
    local_path: str | bytes,
    kind: str,
    name: str,
    then: str = "",
    report: Callable[[bytes, bytes, int, int], None] | None = None,
) -> ScriptResult:
    """Send `local_path` (or bytes built in memory) to <install dir>/gt-remote/<kind>/<first 16 hex of its SHA-256>/<name>
    over an exec channel (never SFTP, which a chatty login shell corrupts), verified there,
    then run `then` (with $part and $final set) to check and place it.

    Answers: `uploaded=N` once verified, or `error=write|size|sha256|...` with `free=KiB`
    (the partial file and an empty directory are removed).
    """
    size = len(local_path) if isinstance(local_path, bytes) else os.path.getsize(local_path)
    sha = hashlib.sha256(local_path).hexdigest() if isinstance(local_path, bytes) else file_sha256(local_path)
    token = secrets.token_hex(8)
    script = UPLOAD_SCRIPT + then
    command, text = data_command(script, (kind, sha[:16], name, str(size), sha, token), install_dir_of(conn), token)

    async def feed(stdin: asyncssh.SSHWriter[bytes]) -> None:
        stdin.write(text)
        done = 0
        with io.BytesIO(local_path) if isinstance(local_path, bytes) else open(local_path, "rb") as handle:
            while block := handle.read(UPLOAD_BLOCK):
                stdin.write(block)
                await stdin.drain()
                done += len(block)
                if report:
                    report(b"", b"", done, size)
        if report and size == 0:
            report(b"", b"", 0, 0)
        stdin.write_eof()

    try:
        return await run_command(conn, command, feed, token, UPLOAD_TIMEOUT)
    except asyncio.CancelledError:  # Ctrl-C on `up`: the half-written file goes too, within a bound
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run_script(conn, DISCARD_PART_SCRIPT, kind, sha[:16], name, token), CANCEL_CLEANUP_TIMEOUT)
        raise


CANCEL_CLEANUP_TIMEOUT = 10.0
# An upload cancelled mid-way: its part file (and the directory, if that is all it held).
DISCARD_PART_SCRIPT = r"""
dir="$gt_base/gt-remote/$1/$2"
rm -f "$dir/.$3.part-$4"
rmdir "$dir" 2>/dev/null
:
"""


async def build_intact(conn: asyncssh.SSHClientConnection, path: str) -> bool:
    """Whether an installed build (or relay) at `path`, in a directory named by the first 16
    hex digits of its SHA-256, still has that hash: checked before it is run or reused, so a
    swapped file is uploaded again instead of run. Scripts can call the shell function of the
    same name from the prelude directly, saving the round trip."""
    result = await run_script(conn, 'build_intact "$1" && echo "intact=1"', path)
    return result.fields.get("intact") == "1"
