"""Noticing sleep and network changes: the detector with injected clocks, netlink for real.

The netlink tests run in a network namespace of their own (`unshare -rn`), so the changes
they make never touch this machine's real network.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import subprocess
import sys
import textwrap

from gt_remote.tunnel.wake import (
    IFF_UP,
    IFINFOMSG,
    NLMSG_HEADER,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMSG,
    SleepDetector,
    WakeEvent,
    WakeWatcher,
    describe_netlink,
)
from tests.testbed import REPO


class FakeClocks:
    """A monotonic clock that stops in sleep, and the clocks that keep running."""

    def __init__(self) -> None:
        self.monotonic = 1000.0
        self.boottime = 5000.0
        self.wall = 1.7e9

    def tick(self, seconds: float = 1.0, boottime_drift: float = 0.0, wall_drift: float = 0.0) -> None:
        self.monotonic += seconds
        self.boottime += seconds + boottime_drift
        self.wall += seconds + wall_drift

    def sleep(self, seconds: float) -> None:
        self.boottime += seconds
        self.wall += seconds

    def detector(self, boottime: bool = True) -> SleepDetector:
        return SleepDetector(lambda: self.monotonic, (lambda: self.boottime) if boottime else None, lambda: self.wall)


def test_sleep_is_detected_by_boottime() -> None:
    clocks = FakeClocks()
    detector = clocks.detector()
    clocks.tick()
    assert detector.check() is None
    clocks.sleep(600)
    clocks.tick()
    slept = detector.check()
    assert slept is not None and abs(slept - 600) < 1e-6
    clocks.tick()
    assert detector.check() is None  # reported once, not on every tick after


def test_no_false_positive_on_normal_ticks_drift_or_a_stalled_loop() -> None:
    clocks = FakeClocks()
    detector = clocks.detector()
    for _ in range(100):
        clocks.tick(boottime_drift=0.001, wall_drift=0.5)  # wall time slewed or stepped: boottime decides
        assert detector.check() is None
    clocks.tick(seconds=30)  # the loop was blocked for 30 s, awake: both clocks ran
    assert detector.check() is None


def test_wall_clock_jump_is_the_fallback_without_boottime() -> None:
    clocks = FakeClocks()
    detector = clocks.detector(boottime=False)
    assert detector.source == "wall clock"
    clocks.tick(wall_drift=0.2)
    assert detector.check() is None
    clocks.sleep(45)
    clocks.tick()
    slept = detector.check()
    assert slept is not None and abs(slept - 45) < 1e-6
    clocks.tick(wall_drift=-3600)  # the clock set back an hour: not a sleep
    assert detector.check() is None


def test_the_watcher_reports_a_sleep_as_a_wake_event() -> None:
    clocks = FakeClocks()
    detector = clocks.detector()

    async def scenario() -> WakeEvent:
        seen: asyncio.Queue[WakeEvent] = asyncio.Queue()
        watcher = WakeWatcher(seen.put_nowait, detector=detector, tick=0.01)
        task = asyncio.create_task(watcher.run())
        clocks.sleep(120)
        try:
            return await asyncio.wait_for(seen.get(), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    event = asyncio.run(scenario())
    assert event.kind == "sleep" and "120 s" in event.detail


def _link_message(change: int, flags: int = IFF_UP) -> bytes:
    body = IFINFOMSG.pack(0, 1, 1, flags, change)
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), RTM_NEWLINK, 0, 0, 0) + body


def _route_message(table: int = 254, protocol: int = 16, dst_len: int = 0) -> bytes:
    body = RTMSG.pack(socket.AF_INET, dst_len, 0, 0, table, protocol, 0, 1, 0)
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), RTM_NEWROUTE, 0, 0, 0) + body


def test_link_statistics_and_virtual_interfaces_are_ignored_but_carrier_changes_count() -> None:
    physical = lambda index: True  # noqa: E731
    assert describe_netlink(_link_message(change=0), physical) == []
    assert describe_netlink(_link_message(change=IFF_UP, flags=0), physical) == ["interface lo down"]
    both = _link_message(change=0) + _link_message(change=IFF_UP, flags=IFF_UP | 0x10000)
    assert describe_netlink(both, physical) == ["interface lo up"]
    assert describe_netlink(both, lambda index: False) == []  # a veth of a container starting
    assert describe_netlink(b"\x00" * 5) == [] and describe_netlink(struct.pack("=IHHII", 0, 20, 0, 0, 0)) == []


def test_only_routes_that_can_move_the_path_count() -> None:
    assert describe_netlink(_route_message()) == ["route added (IPv4, default)"]  # from DHCP
    assert describe_netlink(_route_message(protocol=2, dst_len=24)) == []  # the kernel's, for an address
    assert describe_netlink(_route_message(table=255, protocol=3)) == []  # the local table


NAMESPACE_SCRIPT = textwrap.dedent(
    """
    import asyncio, subprocess
    from gt_remote.tunnel.wake import NetworkWatcher

    def ip(*args):
        subprocess.run(["ip", *args], check=True)

    async def main():
        seen = asyncio.Queue()
        watcher = NetworkWatcher(seen.put_nowait, settle=0.3)
        assert watcher.start(), "netlink did not open"
        ip("link", "set", "lo", "up")
        ip("addr", "add", "10.9.9.1/24", "dev", "lo")
        ip("addr", "add", "fd00::1/64", "dev", "lo")
        ip("route", "add", "default", "via", "10.9.9.254", "dev", "lo")
        print("burst:", await asyncio.wait_for(seen.get(), 10), flush=True)
        ip("route", "add", "10.8.0.0/16", "dev", "lo")
        print("route:", await asyncio.wait_for(seen.get(), 10), flush=True)
        ip("addr", "del", "10.9.9.1/24", "dev", "lo")
        print("removed:", await asyncio.wait_for(seen.get(), 10), flush=True)
        watcher.close()

    asyncio.run(main())
    """
)


def test_network_changes_arrive_over_netlink_in_a_private_namespace() -> None:
    """Real kernel messages: a burst is reported once, later changes each on their own."""
    assert shutil.which("unshare") and shutil.which("ip"), "needs util-linux unshare and iproute2"
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--net", sys.executable, "-c", NAMESPACE_SCRIPT],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert lines["burst"] == "address added on lo (IPv4/24) and 2 more", lines  # three changes, one report
    assert lines["route"] == "route added (IPv4, /16)", lines
    assert lines["removed"] == "address removed on lo (IPv4/24)", lines  # lo itself, 127.0.0.1, ::1: not counted
