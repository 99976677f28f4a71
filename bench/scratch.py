"""The bench's scratch directories: made with a marker, removed at the end of the run.

A run keeps its work in directories under the system's temporary directory: one with the
throwaway client key, the ssh_configs and a gt-remote home, and short runtime directories for
the supervisors' sockets (a Unix socket's path is limited). They are the bench's own, so
they go when the run ends, whether it passes, fails or is interrupted (bench/run.py: Bed.close
in a finally). A run that could not get there (a killed process, a machine that went down)
leaves them behind: the next run removes those, but only directories that carry the marker
file this module writes, are this user's own, and are older than a day, so a run going on
beside it keeps its own and nothing else is ever touched.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

MARKER = ".gt-remote-bench"  # the file that says: a bench run made this directory
MARKER_TEXT = "made by gt-remote's bench (bench/run.py); removed at the end of its run, or by a later run a day after\n"
PREFIXES = ("gt-remote-bench-", "gtr-bench-")  # every name a run gives its directories starts with one
STALE_AFTER_S = 24 * 3600.0


def make(prefix: str, base: Path | None = None) -> Path:
    """A new private directory with the bench's marker in it."""
    if not prefix.startswith(PREFIXES):
        raise ValueError(f"a bench scratch directory's name starts with one of {PREFIXES}, not {prefix!r}")
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    (path / MARKER).write_text(MARKER_TEXT)
    return path


def remove(path: Path) -> None:
    """Remove one of this run's directories (never following a symbolic link out of it)."""
    shutil.rmtree(path, ignore_errors=True)


def is_stale(path: Path, now: float | None = None, older_than_s: float = STALE_AFTER_S) -> bool:
    """A leftover of an earlier run: a real directory (not a link) named as the bench names
    them, this user's own, with the marker, the marker older than `older_than_s`."""
    if not path.name.startswith(PREFIXES):
        return False
    try:
        info = os.lstat(path)
        marker = os.lstat(path / MARKER)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return False
    if not stat.S_ISREG(marker.st_mode) or marker.st_uid != os.getuid():
        return False
    return (now if now is not None else time.time()) - marker.st_mtime > older_than_s


def sweep(base: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove the leftovers of earlier runs in `base` (the temporary directory): what is_stale
    says is one. The paths removed."""
    base = Path(base or tempfile.gettempdir())
    removed = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    for path in entries:
        if is_stale(path, now):
            remove(path)
            removed.append(path)
    return removed
