"""`gt-remote ping [HOST]`: Ping what a client would reach, and say why when nothing answers."""

from __future__ import annotations

import os

from gt_remote.base.addresses import Address, address_from_env, parse_address
from gt_remote.base.errors import GtRemoteError, NothingListens, NotUp, PingFailed, shell_word
from gt_remote.base.paths import HostFiles, known_host_names
from gt_remote.ccmux.wire import ping_address
from gt_remote.host import client, lifecycle

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
    except PingFailed as error:
        owner = host or _host_serving(address)
        if owner is None:
            raise
        raise _which_hop(owner, address, error) from None


def _host_serving(address: Address) -> str | None:
    """The host whose tunnel listens at `address`, if gt-remote runs one there."""
    for name in known_host_names():
        status = client.live_status(HostFiles(name), timeout=2.0)
        if status is not None and status.get("local") == address.url:
            return name
    return None


def _which_hop(host: str, address: Address, error: PingFailed) -> GtRemoteError:
    """The tunnel accepted the connection but no Pong came: name the hop that does not answer."""
    reply = client.ask(HostFiles(host), {"op": "diagnose"}, timeout=10.0)
    seen = f"a Ping to {address.url} got no Pong ({error.cause})"
    if reply is None or not reply.get("ok"):
        return PingFailed(f"{seen}, and the supervisor of {host} did not answer", f"see 'gt-remote status {host}' and 'gt-remote logs {host}'")
    if not reply.get("link_up"):
        why = f" ({reply['last_cause']})" if reply.get("last_cause") else ""
        return PingFailed(f"{seen}: the tunnel of {host} is {reply.get('state')}{why}", f"it reconnects by itself; 'gt-remote status {host}' shows when")
    if not reply.get("server_answers"):
        return PingFailed(
            f"{seen}: the server on {host} does not answer a Ping over SSH either ({reply.get('server_reason')})",
            f"see 'gt-remote status {host}' and the server's log under ~/.local/state/gt-remote/ there",
        )
    if reply.get("resumable"):
        return PingFailed(
            f"{seen}, though the server on {host} answers over SSH: the relay there (which carries resumable connections) does not pass it on",
            f"the health check replaces a relay that stops answering within two keepalives; 'gt-remote logs {shell_word(host)}' says why it stopped",
        )
    return PingFailed(
        f"{seen}, though the server on {host} answers over SSH: the tunnel's forwarding does not pass it on",
        f"'gt-remote reconnect {host} --force' opens a new connection; 'gt-remote logs {host}' says more",
    )


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
