"""How much gt-remote says while it works: -q (nothing but errors) to -vv (asyncssh too).

The level travels to the detached supervisor in the environment, so its SSH steps reach
the waiting `up` as progress events. Steps are logged on the `gt_remote.steps` logger
at DEBUG; they are shown only with -v.

Every command imports this module, and most never log: `logging` is imported only when a
logger or a handler is first needed (`progress.steps` and `progress.transfers` are made on
first use), so a shell's `gt-remote env` does not pay for it (tests/contracts/test_light_cli.py).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import logging

VERBOSE_ENV = "GT_REMOTE_VERBOSE"
QUIET_ENV = "GT_REMOTE_QUIET"

LOGGERS = {"steps": "gt_remote.steps", "transfers": "gt_remote.transfer"}  # transfer: bytes done of an upload, for a terminal
REPORT_INTERVAL = 0.25


def __getattr__(name: str) -> logging.Logger:
    """`progress.steps` and `progress.transfers`: the loggers, made on first use."""
    if name in LOGGERS:
        return _logger(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _logger(name: str) -> logging.Logger:
    import logging

    return logging.getLogger(LOGGERS[name])


def configure(verbose: int = 0, quiet: bool = False) -> None:
    """Set the level for this process and the supervisors it starts."""
    os.environ[VERBOSE_ENV] = str(verbose)
    os.environ[QUIET_ENV] = "1" if quiet else ""


def verbosity() -> int:
    text = os.environ.get(VERBOSE_ENV, "")
    return int(text) if text.isdigit() else 0


def quiet() -> bool:
    return bool(os.environ.get(QUIET_ENV))


def _relay(show: Callable[[str], None]) -> logging.Handler:
    import logging

    class Relay(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                prefix = "asyncssh: " if record.name.startswith("asyncssh") else ""
                show(prefix + record.getMessage())
            except Exception:  # never let a display problem break the work
                self.handleError(record)

    return Relay(logging.DEBUG)


def show_steps(show: Callable[[str], None], propagate: bool = True) -> None:
    """With -v, pass each SSH step to `show`; with -vv, asyncssh's own debug lines too."""
    level = verbosity()
    if level < 1:
        return
    import logging

    relay = _relay(show)
    loggers = [_logger("steps")]
    if level >= 2:
        import asyncssh

        asyncssh.set_debug_level(1)
        loggers.append(logging.getLogger("asyncssh"))
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.addHandler(relay)
        logger.propagate = propagate


# Notices a library writes about its own dependencies, as asyncssh's use of cryptography's DSA
# (`CryptographyDeprecationWarning: DSA is deprecated`, ten lines at every import): news for
# that library's maintainers, never for a user, in a terminal or in a supervisor's log. Matched by
# message and by the module the warning points at, so cryptography is never imported for its class.
LIBRARY_NOTICE = r".*deprecat"  # re.match, case-insensitive: "DSA is deprecated", "... deprecation ..."
LIBRARY_MODULES = r"(asyncssh|cryptography)(\.|$)"


def hush_library_warnings() -> None:
    """Hide the libraries' deprecation notices in this process, unless -v asks to see everything.

    Called before asyncssh is first imported: by the CLI once it has read -v, and by the
    supervisor's first import (tunnel/quick_import.py), which reads -v from the environment."""
    if verbosity() >= 1:
        return
    import warnings  # already loaded by the interpreter: costs nothing

    warnings.filterwarnings("ignore", message=LIBRARY_NOTICE, module=LIBRARY_MODULES)


def is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def transfer_line(done: int, total: int, elapsed: float) -> str:
    """`42% 12.3 MiB/s 0:07 left` for a transfer that has run `elapsed` seconds."""
    percent = 100 * done // total if total else 100
    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 else 0.0
    minutes, seconds = divmod(int(left), 60)
    return f"{percent:3d}% {rate / 1048576:6.1f} MiB/s {minutes}:{seconds:02d} left"


Transfer = Callable[[int, int, float], None]


def upload_reporter() -> Callable[[bytes, bytes, int, int], None]:
    """A progress callback `(src, dst, done, total)` (the shape of asyncssh's SFTP progress
    handler, which the exec-channel upload keeps) that reports at most four times a second,
    and at the end."""
    started = time.monotonic()
    last = 0.0

    def report(_src: bytes, _dst: bytes, done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= REPORT_INTERVAL or done >= total:
            last = now
            _logger("transfers").debug("upload", extra={"done": done, "total": total, "elapsed": now - started})

    return report


def relay_transfers(show: Transfer) -> None:
    """Pass upload progress to `show` (the supervisor sends it to the waiting `up`)."""
    import logging

    class TransferRelay(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            fields: Any = record.__dict__
            show(int(fields.get("done", 0)), int(fields.get("total", 0)), float(fields.get("elapsed", 0.0)))

    transfers = _logger("transfers")
    transfers.setLevel(logging.DEBUG)
    transfers.propagate = False  # the log needs no byte counts
    transfers.addHandler(TransferRelay(logging.DEBUG))


class TransferDisplay:
    """`uploading  42%  12.3 MiB/s 0:07 left` redrawn in place: only on a terminal, not with -q,
    and only once the transfer has taken a while (a quick one shows nothing)."""

    def __init__(self, stream: TextIO | None = None, delay: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.delay = delay
        self.shown = False

    def update(self, done: int, total: int, elapsed: float) -> None:
        if elapsed < self.delay or quiet() or not is_terminal(self.stream):
            return
        self.stream.write(f"\rgt-remote: uploading {transfer_line(done, total, elapsed)}\x1b[K")
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False
