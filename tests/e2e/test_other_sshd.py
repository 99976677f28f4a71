"""#31: gt-remote on SSH servers that run commands but do not forward.

Two test hosts beside the default OpenSSH one (tests/testbed.py, HOST_KINDS):
- Dropbear (Debian's dropbear-bin, `SSH-2.0-dropbear_2022.83`): no stream-local forwarding; it
  answers a `direct-streamlocal@openssh.com` open at once with SSH_OPEN_UNKNOWN_CHANNEL_TYPE and
  an empty description; TCP forwarding works;
- OpenSSH under `DisableForwarding yes`: every forward refused, TCP and stream-local alike.
Both run commands, which is all a stdio transport needs.

The harness tests here check the test hosts themselves: each starts, logs in by key with a pinned
host key, runs a command, refuses the forwards it is meant to refuse, and has its SSH sessions
found and killed. The others are #31's bar, met through the stdio transport.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import asyncssh
import pytest

from gt_remote.tunnel.connection import SshTarget, connect
from tests.conftest import Gt
from tests.e2e.helpers import LongClient, kill_ssh_sessions, row, server_clients_inside, wait_recovered
from tests.helpers import supervisor_processes
from tests.testbed import SshHost, free_loopback_port, wait_for

# Advice only an OpenSSH server can take: never shown for a Dropbear host.
OPENSSH_ONLY = ("AllowStreamLocalForwarding", "AllowTcpForwarding", "DisableForwarding", "sshd_config")

UP_BAR_S = 3.0  # `up` on these hosts: under this, and under UP_BAR_FACTOR x a default OpenSSH's
UP_BAR_FACTOR = 3.0
KILLED_SESSIONS = 2


def on_connection(host: SshHost, action: Any) -> Any:
    """Run `action(conn)` on one connection made as gt-remote makes it (tunnel.connection)."""

    async def scenario() -> Any:
        conn = await connect(SshTarget(host.alias, ssh_config=str(host.ssh_config)))
        async with conn:
            return await action(conn)

    return asyncio.run(scenario())


async def channel_refusal(opening: Any, timeout: float = 10.0) -> tuple[int, str, float]:
    """(code, reason, seconds) of a channel open the server refuses; a timeout fails the test."""
    start = time.monotonic()
    with pytest.raises(asyncssh.ChannelOpenError) as refused:
        await asyncio.wait_for(opening, timeout)
    return refused.value.code, refused.value.reason, time.monotonic() - start


def up_local(gt: Gt, host: SshHost, *args: str) -> tuple[str, float]:
    """`up` with the stand-in, on a free local port; (local address, seconds `up` took). A
    failure on a default OpenSSH host is the harness's (pytest.fail, never taken for the xfail)."""
    local = f"tcp://127.0.0.1:{free_loopback_port()}"
    start = time.monotonic()
    result = gt.up(host, "--local", local, *args)
    took = time.monotonic() - start
    if result.returncode != 0:
        log = gt("logs", host.alias).stdout[-3000:]
        message = f"up on {host.kind} failed after {took:.1f} s: {result.stderr}\nits supervisor's log ends:\n{log}"
        if host.kind == "openssh":
            pytest.fail(message)
        raise AssertionError(message)
    return local, took


def reasons(value: Any, key: str = "") -> list[tuple[str, Any]]:
    """Every (key, value) in a status row, nested ones too, whose key names a reason or an error."""
    if isinstance(value, dict):
        return [found for name, inner in value.items() for found in reasons(inner, str(name))]
    if isinstance(value, list):
        return [found for inner in value for found in reasons(inner, key)]
    return [(key, value)] if re.search("reason|error", key) else []


def assert_truthful_status(status: dict[str, Any], host: SshHost) -> None:
    """Resumable; no reason or error that is empty or has an empty cause in it (today's Dropbear
    row says "refused a channel to the relay ()"); on Dropbear, no advice only OpenSSH can take."""
    assert status["resumable"] is True, status
    assert status["resumable_reason"] is None, status
    empty = [(key, value) for key, value in reasons(status) if value is not None and (not str(value).strip() or re.search(r"\(\s*\)", str(value)))]
    assert not empty, f"empty reasons in status: {empty}"
    text = json.dumps(status)
    if host.kind == "dropbear":
        named = [word for word in OPENSSH_ONLY if word in text]
        assert not named, f"OpenSSH-only advice ({', '.join(named)}) for a Dropbear host: {text}"


# --- the harness: passes today ------------------------------------------------------------


def test_the_host_logs_in_and_runs_a_command(other_sshd_host: SshHost) -> None:
    """Login by key, the host key pinned (known_hosts written from the container's own key,
    Dropbear's included), and a command run: the one thing both servers must do for #31."""

    async def echo(conn: asyncssh.SSHClientConnection) -> tuple[str, str]:
        result = await conn.run("echo ok", check=True)
        return str(result.stdout), str(conn.get_extra_info("server_version"))

    output, version = on_connection(other_sshd_host, echo)
    assert output == "ok\n"
    expected = "SSH-2.0-dropbear_" if other_sshd_host.kind == "dropbear" else "SSH-2.0-OpenSSH_"
    assert version.startswith(expected), version


