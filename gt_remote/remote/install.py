"""Putting a server binary on the remote: upload a user's build, or run their install command.

Uploads land in a directory named by content hash, travel over an exec channel (a chatty
login shell corrupts SFTP), are written under a temporary name, checked there for size and
SHA-256 and for running at all, made executable, and only then renamed into place: a failed,
altered or interrupted upload never leaves a binary where the probe would find it.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import struct

import asyncssh

from gt_remote.base import progress
from gt_remote.base.errors import BinaryIncompatible, InstallFailed, NoExecMount, install_dir_unsafe
from gt_remote.remote import scripts as remote

# Runs right after UPLOAD_SCRIPT verified the bytes ($part, $final, $dir and $name, the server program, set there).
CHECK_AND_PLACE = r"""
chmod 755 "$part" || { rm -f "$part"; rmdir "$dir" 2>/dev/null; echo "error=chmod failed"; exit 0; }
ask_version "$part"; rc=$?
if [ "$rc" -ne 0 ]; then
    echo "noexec=$(noexec_mount_of "$part")"
    rm -f "$part"
    rmdir "$dir" 2>/dev/null  # only if empty: no empty install directory left behind
    echo "rc=$rc"; echo "arch=$(uname -m)"; echo "os=$(uname -s)"
    echo "output=$version_line"
    exit 0
fi
# A server says its own name first (`ccmux-server 0.1.1`): any other answer is another program's.
case "$version_line" in
    "$name "*) ;;
    *) rm -f "$part"; rmdir "$dir" 2>/dev/null; echo "not_server=1"; echo "output=$version_line"; exit 0 ;;
esac
mv -f "$part" "$final" || exit 0  # no path= line: the caller reports the failed placement
keep_version "$final" "$version_line"  # the next probe runs nothing to learn it (see version_of)
echo "path=$final"; echo "version=$version_line"
"""


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
    """Upload, verify and place the binary; return its absolute remote path and `--version` line.

    `digest` names the install directory; it is the first 16 hex digits of the file's SHA-256,
    which the upload computes itself.
    """
    result = await remote.upload(conn, local_path, "servers", server, then=CHECK_AND_PLACE, report=progress.upload_reporter())
    fields = result.fields
    error = fields.get("error")
    if error in ("write", "size"):
        raise InstallFailed(
            f"uploading {local_path} to {host} failed ({_free_text(fields)}, {_size_kib(local_path)} KiB needed); the partial file was removed",
            "free space on the remote (check 'df -h ~' there) and run up again",
        )
    if error == "sha256":
        raise InstallFailed(
            f"{local_path} arrived altered on {host} (SHA-256 {remote.visible(fields.get('got', '?'))[:64]} there); the upload was removed",
            "run up again; if it repeats, something on the way or on the remote changes files",
        )
    if error == "unsafe":
        raise install_dir_unsafe(host, fields.get("unsafe_dir"), fields.get("unsafe_why"))
    if error and error.startswith("cannot create"):
        raise InstallFailed(
            f"gt-remote {remote.visible(error)} on {host}",
            "make that directory writable, or pick another one with --install-dir DIR (or install_dir in the config)",
        )
    if fields.get("not_server") == "1":
        answer = remote.visible(fields.get("output", "")).strip()[:200]
        raise InstallFailed(
            f"{local_path} is not a {server} build: its '--version' answered {answer!r} on {host}, where a {server} answers '{server} VERSION'; the upload was removed",
            f"pass a {server} build with --server-binary",
        )
    if "version" not in fields or "path" not in fields:
        raise _cannot_run(local_path, host, fields)
    return fields["path"], fields["version"]


def _free_text(fields: dict[str, str]) -> str:
    free = remote.ascii_int(fields.get("free"), 15)
    return f"{free} KiB free there" if free is not None else "free space there unknown"


def _size_kib(path: str) -> int:
    return (os.path.getsize(path) + 1023) // 1024


def _cannot_run(local_path: str, host: str, fields: dict[str, str]) -> InstallFailed:
    arch, os_name = remote.visible(fields.get("arch", "unknown")), remote.visible(fields.get("os", "unknown"))
    rc, output = fields.get("rc", "?"), remote.visible(fields.get("output", fields.get("error", "")))
    noexec = fields.get("noexec")
    if noexec and rc == "126":
        return NoExecMount(
            f"{host} cannot run programs under {remote.visible(noexec)}: that mount is noexec, so the uploaded {local_path} was refused ({output.strip() or 'permission denied'})",
            f"install into a directory of your own on a mount without noexec: create it on {host} with 'mkdir -m 700 /var/tmp/gt-$USER' (if /var/tmp allows programs), "
            f"then 'gt-remote up {shlex.quote(host)} --install-dir /var/tmp/gt-USER' with your user there, or set install_dir in the config",
        )
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
        exit_status, stdout, stderr = await asyncio.wait_for(remote.run_tail(conn, command), 1800)
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        raise InstallFailed(f"the install command failed on {host}: {exc or 'it took longer than 30 minutes'}", "run it by hand over ssh to see why") from None
    if exit_status != 0:
        tail = remote.visible(" | ".join((stderr or stdout).strip().splitlines()[-3:]))
        raise InstallFailed(
            f"the install command exited {exit_status} on {host}: {tail or 'no output'}",
            "run it by hand over ssh to see why, then try again",
        )
