"""What `up`, `down` and `status` do with supervisors; the CLI only parses and prints.

`up` and `down` for one host are serialised by a lock file, so two racing `up`s never
leave two supervisors: the second waits, then finds the first one's supervisor and reuses it.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from gt_remote import control, notify, progress, reach
from gt_remote.base import errors
from gt_remote.base.config import HostSettings
from gt_remote.base.errors import GtRemoteError, NotUp, UsageError
from gt_remote.base.paths import HostFiles, known_host_names, remembered_host_names
from gt_remote.bootstrap.probe import file_digest

Say = Callable[[str], None]
LOCK_TIMEOUT = 600.0
STOP_GRACE = 5.0


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
            self.fd = os.open(self.files.lock, os.O_RDWR | os.O_CREAT, 0o600)
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
            if self.held and self._still_the_lock_file() and not _has_state(self.files):
                self.files.lock.unlink(missing_ok=True)  # a host gt-remote knows nothing of leaves no lock file
            os.close(self.fd)
            self.fd = None
            self.held = False

    def __exit__(self, *exc: object) -> None:
        self.release()


def _has_state(files: HostFiles) -> bool:
    """Whether gt-remote keeps anything for this host (a mistyped name keeps nothing)."""
    return files.record.exists() or files.remote.exists() or control.supervisor_alive(files.pid) is not None


def error_from_dict(data: dict[str, Any]) -> GtRemoteError:
    """Rebuild a typed error the supervisor reported, so exit codes stay right."""
    cls = getattr(errors, str(data.get("kind")), GtRemoteError)
    if not (isinstance(cls, type) and issubclass(cls, GtRemoteError)):
        cls = GtRemoteError
    return cls(str(data.get("cause", "unknown error")), str(data.get("fix", "")))


def live_status(files: HostFiles, timeout: float = 3.0) -> dict[str, Any] | None:
    reply = control.request(files.control, {"op": "status"}, timeout)
    return reply["status"] if reply and reply.get("ok") else None


# --- up ---------------------------------------------------------------------------------


def up(settings: HostSettings, say: Say, foreground: bool = False, on_ready: Callable[[list[str]], None] | None = None) -> list[str]:
    """Bring a host up (or find it up) and return its export lines."""
    files = HostFiles(settings.name)
    with HostLock(files) as lock:
        status = live_status(files)
        if status is not None and foreground:
            raise GtRemoteError(
                f"{settings.name} is already up under another supervisor (pid {status['supervisor_pid']}), so --foreground has nothing to supervise",
                f"stop that one with 'gt-remote down {settings.name}', then start this again",
            )
        if status is not None:
            _check_same(settings, status)
            say(f"{settings.name} is already up ({status['local']}, state {status['state']})")
            return list(status["exports"])
        pid = control.supervisor_alive(files.pid)
        if pid is not None:
            raise GtRemoteError(
                f"the supervisor of {settings.name} (pid {pid}) is alive but does not answer",
                f"it may be stopped (SIGSTOP): resume it with 'kill -CONT {pid}', or run 'gt-remote down {settings.name}'",
            )
        _clean_stale(files)
        had_log = files.log.exists()
        try:
            if foreground:
                return _run_foreground(settings, lock, on_ready)
            return _spawn(settings, files, say)
        except GtRemoteError:
            _forget_failed(files, had_log)
            raise


def _forget_failed(files: HostFiles, had_log: bool) -> None:
    """A failed `up` of a host gt-remote never brought up (a mistyped name) leaves no files."""
    if files.remote.exists() or control.supervisor_alive(files.pid) is not None:
        return
    files.pid.unlink(missing_ok=True)
    if not had_log:
        files.log.unlink(missing_ok=True)


def _check_same(settings: HostSettings, status: dict[str, Any]) -> None:
    """An option that differs from the running tunnel's is refused, never silently dropped."""
    running = status.get("settings") or {}
    wanted = {"local": settings.local_url, "remote port": settings.remote_port, "server": settings.server, "keepalive": settings.keepalive}
    have = {"local": status["local"], "remote port": status["remote_port"], "server": running.get("server", settings.server), "keepalive": running.get("keepalive", settings.keepalive)}
    differs = [f"{key} {have[key]} (asked: {wanted[key]})" for key in wanted if wanted[key] != have[key]]
    if differs:
        raise UsageError(
            f"{settings.name} is already up with {', '.join(differs)}",
            f"run 'gt-remote down {settings.name}' first, then 'up' with the new options",
        )
    if settings.server_binary:
        server = status.get("server") or {}
        digest = file_digest(settings.server_binary)
        if server.get("build") != digest:
            running = f"{server.get('version') or 'unknown version'}, build {server.get('build') or server.get('path') or 'not uploaded by gt-remote'}"
            raise UsageError(
                f"{settings.name} is already up with {settings.server} {running}, not the offered {settings.server_binary} (build {digest})",
                f"run 'gt-remote upgrade {settings.name} --server-binary {settings.server_binary}' to switch (restarting ends the panes' processes)",
            )


