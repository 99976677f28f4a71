"""`gt-remote sync`: rsync over SSH with the host's own destination and ssh_config.

A path under the local home maps to the same path under the remote home; any other
absolute path maps to itself. Nothing on the receiving side is deleted without --delete.

Everything the far side prints (rsync's and ssh's messages, a login shell's start-up files,
file names) reaches the terminal only through `visible()`, so it cannot retitle the window,
write the clipboard, clear the screen or forge a line. A pull leaves out the git files git
runs (hooks, config) unless the user opts in: see `git_exclusions`. A tree that holds a live
database (Dolt's data directory, SQLite with its -wal) is refused before rsync starts, unless
--force: see `refuse_live_databases`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from gt_remote.base import progress
from gt_remote.base.config import HostSettings
from gt_remote.base.errors import GtRemoteError, UsageError, shell_word
from gt_remote.base.sanitize import visible

PROGRESS_DELAY = 1.0  # a transfer shows progress only once it has run this long


class RsyncMissing(GtRemoteError):
    """rsync is not installed on one side."""


@dataclass(frozen=True)
class Transfer:
    local: Path
    remote: str  # relative to the remote home, or absolute
    is_dir: bool


def plan(paths: list[str], home: Path | None = None) -> list[Transfer]:
    home = home or Path.home()
    transfers = []
    for text in paths:
        local = Path(text).expanduser().absolute()
        try:
            remote = str(local.relative_to(home))
        except ValueError:
            remote = str(local)
        transfers.append(Transfer(local, remote, local.is_dir() or text.endswith("/")))
    return transfers


# What git runs or obeys inside a git directory: hooks, and config that can name programs
# (core.fsmonitor, core.sshCommand, core.pager, a filter's clean/smudge). Submodules keep
# their git directories under modules/ (names may hold slashes); worktrees their own config.
GIT_RUNS = ("hooks/", "config", "config.worktree", "modules/**/hooks/", "modules/**/config", "modules/**/config.worktree", "worktrees/*/config.worktree")
GIT_FILES_LEFT_OUT = "left out .git/hooks and .git/config (git runs them); --with-git-config brings them"
GIT_PATTERNS = frozenset(f"{top}{rule}" for rule in GIT_RUNS for top in (".git/", "/"))  # all git_exclusions can give
HIDING = re.compile(r"^\[sender\] hiding (?:file|directory) .* because of pattern (?P<pattern>\S+)$")


def git_exclusions(transfer: Transfer) -> list[str]:
    """rsync patterns that keep a remote repository's hooks and config off this machine.

    A pull of a checkout would otherwise bring `.git/config` and `.git/hooks/*` from the
    remote into a local repository, and git runs what they name at the next `git status`.
    Unanchored `.git/...` patterns match at any depth (nested checkouts, vendored repos); a
    source that is itself a git directory (`.git`, a bare `x.git`) gets the same rules
    anchored at its top.
    """
    patterns = [f".git/{rule}" for rule in GIT_RUNS]
    if transfer.is_dir and Path(transfer.remote).name.endswith(".git"):
        patterns += [f"/{rule}" for rule in GIT_RUNS]
    return patterns


def rsync_command(settings: HostSettings, transfer: Transfer, push: bool, dry_run: bool, delete: bool, with_git_config: bool = False) -> list[str]:
    # Strict, like the tunnel: an unknown or changed host key stops the transfer, never a prompt.
    ssh = "ssh -o StrictHostKeyChecking=yes" + (f" -F {shlex.quote(settings.ssh_config)}" if settings.ssh_config else "")
    info = "--info=progress2,stats1" if progress_wanted() else "--info=stats1"  # no \r soup in a pipe or file
    args = ["rsync", "--archive", "--partial", "--mkpath", "--protect-args", info, "-e", ssh]
    if dry_run:
        args += ["--dry-run", "--itemize-changes"]
    if delete:
        args.append("--delete")
    if not push and not with_git_config:
        # The remote sender names each file it hides: how `run` knows whether to say so.
        args += [f"--exclude={pattern}" for pattern in git_exclusions(transfer)] + ["--remote-option=--debug=FILTER1"]
    slash = "/" if transfer.is_dir else ""
    local = f"{transfer.local}{slash}"
    remote = f"{settings.destination.removeprefix('ssh://')}:{transfer.remote}{slash}"
    return [*args, "--", *([local, remote] if push else [remote, local])]  # `--`: no operand is ever read as an option


def run(settings: HostSettings, paths: list[str], push: bool, dry_run: bool, delete: bool, out: Callable[[str], None], with_git_config: bool = False, force: bool = False) -> None:
    """Transfer each path in turn; a pull ends with one line if it left git's files out.
    Unless `force`, no path is sent if any holds a live database (a dry run too: it shows
    what the real run would do)."""
    if not paths:
        paths = list(settings.sync)
    if not paths:
        raise UsageError(f"nothing to sync for {settings.name}", f"name paths, or list them under [hosts.{settings.name}] sync = [...] in the config")
    if shutil.which("rsync") is None:
        raise RsyncMissing("rsync is not installed on this machine", "install it (Debian: apt install rsync; macOS: brew install rsync)")
    transfers = plan(paths)
    if not force:
        refuse_live_databases(settings, transfers, push)
    left_out = LeftOut()
    for transfer in transfers:
        if push and not transfer.local.exists():
            raise UsageError(f"{transfer.local} does not exist here", "check the path, or use --pull to fetch it")
        if not push:
            transfer.local.parent.mkdir(parents=True, exist_ok=True)
        command = rsync_command(settings, transfer, push, dry_run, delete, with_git_config)
        direction = "->" if push else "<-"
        out(f"{transfer.local} {direction} {settings.name}:{transfer.remote}{' (dry run)' if dry_run else ''}")
        _rsync(command, settings, left_out.saw)
    if left_out.count:
        out(GIT_FILES_LEFT_OUT)


# --- live databases -----------------------------------------------------------------------

DOLT_DIRS = frozenset({".dolt", ".dolt-data"})  # a Dolt database's own directory; the town's data directory
WAL = "-wal"  # SQLite in WAL mode: X-wal beside X holds what X does not yet
FINDS_SHOWN = 3  # a refusal names this many; the search stops at one more
REMOTE_SEARCH_TIMEOUT = 120.0


class LiveDatabase(GtRemoteError):
    """The tree to sync holds a database's live files: copied while the database writes them,
    they arrive torn (a Dolt data directory, a SQLite file with its -wal beside it)."""


@dataclass(frozen=True)
class Database:
    kind: str  # "dolt": a Dolt directory; "sqlite": the file X of an X-wal pair
    path: str

    def describe(self, shown: Callable[[str], str]) -> str:
        name = PurePosixPath(self.path).name
        if self.kind == "dolt":
            return f"{name}/ at {shown(self.path)}"
        return f"{name} with {name}{WAL} at {shown(self.path)}"


def dolt_above(path: PurePosixPath | Path) -> Database | None:
    """The Dolt directory that `path` is (or lies in), by its name alone."""
    for index, part in enumerate(path.parts):
        if part in DOLT_DIRS:
            return Database("dolt", str(type(path)(*path.parts[: index + 1])))
    return None


def local_databases(top: Path, limit: int = FINDS_SHOWN + 1) -> list[Database]:
    """The live databases rsync would copy from `top`: a Dolt directory it is, lies in or holds,
    SQLite files with their -wal beside them; at most `limit`, the walk ends there.

    Links below `top` are never followed (rsync --archive copies a link, not what it names);
    `top` itself is, as rsync does with `top/`. What cannot be read is left to rsync to report."""
    above = dolt_above(top)
    if above is not None:
        return [above]
    if not top.is_dir():
        return [Database("sqlite", str(db)) for db in _sqlite_pair(top)]
    found: list[Database] = []
    stack = [top]
    while stack and len(found) < limit:
        here = stack.pop()
        try:
            with os.scandir(here) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            continue
        by_name = {entry.name: entry for entry in entries}
        below = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name in DOLT_DIRS:
                    found.append(Database("dolt", entry.path))  # not entered: one database, named once
                else:
                    below.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False) and (wal := by_name.get(entry.name + WAL)) is not None and wal.is_file(follow_symlinks=False):
                found.append(Database("sqlite", entry.path))
        stack.extend(reversed(below))  # depth first, in name order
    return found[:limit]


def _sqlite_pair(file: Path) -> list[Path]:
    """The database file of a single file sent: itself with its -wal beside it, or the -wal's own."""
    if Path(f"{file}{WAL}").is_file():
        return [file]
    main_file = Path(str(file).removesuffix(WAL))
    if file.name.endswith(WAL) and main_file != file and main_file.is_file() and file.is_file():
        return [main_file]
    return []


