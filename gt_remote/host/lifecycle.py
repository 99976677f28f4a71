"""What `up`, `down` and `status` do with supervisors; the CLI only parses and prints.

`up` and `down` for one host are serialised by a lock file, so two racing `up`s never
leave two supervisors: the second waits, then finds the first one's supervisor and reuses it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gt_remote.base import errors
from gt_remote.base.addresses import export_lines
from gt_remote.base.builds import file_digest
from gt_remote.base.errors import GtRemoteError, LocalPortInUse, NotUp, RemoteError, UsageError, shell_word
from gt_remote.base.paths import HostFiles, known_host_names, remembered_host_names, write_private
from gt_remote.host.client import ask, error_from_dict, live_status, read_record, supervisor_pid
from gt_remote.host.lock import LOCK_TIMEOUT, HostLock
from gt_remote.host.spawn import ANSWER_PATIENCE, clean_stale, run_foreground, sigterm_interrupts, spawn

if TYPE_CHECKING:  # the commands that only read files or ask a supervisor must start fast (tests/contracts/test_light_cli.py)

    from gt_remote.base.config import HostSettings
    from gt_remote.runtime import reach

Say = Callable[[str], None]
STOP_GRACE = 5.0


# --- up ---------------------------------------------------------------------------------


def up(settings: HostSettings, say: Say, foreground: bool = False, on_ready: Callable[[list[str]], None] | None = None, given: Collection[str] | None = None) -> list[str]:
    """Bring a host up (or find it up) and return its export lines.

    `given` names the settings the user set (on the command line or in the config): only those
    are compared with a running tunnel's, the others are its own. None: all of them."""
    files = HostFiles(settings.name)
    with sigterm_interrupts(not foreground), HostLock(files) as lock:
        status = _settled_status(files, say)
        if status is not None and foreground:
            raise GtRemoteError(
                f"{settings.name} is already up under another supervisor (pid {status['supervisor_pid']}), so --foreground has nothing to supervise",
                f"stop that one with 'gt-remote down {shell_word(settings.name)}', then start this again",
            )
        if status is not None:
            settings = as_running(settings, status, given)  # a default is no request: a bare `up HOST` finds the tunnel as it is
            _check_same(settings, status)
            refused = status.get("port_refused")
            if isinstance(refused, dict):  # another account holds the remote port: no address to hand out
                raise RemoteError(str(refused.get("cause")), str(refused.get("fix") or ""))
            say(f"{settings.name} is already up ({status['local']}, state {status['state']})")
            # Built here from settings _check_same matched, never the names the socket sent.
            return export_lines(settings.local_url, settings.server)
        pid = supervisor_pid(files)
        if pid is not None:
            raise GtRemoteError(
                f"the supervisor of {settings.name} (pid {pid}) is alive but does not answer",
                f"it may be stopped (SIGSTOP): resume it with 'kill -CONT {pid}', or run 'gt-remote down {shell_word(settings.name)}'",
            )
        clean_stale(files)
        had_log = files.log.exists()
        try:
            if foreground:
                return run_foreground(settings, lock, on_ready)
            return spawn(settings, files, say)
        except LocalPortInUse as error:
            _forget_failed(files, had_log)
            raise _held_by_our_tunnel(settings, error) from None
        except (GtRemoteError, KeyboardInterrupt):
            _forget_failed(files, had_log)
            raise


def _held_by_our_tunnel(settings: HostSettings, error: LocalPortInUse) -> LocalPortInUse:
    """The local address refused: when this user's tunnel to another host holds it (its
    supervisor says so), the error names that tunnel and its `down`, not just "in use"."""
    from gt_remote.base.addresses import parse_address
    from gt_remote.base.errors import AddressError

    wanted = settings.local
    for name in known_host_names():
        status = live_status(HostFiles(name), timeout=1.0) if name != settings.name else None
        try:
            theirs = parse_address(status["local"]) if status is not None else None
        except AddressError:
            continue
        if theirs is not None and type(theirs) is type(wanted) and theirs == wanted:
            return LocalPortInUse(
                f"local address {settings.local_url} is already in use by gt-remote's tunnel to {name}",
                f"pick another with --local (e.g. tcp://127.0.0.1:19999), or run 'gt-remote down {shell_word(name)}'",
            )
    return error


