"""The remote's load, for `pick`, where no relay can read it (plain mode), and the server's
session count on the channel of a direct health Ping.

Where the relay runs, its `load` op reads the figures in its own process (no process is
started: gt_remote/remote/relay/relay_agent.py). Without it, the port-and-lease script that
plain mode runs at each health check anyway (gt_remote/remote/lease.py) ends with
LOAD_FACTS, which reads the same files with the shell's own `read`: the script's shell is
the one process it costs. LOAD_SCRIPT is LOAD_FACTS alone, for a relay that lacks the op (one
of another gt-remote version). gt_remote/base/load.py turns the facts into figures.
"""

from __future__ import annotations

from typing import Any

import asyncssh

from gt_remote.ccmux import wire
from gt_remote.remote.scripts import run_script

# Shell builtins only (read, case, test): no program is started. The CPU list is this shell's
# own affinity, as the relay's sched_getaffinity; in a container (Docker's or Podman's marker
# file), /proc/loadavg is the host's, so the cgroup's CPU counter and the clock are read too.
LOAD_FACTS = r"""
{
read -r load_one load_rest < /proc/loadavg && echo "load_average=$load_one"
while read -r load_key load_value load_unit; do
    case "$load_key" in
        MemTotal:) echo "mem_total_kb=$load_value" ;;
        MemAvailable:) echo "mem_available_kb=$load_value" ;;
    esac
done < /proc/meminfo
while read -r load_key load_value; do
    [ "$load_key" = "Cpus_allowed_list:" ] && echo "cpus_allowed=$load_value"
done < /proc/self/status
if [ -f /.dockerenv ] || [ -f /run/.containerenv ]; then
    echo "container=1"
    read -r load_up load_idle < /proc/uptime && echo "uptime_s=$load_up"
    if [ -r /sys/fs/cgroup/cpu.stat ]; then
        while read -r load_key load_value; do
            [ "$load_key" = usage_usec ] && echo "cgroup_cpu_us=$load_value"
        done < /sys/fs/cgroup/cpu.stat
    elif [ -r /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then
        read -r load_value < /sys/fs/cgroup/cpuacct/cpuacct.usage && echo "cgroup_cpu_ns=$load_value"
    elif [ -r /sys/fs/cgroup/cpu,cpuacct/cpuacct.usage ]; then
        read -r load_value < /sys/fs/cgroup/cpu,cpuacct/cpuacct.usage && echo "cgroup_cpu_ns=$load_value"
    fi
fi
} 2>/dev/null
"""
LOAD_SCRIPT = LOAD_FACTS
LOAD_KEYS = ("load_average", "mem_total_kb", "mem_available_kb", "cpus_allowed", "container", "uptime_s", "cgroup_cpu_us", "cgroup_cpu_ns")


def load_fields(fields: dict[str, str]) -> dict[str, str]:
    """A script's `key=value` answers that are load facts."""
    return {key: value for key, value in fields.items() if key in LOAD_KEYS}


async def read_by_script(conn: asyncssh.SSHClientConnection, timeout: float) -> dict[str, str]:
    """The load facts from LOAD_SCRIPT: for a relay that has no load op."""
    result = await run_script(conn, LOAD_SCRIPT, timeout=timeout)
    return load_fields(result.fields)


async def ping_and_count(conn: asyncssh.SSHClientConnection, port: int, timeout: float, socket: str | None = None) -> tuple[float, int | None]:
    """A health Ping straight to the server, then its session count (GetServerStatus) on the
    same channel: (the Ping's round trip, the sessions or None if it did not say)."""
    import asyncio

    from gt_remote.remote.probe import open_server  # probe imports lease, which imports this module

    reader, writer = await asyncio.wait_for(open_server(conn, port, socket), timeout)
    try:
        rtt = await wire.ping(reader, writer, timeout)
        return rtt, await sessions_on(reader, writer, timeout)
    finally:
        writer.close()


async def sessions_on(reader: Any, writer: Any, timeout: float) -> int | None:
    """The server's session count on an open stream, or None: a server that does not answer
    GetServerStatus still counts as answering (its Ping did), with no count."""
    import asyncio

    from gt_remote.base.errors import PingFailed

    try:
        return (await wire.server_status(reader, writer, timeout)).session_count
    except (PingFailed, TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
        return None
