"""`gt-remote clean [HOST] [--dry-run] [--forget]`: remove what gt-remote no longer needs, on both machines.

Remote: uploaded builds other than the running ones and the newest (of those that once answered
a Ping: a build that never did is no "newest", though one younger than an hour is kept, as an
`up` may be starting it), relay versions neither running nor this gt-remote's, stale pid files,
and partial uploads older than an hour that no running upload holds open (a younger one may be
another machine's `up` in flight). Builds and relays are looked for where `up` put them:
<install_dir>/gt-remote/{servers,relay}, the host's install_dir as `up` last used it
(reach.run_on tells the prelude). A symbolic link there is never followed nor removed:
gt-remote makes none, so one points at something of the user's. Running builds are found through
/proc/PID/exe and NUL-split /proc/PID/cmdline, so a home path with spaces cannot fool it.
Every host gt-remote ever brought up is reached (reach.reached_host_names), also after `down
--stop-server` and after a clean: its builds outlive its server. `--forget` ends that for one host.
Local: the files of hosts that are not up (records, logs, lock, pid and socket files). A host
that is up keeps its local files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gt_remote.base.config import HostSettings
from gt_remote.base.errors import GtRemoteError, UsageError, shell_word
from gt_remote.base.paths import host_key, remembered_host_names, runtime_dir, state_dir
from gt_remote.remote.relay import deploy as remote_relay
from gt_remote.remote.scripts import run_script
from gt_remote.runtime import control, reach

Say = Callable[[str], None]

CLEAN_SCRIPT = r"""
# $install_root and $relay_root come from the prelude: <install dir>/gt-remote/{servers,relay}.
server=$1 dry=$2 relay_now=$3
nl='
'
# What this user's processes run and hold, one path a line (so a path with spaces stays whole):
# each process's executable, its arguments split on NUL (argv[0] is the build, a relay's
# script is an argument), and every file it has open (an upload in flight holds its .part).
in_use="" held=""
if [ -d /proc/self ]; then
    if find /proc/self/exe -maxdepth 0 -printf '%l\n' >/dev/null 2>&1; then  # GNU find: one process
        in_use=$(find /proc/[0-9]*/exe -maxdepth 0 -printf '%l\n' 2>/dev/null)
        held=$(find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 -printf '%l\n' 2>/dev/null)
    else
        for proc in /proc/[0-9]*; do
            exe=$(readlink "$proc/exe" 2>/dev/null) && in_use="$in_use$nl$exe"
            for fd in "$proc"/fd/*; do
                target=$(readlink "$fd" 2>/dev/null) && held="$held$nl$target"
            done
        done
    fi
    in_use="$in_use$nl$(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' '\n')"
    listed() { printf '%s\n' "$2" | grep -Fxq -e "$1" -e "$1 (deleted)"; }
else  # no /proc (macOS): whole command lines; a path followed by a space or the line's end
    in_use=$(ps -o args= -U "$(id -u)" 2>/dev/null)
    listed() { printf '%s\n' "$2" | grep -Fq -e "$1 " || printf '%s\n' "$2" | grep -Fxq -e "$1"; }
fi
runs() { listed "$1" "$in_use"; }
# A partial upload stays while it is younger than an hour or a running upload holds it open:
# another machine (or another `up`) may be writing it right now.
part_in_flight() {
    [ -n "$(find "$1" -prune -mmin -60 2>/dev/null)" ] && return 0
    [ -n "$held" ] && listed "$1" "$held"
}
# A symbolic link is reported and left alone: clean never descends through one (its target is
# the user's, not ours) nor removes it. Exit 0 when $1 is one.
a_link() {
    [ -L "$1" ] || return 1
    echo "kept=$1 (a symbolic link; clean never follows one)"
}
# Removes a directory's stale partial uploads (regular files only); says whether anything
# else is left in it.
sweep_parts() {
    others=0
    for entry in "$1"/* "$1"/.[!.]*; do
        [ -e "$entry" ] || [ -L "$entry" ] || continue
        case "${entry##*/}" in
            .*.part-*)
                if [ -L "$entry" ] || [ ! -f "$entry" ]; then others=1; continue; fi
                if part_in_flight "$entry"; then
                    echo "kept=$entry (an upload in progress)"; others=1
                else
                    echo "removed=$entry (a partial upload)"
                    [ "$dry" = 1 ] || rm -f "$entry"
                fi ;;
            *) others=1 ;;
        esac
    done
    [ "$others" = 1 ]
}
for pidfile in "$state_dir/$server"-*.pid; do
    [ -f "$pidfile" ] || continue
    port=${pidfile##*/"$server"-}; port=${port%.pid}
    pid=$(cat "$pidfile")
    if ! is_our_server "$pid" "$port"; then
        echo "removed=$pidfile (stale pid file)"
        [ "$dry" = 1 ] || rm -f "$pidfile"
    fi
done
# The roots themselves: a link in place of one is not descended into at all.
servers_ok=1 relays_ok=1
if a_link "$gt_base/gt-remote"; then servers_ok=0 relays_ok=0; fi
if [ "$servers_ok" = 1 ] && a_link "$install_root"; then servers_ok=0; fi
if [ "$relays_ok" = 1 ] && a_link "$relay_root"; then relays_ok=0; fi
# The newest of the builds that once answered a Ping (mark_answered): the one the next `up` starts.
newest=""
for build in "$install_root"/*/"$server"; do
    [ "$servers_ok" = 1 ] && [ -x "$build" ] && [ ! -L "$build" ] && [ ! -L "${build%/*}" ] && [ -e "$build.answered" ] || continue
    if [ -z "$newest" ] || [ "$build" -nt "$newest" ]; then newest=$build; fi
done
for dir in "$install_root"/*; do
    [ "$servers_ok" = 1 ] || break
    a_link "$dir" && continue
    [ -d "$dir" ] || continue
    if ! sweep_parts "$dir"; then
        echo "removed=$dir (empty or half-uploaded)"
        [ "$dry" = 1 ] || rm -rf "$dir"
        continue
    fi
    build="$dir/$server"
    [ -e "$build" ] || continue
    if runs "$build"; then echo "kept=$build (running)"; continue; fi
    if [ "$build" = "$newest" ]; then echo "kept=$build (newest; the next up starts it)"; continue; fi
    if [ -e "$build.answered" ] || [ -L "$build.answered" ]; then
        echo "removed=$dir (an old build)"
    elif [ -n "$(find "$build" -prune -mmin -60 2>/dev/null)" ]; then
        echo "kept=$build (it never answered a Ping yet; an up may be starting it)"; continue
    else
        echo "removed=$dir (a build that never answered a Ping)"
    fi
    [ "$dry" = 1 ] || rm -rf "$dir"
done
for dir in "$relay_root"/*; do
    [ "$relays_ok" = 1 ] || break
    a_link "$dir" && continue
    [ -d "$dir" ] || continue
    if ! sweep_parts "$dir"; then
        echo "removed=$dir (empty or half-uploaded relay)"
        [ "$dry" = 1 ] || rm -rf "$dir"
        continue
    fi
    agent="$dir/relay_agent.py"
    if runs "$agent"; then echo "kept=$agent (running)"; continue; fi
    if [ "${dir##*/}" = "$relay_now" ]; then echo "kept=$agent (this gt-remote's relay)"; continue; fi
    echo "removed=$dir (an old relay version)"
    [ "$dry" = 1 ] || rm -rf "$dir"
done
"""


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failed: bool = False


def clean(host: str | None, fallback: reach.Fallback, ssh_config: str | None, dry_run: bool, say: Say, forget: bool = False) -> Report:
    """Remote first (it needs the local records to reconnect), then local; then, with `forget`
    (HOST only), the record of how to reach HOST's remote, so no later clean connects there."""
    if forget and not host:
        raise UsageError("--forget names the host to forget", "run 'gt-remote clean HOST --forget'")
    report = Report()
    verb = "would remove" if dry_run else "removed"
    for name in [host] if host else sorted(set(remembered_host_names()) | set(reach.reached_host_names())):
        settings = reach.settings_for(name, fallback, ssh_config)
        if settings is not None:
            _clean_remote(settings, dry_run, verb, report, say, last_time=forget)
    for key in [host_key(host)] if host else _local_keys():
        _clean_local(key, dry_run, verb, report)
    if forget and host:
        report.lines.append(_forget(host, dry_run))
    if not report.lines:
        report.lines.append("nothing to clean")
    return report


def _forget(host: str, dry_run: bool) -> str:
    if dry_run:
        return f"{host}: would forget its remote; later cleans would not connect there"
    if reach.forget_reached(host):
        return f"{host}: forgot its remote; later cleans do not connect there (until 'gt-remote up {shell_word(host)}' again)"
    return f"{host}: gt-remote had no record of its remote"


def _clean_remote(settings: HostSettings, dry_run: bool, verb: str, report: Report, say: Say, last_time: bool = False) -> None:
    """`last_time` (--forget): a remote that cannot be reached (a machine gone for good) is
    said, not a failure: the user is forgetting it."""
    say(f"cleaning up on {settings.name}")
    try:
        relay_now = remote_relay.agent_digest()
        result = reach.run_on(settings, lambda conn: run_script(conn, CLEAN_SCRIPT, settings.server, "1" if dry_run else "0", relay_now))
    except GtRemoteError as error:
        report.failed = report.failed or not last_time
        report.lines.append(f"{settings.name}: could not clean up the remote: {error}")
        return
    for line in result.stdout.splitlines():
        kind, _, what = line.partition("=")
        if kind == "removed":
            report.lines.append(f"{settings.name}: {verb} {what}")
        elif kind == "kept":
            report.lines.append(f"{settings.name}: kept {what}")


def _local_keys() -> list[str]:
    return sorted(_local_files_by_key())


LOCAL_FILES = re.compile(r"^(?P<key>[^.].*?)\.(json|pid|lock|sock|log(\.\d+)?)$")


def _local_files_by_key() -> dict[str, list[Path]]:
    """The files HostFiles names, grouped by host key; anything else there is left alone."""
    found: dict[str, list[Path]] = {}
    for directory in (state_dir() / "hosts", state_dir() / "remotes", state_dir() / "builds", state_dir() / "logs", runtime_dir()):
        for path in sorted(directory.iterdir()) if directory.is_dir() else []:
            match = LOCAL_FILES.match(path.name)
            if match and (path.is_file() or path.is_socket()):
                found.setdefault(match["key"], []).append(path)
    return found


def _clean_local(key: str, dry_run: bool, verb: str, report: Report) -> None:
    pid = control.supervisor_alive(runtime_dir() / f"{key}.pid")
    if pid is not None:
        return  # up (or stopped): its files are in use
    for path in _local_files_by_key().get(key, []):
        report.lines.append(f"local: {verb} {path}")
        if not dry_run:
            path.unlink(missing_ok=True)