def _settled_status(files: HostFiles, say: Say) -> dict[str, Any] | None:
    """The running supervisor's status once it is past its bring-up; None if there is none.

    A supervisor that is still connecting (started from another shell, or by the login
    service) is waited for, not reported as up and not mistaken for a stopped one.
    """
    deadline = time.monotonic() + LOCK_TIMEOUT
    patience = time.monotonic() + ANSWER_PATIENCE
    said = ""
    while True:
        status = live_status(files)
        if status is None and supervisor_pid(files) is not None and time.monotonic() < patience:
            time.sleep(0.1)  # just started: its socket comes within moments
            continue
        if status is None or status.get("state") != "connecting":
            return status
        step = status.get("step") or "connecting"
        if step != said:
            say(f"waiting for {files.name}'s supervisor (pid {status.get('supervisor_pid')}), which is still coming up: {step}")
            said = step
        if time.monotonic() > deadline:
            raise GtRemoteError(f"the supervisor of {files.name} is still coming up ({step})", f"see 'gt-remote status {files.name}' and 'gt-remote logs {files.name}'")
        time.sleep(0.2)


def _forget_failed(files: HostFiles, had_log: bool) -> None:
    """A failed `up` of a host gt-remote never brought up (a mistyped name) leaves no files."""
    if files.remote.exists() or supervisor_pid(files) is not None:
        return
    files.pid.unlink(missing_ok=True)
    if not had_log:
        files.log.unlink(missing_ok=True)


def _check_same(settings: HostSettings, status: dict[str, Any]) -> None:
    """An option that differs from the running tunnel's is refused, never silently dropped."""
    differs = [f"{label} {have} (asked: {wanted})" for label, have, wanted in differences(settings, status)]
    if differs:
        raise UsageError(
            f"{settings.name} is already up with {', '.join(differs)}",
            f"run 'gt-remote down {shell_word(settings.name)}' first, then 'up' with the new options",
        )
    if settings.server_binary:
        server = status.get("server") or {}
        digest = file_digest(settings.server_binary)
        if server.get("build") != digest:
            running_build = f"{server.get('version') or 'unknown version'}, build {server.get('build') or server.get('path') or 'not uploaded by gt-remote'}"
            raise UsageError(
                f"{settings.name} is already up with {settings.server} {running_build}, not the offered {settings.server_binary} (build {digest})",
                f"run 'gt-remote upgrade {shell_word(settings.name)} --server-binary {shell_word(settings.server_binary)}' to switch (restarting ends the panes' processes)",
            )


# Settings that do not shape a running tunnel, each with why; every other field of
# HostSettings is compared, so a setting added later is refused by default when it differs.
NOT_COMPARED = {
    "name": "the host's name is how the running tunnel was found",
    "server_binary": "compared by its build's hash, below (_check_same)",
    "restart_server": "an action of this `up`, not a property of the tunnel",
    "sync": "paths this `up` syncs once, not a property of the tunnel",
    "ssh_config": "where this shell's ssh settings are read; the destination they give is compared",
}
LABELS = {"destination": "ssh destination", "local_url": "local", "remote_port": "remote port", "install_dir": "install dir", "back": "back tunnels"}


def differences(settings: HostSettings, status: dict[str, Any]) -> list[tuple[str, object, object]]:
    """(what, the running tunnel's value, the asked value) for each setting of `up` that shapes
    the tunnel and differs. A supervisor from before a setting existed counts as having the
    asked value."""
    found = []
    for name, have, asked in _compared(settings, status):
        if have != asked:
            found.append((LABELS.get(name, name.replace("_", " ")), _shown(name, have), _shown(name, asked)))
    return found


def as_running(settings: HostSettings, status: dict[str, Any], given: Collection[str] | None) -> HostSettings:
    """`settings` with each compared setting the user did not give (None: gave all) taken from
    the running tunnel: after `up HOST --local tcp://127.0.0.1:29999`, a bare `up HOST` asks for
    nothing, and prints that tunnel's lines rather than refusing the default 9999."""
    if given is None:
        return settings
    adopted: dict[str, Any] = {
        name: have for name, have, asked in _compared(settings, status) if name not in given and (have is None or asked is None or type(have) is type(asked))
    }
    return dataclasses.replace(settings, **adopted)


def _compared(settings: HostSettings, status: dict[str, Any]) -> list[tuple[str, object, object]]:
    """(field, the running tunnel's value, the asked value) for each setting that shapes a tunnel."""
    from gt_remote.base.config import HostSettings  # only `up` compares: the light commands never load it

    running = status.get("settings") or {}
    observed = {"local_url": status.get("local"), "remote_port": status.get("remote_port")}  # what it really has
    found: list[tuple[str, object, object]] = []
    for field in dataclasses.fields(HostSettings):
        if field.name in NOT_COMPARED:
            continue
        asked = getattr(settings, field.name)
        have = observed[field.name] if observed.get(field.name) is not None else running.get(field.name, asked)
        if isinstance(have, list):
            have = tuple(have)  # JSON's lists: the back tunnels
        found.append((field.name, have, asked))
    return found


