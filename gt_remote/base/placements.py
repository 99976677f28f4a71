"""Where each named polecat was placed, and the picks still reserved on each host: two private
files under `$XDG_STATE_HOME/gt-remote/placements/`, read and written under one lock.

`pick --for NAME` records NAME's host here so that later picks give the same one (its
worktree and panes live there). Every pick adds a reservation (gt_remote/base/pool.py), so
picks started at once see each other. Both files are replaced atomically (write_private), so
a reader never sees half of one, and every read-decide-write is done holding an exclusive
flock on `lock`: ten picks started together are served one after the other, each seeing the
ones before. The lock is held for milliseconds (no connection is made under it).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from gt_remote.base.errors import GtRemoteError, UsageError
from gt_remote.base.paths import open_private, private_dir, state_dir
from gt_remote.base.pool import Reservation

LOCK_WAIT_S = 10.0  # a holder keeps it for milliseconds; this long means a stuck process
MAX_NAME = 200


def placements_dir() -> Path:
    return private_dir(state_dir() / "placements")


def check_name(name: str) -> str:
    """A polecat's name as `--for` takes it: any text but control characters, not too long."""
    if not name or len(name) > MAX_NAME or any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise UsageError(f"--for takes a name of 1 to {MAX_NAME} printable characters, not {name!r}", "pass the polecat's name, e.g. --for polecat-7")
    return name


class Book:
    """The placements and reservations, held under the lock for one read-decide-write.

    `placements` maps a name to {"host", "at" (time placed), "down_seen" (when a pick first
    found its host not up, or None)}; `reservations` is every reservation still on file."""

    def __init__(self) -> None:
        self.directory = placements_dir()
        self.placements: dict[str, dict[str, Any]] = {}
        self.reservations: list[Reservation] = []
        self._fd: int | None = None
        self._loaded: tuple[str, str] = ("", "")

    def __enter__(self) -> Book:
        fd = open_private(self.directory / "lock", os.O_RDWR | os.O_CREAT)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise GtRemoteError(
                        f"another gt-remote pick has held {self.directory / 'lock'} for over {LOCK_WAIT_S:g} s", "see whether a pick is stuck (ps), end it, and try again"
                    ) from None
                time.sleep(0.005)
        self._fd = fd
        placements = read_json(self.directory / "placements.json")
        self.placements = {name: entry for name, entry in placements.items() if isinstance(entry, dict) and isinstance(entry.get("host"), str)}
        found = read_json(self.directory / "reservations.json").get("reservations")
        self.reservations = [r for r in map(Reservation.from_dict, found if isinstance(found, list) else []) if r is not None]
        self._loaded = (self._placements_text(), self._reservations_text())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the lock goes with it
            self._fd = None

    def save(self) -> None:
        """Write what changed, each file whole or not at all; the lock must be held."""
        assert self._fd is not None, "the book is saved under its lock"
        placements, reservations = self._placements_text(), self._reservations_text()
        if placements != self._loaded[0]:
            write_whole(self.directory / "placements.json", placements)
        if reservations != self._loaded[1]:
            write_whole(self.directory / "reservations.json", reservations)
        self._loaded = (placements, reservations)

    def _placements_text(self) -> str:
        return json.dumps(self.placements, indent=2, sort_keys=True)

    def _reservations_text(self) -> str:
        return json.dumps({"reservations": [r.to_dict() for r in self.reservations]}, indent=2)


def write_whole(path: Path, text: str) -> None:
    """Replace `path` whole, mode 0600, as paths.write_private does, without its tempfile import
    (4 ms of `pick`'s start-up): a temporary of this process's own, created exclusively (never
    through a link), then renamed over the file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)  # replaces a link itself, never its target
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file of ours; a missing, unreadable or garbled one is empty."""
    try:
        fd = open_private(path, os.O_RDONLY)
    except (OSError, GtRemoteError):
        return {}
    try:
        with os.fdopen(fd, "rb") as handle:
            data = json.loads(handle.read(1 << 22))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}