# One remote command for every path of a pull, its arguments quoted by run_script: what
# `local_databases` finds, by find's -name patterns; links below a path never followed (-H:
# only the path itself, as rsync does with PATH/). A relative path is relative to the remote
# home, as rsync's is, and arrives as ./PATH: never read as an option.
REMOTE_SEARCH = r"""
cd || exit 0
limit=$1; shift
for top in "$@"; do
    [ -e "$top" ] || continue
    if [ -f "$top" ] && [ -f "$top-wal" ]; then printf 'sqlite=%s
' "$top"; fi
    find -H "$top" \( -type d \( -name .dolt -o -name .dolt-data \) -prune -exec printf 'dolt=%s
' {} \; \)         -o \( -type f -name '*-wal' -exec sh -c '[ -f "${1%-wal}" ] && [ ! -L "${1%-wal}" ] && printf "sqlite=%s
" "${1%-wal}"' sh {} \; \) 2>/dev/null
done | head -n "$limit"
"""


def remote_arguments(transfers: list[Transfer], limit: int = FINDS_SHOWN + 1) -> list[str]:
    return [str(limit), *(path if path.startswith("/") else f"./{path}" for path in (transfer.remote for transfer in transfers))]


def parse_remote_databases(stdout: str) -> list[Database]:
    found = []
    for line in stdout.splitlines():
        kind, sep, path = line.partition("=")
        if sep and kind in ("dolt", "sqlite") and path:
            found.append(Database(kind, path.removeprefix("./")))
    return found