def _shown(name: str, value: object) -> object:
    if name == "resume":
        return "on" if value else "off (--no-resume)"
    if name == "back" and isinstance(value, tuple):
        return " ".join(f"--back {spec}" for spec in value) or "none"
    if name == "install_dir" and value is None:
        return "~/.local/share (the default)"
    return value


# --- the build `gt-remote upgrade` installed ------------------------------------------------


def remember_installed_build(name: str, binary: str, digest: str, running_binary: str | None) -> None:
    """After an upgrade: `up` (and the login unit) use this build, not the config's older one.

    `replaces` is what the config named when the tunnel came up; a later upgrade keeps it, so
    the record stands until the config itself names another build.
    """
    files = HostFiles(name)
    previous = _read_json(files.build)
    replaces = previous.get("replaces") if previous.get("binary") == running_binary else running_binary
    write_private(files.build, json.dumps({"host": name, "binary": binary, "digest": digest, "replaces": replaces}, indent=2))


def with_installed_build(settings: HostSettings, say: Say) -> HostSettings:
    """The config's server_binary, unless `gt-remote upgrade` installed another build since;
    a config that names a new build (or a changed build file) ends that."""
    files = HostFiles(settings.name)
    record = _read_json(files.build)
    binary = record.get("binary")
    if not isinstance(binary, str) or binary == settings.server_binary:
        return settings
    if settings.server_binary not in (None, record.get("replaces")):
        files.build.unlink(missing_ok=True)  # the config changed: it wins from now on
        return settings
    if not os.path.isfile(binary) or file_digest(binary) != record.get("digest"):
        say(f"note: the build 'gt-remote upgrade' installed ({binary}) is gone or changed here; using the config's")
        return settings
    say(f"using {binary} (build {record.get('digest')}), installed by 'gt-remote upgrade'; the config's server_binary applies again once you change it")
    return dataclasses.replace(settings, server_binary=binary)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


# --- down -------------------------------------------------------------------------------


def down(name: str, stop_server: bool, fallback: reach.Fallback | None = None, ssh_config: str | None = None, force: bool = False) -> str:
    """Stop a host's supervisor (and the remote server if asked and ours); say what happened.

    With the tunnel already down, --stop-server connects by itself: with what `up` used
    (kept after `down`), else `fallback` (the config and ssh_config), -F winning.
    """
    import signal

    files = HostFiles(name)
    cancelled = _cancel_a_bring_up_elsewhere(files)
    with HostLock(files, timeout=60):
        pid = supervisor_pid(files)
        reply = cancelled or ask(files, {"op": "stop", "stop_server": stop_server, "force": force}, timeout=30 if stop_server else 3)
        if reply is not None and reply.get("ok") is False and isinstance(reply.get("error"), dict):
            raise RemoteError(str(reply["error"].get("cause")), str(reply["error"].get("fix") or ""))  # refused: nothing stopped
        if reply is None and pid is None:
            was_known = files.record.exists()
            clean_stale(files)
            message = f"{name}: already down" + (" (cleaned up after a supervisor that had died)" if was_known else "")
            return f"{message}; {_stop_server_offline(name, fallback, ssh_config, force)}" if stop_server else message
        if reply is None and pid is not None and pid > 0:
            _signal(pid, signal.SIGTERM)
            _signal(pid, signal.SIGCONT)  # a stopped process acts on TERM only once resumed
        if not _wait_until(lambda: supervisor_pid(files) is None, _stop_grace(reply)) and pid:
            _signal(pid, signal.SIGKILL)
            _wait_until(lambda: supervisor_pid(files) is None, STOP_GRACE)
        clean_stale(files)
    if stop_server and reply is None:  # the supervisor never answered: stop the server by ourselves
        return f"{name}: down; {_stop_server_offline(name, fallback, ssh_config, force)}"
    undone = bool((reply or {}).get("bring_up_cancelled"))  # the server it was starting is stopped by the undo
    note = (reply or {}).get("server_note") if stop_server or undone else "the remote server keeps running (use --stop-server to stop it)"
    if stop_server and not undone and _server_left_running(reply or {}):
        raise errors.ServerStillRunning(
            f"{name}: the tunnel is down, but the remote server still runs: {note}",
            f"gt-remote stops only a server it started; otherwise try 'gt-remote down {shell_word(name)} --stop-server' again (it connects by itself)",
        )
    return f"{name}: down; {note}" if note else f"{name}: down"


def _cancel_a_bring_up_elsewhere(files: HostFiles) -> dict[str, Any] | None:
    """`down` while an `up` in another shell is bringing the host up. That `up` holds the lock
    for its whole bring-up, so `down` would wait for it (and, behind a stalled upload, give up
    after a minute). Its supervisor is asked, past the lock, to cancel the bring-up: it undoes
    what it started, the `up` fails and lets go of the lock, and `down` goes on once the
    supervisor has exited. The supervisor's reply, or None when no bring-up was cancelled."""
    try:
        with HostLock(files, timeout=0):
            return None  # nobody holds it: no bring-up under way in another shell
    except GtRemoteError:
        pass
    reply = ask(files, {"op": "stop", "bring_up_only": True})
    if reply is None or not reply.get("bring_up_cancelled"):
        return None
    _wait_until(lambda: supervisor_pid(files) is None, _stop_grace(reply))
    return reply


