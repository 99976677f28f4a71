"""Putting a server binary on the remote: upload a user's build, or run their install command.

Uploads land in a directory named by content hash, are written under a temporary name,
checked to run there, made executable, and only then renamed into place: a failed or
interrupted upload never leaves a half-written binary where the probe would find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import struct

import asyncssh

from gt_remote import progress
from gt_remote.base.errors import BinaryIncompatible, InstallFailed
from gt_remote.bootstrap.remote import REMOTE_INSTALL_ROOT, run_script

CHECK_AND_PLACE = r"""
part=$1 final=$2
chmod 755 "$HOME/$part" || { rm -f "$HOME/$part"; rmdir "$HOME/${part%/*}" 2>/dev/null; echo "error=chmod failed"; exit 0; }
out=$("$HOME/$part" --version 2>&1); rc=$?
if [ "$rc" -ne 0 ]; then
    rm -f "$HOME/$part"
    rmdir "$HOME/${part%/*}" 2>/dev/null  # only if empty: no empty install directory left behind
    echo "rc=$rc"; echo "arch=$(uname -m)"; echo "os=$(uname -s)"
    echo "output=$(printf '%s' "$out" | head -n 1)"
    exit 0
fi
mv -f "$HOME/$part" "$HOME/$final" && echo "version=$(printf '%s' "$out" | head -n 1)"
"""


CANCEL_CLEANUP_TIMEOUT = 10.0

ELF_MACHINES = {3: "i686", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390x", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64"}
UNAME_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "i386": "i686", "i586": "i686", "armv7l": "arm", "armv6l": "arm", "ppc64le": "ppc64"}


def binary_platform(path: str) -> tuple[str, str] | None:
    """(os, arch) of an ELF or Mach-O binary; None for scripts and unknown formats."""
    with open(path, "rb") as handle:
        head = handle.read(20)
    if head[:4] == b"\x7fELF" and len(head) >= 20:
        endian = "<" if head[5] == 1 else ">"
        (machine,) = struct.unpack_from(endian + "H", head, 18)
        return "Linux", ELF_MACHINES.get(machine, f"machine {machine}")
    if head[:4] in (b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe"):
        return "Darwin", "macOS"
    return None


def check_platform(local_path: str, host: str, remote_os: str, remote_arch: str) -> None:
    """Refuse before uploading a binary built for another machine, naming both."""
    platform = binary_platform(local_path)
    if platform is None:
        return
    binary_os, binary_arch = platform
    remote = UNAME_ALIASES.get(remote_arch, remote_arch)
    if binary_os != remote_os or (binary_os == "Linux" and binary_arch != remote):
        raise BinaryIncompatible(
            f"{local_path} is a {binary_os} {binary_arch} binary, but {host} is {remote_os} {remote_arch} (uname -m)",
            f"build ccmux-server for {remote_os} {remote_arch} and pass that with --server-binary",
        )


async def upload_server(conn: asyncssh.SSHClientConnection, local_path: str, server: str, digest: str, host: str) -> tuple[str, str]:
    """Upload, verify and place the binary; return its absolute remote path and `--version` line."""
    directory = f"{REMOTE_INSTALL_ROOT}/{digest}"
    part = f"{directory}/.{server}.part-{secrets.token_hex(4)}"
    final = f"{directory}/{server}"
    async with conn.start_sftp_client() as sftp:
        await sftp.makedirs(directory, attrs=asyncssh.SFTPAttrs(permissions=0o700), exist_ok=True)
        try:
            await sftp.put(local_path, part, progress_handler=progress.upload_reporter())
        except asyncio.CancelledError:  # Ctrl-C on `up`: the half-written file goes too
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_remove_quietly(sftp, part), CANCEL_CLEANUP_TIMEOUT)
                await asyncio.wait_for(_rmdir_quietly(sftp, directory), CANCEL_CLEANUP_TIMEOUT)
            raise
        except (asyncssh.SFTPError, OSError) as exc:
            await _remove_quietly(sftp, part)
            await _rmdir_quietly(sftp, directory)
            free = await _free_kib(conn, directory)
            raise InstallFailed(
                f"uploading {local_path} to {host} failed ({exc}; {free} KiB free there, {_size_kib(local_path)} KiB needed); the partial file was removed",
                "free space on the remote (check 'df -h ~' there) and run up again",
            ) from None
        home = await sftp.realpath(".")
    fields = (await run_script(conn, CHECK_AND_PLACE, part, final)).fields
    if "version" not in fields:
        raise _cannot_run(local_path, host, fields)
    return f"{home}/{final}", fields["version"]


async def _free_kib(conn: asyncssh.SSHClientConnection, directory: str) -> str:
    fields = (await run_script(conn, 'echo "free=$(df -Pk "$HOME/$1" | awk \'NR == 2 { print $4 }\')"', directory)).fields
    return fields.get("free") or "unknown"


def _size_kib(path: str) -> int:
    return (os.path.getsize(path) + 1023) // 1024


async def _remove_quietly(sftp: asyncssh.SFTPClient, path: str) -> None:
    try:
        await sftp.remove(path)
    except (asyncssh.SFTPError, OSError):
        pass


async def _rmdir_quietly(sftp: asyncssh.SFTPClient, path: str) -> None:
    """Remove a directory we made, if it is empty; a build uploaded before stays."""
    try:
        await sftp.rmdir(path)
    except (asyncssh.SFTPError, OSError):
        pass


def _cannot_run(local_path: str, host: str, fields: dict[str, str]) -> InstallFailed:
    arch, os_name = fields.get("arch", "unknown"), fields.get("os", "unknown")
    rc, output = fields.get("rc", "?"), fields.get("output", fields.get("error", ""))
    if rc in ("126", "127") or "format" in output.lower():
        return BinaryIncompatible(
            f"{local_path} cannot run on {host}, which is {os_name} {arch} ({output.strip() or f'exit {rc}'})",
            f"build ccmux-server for {arch} {os_name} and pass that with --server-binary",
        )
    return InstallFailed(
        f"{local_path} failed its check on {host}: '--version' exited {rc}: {output.strip()}",
        "pass a working ccmux-server build with --server-binary",
    )


async def run_install_command(conn: asyncssh.SSHClientConnection, command: str, host: str) -> None:
    """The user's own install command, run as they wrote it in their login shell."""
    try:
        result = await conn.run(command, check=False, timeout=1800)
    except (asyncssh.Error, OSError) as exc:
        raise InstallFailed(f"the install command failed on {host}: {exc}", "run it by hand over ssh to see why") from None
    if result.exit_status != 0:
        tail = " | ".join(str(result.stderr or result.stdout or "").strip().splitlines()[-3:])
        raise InstallFailed(
            f"the install command exited {result.exit_status} on {host}: {tail or 'no output'}",
            "run it by hand over ssh to see why, then try again",
        )