def remote_databases(settings: HostSettings, transfers: list[Transfer]) -> list[Database]:
    """What `local_databases` would find in the remote trees of a pull, asked in one command."""
    from gt_remote.remote.scripts import run_script
    from gt_remote.runtime import reach

    arguments = remote_arguments(transfers)
    result = reach.run_on(settings, lambda conn: run_script(conn, REMOTE_SEARCH, *arguments, timeout=REMOTE_SEARCH_TIMEOUT))
    return parse_remote_databases(result.stdout)


def refuse_live_databases(settings: HostSettings, transfers: list[Transfer], push: bool) -> None:
    """Raise LiveDatabase, naming the first finds, if any path to be sent holds a live database:
    the local trees for a push, the remote ones (one command there) for a pull."""
    if push:
        for transfer in transfers:
            if transfer.local.exists():
                found = local_databases(transfer.local)
                if found:
                    raise refusal(settings.name, shown_local(transfer.local), found, shown_local, pulling=False)
        return
    named = [(transfer, db) for transfer in transfers if (db := dolt_above(PurePosixPath(transfer.remote))) is not None]
    if named:
        transfer, db = named[0]
        raise refusal(settings.name, shown_local(transfer.local), [db], shown_remote, pulling=True)
    found = remote_databases(settings, transfers)
    if found:
        first = PurePosixPath(found[0].path)
        transfer = next((t for t in transfers if first == PurePosixPath(t.remote) or PurePosixPath(t.remote) in first.parents), transfers[0])
        raise refusal(settings.name, shown_local(transfer.local), found, shown_remote, pulling=True)


def shown_local(path: Path | str, home: Path | None = None) -> str:
    """A local path as the user writes it: ~/... under the home."""
    home = home or Path.home()
    try:
        rest = Path(path).relative_to(home)
    except ValueError:
        return visible(str(path))
    return visible("~" if rest == Path() else f"~/{rest}")


def shown_remote(path: str) -> str:
    """A remote path as rsync takes it (relative to the remote home), as ~/...: the far side's text made visible."""
    return visible(path if path.startswith("/") else f"~/{path}")


def refusal(host: str, what: str, found: list[Database], shown: Callable[[str], str], pulling: bool) -> LiveDatabase:
    listed = ", ".join(db.describe(shown) for db in found[:FINDS_SHOWN]) + (", and more" if len(found) > FINDS_SHOWN else "")
    source = f" from {host}" if pulling else ""
    there = " there" if pulling else ""
    cause = f"refusing to sync {what}{source}: it holds a live database{there} ({listed}; copying a running database's files corrupts it)"
    if any(db.kind == "dolt" for db in found):
        fix = (
            f"beads live in the town's Dolt server and reach {host} through the back tunnel ('gt-remote up {shell_word(host)} --back dolt'); "
            "sync a path without it, or stop the database and pass --force to copy it anyway"
        )
    else:
        fix = "sync a path without it, or stop the program that writes it and pass --force to copy it anyway"
    return LiveDatabase(cause, fix)


class LeftOut:
    """Counts the remote sender's `hiding ... because of pattern` lines for git's files.

    Those lines are rsync's bookkeeping, not news for the user: they are kept off the
    terminal, and only whether there were any is said, once, at the end.
    """

    def __init__(self) -> None:
        self.count = 0

    def saw(self, line: str) -> bool:
        """True (and counted) if `line` says a git pattern hid a file; the relay drops it."""
        match = HIDING.match(line)
        if match is None or match["pattern"] not in GIT_PATTERNS:
            return False
        self.count += 1
        return True


