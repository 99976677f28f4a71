"""The cost section: CPU seconds per GiB forwarded and per 10,000 round trips, a figure the
machine's noise does not move the way it moves wall-clock times.

Each tunnel gets a container of its own, so every sshd process in it serves that tunnel
alone. CPU is user + sys from each process's own /proc/PID/stat (its rusage): the local
end (gt-remote's supervisor, or ssh), and inside the container the sshd processes of the
session (Dropbear's, on a Dropbear host), gt-remote's relay, and the relay's bridge where a
tunnel uses the stdio transport. The ccmux-server stand-in answering is the same for all and
is left out. A workload's cost is the difference across it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from bench import probes
from bench.tunnels import Tunnel
from tests.testbed import SshHost

# One line per process inside the container: its command line, a tab, its stat line.
PROCESSES = r"""for p in /proc/[0-9]*; do
    line=$(cat "$p/stat" 2>/dev/null) || continue
    printf '%s\t%s\n' "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" "$line"
done"""


def role(cmdline: str) -> str | None:
    """What a process inside the container does for the tunnel; None: not the tunnel's."""
    if cmdline.startswith("sshd: "):  # a session's monitor and its child; not the listener
        return "sshd"
    if cmdline.startswith("/usr/sbin/dropbear "):  # Dropbear's listener and its sessions (it never renames them)
        return "sshd"
    if "relay_agent.py" in cmdline:  # the relay, or its bridge for the stdio transport (--mux)
        return "bridge" if " --mux" in cmdline else "relay"
    return None


_INIT_PIDS: dict[str, int] = {}  # container id -> its init's pid on this machine


def _init_pid(host: SshHost) -> int:
    container = host.wrapped
    if container.id not in _INIT_PIDS:
        container.reload()  # its attributes as the engine has them now, the running init's pid among them
        _INIT_PIDS[container.id] = int(container.attrs["State"]["Pid"])
    return _INIT_PIDS[container.id]


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode(errors="replace")
    except OSError:
        return None


def processes_seen_from_here(init: int) -> list[str] | None:
    """The container's processes as PROCESSES prints them, read from this machine's /proc (world-
    readable, no `docker exec`: that starts runc and its threads on the machine being measured,
    each time): its init and every descendant, which is every process its server's sessions
    start, and those they orphan, which the container's init adopts. None if init is gone."""
    stats: dict[int, str] = {}
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _read(f"/proc/{entry.name}/stat")
            if stat is not None and ")" in stat:
                pid = int(entry.name)
                stats[pid] = stat
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(pid)
    if init not in stats:
        return None
    lines, todo = [], [init]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        cmdline = _read(f"/proc/{pid}/cmdline")
        if cmdline is not None:
            lines.append(cmdline.replace("\0", " ") + "\t" + stats[pid])
    return lines


def remote_cpu(host: SshHost) -> dict[str, float]:
    ticks: dict[str, int] = {}
    seen = processes_seen_from_here(_init_pid(host))
    for line in seen if seen is not None else host.sh(PROCESSES).splitlines():
        cmdline, _, stat = line.partition("\t")
        kind = role(cmdline)
        if kind is None or ")" not in stat:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks[kind] = ticks.get(kind, 0) + int(fields[11]) + int(fields[12])
    return {kind: value / probes.CLOCK_TICKS for kind, value in ticks.items()}


def cpu(tunnel: Tunnel, host: SshHost) -> dict[str, float]:
    local = "supervisor" if tunnel.gt is not None else "ssh"
    return {local: sum(probes.cpu_seconds(pid) for pid in tunnel.pids()), **remote_cpu(host)}


def across(tunnel: Tunnel, host: SshHost, work: Any) -> dict[str, float]:
    before = cpu(tunnel, host)
    work()
    after = cpu(tunnel, host)
    return {kind: after[kind] - before.get(kind, 0.0) for kind in after}


def measure(tunnel: Tunnel, host: SshHost, pings: int, mib: int) -> dict[str, Any]:
    """CPU seconds by process kind across `pings` sequential Pings, then across `mib` MiB echoed."""
    round_trips = across(tunnel, host, lambda: asyncio.run(probes.ping_rtts(tunnel.port, pings)))
    forwarded = across(tunnel, host, lambda: asyncio.run(probes.echo_throughput(tunnel.port, mib)))
    return {"round_trips": round_trips, "echo": forwarded}


def per_unit(result: dict[str, Any], pings: int, mib: int) -> dict[str, dict[str, float]]:
    """CPU seconds per 10,000 round trips and per GiB echoed, by process kind."""
    return {
        "per_10k_round_trips": {kind: value * 10_000 / pings for kind, value in result["round_trips"].items()},
        "per_gib": {kind: value * 1024 / mib for kind, value in result["echo"].items()},
    }
