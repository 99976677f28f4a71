"""The supervisor's control socket: one JSON request line, one JSON reply line.

`status` reads live data from here, never from a file that may be stale.
"""

from __future__ import annotations

import _socket  # socket.py's wrappers and enums cost `status` 3 ms of imports; a blocking Unix socket needs none of them
import fcntl
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

from gt_remote.base.paths import open_private
from gt_remote.base.sanitize import ascii_int

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve(path: Path, handler: Handler) -> asyncio.AbstractServer:
    import asyncio  # only the supervisor serves; the light commands only ask (request below)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline() or b"{}")
            reply = await handler(request)
        except (ValueError, ConnectionError) as exc:
            reply = {"ok": False, "error": str(exc)}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    path.unlink(missing_ok=True)
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(on_client, str(path))
    finally:
        os.umask(old_umask)
    path.chmod(0o600)
    return server


MAX_REPLY_BYTES = 4 * 1024 * 1024  # a status is a few KiB; anything past this is not our supervisor


def request(path: Path, message: dict[str, Any], timeout: float = 3.0) -> dict[str, Any] | None:
    """Ask a supervisor; None when nobody answers (no socket, dead, or stopped) or the answer
    is not one reply object (over MAX_REPLY_BYTES, not JSON, not a JSON object)."""
    client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        client.connect(str(path))
        client.sendall(json.dumps(message).encode() + b"\n")
        data = bytearray()
        while not data.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REPLY_BYTES:
                return None
        return decode_reply(bytes(data))
    except OSError:
        return None
    finally:
        client.close()


def decode_reply(data: bytes) -> dict[str, Any] | None:
    """One JSON object, or None: never an exception, whatever the bytes (deep nesting included)."""
    if not data or len(data) > MAX_REPLY_BYTES:
        return None
    try:
        reply = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return reply if isinstance(reply, dict) else None


def supervisor_alive(pid_path: Path) -> int | None:
    """The pid of the supervisor holding `pid_path`'s lock, or None if nobody holds it.

    The lock dies with its process, so this cannot be fooled by a stale file or pid reuse.
    """
    try:
        fd = open_private(pid_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        pid = ascii_int(text)
        return -1 if pid is None else pid
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return None


def hold_pid_lock(pid_path: Path) -> int | None:
    """Take the per-host supervisor lock for this process's life; None if another holds it."""
    fd = open_private(pid_path, os.O_RDWR | os.O_CREAT)  # never through a link
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def process_start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, /proc/PID/stat field 22): with the pid, it
    names one process for good, as a pid alone does not once it is reused. None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def is_our_supervisor(pid: int, start_time: int | None, host: str) -> bool:
    """Whether `pid` is still the supervisor of `host` that wrote a record: the same process
    (start time) running gt-remote's supervisor for that host (its command line)."""
    if pid <= 0:
        return False
    if not os.path.isdir("/proc/self"):  # no /proc (macOS): liveness is all there is to check
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
    if start_time is None or process_start_time(pid) != start_time:
        return False
    try:
        args = [arg.decode(errors="replace") for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if arg]
    except OSError:
        return False
    return _supervises(args, host)


def _supervises(args: list[str], host: str) -> bool:
    """`python -m gt_remote.runtime.supervisor HOST` or `gt-remote ... up HOST --foreground`; or,
    as a gt-remote before an upgrade started it, `python -m gt_remote.supervisor HOST` or
    `... SETTINGS_JSON`."""
    if "gt_remote.runtime.supervisor" in args or "gt_remote.supervisor" in args:
        if args[-1] == host:
            return True
        try:
            return bool(json.loads(args[-1]).get("name") == host)
        except (ValueError, AttributeError):
            return False
    return "--foreground" in args and "up" in args and host in args
