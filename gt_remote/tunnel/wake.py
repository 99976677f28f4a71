"""Noticing that the machine slept or changed networks, so the link is checked at once.

Timers do not run while a laptop sleeps, so after waking a dead SSH connection would only be
noticed after keepalive x 3. Two cheap signals say "check now" instead:

- sleep: a clock that runs during suspend (Linux CLOCK_BOOTTIME; elsewhere wall time) has
  advanced more than the monotonic clock, which stops. Sampled about once a second.
- network: on Linux, address, route and link changes arrive over rtnetlink (stdlib socket,
  read by the event loop, debounced). Where netlink is unavailable it is quietly off.

A false alarm (an NTP step, a new docker bridge) costs one SSH round trip on a healthy link.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

Clock = Callable[[], float]

SLEEP_THRESHOLD = 2.0  # seconds slept before it counts; a tick is 1 s, real clock drift is microseconds
TICK = 1.0
SETTLE = 1.0  # a network change comes as a burst (link, address, routes): one check after it

# rtnetlink (linux/rtnetlink.h, linux/netlink.h, linux/if.h)
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
IFF_UP, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x40, 0x10000
RT_SCOPE_LINK = 253  # and RT_SCOPE_HOST 254: link-local and loopback addresses never carry the link
RT_TABLE_LOCAL = 255
RTPROT_KERNEL = 2  # routes the kernel derives from an address: the address change already counts
RTN_UNICAST = 1
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags


@dataclass(frozen=True)
class WakeEvent:
    """Why the link should be checked now: sleep, network, signal (SIGUSR1) or request."""

    kind: str
    detail: str
    at: float  # wall time, for status


# --- sleep ---------------------------------------------------------------------------------


def boottime_clock() -> Clock | None:
    """CLOCK_BOOTTIME where the platform has it (Linux): it keeps counting during suspend."""
    clock_id = getattr(time, "CLOCK_BOOTTIME", None)
    if clock_id is None:
        return None
    try:
        time.clock_gettime(clock_id)
    except OSError:
        return None
    return lambda: time.clock_gettime(clock_id)


class SleepDetector:
    """Compares a clock that runs during sleep with the monotonic clock, which does not.

    With CLOCK_BOOTTIME the gap is exact. Without it, wall time stands in; it can also jump
    when the clock is set, and a forward jump then counts as a (harmless) wake.
    """

    def __init__(self, monotonic: Clock = time.monotonic, boottime: Clock | None = None, wall: Clock = time.time, threshold: float = SLEEP_THRESHOLD) -> None:
        self.monotonic = monotonic
        self.running_in_sleep = boottime or wall
        self.source = "boottime" if boottime else "wall clock"
        self.threshold = threshold
        self._last = self._sample()

    @classmethod
    def for_this_machine(cls) -> SleepDetector:
        return cls(boottime=boottime_clock())

    def _sample(self) -> tuple[float, float]:
        return self.monotonic(), self.running_in_sleep()

    def check(self) -> float | None:
        """Seconds slept since the last check, or None if it was not more than the threshold."""
        (mono_before, other_before), now = self._last, self._sample()
        self._last = now
        slept = (now[1] - other_before) - (now[0] - mono_before)
        return slept if slept > self.threshold else None


# --- network (Linux rtnetlink) -------------------------------------------------------------


def describe_netlink(data: bytes, physical: Callable[[int], bool] | None = None) -> list[str]:
    """What changed that can move the path to the remote, one line per netlink message.

    Left out, so a container starting on the laptop does not count as a network change:
    link-local and host addresses, kernel-derived and local-table routes, and link state
    of virtual interfaces (veth, bridges, tunnels: no device behind them).
    """
    physical = physical or is_physical
    changes = []
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size:
            break
        body = data[offset + NLMSG_HEADER.size : offset + length]
        change = _describe_one(kind, body, physical)
        if change:
            changes.append(change)
        offset += (length + 3) & ~3  # NLMSG_ALIGN
    return changes


def _describe_one(kind: int, body: bytes, physical: Callable[[int], bool]) -> str | None:
    if kind in (RTM_NEWADDR, RTM_DELADDR) and len(body) >= IFADDRMSG.size:
        family, prefix, _, scope, index = IFADDRMSG.unpack_from(body)
        if scope >= RT_SCOPE_LINK:
            return None
        what = "address added" if kind == RTM_NEWADDR else "address removed"
        return f"{what} on {_interface(index)} ({_family(family)}/{prefix})"
    if kind in (RTM_NEWROUTE, RTM_DELROUTE) and len(body) >= RTMSG.size:
        family, dst_len, _, _, table, protocol, _, route_type, _ = RTMSG.unpack_from(body)
        if table == RT_TABLE_LOCAL or protocol == RTPROT_KERNEL or route_type != RTN_UNICAST:
            return None
        what = "route added" if kind == RTM_NEWROUTE else "route removed"
        return f"{what} ({_family(family)}, {'default' if dst_len == 0 else f'/{dst_len}'})"
    if kind in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= IFINFOMSG.size:
        _, _, index, flags, changed = IFINFOMSG.unpack_from(body)
        if not physical(index):
            return None
        if kind == RTM_DELLINK:
            return f"interface {_interface(index)} removed"
        if changed & (IFF_UP | IFF_RUNNING | IFF_LOWER_UP):  # carrier or admin state, not statistics
            return f"interface {_interface(index)} {'up' if flags & IFF_LOWER_UP else 'down'}"
    return None


def is_physical(index: int) -> bool:
    """An interface with a device behind it (Ethernet, Wi-Fi, USB tethering), per sysfs."""
    try:
        return os.path.exists(f"/sys/class/net/{socket.if_indextoname(index)}/device")
    except OSError:
        return False  # already gone: its addresses and routes tell the rest


def _family(family: int) -> str:
    return {int(socket.AF_INET): "IPv4", int(socket.AF_INET6): "IPv6"}.get(family, f"family {family}")


def _interface(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"interface #{index}"


def open_netlink() -> socket.socket | None:
    """A non-blocking rtnetlink socket subscribed to address, route and link changes."""
    family = getattr(socket, "AF_NETLINK", None)
    if family is None:
        return None
    try:
        sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    except OSError as exc:
        log.info("network change watching is off: %s", exc)
        return None
    try:
        sock.bind((0, GROUPS))
    except OSError as exc:
        sock.close()
        log.info("network change watching is off: %s", exc)
        return None
    return sock


class NetworkWatcher:
    """Reads rtnetlink on the event loop; after a burst settles, reports it once."""

    def __init__(self, on_change: Callable[[str], None], settle: float = SETTLE) -> None:
        self.on_change = on_change
        self.settle = settle
        self._sock: socket.socket | None = None
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def active(self) -> bool:
        return self._sock is not None

    def start(self) -> bool:
        self._sock = open_netlink()
        if self._sock is None:
            return False
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._readable)
        return True

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped messages, so something changed
                    self._note([f"netlink: {exc.strerror or exc}"])
                    continue
                log.warning("network watching stopped: netlink read failed (%s)", exc)
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
                return
            self._note(describe_netlink(data))

    def _note(self, changes: list[str]) -> None:
        if not changes:
            return
        self._pending.extend(changes)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.settle, self._report)

    def _report(self) -> None:
        changes, self._pending, self._timer = list(dict.fromkeys(self._pending)), [], None  # an IPv6 address comes twice
        more = f" and {len(changes) - 1} more" if len(changes) > 1 else ""
        self.on_change(f"{changes[0]}{more}")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None


# --- both ----------------------------------------------------------------------------------


class WakeWatcher:
    """Runs both detectors and calls `on_wake` with a WakeEvent for each sleep or change."""

    def __init__(self, on_wake: Callable[[WakeEvent], None], detector: SleepDetector | None = None, tick: float = TICK, settle: float = SETTLE) -> None:
        self.on_wake = on_wake
        self.detector = detector or SleepDetector.for_this_machine()
        self.tick = tick
        self.network = NetworkWatcher(lambda detail: on_wake(WakeEvent("network", detail, time.time())), settle)

    async def run(self) -> None:
        watching = self.network.start()
        log.info("watching for sleep (%s)%s", self.detector.source, " and network changes (netlink)" if watching else "; network changes: not available here")
        try:
            while True:
                await asyncio.sleep(self.tick)
                slept = self.detector.check()
                if slept is not None:
                    self.on_wake(WakeEvent("sleep", f"the machine slept about {slept:.0f} s", time.time()))
        finally:
            self.network.close()
