"""`gt-remote clean [HOST] [--dry-run]`: remove what gt-remote no longer needs, on both machines.

Remote: uploaded builds other than the running ones and the newest, stale pid files and
empty or half-uploaded install directories. Local: the files of hosts that are not up
(records, logs, lock, pid and socket files). A host that is up keeps its local files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gt_remote import control, reach
from gt_remote.base.config import HostSettings
from gt_remote.base.errors import GtRemoteError
from gt_remote.base.paths import host_key, remembered_host_names, runtime_dir, state_dir
from gt_remote.bootstrap.remote import run_script

Say = Callable[[str], None]

CLEAN_SCRIPT = r"""
server=$1 dry=$2
running=""
for pidfile in "$state_dir/$server"-*.pid; do
    [ -f "$pidfile" ] || continue
    port=${pidfile##*/"$server"-}; port=${port%.pid}
    pid=$(cat "$pidfile")
    if is_our_server "$pid" "$port"; then
        for word in $(cmdline_of "$pid"); do case "$word" in */"$server") running="$running $word" ;; esac; done
    else
        echo "removed=$pidfile (stale pid file)"
        [ "$dry" = 1 ] || rm -f "$pidfile"
    fi
done
newest=""
for build in "$install_root"/*/"$server"; do
    [ -x "$build" ] || continue
    if [ -z "$newest" ] || [ "$build" -nt "$newest" ]; then newest=$build; fi
done
for dir in "$install_root"/*/; do
    dir=${dir%/}
    [ -d "$dir" ] || continue
    leftover=1
    for entry in "$dir"/* "$dir"/.[!.]*; do
        [ -e "$entry" ] || continue
        case "${entry##*/}" in .*.part-*) ;; *) leftover=0 ;; esac
    done
    if [ "$leftover" = 1 ]; then
        echo "removed=$dir (empty or half-uploaded)"
        [ "$dry" = 1 ] || rm -rf "$dir"
        continue
    fi
    build="$dir/$server"
    [ -e "$build" ] || continue
    case " $running " in *" $build "*) echo "kept=$build (running)"; continue ;; esac
    if [ "$build" = "$newest" ]; then echo "kept=$build (newest; the next up starts it)"; continue; fi
    echo "removed=$dir (an old build)"
    [ "$dry" = 1 ] || rm -rf "$dir"
done
"""


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failed: bool = False


def clean(host: str | None, fallback: reach.Fallback, ssh_config: str | None, dry_run: bool, say: Say) -> Report:
    """Remote first (it needs the local records to reconnect), then local."""
    report = Report()
    verb = "would remove" if dry_run else "removed"
    for name in [host] if host else remembered_host_names():
        settings = reach.settings_for(name, fallback, ssh_config)
        if settings is not None:
            _clean_remote(settings, dry_run, verb, report, say)
    for key in [host_key(host)] if host else _local_keys():
        _clean_local(key, dry_run, verb, report)
    if not report.lines:
        report.lines.append("nothing to clean")
    return report


def _clean_remote(settings: HostSettings, dry_run: bool, verb: str, report: Report, say: Say) -> None:
    say(f"cleaning up on {settings.name}")
    try:
        result = reach.run_on(settings, lambda conn: run_script(conn, CLEAN_SCRIPT, settings.server, "1" if dry_run else "0"))
    except GtRemoteError as error:
        report.failed = True
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
