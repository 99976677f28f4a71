"""The bench's scratch directories: made with a marker, removed at the end of the run.

A run keeps its work in directories under the system's temporary directory: one with the
throwaway client key, the ssh_configs and a gt-remote home, and short runtime directories for
the supervisors' sockets (a Unix socket's path is limited). They are the bench's own, so
they go when the run ends, whether it passes, fails or is interrupted (bench/run.py: Bed.close
in a finally). A run that could not get there (a killed process, a machine that went down)
leaves them behind: the next run removes those, but only directories that carry the marker
file this module writes, are this user's own, and are older than a day, so a run going on
beside it keeps its own and nothing else is ever touched.

A run inside the test suite (tests/e2e/test_bench.py) also writes the test session's name
into the marker: when that pytest is killed, its reaper (tests/reaper.py) removes the
session's directories at once (sweep_session), rather than a day later.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.reaper import SESSION_ENV  # a test run's name, in its environment

MARKER = ".gt-remote-bench"  # the file that says: a bench run made this directory
MARKER_TEXT = "made by gt-remote's bench (bench/run.py); removed at the end of its run, or by a later run a day after\n"
PREFIXES = ("gt-remote-bench-", "gtr-bench-")  # every name a run gives its directories starts with one
STALE_AFTER_S = 24 * 3600.0
SESSION_LINE = "test session: "  # the marker's line naming that run, when there is one


def make(prefix: str, base: Path | None = None) -> Path:
    """A new private directory with the bench's marker in it."""
    if not prefix.startswith(PREFIXES):
        raise ValueError(f"a bench scratch directory's name starts with one of {PREFIXES}, not {prefix!r}")
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    session = os.environ.get(SESSION_ENV)
    (path / MARKER).write_text(MARKER_TEXT + (f"{SESSION_LINE}{session}\n" if session else ""))
    return path


def remove(path: Path) -> None:
    """Remove one of this run's directories (never following a symbolic link out of it)."""
    shutil.rmtree(path, ignore_errors=True)


def _marker_of(path: Path) -> os.stat_result | None:
    """The marker's stat, when `path` is a bench scratch dir: a real directory (not a link)
    named as the bench names them, this user's own, holding this user's marker file."""
    if not path.name.startswith(PREFIXES):
        return None
    try:
        info = os.lstat(path)
        marker = os.lstat(path / MARKER)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return None
    if not stat.S_ISREG(marker.st_mode) or marker.st_uid != os.getuid():
        return None
    return marker


def is_stale(path: Path, now: float | None = None, older_than_s: float = STALE_AFTER_S) -> bool:
    """A leftover of an earlier run: a bench scratch dir whose marker is older than `older_than_s`."""
    marker = _marker_of(path)
    return marker is not None and (now if now is not None else time.time()) - marker.st_mtime > older_than_s


def made_in_session(path: Path, session: str) -> bool:
    """A bench scratch dir made by a run inside test session `session` (its marker says so)."""
    if _marker_of(path) is None:
        return False
    try:
        lines = (path / MARKER).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    return f"{SESSION_LINE}{session}" in lines


def sweep(base: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove the leftovers of earlier runs in `base` (the temporary directory): what is_stale
    says is one. The paths removed."""
    return _remove_where(base, lambda path: is_stale(path, now))


def sweep_session(session: str, base: Path | None = None) -> list[Path]:
    """Remove the scratch dirs a bench run inside test session `session` left in `base` (the
    temporary directory), whatever their age: the session's reaper calls it once pytest is gone."""
    return _remove_where(base, lambda path: made_in_session(path, session))


def _remove_where(base: Path | None, wanted: Callable[[Path], bool]) -> list[Path]:
    base = Path(base or tempfile.gettempdir())
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    removed = [path for path in entries if wanted(path)]
    for path in removed:
        remove(path)
    return removed