def _stop_grace(reply: dict[str, Any] | None) -> float:
    """How long the supervisor may take to exit before SIGKILL: STOP_GRACE, or longer when it
    says so (a cancelled bring-up undoes itself on the remote; killed, it would leave its
    server, relay or half an upload there)."""
    asked = (reply or {}).get("stop_within_s")
    return max(STOP_GRACE, float(asked)) if isinstance(asked, int | float) and not isinstance(asked, bool) else STOP_GRACE


def _server_left_running(reply: dict[str, Any]) -> bool:
    """Whether a --stop-server reply leaves a server running: not stopped, and not already gone."""
    if "server_running" in reply:
        return bool(reply["server_running"])
    if reply.get("server_stopped"):
        return False
    return reply.get("server_note") != "the remote server was not running"


def _stop_server_offline(name: str, fallback: reach.Fallback | None, ssh_config: str | None, force: bool = False) -> str:
    from gt_remote.runtime import reach

    settings = reach.settings_for(name, fallback, ssh_config)
    if settings is None:
        raise NotUp(f"gt-remote has no record of {name}'s remote", f"name it in the config or pass -F: 'gt-remote -F SSH_CONFIG down {shell_word(name)} --stop-server'")
    return reach.stop_server(settings, force)


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
    reply = ask(files, {"op": "reconnect", "force": force}, timeout=RECONNECT_REPLY_TIMEOUT)
    if reply is None:
        if supervisor_pid(files) is not None:
            raise NotUp(f"the supervisor of {name} does not answer", f"see 'gt-remote status {shell_word(name)}'")
        raise NotUp(f"{name} is not up", f"run 'eval \"$(gt-remote up {shell_word(name)})\"' first")
    if reply.get("coming_up"):
        raise error_from_dict(reply["error"])
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
    record = read_record(files)
    last = record.get("status", {})
    pid = supervisor_pid(files)
    if pid is not None:
        last_error = f"the supervisor (pid {pid}) is alive but does not answer; it may be stopped (SIGSTOP)"
    elif last.get("exit_cause"):  # its watchdog ended it and said why
        last_error = f"the supervisor (pid {last.get('supervisor_pid')}) exited: {last['exit_cause']}; run '{up_again(name)}' to bring the tunnel back"
    elif record:
        last_error = f"the supervisor (pid {last.get('supervisor_pid')}) is not running: it died or was killed; run '{up_again(name)}' to bring the tunnel back"
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
        "relay_streams": None,
        "streams_resumed": last.get("streams_resumed", 0),
        "bytes_replayed": last.get("bytes_replayed", 0),
        "last_wake": last.get("last_wake"),
        "last_recovery_s": last.get("last_recovery_s"),
        "exports": [],
    }


def all_statuses(only: str | None = None) -> list[dict[str, Any]]:
    names = [only] if only else known_host_names()
    return [host_status(name) for name in names]


def require_up(name: str) -> dict[str, Any]:
    """The live status of a host whose tunnel can be used now (or comes back by itself)."""
    status = live_status(HostFiles(name))
    if status is None:
        raise NotUp(f"{name} is not up", f"run 'eval \"$({up_again(name)})\"' first")
    if status["state"] == "connecting":
        raise NotUp(f"{name} is still coming up ({status.get('step') or 'connecting'})", f"wait until 'gt-remote status {shell_word(name)}' says up, then try again")
    if status["state"] == "failed":
        raise NotUp(f"{name} has failed: {status['last_error']}", f"fix that, then run 'gt-remote down {shell_word(name)}' and 'gt-remote up {shell_word(name)}'")
    return status


def up_again(name: str) -> str:
    """`gt-remote up NAME` as a hint, with the -F FILE the host's tunnel was last brought up
    with (from its record): without it, `up` would read another ssh_config."""
    settings = (read_record(HostFiles(name)).get("status") or {}).get("settings") or {}
    config = settings.get("ssh_config") if isinstance(settings, dict) else None
    return f"gt-remote {f'-F {shell_word(config)} ' if isinstance(config, str) and config else ''}up {shell_word(name)}"


def is_known(name: str) -> bool:
    """Whether gt-remote has any trace of this host: a live supervisor, a record or a log."""
    files = HostFiles(name)
    return files.record.exists() or files.log.exists() or supervisor_pid(files) is not None or files.control.exists()