def progress_wanted() -> bool:
    return progress.is_terminal(sys.stdout) and not progress.quiet()


def _rsync(command: list[str], settings: HostSettings, drop: Callable[[str], bool] = lambda line: False) -> None:
    """Run rsync with its own and ssh's messages shown as they come, and kept for the error.
    A whole stdout line for which `drop` is true is not shown."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "LC_ALL": "C"})
    assert proc.stdout is not None and proc.stderr is not None
    errors: list[str] = []
    tee = threading.Thread(target=_tee_stderr, args=(proc.stderr, errors), daemon=True)
    tee.start()
    _relay_stdout(proc.stdout, sys.stdout, drop)
    code = proc.wait()
    tee.join()
    if code == 0:
        return
    host = settings.name
    text = "\n".join(errors)
    if "protocol version mismatch" in text or "is your shell clean" in text:
        raise noisy_shell_error(host, *printing_files(settings))
    if "command not found" in text or "rsync: not found" in text or code == 127:
        raise RsyncMissing(f"rsync is not installed on {host}", f"install it there (e.g. 'sudo apt install rsync' on {host})")
    cause = visible(_main_error(errors) or f"exit {code}")  # the far side's words, shown as text
    raise GtRemoteError(f"rsync with {host} failed: {cause}", "its messages are above; check the path, permissions and 'ssh " + host + "'")


class NoisyShell(GtRemoteError):
    """A start-up file on the remote prints text for every command, which breaks rsync's protocol."""


# The files that can print for a command sshd runs (rsync's `rsync --server`), each with what
# quiets it, and the login shells that read it for such a command (None: sshd runs it for every
# shell; () for none: ~/.profile is read by login shells only, a suspect when nothing else prints).
GUARD_SH = "wrap what it prints in 'if [ -t 1 ]; then ... fi'"
GUARD_FISH = "wrap what it prints in 'if status is-interactive ... end'"
STARTUP_FILES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "~/.ssh/rc": (GUARD_SH, None),
    "/etc/bash.bashrc": (GUARD_SH + " (as root)", ("bash",)),
    "~/.bashrc": (GUARD_SH, ("bash",)),
    "~/.zshenv": (GUARD_SH + " (or move it to ~/.zshrc)", ("zsh",)),
    "~/.config/fish/config.fish": (GUARD_FISH, ("fish",)),
    "~/.profile": (GUARD_SH, ()),
}

# Each candidate run alone, the way a session runs it for a command: not interactive, no
# terminal, nothing on stdin, a clean environment (what sshd sets), at most 5 s; a file that
# writes any byte to stdout, the stream rsync's protocol needs clean, is named. Run through
# run_script, so what the session's own start-up files print is never taken for an answer.
PRINTING_FILES = r"""
cd || exit 0
echo "shell=$SHELL"
check() {  # NAME FILE PROGRAM ARG...
    name=$1 file=$2
    shift 2
    [ -f "$file" ] && command -v "$1" >/dev/null 2>&1 || return 0
    if command -v timeout >/dev/null 2>&1; then set -- timeout 5 "$@"; fi
    count=$(env -i HOME="$HOME" USER="${USER-}" LOGNAME="${LOGNAME-}" PATH="$PATH" SHELL="${SHELL-}"         SSH_CLIENT="${SSH_CLIENT-}" SSH_CONNECTION="${SSH_CONNECTION-}" "$@" </dev/null 2>/dev/null | head -c 1 | wc -c)
    [ "$count" -gt 0 ] 2>/dev/null && echo "prints=$name"
    return 0
}
check '~/.ssh/rc' .ssh/rc sh .ssh/rc
check /etc/bash.bashrc /etc/bash.bashrc bash --norc --noprofile -c '. "$1"' bash /etc/bash.bashrc
check '~/.bashrc' .bashrc bash --norc --noprofile -c '. "$1"' bash ./.bashrc
check '~/.zshenv' .zshenv zsh -f -c '. "$1"' zsh ./.zshenv
check '~/.config/fish/config.fish' .config/fish/config.fish fish --no-config -c 'source $argv[1]' ./.config/fish/config.fish
check '~/.profile' .profile sh -c '. "$1"' sh ./.profile
"""


def culprits(shell: str | None, printing: list[str]) -> list[str]:
    """Of the files that print, those a command's session runs for this login shell; if none
    of them prints (an unknown shell), every file that prints is a suspect."""
    name = (shell or "").rsplit("/", 1)[-1]
    known = [file for file in printing if file in STARTUP_FILES]
    runs = [file for file in known if STARTUP_FILES[file][1] is None or name in (STARTUP_FILES[file][1] or ())]
    return runs or known


