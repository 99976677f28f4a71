"""Asking a host's supervisor from any shell: which process it is, its control socket, its
status (checked for shape before anyone reads it), its errors as typed errors again."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gt_remote.base import errors
from gt_remote.base.errors import GtRemoteError
from gt_remote.base.paths import HostFiles
from gt_remote.runtime import control

# The control socket and pid file live in the runtime dir, which differs between shells
# (su, cron, ssh -T, a unit without XDG_RUNTIME_DIR) and which logind may remove. The record
# in the state dir says where the supervisor's socket is and which process it is.


def _recorded_supervisor(files: HostFiles) -> dict[str, Any]:
    found = read_record(files).get("supervisor")
    return found if isinstance(found, dict) else {}


def supervisor_pid(files: HostFiles) -> int | None:
    """The live supervisor's pid: the lock holder here, else the recorded process once checked
    to be that very process (start time) and gt-remote's supervisor for this host."""
    pid = control.supervisor_alive(files.pid)
    if pid is not None:
        return pid
    recorded = _recorded_supervisor(files)
    other = recorded.get("pid")
    if isinstance(other, int) and control.is_our_supervisor(other, recorded.get("start_time"), files.name):
        return other
    return None


def ask(files: HostFiles, message: dict[str, Any], timeout: float = 3.0) -> dict[str, Any] | None:
    """A request to the host's supervisor, at this shell's socket or at the one it recorded."""
    reply = control.request(files.control, message, timeout)
    if reply is not None:
        return reply
    recorded = _recorded_supervisor(files).get("control")
    if isinstance(recorded, str) and recorded != str(files.control):
        return control.request(Path(recorded), message, timeout)
    return None


def error_from_dict(data: dict[str, Any]) -> GtRemoteError:
    """Rebuild a typed error the supervisor reported, so exit codes stay right."""
    cls = getattr(errors, str(data.get("kind")), GtRemoteError)
    if not (isinstance(cls, type) and issubclass(cls, GtRemoteError)):
        cls = GtRemoteError
    return cls(str(data.get("cause", "unknown error")), str(data.get("fix", "")))


def live_status(files: HostFiles, timeout: float = 3.0) -> dict[str, Any] | None:
    reply = ask(files, {"op": "status"}, timeout)
    status = reply.get("status") if reply and reply.get("ok") else None
    return status if _well_formed(status) else None


STATUS_SHAPE: dict[str, tuple[type, ...]] = {
    "host": (str,), "state": (str,), "local": (str,), "remote_port": (int,), "supervisor_pid": (int,), "server": (dict,), "settings": (dict,),
    "last_error": (str, type(None)), "last_wake": (dict, type(None)), "exports": (list,),
}
OPTIONAL_NUMBERS = ("rtt_ms", "uptime_s", "last_recovery_s")
WAKE_KEYS = {"kind", "at", "detail", "outcome"}


def _well_formed(status: object) -> bool:
    """A reply shaped like our supervisor's status, in every part `up`, `env` and `status` read:
    anything else (a fake or garbled socket) counts as no answer, never as a crash."""
    if not isinstance(status, dict) or not all(isinstance(status.get(key), types) for key, types in STATUS_SHAPE.items()):
        return False
    numbers_ok = all(status.get(key) is None or (isinstance(status[key], (int, float)) and math.isfinite(status[key])) for key in OPTIONAL_NUMBERS)
    server, wake = status["server"], status["last_wake"]
    return numbers_ok and isinstance(server.get("name"), str) and isinstance(server.get("other_build"), (dict, type(None))) and (wake is None or WAKE_KEYS <= set(wake))



def read_record(files: HostFiles) -> dict[str, Any]:
    try:
        data = json.loads(files.record.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
