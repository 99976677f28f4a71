"""Starting a host's supervisor: detached, its settings handed over on its stdin, its progress
relayed until it is up (or undone when `up` is interrupted); or in this process, for a
service manager (`up --foreground`)."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from gt_remote.base import progress
from gt_remote.base.errors import GtRemoteError, shell_word
from gt_remote.base.paths import HostFiles, open_private
from gt_remote.host.client import error_from_dict
from gt_remote.host.lock import HostLock
from gt_remote.runtime import control

if TYPE_CHECKING:
    import subprocess

    from gt_remote.base.config import HostSettings

Say = Callable[[str], None]
STOP_GRACE = 5.0
ANSWER_PATIENCE = 3.0  # a supervisor just started answers on its socket within this
# How long an interrupted `up` waits for its supervisor to undo the bring-up: a remote script
# that starts something runs to its end first (remote/scripts.FINISH_GRACE, 15 s at most), then
# the undo itself (supervisor.UNDO_TIMEOUT, 20 s). Both take well under a second as a rule.
UNDO_WAIT = 40.0
# Sent by an `up` that fails or is interrupted to the supervisor it started: undo the bring-up,
# finished or not (runtime/supervisor.py). SIGTERM would only stop a finished one, as `down` does,
# leaving the server and relay it started. Before its handler is set, it ends the process.
UNDO_SIGNAL = signal.SIGUSR2
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def clean_stale(files: HostFiles) -> None:
    """Leftovers of a supervisor that died without cleaning up (SIGKILL, power loss)."""
    files.control.unlink(missing_ok=True)
    files.record.unlink(missing_ok=True)


def spawn(settings: HostSettings, files: HostFiles, say: Say) -> list[str]:
    """Start a detached supervisor named by the host alone: its settings go down its stdin."""
    import subprocess

    log_fd = open_private(files.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gt_remote.runtime.supervisor", settings.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_fd,
            start_new_session=True,
            cwd="/",
        )
    finally:
        os.close(log_fd)
    try:
        _hand_over(proc, settings)
        return _relay_until_ready(proc, files, say)
    except KeyboardInterrupt:
        _undo_interrupted(proc, settings.name, say)
        raise
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(UNDO_SIGNAL)  # this `up` fails: nothing of its bring-up may stay
            _wait_quietly(proc, UNDO_WAIT)
        raise
    finally:
        assert proc.stdout is not None
        proc.stdout.close()


def _hand_over(proc: subprocess.Popen[bytes], settings: HostSettings) -> None:
    """The settings, through a pipe only this process holds: on the command line, every local
    account could read them in /proc/PID/cmdline or `ps` (the destination, the ssh_config and
    build paths, an install_command's token). A pipe leaves no file a later supervisor could
    pick up, and closing it tells the supervisor it has them all."""
    assert proc.stdin is not None
    try:
        with proc.stdin:
            proc.stdin.write(settings.to_json().encode())
    except BrokenPipeError:
        pass  # it died before reading: _relay_until_ready reports its exit and log


@contextmanager
def sigterm_interrupts(wanted: bool = True) -> Iterator[None]:
    """SIGTERM (a service manager) and SIGHUP (a closing terminal) cancel the bring-up as
    Ctrl-C does, instead of killing `up` and leaving its supervisor to finish alone. (`up
    --foreground` is the supervisor itself and handles the signals in its event loop.)"""


    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    if not wanted:
        yield
        return
    kept = (signal.SIGTERM, signal.SIGHUP)  # one ignored already (nohup) stays ignored
    previous = {signum: signal.signal(signum, interrupt) for signum in kept if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _undo_interrupted(proc: subprocess.Popen[bytes], name: str, say: Say) -> None:
    """Ctrl-C: the supervisor (in its own session, so the terminal's SIGINT missed it) is told
    at once; it cancels the bring-up and undoes what it started on the remote, also when it
    had just finished (this `up` exits 130 and hands out nothing, so nothing may stay)."""
    if proc.poll() is not None:
        return
    proc.send_signal(UNDO_SIGNAL)
    say(f"interrupted: undoing what this up started on {name}")
    try:
        if not _wait_quietly(proc, UNDO_WAIT):
            say(f"the supervisor (pid {proc.pid}) is still undoing the bring-up; 'gt-remote logs {name}' shows how it ends")
    except KeyboardInterrupt:
        say(f"not waiting; the supervisor (pid {proc.pid}) finishes undoing the bring-up by itself")


def _wait_quietly(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def _past_interrupting() -> None:
    """The tunnel is up: from here this `up` only prints its lines and exits 0, so Ctrl-C waits
    until it has (blocked, not handled: this process has one thread). A Ctrl-C that came just
    before is raised here (pthread_sigmask runs pending handlers), still in spawn's `try`,
    whose undo then takes the finished bring-up down: `up` succeeds with the tunnel up, or
    fails with nothing left, never a failed `up` beside a running tunnel. (A child inherits the
    mask: nothing after this may start one.)"""
    signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)


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
            _past_interrupting()
            return list(event["status"]["exports"])
        elif event["event"] == "error":
            proc.wait(30)
            raise error_from_dict(event["error"])
    code = proc.wait(30)
    raise GtRemoteError(f"the supervisor exited (code {code}) before the tunnel was up", f"see its log: gt-remote logs {shell_word(files.name)}")


def run_foreground(settings: HostSettings, lock: HostLock, on_ready: Callable[[list[str]], None] | None) -> list[str]:
    from gt_remote.base.lean import leave_out_unused

    leave_out_unused()  # this process is now a supervisor for as long as the service runs, as a detached one is
    import asyncio

    from gt_remote.runtime import notify, process, supervisor

    files = HostFiles(settings.name)
    if control.hold_pid_lock(files.pid) is None:
        raise GtRemoteError(f"a supervisor for {settings.name} is already running", f"run 'gt-remote down {shell_word(settings.name)}' first")
    process.setup_logging(files, also_stderr=True)
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