def test_dropbear_refuses_stream_local_at_once_and_forwards_tcp(dropbear_host: SshHost) -> None:
    """What makes the Dropbear host the case #31 is about: a channel to a Unix socket is refused
    as an unknown channel type, with no description, in well under a second; TCP forwarding works."""
    dropbear_host.hold_port(8022)

    async def probe(conn: asyncssh.SSHClientConnection) -> tuple[int, str, float]:
        unix = await channel_refusal(conn.open_unix_connection("/tmp/any.sock"))
        _, writer = await asyncio.wait_for(conn.open_connection("127.0.0.1", 8022), 10)  # opens
        writer.close()
        return unix

    code, reason, took = on_connection(dropbear_host, probe)
    assert code == asyncssh.OPEN_UNKNOWN_CHANNEL_TYPE and reason == "" and took < 2.0


def test_hardened_openssh_refuses_every_forward(hardened_host: SshHost) -> None:
    """`DisableForwarding yes`: TCP forwarding administratively prohibited, stream-local refused,
    even to a port and a socket that listen."""
    hardened_host.hold_port(8022)
    hardened_host.spawn("exec python3 -c \"import socket, time; s = socket.socket(socket.AF_UNIX); s.bind('/tmp/l.sock'); s.listen(); time.sleep(600)\"")
    wait_for(lambda: hardened_host.exec("test -S /tmp/l.sock")[0] == 0, 10, "a Unix socket to listen inside")

    async def probe(conn: asyncssh.SSHClientConnection) -> tuple[tuple[int, str, float], tuple[int, str, float]]:
        tcp = await channel_refusal(conn.open_connection("127.0.0.1", 8022))
        unix = await channel_refusal(conn.open_unix_connection("/tmp/l.sock"))
        return tcp, unix

    (tcp_code, _, tcp_took), (_, _, unix_took) = on_connection(hardened_host, probe)
    assert tcp_code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    assert tcp_took < 2.0 and unix_took < 2.0


def test_killing_the_ssh_sessions_ends_the_connection(other_sshd_host: SshHost) -> None:
    """kill_ssh_sessions finds the processes serving a connection on either server (Dropbear's
    are `dropbear` children of its listener, as root) and the client sees its connection end."""

    async def scenario() -> None:
        conn = await connect(SshTarget(other_sshd_host.alias, ssh_config=str(other_sshd_host.ssh_config)))
        async with conn:
            assert (await conn.run("true")).exit_status == 0
            await asyncio.to_thread(kill_ssh_sessions, other_sshd_host)
            await asyncio.wait_for(conn.wait_closed(), 15)

    asyncio.run(scenario())
    assert other_sshd_host.answers_ssh(), "the listener itself must survive the sessions' kill"


# --- #31's bar -------------------------------------------------------------------------------


def test_up_ping_status_and_down(gt: Gt, other_sshd_host: SshHost) -> None:
    local, _ = up_local(gt, other_sshd_host)
    ping = gt("ping", "gaming-pc")
    assert ping.returncode == 0 and "Pong" in ping.stdout, ping.stderr
    status = row(gt)
    assert status["state"] == "up", status
    assert_truthful_status(status, other_sshd_host)
    down = gt("down", "gaming-pc", ssh_config=other_sshd_host.ssh_config)
    assert down.returncode == 0, down.stderr
    assert supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [], "down left the supervisor running"


def test_an_attached_client_keeps_every_byte_through_killed_sessions(gt: Gt, other_sshd_host: SshHost) -> None:
    """Echo frames and Pings all the while, checked in order; two SSH sessions killed under it;
    the stand-in never sees a second client (the stream resumed, not reconnected)."""
    local, _ = up_local(gt, other_sshd_host, "--keepalive", "1", "--resume-window", "120")
    assert_truthful_status(row(gt), other_sshd_host)
    client = LongClient(int(local.rsplit(":", 1)[1]))
    try:
        client.wait_rounds(5)
        assert server_clients_inside(other_sshd_host) == 1
        for round_ in range(1, KILLED_SESSIONS + 1):
            kill_ssh_sessions(other_sshd_host)
            wait_recovered(gt, round_)
            client.wait_rounds(10)
        wait_for(lambda: server_clients_inside(other_sshd_host) == 1, 10, "the stand-in to count only the long-lived client")
        assert row(gt)["streams_resumed"] >= KILLED_SESSIONS
        assert client.error is None
    finally:
        client.close()


def test_up_is_quick(gt: Gt, host_factory: Any, other_sshd_host: SshHost) -> None:
    """Under 3 s, and under 3x a default OpenSSH's `up` measured in the same test. `up` counts as
    done only with resumable streams: a quick fall-back to plain forwarding is not #31's `up`."""
    default = host_factory(alias="default-pc")
    _, default_took = up_local(gt, default)
    _, took = up_local(gt, other_sshd_host)
    [status] = gt.status("gaming-pc")
    assert_truthful_status(status, other_sshd_host)
    assert took < UP_BAR_S, f"up took {took:.2f} s on {other_sshd_host.kind} (bar {UP_BAR_S:g} s)"
    assert took < UP_BAR_FACTOR * default_took, f"up took {took:.2f} s on {other_sshd_host.kind}, {default_took:.2f} s on a default OpenSSH"


def test_plain_mode_without_forwarding_goes_through_exec_bridges(gt: Gt, hardened_host: SshHost) -> None:
    """--no-resume where sshd forwards nothing: Pings and each client through a command on the
    remote that bridges to the server (python3 here; socat, nc or bash elsewhere)."""
    local, _ = up_local(gt, hardened_host, "--no-resume")
    status = row(gt)
    assert status["state"] == "up" and not status["resumable"], status
    ping = gt("ping", "gaming-pc")
    assert ping.returncode == 0 and "Pong" in ping.stdout, ping.stderr
    client = LongClient(int(local.rsplit(":", 1)[1]))
    try:
        client.wait_rounds(5)
        assert client.error is None
    finally:
        client.close()