def _clean_stale(files: HostFiles) -> None:
    """Leftovers of a supervisor that died without cleaning up (SIGKILL, power loss)."""
    files.control.unlink(missing_ok=True)
    files.record.unlink(missing_ok=True)


def _spawn(settings: HostSettings, files: HostFiles, say: Say) -> list[str]:
    log_fd = os.open(files.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gt_remote.supervisor", settings.to_json()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_fd,
            start_new_session=True,
            cwd="/",
        )
    finally:
        os.close(log_fd)
    try:
        return _relay_until_ready(proc, files, say)
    except BaseException:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        raise
    finally:
        assert proc.stdout is not None
        proc.stdout.close()


def _relay_until_ready(proc: subprocess.Popen[bytes], files: HostFiles, say: Say) -> list[str]:
    assert proc.stdout is not None
    display = progress.TransferDisplay()
    for raw in proc.stdout:
        event = json.loads(raw)
        if event["event"] == "transfer":
            display.update(event["done"], event["total"], event["elapsed"])
            continue
        display.finish()
        if event["event"] == "progress":
            say(event["message"])
        elif event["event"] == "ready":
            return list(event["status"]["exports"])
        elif event["event"] == "error":
            proc.wait(30)
            raise error_from_dict(event["error"])
    code = proc.wait(30)
    raise GtRemoteError(f"the supervisor exited (code {code}) before the tunnel was up", f"see its log: gt-remote logs {files.name}")


def _run_foreground(settings: HostSettings, lock: HostLock, on_ready: Callable[[list[str]], None] | None) -> list[str]:
    from gt_remote import supervisor

    files = HostFiles(settings.name)
    if control.hold_pid_lock(files.pid) is None:
        raise GtRemoteError(f"a supervisor for {settings.name} is already running", f"run 'gt-remote down {settings.name}' first")
    supervisor.setup_logging(files, also_stderr=True)
    exports: list[str] = []

    def progress(message: str) -> None:
        supervisor.log.info("%s", message)  # to the log file and stderr, as a detached supervisor does
        notify.status(message)

    def ready(status: dict[str, Any]) -> None:
        exports.extend(status["exports"])
        lock.release()
        if on_ready:
            on_ready(exports)
        # Only now, after the end-to-end Ping: a Type=notify unit counts as started.
        notify.notify(notify.READY, f"STATUS=up: {status['local']} -> {settings.destination}:{settings.remote_port}")

    try:
        asyncio.run(supervisor.run(settings, progress, ready))
    except GtRemoteError as error:
        supervisor.log.error("%s", error, extra={"file_only": True})  # stderr gets it from the CLI edge
        raise
    return exports


# --- down -------------------------------------------------------------------------------


def down(name: str, stop_server: bool, fallback: reach.Fallback | None = None, ssh_config: str | None = None) -> str:
    """Stop a host's supervisor (and the remote server if asked and ours); say what happened.

    With the tunnel already down, --stop-server connects by itself: with what `up` used
    (kept after `down`), else `fallback` (the config and ssh_config), -F winning.
    """
    files = HostFiles(name)
    with HostLock(files, timeout=60):
        pid = control.supervisor_alive(files.pid)
        reply = control.request(files.control, {"op": "stop", "stop_server": stop_server}, timeout=30 if stop_server else 3)
        if reply is None and pid is None:
            was_known = files.record.exists()
            _clean_stale(files)
            message = f"{name}: already down" + (" (cleaned up after a supervisor that had died)" if was_known else "")
            return f"{message}; {_stop_server_offline(name, fallback, ssh_config)}" if stop_server else message
        if reply is None and pid is not None and pid > 0:
            _signal(pid, signal.SIGTERM)
            _signal(pid, signal.SIGCONT)  # a stopped process acts on TERM only once resumed
        if not _wait_until(lambda: control.supervisor_alive(files.pid) is None, STOP_GRACE) and pid:
            _signal(pid, signal.SIGKILL)
            _wait_until(lambda: control.supervisor_alive(files.pid) is None, STOP_GRACE)
        _clean_stale(files)
    note = (reply or {}).get("server_note") if stop_server else "the remote server keeps running (use --stop-server to stop it)"
    return f"{name}: down; {note}" if note else f"{name}: down"


def _stop_server_offline(name: str, fallback: reach.Fallback | None, ssh_config: str | None) -> str:
    settings = reach.settings_for(name, fallback, ssh_config)
    if settings is None:
        raise NotUp(f"gt-remote has no record of {name}'s remote", f"name it in the config or pass -F: 'gt-remote -F SSH_CONFIG down {name} --stop-server'")
    return reach.stop_server(settings)


