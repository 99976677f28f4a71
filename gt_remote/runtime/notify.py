"""The sd_notify protocol, without libsystemd: one datagram to `$NOTIFY_SOCKET`.

A `Type=notify` unit counts as started only when the process sends `READY=1`, so systemd
(and whatever is ordered after the unit) sees the tunnel as up only once it answers a Ping.
Outside systemd the variable is unset and every call does nothing.
"""

from __future__ import annotations

import os
import socket

READY = "READY=1"
SEND_TIMEOUT = 2.0


def socket_address(value: str) -> str | bytes:
    """`@name` is Linux's abstract namespace (a leading NUL byte); anything else is a path."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def notify(*assignments: str) -> bool:
    """Send `KEY=value` lines to the service manager; False when there is none or it is gone.

    Never raises: a service manager that went away must not take the tunnel with it.
    """
    target = os.environ.get("NOTIFY_SOCKET")
    if not target or not assignments:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT)  # a full queue must not hang the supervisor
            sock.connect(socket_address(target))
            sock.sendall("\n".join(assignments).encode())
        return True
    except OSError:
        return False


def status(text: str) -> bool:
    """A one-line status that `systemctl --user status` shows next to the unit."""
    return notify("STATUS=" + " ".join(text.split()))
