"""The host's lock: `up` and `down` for one host are serialised by it, so two racing `up`s never
leave two supervisors: the second waits, then finds the first one's supervisor and reuses it."""

from __future__ import annotations

import fcntl
import os
import time

from gt_remote.base.errors import GtRemoteError
from gt_remote.base.paths import HostFiles, open_private
from gt_remote.host.client import supervisor_pid

LOCK_TIMEOUT = 600.0


class HostLock:
    """An exclusive flock on the host's lock file, waited for up to a deadline."""

    def __init__(self, files: HostFiles, timeout: float = LOCK_TIMEOUT) -> None:
        self.files = files
        self.timeout = timeout
        self.fd: int | None = None
        self.held = False

    def __enter__(self) -> HostLock:
        deadline = time.monotonic() + self.timeout
        while True:
            self.fd = open_private(self.files.lock, os.O_RDWR | os.O_CREAT)
            try:
                while True:
                    try:
                        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        self.held = True
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise GtRemoteError(f"another gt-remote command for {self.files.name} is still running", "wait for it to finish, then try again") from None
                        time.sleep(0.05)
            except BaseException:
                self.release()
                raise
            if self._still_the_lock_file():
                return self
            self.release()  # the holder before us removed the file: lock the new one

    def _still_the_lock_file(self) -> bool:
        assert self.fd is not None
        try:
            return os.stat(self.files.lock).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.fd is not None:
            if self.held and self._still_the_lock_file() and not has_state(self.files):
                self.files.lock.unlink(missing_ok=True)  # a host gt-remote knows nothing of leaves no lock file
            os.close(self.fd)
            self.fd = None
            self.held = False

    def __exit__(self, *exc: object) -> None:
        self.release()


def has_state(files: HostFiles) -> bool:
    """Whether gt-remote keeps anything for this host (a mistyped name keeps nothing)."""
    return files.record.exists() or files.remote.exists() or supervisor_pid(files) is not None