def all_hosts_with_state() -> list[str]:
    """Hosts with a tunnel record or a remembered remote: what `down --all` covers."""
    return sorted(set(known_host_names()) | set(remembered_host_names()))


def _signal(pid: int, signum: int) -> None:
    """Only ever the pid read from our own supervisor's lock file, which that process holds."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- reconnect --------------------------------------------------------------------------

RECONNECT_REPLY_TIMEOUT = 30.0  # the supervisor checks (2 s) and waits up to 15 s for the link


def reconnect(name: str, force: bool = False) -> tuple[bool, str]:
    """Ask HOST's supervisor to check its link now (after a wake); (link up again, what happened)."""
    files = HostFiles(name)
    reply = control.request(files.control, {"op": "reconnect", "force": force}, timeout=RECONNECT_REPLY_TIMEOUT)
    if reply is None:
        if control.supervisor_alive(files.pid) is not None:
            raise NotUp(f"the supervisor of {name} does not answer", f"see 'gt-remote status {name}'")
        raise NotUp(f"{name} is not up", f"run 'eval \"$(gt-remote up {name})\"' first")
    if not reply.get("ok"):
        raise GtRemoteError(f"the supervisor of {name} refused: {reply.get('error')}", "upgrade gt-remote and restart the tunnel: 'gt-remote down' then 'gt-remote up'")
    return bool(reply["reconnected"]), f"{name}: {_describe_reconnect(reply)}"


def _describe_reconnect(reply: dict[str, Any]) -> str:
    outcome, reconnected = reply.get("outcome"), reply.get("reconnected")
    if outcome == "healthy":
        return "the link was healthy; left it alone"
    first = {
        "dropped": "dropped a dead link (no answer within 2 s)",
        "forced": "dropped the link on request",
        "reconnecting": "the link was already down; trying again now",
    }.get(str(outcome), f"checked the link ({outcome})")
    if reconnected:
        return f"{first}; reconnected"
    return f"{first}; still reconnecting ({reply.get('last_error') or 'no answer yet'}); it keeps trying, see gt-remote status"


# --- status -----------------------------------------------------------------------------


def host_status(name: str) -> dict[str, Any]:
    """Live from the supervisor; else a `down` row that says why."""
    files = HostFiles(name)
    status = live_status(files, timeout=2.0)
    if status is not None:
        return status
    record = _read_record(files)
    last = record.get("status", {})
    pid = control.supervisor_alive(files.pid)
    if pid is not None:
        last_error = f"the supervisor (pid {pid}) is alive but does not answer; it may be stopped (SIGSTOP)"
    elif last.get("exit_cause"):  # its watchdog ended it and said why
        last_error = f"the supervisor (pid {last.get('supervisor_pid')}) exited: {last['exit_cause']}; run 'gt-remote up {name}' to bring the tunnel back"
    elif record:
        last_error = f"the supervisor (pid {last.get('supervisor_pid')}) is not running: it died or was killed; run 'gt-remote up {name}' to bring the tunnel back"
    else:
        last_error = None
    return {
        "host": name,
        "destination": last.get("destination"),
        "state": "down",
        "local": last.get("local"),
        "remote_port": last.get("remote_port"),
        "supervisor_pid": pid,
        "uptime_s": None,
        "reconnects": last.get("reconnects", 0),
        "server_restarts": last.get("server_restarts", 0),
        "rtt_ms": None,
        "server": last.get("server", {"pid": None, "version": None}),
        "last_error": last_error,
        "since": last.get("since"),
        "next_attempt_at": None,
        "clients": 0,
        "resumable": False,
        "resumable_reason": "the tunnel is down",
        "resume_window_s": None,
        "streams_open": 0,
        "streams_resumed": last.get("streams_resumed", 0),
        "bytes_replayed": last.get("bytes_replayed", 0),
        "last_wake": last.get("last_wake"),
        "last_recovery_s": last.get("last_recovery_s"),
        "exports": [],
    }


def _read_record(files: HostFiles) -> dict[str, Any]:
    try:
        data = json.loads(files.record.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def all_statuses(only: str | None = None) -> list[dict[str, Any]]:
    names = [only] if only else known_host_names()
    return [host_status(name) for name in names]


def require_up(name: str) -> dict[str, Any]:
    """The live status of a host whose tunnel can be used now (or comes back by itself)."""
    status = live_status(HostFiles(name))
    if status is None:
        raise NotUp(f"{name} is not up", f"run 'eval \"$(gt-remote up {name})\"' first")
    if status["state"] == "failed":
        raise NotUp(f"{name} has failed: {status['last_error']}", f"fix that, then run 'gt-remote down {name}' and 'gt-remote up {name}'")
    return status


def is_known(name: str) -> bool:
    """Whether gt-remote has any trace of this host: a live supervisor, a record or a log."""
    files = HostFiles(name)
    return files.record.exists() or files.log.exists() or control.supervisor_alive(files.pid) is not None or files.control.exists()
