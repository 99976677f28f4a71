"""The supervisor as a process: how it gets its settings, where it logs, how it reports
progress to the `up` that started it. Apart from the Supervisor, which keeps the tunnel."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from typing import Any

from gt_remote.base.config import HostSettings
from gt_remote.base.paths import HostFiles, open_private
from gt_remote.base.sanitize import visible_formatter

log = logging.getLogger("gt_remote.runtime.supervisor")

LOG_MAX_BYTES = 1024 * 1024
LOG_BACKUPS = 3


def setup_logging(files: HostFiles, also_stderr: bool = False) -> None:
    """A size-capped, rotated log per host. Rotation makes new files: umask keeps them 0600."""
    os.umask(0o077)
    path = files.log
    os.close(open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT))  # a link planted there fails here
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS)
    handler.setFormatter(visible_formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))  # remote text: no escapes
    handlers: list[logging.Handler] = [handler]
    if also_stderr:  # `up --foreground`: the service manager's journal gets the same lines
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(visible_formatter("gt-remote: %(message)s"))
        stderr.addFilter(lambda record: not getattr(record, "file_only", False))
        handlers.append(stderr)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


class EventPipe:
    """Progress for the waiting `up` as JSON lines on stdout, closed once the tunnel is up."""

    def emit(self, event: str, **fields: Any) -> None:
        try:
            sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass  # `up` went away (Ctrl-C); carry on, the log has it all

    def progress(self, message: str) -> None:
        log.info("%s", message)
        self.emit("progress", message=message)

    def ready(self, status: dict[str, Any]) -> None:
        self.emit("ready", status=status)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def settings_from_stdin(name: str) -> HostSettings:
    """The settings `up` writes down our stdin and closes (lifecycle._hand_over): /proc/PID/cmdline
    and `ps` show every local account our arguments, so those name the host and nothing more.
    Settings for another host are refused, as the command line must say whose supervisor this is."""
    text = sys.stdin.buffer.read().decode()
    devnull = os.open(os.devnull, os.O_RDONLY)  # the pipe is spent: children get nothing from it
    os.dup2(devnull, sys.stdin.fileno())
    os.close(devnull)
    settings = HostSettings.from_json(text)
    if settings.name != name:
        raise ValueError(f"settings for {settings.name!r} handed to the supervisor of {name!r}")
    return settings
