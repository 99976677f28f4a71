"""Back tunnels in the uploaded relay (issue #29), run as the remote runs it: its own file
under Python 3.8, real Unix and TCP sockets, no SSH. The test speaks the relay's frames as
the laptop's supervisor would: a listen channel, then a stream channel per announcement.
Who may connect (another account is refused) is proven in tests/e2e/test_back.py, where a
second account exists."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import pytest

from tests.testbed import wait_for
from tests.unit.test_relay_agent import Channel, Relay, started_relay

OWNER = "laptop-gaming-pc"


@pytest.fixture
def relay() -> Iterator[Relay]:
    with started_relay([]) as started:
        yield started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listen(relay: Relay, port: int, owner: str = OWNER, window: float = 60, heartbeat: float = 1) -> Channel:
    channel = relay.channel()
    channel.hello(op="listen", owner=owner, port=port, window=window, heartbeat=heartbeat)
    return channel


def announced(channel: Channel) -> str:
    kind, payload = channel.frame()
    assert kind == b"N", (kind, payload)
    notice = json.loads(payload)
    return str(notice["id"])


def connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.settimeout(10)
    return client


def attach(relay: Relay, stream: str, received: int = 0, consumed: int = 0) -> tuple[Channel, dict[str, object]]:
    channel = relay.channel()
    channel.hello(op="resume", id=stream, received=received, consumed=consumed, owner=OWNER)
    return channel, channel.reply()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except OSError:
        return True


def test_a_back_connection_becomes_a_stream_the_laptop_attaches(relay: Relay) -> None:
    port = free_port()
    control = listen(relay, port)
    assert control.reply() == {"listening": port, "accepted": 0, "refused": 0}
    client = connect(port)
    client.sendall(b"SELECT 1")  # before the laptop attached: kept in the stream's outbox
    stream = announced(control)
    channel, answer = attach(relay, stream)
    assert answer == {"received": 0, "consumed": 0, "replaying": 8}, answer
    assert channel.data(8) == b"SELECT 1"
    channel.send(b"D", b"row 1")
    assert client.recv(100) == b"row 1"
    stats = relay.stats()
    assert stats["resumes"] == 0 and stats["bytes_replayed"] == 0, "a first attach is no resume"
    assert stats["back"] == {str(port): {"owner": OWNER, "accepted": 1, "refused": 0, "channels": 1}}
    client.close()
    channel.close()
    control.close()


def test_a_back_stream_resumes_after_its_channel_drops_with_every_byte(relay: Relay) -> None:
    port = free_port()
    control = listen(relay, port)
    control.reply()
    client = connect(port)
    stream = announced(control)
    first, _ = attach(relay, stream)
    first.send(b"D", b"greeting")
    assert client.recv(100) == b"greeting"
    client.sendall(b"query")
    assert first.data(5) == b"query"
    first.close()  # the SSH connection died with the ack of "query" unsent
    wait_for(lambda: relay.stats()["channels"] == 2, 10, "the relay to see the stream's channel go")
    client.sendall(b" more")
    second, answer = attach(relay, stream, received=0, consumed=0)
    assert answer["replaying"] == 10, answer
    assert second.data(10) == b"query more", "what the laptop never acknowledged comes again, then the rest"
    second.send(b"D", b"result")
    assert client.recv(100) == b"result"
    assert relay.stats()["resumes"] == 1
    client.close()


def test_each_new_listen_channel_announces_what_no_channel_took(relay: Relay) -> None:
    """A notice can be lost with its connection: the next listen channel has it again."""
    port = free_port()
    first = listen(relay, port)
    first.reply()
    client = connect(port)
    stream = announced(first)
    first.close()  # dropped before the laptop attached it
    second = listen(relay, port)
    assert second.reply()["accepted"] == 1
    assert announced(second) == stream
    attach(relay, stream)
    third = listen(relay, port)
    third.reply()
    third.send(b"K")
    assert third.frame() == (b"K", b""), "a taken stream is not announced again; the heartbeat is answered"
    client.close()


def test_a_port_another_program_holds_is_refused_naming_it(relay: Relay) -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        port = squatter.getsockname()[1]
        answer = listen(relay, port).reply()
    error = str(answer["error"])
    assert f"127.0.0.1:{port} on the remote is held by uid {os.getuid()}" in error
    assert f"pid {os.getpid()}" in error, error


def test_a_port_another_tunnel_listens_on_is_refused_naming_that_tunnel(relay: Relay) -> None:
    port = free_port()
    mine = listen(relay, port)
    mine.reply()
    answer = listen(relay, port, owner="laptop-other").reply()
    assert "held by gt-remote's relay for another tunnel (laptop-gaming-pc)" in str(answer["error"])


def test_the_close_op_by_owner_stops_listening(relay: Relay) -> None:
    """`gt-remote down`: the gaming PC's port is free again at once."""
    port = free_port()
    listen(relay, port).reply()
    assert not refused(port)
    relay.ask(op="close", owner=OWNER)
    wait_for(lambda: refused(port), 10, "the listener to close")
    assert str(port) not in relay.stats()["back"]


def test_a_listener_no_laptop_speaks_for_within_its_window_closes(relay: Relay) -> None:
    port = free_port()
    control = listen(relay, port, window=1, heartbeat=0.5)
    control.reply()
    control.close()
    wait_for(lambda: refused(port), 15, "the listener to expire one window after the last word")


def test_a_listen_hello_with_a_bad_port_is_refused(relay: Relay) -> None:
    answer = listen(relay, 70000).reply()
    assert "port must be a TCP port number" in str(answer["error"])


def test_a_client_that_leaves_before_the_laptop_takes_its_stream_frees_its_slot(relay: Relay) -> None:
    """A pane that gives up while the laptop is away (asleep) must not hold a stream for the
    whole window: after many tries, new streams (the health Ping's too) would be refused."""
    port = free_port()
    control = listen(relay, port)
    control.reply()
    for _ in range(20):
        connect(port).close()
    wait_for(lambda: relay.stats()["streams"] == 0, 10, "the relay to let go of the streams whose clients left")
    assert relay.stats()["back"][str(port)]["accepted"] == 20


def test_a_port_held_on_ipv6_loopback_is_refused_too(relay: Relay) -> None:
    """A client asking for `localhost` may try ::1 first: another program there would get the
    panes' connections, so a back tunnel holds [::1]:PORT as well, or refuses."""
    try:
        squatter = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")  # the relay then holds 127.0.0.1 alone
    with squatter:
        port = squatter.getsockname()[1]
        answer = listen(relay, port).reply()
    assert f"[::1]:{port} on the remote is held by uid {os.getuid()}" in str(answer["error"]), answer


def test_a_back_tunnel_serves_ipv6_loopback_for_this_user(relay: Relay) -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    port = free_port()
    control = listen(relay, port)
    control.reply()
    client = socket.create_connection(("::1", port), timeout=10)
    client.sendall(b"v6")
    stream = announced(control)
    channel, answer = attach(relay, stream)
    assert answer["replaying"] == 2 and channel.data(2) == b"v6"
    client.close()