def noisy_shell_error(host: str, shell: str | None, printing: list[str]) -> NoisyShell:
    """Name the start-up files that print, found by running each on the remote, and the guard
    that quiets each; when none could be found to print, every file that could."""
    files = culprits(shell, printing)
    if files:
        named = " and ".join(files)
        verb = "prints" if len(files) == 1 else "print"
        return NoisyShell(
            f"rsync with {host} failed: {named} on {host} {verb} text for non-interactive commands, which breaks rsync (protocol version mismatch)",
            "; ".join(f"in {file} on {host}, {STARTUP_FILES[file][0]}" for file in files),
        )
    shown = visible((shell or "").rsplit("/", 1)[-1])  # the remote's $SHELL, shown as text
    return NoisyShell(
        f"rsync with {host} failed: the login shell there{f' ({shown})' if shown else ''} or ~/.ssh/rc prints text for non-interactive commands, which breaks rsync (protocol version mismatch)",
        f"on {host}, make ~/.ssh/rc and the shell's start-up files print only in interactive sessions: guard the output with 'if [ -t 1 ]; then ... fi' "
        "(bash ~/.bashrc, zsh ~/.zshenv) or 'if status is-interactive ... end' (fish config.fish)",
    )


def printing_files(settings: HostSettings) -> tuple[str | None, list[str]]:
    """($SHELL on the remote, the start-up files there that print for a command), asked through
    gt-remote's noise-proof scripts; (None, []) if that fails."""
    from gt_remote.remote.scripts import run_script
    from gt_remote.runtime import reach

    try:
        result = reach.run_on(settings, lambda conn: run_script(conn, PRINTING_FILES, timeout=60))
    except GtRemoteError:
        return None, []
    printing = [line.removeprefix("prints=") for line in result.stdout.splitlines() if line.startswith("prints=")]
    return result.fields.get("shell") or None, [file for file in printing if file in STARTUP_FILES]


def _tee_stderr(stream: IO[bytes], kept: list[str]) -> None:
    """Show ssh's and rsync's stderr lines as text, and keep them (raw) to explain a failure.

    A remote start-up file or rsync wrapper writes here unfiltered: visible() turns its
    escape sequences into text. The line's own `\r\n` (ssh ends lines so) is not shown."""
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\r\n")
        kept.append(line)
        sys.stderr.write(visible(line) + "\n")
        sys.stderr.flush()


RSYNC_EPILOGUE = re.compile(r"^rsync( error)?: .*\(code \d+\) at |^rsync: connection unexpectedly closed")


def _main_error(lines: list[str]) -> str:
    """The first line that says what went wrong, not rsync's closing `(code N) at main.c`."""
    meaningful = [line.strip() for line in lines if line.strip()]
    for line in meaningful:
        if not RSYNC_EPILOGUE.search(line):
            return line.removeprefix("rsync: ")
    return meaningful[-1] if meaningful else ""


def _relay_stdout(stream: IO[bytes], out: IO[str], drop: Callable[[str], bool] = lambda line: False) -> None:
    """Pass rsync's output on; its `\r` progress only once the transfer has taken a while.

    Each piece between `\r`s and `\n`s goes through visible(): a file name or message from
    the far side moves no cursor and sends no sequence. A whole line `drop` wants is not shown."""
    started = time.monotonic()
    shown = False  # a progress line is on screen and needs its newline
    previous_end = b"\n"
    pending = b""
    while chunk := os.read(stream.fileno(), 65536):
        pending += chunk
        parts = re.split(rb"(\r|\n)", pending)
        pending = parts.pop()  # an unfinished piece waits for its end
        for text, end in zip(parts[0::2], parts[1::2], strict=True):
            piece = visible(text.decode(errors="replace"))
            if previous_end == b"\n" and end == b"\n" and drop(piece):
                continue  # a whole line, consumed (previous_end stays a \n)
            if previous_end == b"\r":  # rsync redraws its progress line after a \r
                if piece.strip() and time.monotonic() - started >= PROGRESS_DELAY:
                    out.write("\r" + piece)
                    shown = True
                if end == b"\n" and shown:
                    out.write("\n")
                    shown = False
            elif piece or end == b"\n":
                if shown:
                    out.write("\n")
                    shown = False
                out.write(piece + ("\n" if end == b"\n" else ""))
            previous_end = end
            out.flush()
    if pending:
        out.write(visible(pending.decode(errors="replace")) + "\n")
    elif shown:
        out.write("\n")
    out.flush()
