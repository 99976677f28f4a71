"""`gt-remote sync`: rsync over SSH with the host's own destination and ssh_config.

A path under the local home maps to the same path under the remote home; any other
absolute path maps to itself. Nothing on the receiving side is deleted without --delete.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gt_remote.base.config import HostSettings
from gt_remote.base.errors import GtRemoteError, UsageError


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
    args = ["rsync", "--archive", "--partial", "--mkpath", "--protect-args", "--info=progress2,stats1", "-e", ssh]
    if dry_run:
        args += ["--dry-run", "--itemize-changes"]
    if delete:
        args.append("--delete")
    slash = "/" if transfer.is_dir else ""
    local = f"{transfer.local}{slash}"
    remote = f"{settings.destination.removeprefix('ssh://')}:{transfer.remote}{slash}"
    return args + ([local, remote] if push else [remote, local])


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
        _rsync(command, settings.name)


def _rsync(command: list[str], host: str) -> None:
    result = subprocess.run(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "LC_ALL": "C"})
    if result.returncode == 0:
        return
    stderr = result.stderr.strip()
    if "command not found" in stderr or "rsync: not found" in stderr or result.returncode == 127:
        raise RsyncMissing(f"rsync is not installed on {host}", f"install it there (e.g. 'sudo apt install rsync' on {host})")
    last = stderr.splitlines()[-1] if stderr else f"exit {result.returncode}"
    raise GtRemoteError(f"rsync with {host} failed: {last}", "read the rsync message above; check the path and permissions")
