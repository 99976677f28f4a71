"""`gt-remote sync`: rsync over SSH with the host's own destination and ssh_config.

A path under the local home maps to the same path under the remote home; any other
absolute path maps to itself. Nothing on the receiving side is deleted without --delete.
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
from pathlib import Path
from typing import IO

from gt_remote import progress
from gt_remote.base.config import HostSettings
from gt_remote.base.errors import GtRemoteError, UsageError

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


def rsync_command(settings: HostSettings, transfer: Transfer, push: bool, dry_run: bool, delete: bool) -> list[str]:
    # Strict, like the tunnel: an unknown or changed host key stops the transfer, never a prompt.
    ssh = "ssh -o StrictHostKeyChecking=yes" + (f" -F {shlex.quote(settings.ssh_config)}" if settings.ssh_config else "")
    info = "--info=progress2,stats1" if progress_wanted() else "--info=stats1"  # no \r soup in a pipe or file
    args = ["rsync", "--archive", "--partial", "--mkpath", "--protect-args", info, "-e", ssh]
    if dry_run:
        args += ["--dry-run", "--itemize-changes"]
    if delete:
        args.append("--delete")
    slash = "/" if transfer.is_dir else ""
    local = f"{transfer.local}{slash}"
    remote = f"{settings.destination.removeprefix('ssh://')}:{transfer.remote}{slash}"
    return [*args, "--", *([local, remote] if push else [remote, local])]  # `--`: no operand is ever read as an option


def run(settings: HostSettings, paths: list[str], push: bool, dry_run: bool, delete: bool, out: Callable[[str], None]) -> None:
    if not paths:
        paths = list(settings.sync)
    if not paths:
        raise UsageError(f"nothing to sync for {settings.name}", f"name paths, or list them under [hosts.{settings.name}] sync = [...] in the config")
    if shutil.which("rsync") is None:
        raise RsyncMissing("rsync is not installed on this machine", "install it (Debian: apt install rsync; macOS: brew install rsync)")
    for transfer in plan(paths):
        if push and not transfer.local.exists():
            raise UsageError(f"{transfer.local} does not exist here", "check the path, or use --pull to fetch it")
        if not push:
            transfer.local.parent.mkdir(parents=True, exist_ok=True)
        command = rsync_command(settings, transfer, push, dry_run, delete)
        direction = "->" if push else "<-"
        out(f"{transfer.local} {direction} {settings.name}:{transfer.remote}{' (dry run)' if dry_run else ''}")
        _rsync(command, settings)


def progress_wanted() -> bool:
    return progress.is_terminal(sys.stdout) and not progress.quiet()


def _rsync(command: list[str], settings: HostSettings) -> None:
    """Run rsync with its own and ssh's messages shown as they come, and kept for the error."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "LC_ALL": "C"})
    assert proc.stdout is not None and proc.stderr is not None
    errors: list[str] = []
    tee = threading.Thread(target=_tee_stderr, args=(proc.stderr, errors), daemon=True)
    tee.start()
    _relay_stdout(proc.stdout, sys.stdout)
    code = proc.wait()
    tee.join()
    if code == 0:
        return
    host = settings.name
    text = "\n".join(errors)
    if "protocol version mismatch" in text or "is your shell clean" in text:
        raise noisy_shell_error(host, remote_login_shell(settings))
    if "command not found" in text or "rsync: not found" in text or code == 127:
        raise RsyncMissing(f"rsync is not installed on {host}", f"install it there (e.g. 'sudo apt install rsync' on {host})")
    cause = _main_error(errors) or f"exit {code}"
    raise GtRemoteError(f"rsync with {host} failed: {cause}", "its messages are above; check the path, permissions and 'ssh " + host + "'")


class NoisyShell(GtRemoteError):
    """A start-up file of the remote login shell prints text, which breaks rsync's protocol."""


STARTUP_FILES = {
    "bash": ("~/.bashrc", "wrap what it prints in 'if [ -t 1 ]; then ... fi'"),
    "zsh": ("~/.zshenv", "wrap what it prints in 'if [ -t 1 ]; then ... fi' (or move it to ~/.zshrc)"),
    "fish": ("~/.config/fish/config.fish", "wrap what it prints in 'if status is-interactive ... end'"),
}


def noisy_shell_error(host: str, shell: str | None) -> NoisyShell:
    """Name the start-up file of the login shell that printed, and the guard that quiets it."""
    name = (shell or "").rsplit("/", 1)[-1]
    if name in STARTUP_FILES:
        file, fix = STARTUP_FILES[name]
        return NoisyShell(
            f"rsync with {host} failed: the login shell there ({name}) prints text from {file} for non-interactive commands, which breaks rsync (protocol version mismatch)",
            f"in {file} on {host}, {fix}",
        )
    shown = f" ({name})" if name else ""
    return NoisyShell(
        f"rsync with {host} failed: the login shell there{shown} or ~/.ssh/rc prints text for non-interactive commands, which breaks rsync (protocol version mismatch)",
        f"on {host}, make ~/.ssh/rc and the shell's start-up files print only in interactive sessions: guard the output with 'if [ -t 1 ]; then ... fi' "
        "(bash ~/.bashrc, zsh ~/.zshenv) or 'if status is-interactive ... end' (fish config.fish)",
    )


def remote_login_shell(settings: HostSettings) -> str | None:
    """$SHELL on the remote, asked through gt-remote's noise-proof scripts; None if that fails."""
    from gt_remote import reach
    from gt_remote.bootstrap.remote import run_script

    try:
        result = reach.run_on(settings, lambda conn: run_script(conn, 'echo "shell=$SHELL"', timeout=20))
    except GtRemoteError:
        return None
    return result.fields.get("shell") or None


def _tee_stderr(stream: IO[bytes], kept: list[str]) -> None:
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        kept.append(line)
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


RSYNC_EPILOGUE = re.compile(r"^rsync( error)?: .*\(code \d+\) at |^rsync: connection unexpectedly closed")


def _main_error(lines: list[str]) -> str:
    """The first line that says what went wrong, not rsync's closing `(code N) at main.c`."""
    meaningful = [line.strip() for line in lines if line.strip()]
    for line in meaningful:
        if not RSYNC_EPILOGUE.search(line):
            return line.removeprefix("rsync: ")
    return meaningful[-1] if meaningful else ""


def _relay_stdout(stream: IO[bytes], out: IO[str]) -> None:
    """Pass rsync's output on; its `\r` progress only once the transfer has taken a while."""
    started = time.monotonic()
    shown = False  # a progress line is on screen and needs its newline
    previous_end = b"\n"
    pending = b""
    while chunk := os.read(stream.fileno(), 65536):
        pending += chunk
        parts = re.split(rb"(\r|\n)", pending)
        pending = parts.pop()  # an unfinished piece waits for its end
        for text, end in zip(parts[0::2], parts[1::2], strict=True):
            piece = text.decode(errors="replace")
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
        out.write(pending.decode(errors="replace") + "\n")
    elif shown:
        out.write("\n")
    out.flush()
