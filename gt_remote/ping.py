"""`gt-remote ping [HOST]`: Ping what a client would reach, and say why when nothing answers."""

from __future__ import annotations

import os

from gt_remote import lifecycle
from gt_remote.base.addresses import Address, address_from_env, parse_address
from gt_remote.base.errors import GtRemoteError, NothingListens, NotUp, shell_word
from gt_remote.tunnel.wire import ping_address

VAR = "GASTOWN_CCMUX_ADDR"


def target(host: str | None, addr: str | None) -> Address:
    """HOST's local address, else --addr, else the variable, else the local ccmux socket."""
    if addr:
        return parse_address(addr)
    if host:
        if not lifecycle.is_known(host):
            raise NotUp(f"gt-remote has never brought up a host named {host!r}", f"bring it up: eval \"$(gt-remote up {shell_word(host)})\"")
        status = lifecycle.host_status(host)
        if status["state"] == "down" or not status.get("local"):
            raise NotUp(f"the tunnel of {host} is down", f"bring it up: eval \"$(gt-remote up {shell_word(host)})\"")
        return parse_address(status["local"])
    return address_from_env()


async def ping(host: str | None, addr: str | None, timeout: float) -> tuple[str, float]:
    address = target(host, addr)
    try:
        return address.url, await ping_address(address, timeout)
    except NothingListens as error:
        raise _explain(error, address, host, addr) from None


def _explain(error: NothingListens, address: Address, host: str | None, addr: str | None) -> GtRemoteError:
    """The likely cause: no `eval` in this shell, or the tunnel is down."""
    if host:
        return NotUp(f"the tunnel of {host} is down: nothing listens at {address.url}", f"see 'gt-remote status {shell_word(host)}', or bring it back: gt-remote down {shell_word(host)}; eval \"$(gt-remote up {shell_word(host)})\"")
    if not addr and not os.environ.get(VAR):
        return NotUp(
            f"{VAR} is unset in this shell, so the Ping went to the local ccmux socket {address.url}, where nothing listens",
            "run eval \"$(gt-remote up HOST)\" in this shell, or name the host: gt-remote ping HOST",
        )
    return NotUp(
        f"nothing listens at {address.url}: the tunnel is down (after 'gt-remote down', or its supervisor stopped)",
        "bring it up: eval \"$(gt-remote up HOST)\"; 'gt-remote status' lists the hosts",
    )
