"""The cost section: CPU seconds per GiB forwarded and per 10,000 round trips, a figure the
machine's noise does not move the way it moves wall-clock times.

Each tunnel gets a container of its own, so every sshd process in it serves that tunnel
alone. CPU is user + sys from each process's own /proc/PID/stat (its rusage): the local
end (gt-remote's supervisor, or ssh), and inside the container the sshd processes of the
session and gt-remote's relay. The ccmux-server stand-in answering is the same for all and
is left out. A workload's cost is the difference across it.
"""

from __future__ import annotations

import asyncio
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
    if "relay_agent.py" in cmdline:
        return "relay"
    return None


def remote_cpu(host: SshHost) -> dict[str, float]:
    ticks: dict[str, int] = {}
    for line in host.sh(PROCESSES).splitlines():
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
