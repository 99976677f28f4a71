"""A host's load, as its supervisor keeps it and `pick` reads it: the ccmux server's session
count, the CPU load, the memory, the round trip.

The remote only reports raw facts, read from /proc without starting a process: the relay's
`load` op where a relay runs (gt_remote/remote/relay/relay_agent.py), else the port-and-lease
script that plain mode runs at each health check anyway, with shell builtins only
(gt_remote/remote/load.py). This module turns either answer into the figures `status` shows.
Pure: no IO, so the rules are unit-tested on their own.

The CPU load is the 1-minute load average over the CPUs this account may use
(sched_getaffinity). In a Docker or Podman container /proc/loadavg is the whole host's, so
there it is the container's own CPU use over the last health interval, from its cgroup's
counter, over the same CPUs: `cpu_from` says which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gt_remote.base.sanitize import ascii_int

MAX_CPUS = 1 << 16  # more than any machine has: a larger count is not a count
MAX_LOAD = 1e6


@dataclass(frozen=True)
class Facts:
    """What the remote said at one reading; None where it could not say."""

    load_average: float | None = None  # 1-minute, from /proc/loadavg
    cpus: int | None = None
    mem_total_kb: int | None = None
    mem_available_kb: int | None = None
    container: bool = False
    cpu_busy: float | None = None  # CPUs busy on average since the relay's last reading (containers)
    cgroup_cpu_s: float | None = None  # the container's cumulative CPU seconds (the script's raw counter)
    uptime_s: float | None = None  # /proc/uptime: the remote's own clock for the counter's deltas


def _number(value: object, most: float = MAX_LOAD) -> float | None:
    """A finite number from 0 to `most`, from JSON (a number) or a script (text); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not 0 < len(text) <= 32 or not all(c in "0123456789." for c in text):
            return None
        try:
            value = float(text)
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0 <= number <= most else None


def _count(value: object, most: int = 1 << 62) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= most else None
    if isinstance(value, str):
        number = ascii_int(value.strip())
        return number if number is not None and number <= most else None
    return None


def cpus_in_list(text: str) -> int | None:
    """The CPUs of a kernel CPU list (`Cpus_allowed_list: 0-3,8`), counted; None if malformed."""
    total = 0
    for part in text.strip().split(","):
        first, dash, last = part.partition("-")
        low = ascii_int(first.strip(), 6)
        high = ascii_int(last.strip(), 6) if dash else low
        if low is None or high is None or high < low:
            return None
        total += high - low + 1
    return total if 0 < total <= MAX_CPUS else None


def facts_from(answer: Mapping[str, Any]) -> Facts:
    """The relay's JSON answer or the script's `key=value` fields, checked: a field that is not
    a plausible figure counts as unknown, never as a crash."""
    cpus = _count(answer.get("cpus"), MAX_CPUS)
    if cpus is None and isinstance(answer.get("cpus_allowed"), str):
        cpus = cpus_in_list(answer["cpus_allowed"])
    cgroup_s = _number(answer.get("cgroup_cpu_s"), 1e12)
    if cgroup_s is None and answer.get("cgroup_cpu_ns") is not None:  # cgroup v1's cpuacct.usage
        ns = _count(answer.get("cgroup_cpu_ns"))
        cgroup_s = ns / 1e9 if ns is not None else None
    if cgroup_s is None and answer.get("cgroup_cpu_us") is not None:  # cgroup v2's cpu.stat usage_usec
        us = _count(answer.get("cgroup_cpu_us"))
        cgroup_s = us / 1e6 if us is not None else None
    container = answer.get("container")
    return Facts(
        load_average=_number(answer.get("load_average")),
        cpus=cpus if cpus else None,
        mem_total_kb=_count(answer.get("mem_total_kb")),
        mem_available_kb=_count(answer.get("mem_available_kb")),
        container=container is True or container == "1",
        cpu_busy=_number(answer.get("cpu_busy"), MAX_CPUS),
        cgroup_cpu_s=cgroup_s,
        uptime_s=_number(answer.get("uptime_s"), 1e12),
    )


class LoadMeter:
    """The figures from one reading after another. In a container without the relay's own
    computation, the CPU use is the cgroup counter's growth between this reading and the last."""

    def __init__(self) -> None:
        self._previous: tuple[float, float] | None = None  # (uptime_s, cgroup_cpu_s) of the last reading

    def figures(self, facts: Facts, sessions: int | None, read_by: str) -> dict[str, Any]:
        """The `load` object of `status` but for `rtt_ms`, `at` and `age_s` (the supervisor's)."""
        cpus = facts.cpus
        if facts.container:
            busy = facts.cpu_busy if facts.cpu_busy is not None else self._busy_since_last(facts)
            cpu_load = busy / cpus if busy is not None and cpus else None
            cpu_from = "cgroup"
        else:
            cpu_load = facts.load_average / cpus if facts.load_average is not None and cpus else None
            cpu_from = "loadavg"
        total, available = facts.mem_total_kb, facts.mem_available_kb
        if total is not None and available is not None and available > total:
            available = total
        return {
            "sessions": sessions,
            "cpu_load": None if cpu_load is None else round(cpu_load, 3),
            "cpu_from": cpu_from,
            "load_average": facts.load_average,
            "cpus": cpus,
            "mem_available_mb": None if available is None else available // 1024,
            "mem_total_mb": None if total is None else total // 1024,
            "read_by": read_by,
        }

    def _busy_since_last(self, facts: Facts) -> float | None:
        if facts.cgroup_cpu_s is None or facts.uptime_s is None:
            return None
        previous, self._previous = self._previous, (facts.uptime_s, facts.cgroup_cpu_s)
        if previous is None:
            return None
        elapsed, used = facts.uptime_s - previous[0], facts.cgroup_cpu_s - previous[1]
        if elapsed <= 0 or used < 0:  # a restarted container: its counter began again
            return None
        return used / elapsed
