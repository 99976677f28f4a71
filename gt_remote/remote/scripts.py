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
import logging
import os
import secrets
import shlex
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import asyncssh

from gt_remote.base.errors import ConnectFailed, NonPosixShell, RemoteError, RemoteOutputTooLarge
from gt_remote.base.sanitize import ascii_int, visible  # noqa: F401 (callers use remote.ascii_int, remote.visible)
from gt_remote.remote.digest import file_sha256
from gt_remote.remote.prelude import PRELUDE

log = logging.getLogger(__name__)

DEFAULT_INSTALL_DIR = "~/.local/share"  # gt-remote's files go to <install dir>/gt-remote/{servers,relay}
REMOTE_INSTALL_ROOT = ".local/share/gt-remote/servers"  # the default, relative to the remote home
REMOTE_RELAY_ROOT = ".local/share/gt-remote/relay"
REMOTE_STATE_DIR = ".local/state/gt-remote"

OUTPUT_CAP = 1 << 20  # stdout bytes read from one remote command; our scripts print a few lines
STDERR_KEPT = 64 << 10  # stderr is drained to the end, but only this much is kept (for messages)
MARKER_PREFIX = "gt-remote-start-"


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


T = TypeVar("T")
FINISH_GRACE = 15.0  # how long a cancelled caller still waits for a script that starts programs (a server start waits up to 15 s)


async def to_the_end(work: Awaitable[T], grace: float = FINISH_GRACE) -> T:
    """`work` (a remote script that starts a program: the bring-up script, which may start the
    relay; a server's or the relay's start script), run to its end even when the caller is
    cancelled meanwhile (Ctrl-C on `up`). Cut off, the script would go on on the remote, where
    closing its channel does not stop it, and start what the undo never hears of, after the
    undo has looked. So a cancellation waits up to `grace` s more for it; whatever `work` does
    with its answer (note what it started) is done by then, and the cancellation goes on."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task}, timeout=grace)
        if not task.done():
            task.cancel()  # past the grace: the caller's undo says what may be left
        elif not task.cancelled():
            task.exception()  # retrieved: its failure is the undo's to report, not the loop's
        raise


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
    process = await _start(conn, command)
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


SESSION_TRIES = 3


async def _start(conn: asyncssh.SSHClientConnection, command: str) -> asyncssh.SSHClientProcess[bytes]:
    """The command's session. A server that refuses the session request itself (Dropbear does,
    now and then, with many sessions starting at once) started nothing: asked again, briefly."""
    for attempt in range(1, SESSION_TRIES + 1):
        try:
            return await conn.create_process(command, encoding=None)
        except asyncssh.ChannelOpenError as exc:
            if exc.code != asyncssh.OPEN_REQUEST_SESSION_FAILED or attempt == SESSION_TRIES:
                raise
            log.info("the remote refused a session request (%s); asking again", exc.reason)
            await asyncio.sleep(0.1 * attempt)
    raise AssertionError("unreachable")


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
# Cut short (its channel closed: Ctrl-C on `up`), the script leaves no partial file; and a closed
# stdout does not kill it between the bytes' arrival and their placing (SIGPIPE on an echo).
trap 'rm -f "$part"' EXIT
trap 'exit 1' HUP INT TERM
trap '' PIPE
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
