"""Resumable streams: a long-lived client keeps its connection through real faults.

The client sends an echo frame and a Ping every round and checks that the replies come
back whole and in order; the stand-in's client count shows that no new server connection
was made behind its back. Faults are injected into the test containers only."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path
from typing import Any

from gt_remote.protocol.stream import CAP  # per stream and direction, at both ends
from tests.conftest import Gt
from tests.e2e.helpers import (
    GET_SERVER_STATUS,
    PING,
    PONG,
    PORT,
    ROUNDS,
    LongClient,
    bring_up,
    echo_frame,
    expect_clean_close,
    kill_ssh_sessions,
    offer_until_full,
    recv_frame,
    relay_pids,
    relay_stats,
    row,
    server_clients_inside,
    wait_recovered,
)
from tests.helpers import STANDIN_PATTERN, answers
from tests.testbed import STANDIN, SshHost, wait_for

READ_CHUNK = 256 * 1024  # what one socket read may add beyond the cap


def server_clients(port: int) -> int:
    """The stand-in's client count through the tunnel at laptop `port`, minus the connection that asks."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(10)
        sock.sendall(GET_SERVER_STATUS)
        reply = recv_frame(sock)
    (_commit_seq, client_count) = struct.unpack_from("<QQ", reply, 8)
    return int(client_count) - 1


def restart_sshd(host: SshHost) -> None:
    """sshd's own restart (SIGHUP re-executes the listener, PID 1 here) while the sessions it
    served are killed, as a restart that takes the user's sessions along does."""
    host.sh("kill -HUP 1")
    kill_ssh_sessions(host)
    wait_for(host.answers_ssh, 15, "the restarted sshd to answer")


def run_faults(gt: Gt, host: SshHost, inject: Any) -> None:
    """The common bar: through every round the client is never reset, every reply comes back
    in order, and the server never sees a new client."""
    status = bring_up(gt, host, "--resume-window", "120")
    assert status["resumable"] is True, status
    client = LongClient(gt.port())
    try:
        client.wait_rounds(5)
        assert server_clients(gt.port()) == 1
        for round_ in range(1, ROUNDS + 1):
            inject(host)
            wait_recovered(gt, round_)
            client.wait_rounds(10)
            # The previous asker's close reaches the server through the relay a moment later.
            wait_for(lambda: server_clients(gt.port()) == 1, 10, "the stand-in to count only the long-lived client")
        status = row(gt)
        assert status["streams_resumed"] >= ROUNDS
        assert client.error is None
    finally:
        client.close()


def standin_pid(host: SshHost) -> int:
    [pid] = host.pids(f"{STANDIN_PATTERN}{PORT}")
    return pid


def test_killed_ssh_session_keeps_the_client_connected(gt: Gt, ssh_host: SshHost) -> None:
    run_faults(gt, ssh_host, kill_ssh_sessions)


def test_pause_beyond_keepalive_keeps_the_client_connected(gt: Gt, ssh_host: SshHost) -> None:
    def pause(host: SshHost) -> None:
        host.pause()
        wait_for(lambda: row(gt)["state"] == "reconnecting", 15, "the silent link to be noticed")
        host.unpause()

    run_faults(gt, ssh_host, pause)


def test_network_partition_keeps_the_client_connected(gt: Gt, host_factory) -> None:  # type: ignore[no-untyped-def]
    def partition(host: SshHost) -> None:
        host.disconnect()
        wait_for(lambda: row(gt)["state"] == "reconnecting", 15, "the partition to be noticed")
        host.connect()

    run_faults(gt, host_factory(own_network=True), partition)


def test_sshd_restart_keeps_the_client_connected(gt: Gt, ssh_host: SshHost) -> None:
    run_faults(gt, ssh_host, restart_sshd)


def test_no_resume_is_plain_forwarding(gt: Gt, ssh_host: SshHost) -> None:
    status = bring_up(gt, ssh_host, "--no-resume")
    assert status["resumable"] is False and "turned off" in status["resumable_reason"]
    assert relay_pids(ssh_host) == []
    client = LongClient(gt.port())
    try:
        client.wait_rounds(3)
        kill_ssh_sessions(ssh_host)
        wait_for(lambda: client.error is not None, 30, "the plain connection to end with the SSH session")
    finally:
        client.close()
    wait_recovered(gt, 1)
    wait_for(lambda: answers(gt.local()), 15, "a new plain connection to work")


def test_relay_is_private_reused_and_stopped_with_the_server(gt: Gt, ssh_host: SshHost) -> None:
    status = bring_up(gt, ssh_host)
    assert status["resumable"] is True and status["resumable_reason"] is None
    [pid] = relay_pids(ssh_host)
    relay_dir = f"/home/gamer/.local/state/gt-remote/relay-{PORT}"
    assert ssh_host.sh(f"stat -c '%a %U' {relay_dir} {relay_dir}/sock").split() == ["700", "gamer", "600", "gamer"]
    assert "127.0.0.1:9999" in ssh_host.sh("cat /home/gamer/.local/state/gt-remote/relay-9999.log")
    attached = socket.create_connection(("127.0.0.1", gt.port()), timeout=5)
    attached.sendall(PING)
    assert recv_frame(attached) == PONG
    assert gt("down", "gaming-pc").returncode == 0
    wait_for(lambda: server_clients_inside(ssh_host) == 0, 10, "the server to see the client leave at down (not after the window)")
    attached.close()
    bring_up(gt, ssh_host)
    assert relay_pids(ssh_host) == [pid], "a live relay must be reused"
    ssh_host.kill(pid)
    wait_for(lambda: relay_pids(ssh_host) == [], 15, "the killed relay to be gone")
    client = socket.create_connection(("127.0.0.1", gt.port()), timeout=5)  # finds no relay: has it started and gets through
    client.settimeout(60)  # the relay's start, however slow the machine: a Pong or an EOF ends the wait
    client.sendall(PING)
    assert recv_frame(client) == PONG
    client.close()
    [started_again] = relay_pids(ssh_host)
    assert started_again != pid
    down = gt("down", "gaming-pc", "--stop-server")
    assert down.returncode == 0, down.stderr
    assert relay_pids(ssh_host) == []


def test_killed_server_closes_the_client_cleanly(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    client = socket.create_connection(("127.0.0.1", gt.port()), timeout=5)
    client.sendall(PING)
    assert recv_frame(client) == PONG
    ssh_host.kill(standin_pid(ssh_host))
    expect_clean_close(client)
    client.close()
    wait_for(lambda: row(gt)["server_restarts"] == 1, 30, "the server to be restarted")
    wait_for(lambda: answers(gt.local()), 15, "a new connection to work")


def test_container_restart_closes_the_client_cleanly(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    client = socket.create_connection(("127.0.0.1", gt.port()), timeout=5)
    client.sendall(PING)
    assert recv_frame(client) == PONG
    ssh_host.restart()
    expect_clean_close(client)
    client.close()
    wait_recovered(gt, 1)
    wait_for(lambda: answers(gt.local()), 15, "a new connection to work")
    assert row(gt)["resumable"] is True  # the relay was started again with the server


def test_resume_window_closes_both_ends(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host, "--resume-window", "6")
    client = socket.create_connection(("127.0.0.1", gt.port()), timeout=5)
    client.sendall(PING)
    assert recv_frame(client) == PONG
    assert server_clients(gt.port()) == 1
    ssh_host.pause()
    try:
        wait_for(lambda: row(gt)["state"] == "reconnecting", 15, "the silent link to be noticed")
        client.setblocking(False)
        try:
            client.recv(1)
            raise AssertionError("the client was closed as soon as the link was lost, not after the window")
        except BlockingIOError:
            pass  # still open, waiting for the tunnel
        expect_clean_close(client)  # the local end: EOF once the window has passed
    finally:
        ssh_host.unpause()
    client.close()
    wait_recovered(gt, 1)
    wait_for(lambda: server_clients(gt.port()) == 0, 30, "the server to see the client leave")
    assert row(gt)["streams_open"] == 0


def test_buffers_stay_within_caps_while_the_far_side_is_silent(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    # Toward the server: the container is paused, so nothing is acknowledged.
    writer = socket.create_connection(("127.0.0.1", gt.port()), timeout=5)
    writer.sendall(PING)
    assert recv_frame(writer) == PONG
    ssh_host.pause()
    try:
        writer.setblocking(False)
        offer_until_full(writer, echo_frame(1, filler=64 * 1024), lambda: row(gt)["internals"]["resume_buffered_bytes"] >= CAP, "the local buffer toward the paused remote to fill")
        internals = row(gt)["internals"]
        assert CAP <= internals["resume_buffered_bytes"] <= CAP + READ_CHUNK, internals
        assert internals["resume_peak_unacked_bytes"] <= CAP + READ_CHUNK
    finally:
        ssh_host.unpause()
    writer.close()
    # Toward the client: it sends echo frames and never reads their replies.
    wait_for(lambda: answers(gt.local()), 45, "the tunnel to answer again")
    reader = socket.create_connection(("127.0.0.1", gt.port()), timeout=5)
    reader.setblocking(False)
    # Status requests, not echoes: each 8-byte request brings 51 bytes back, so the replies fill the
    # relay's cap long before the requests fill the local side's. With echoes both caps are equal,
    # the acks toward the silent client queue behind its data, and which cap fills first was a race.
    offer_until_full(reader, GET_SERVER_STATUS * 8192, lambda: relay_stats(ssh_host)["peak_unacked"] >= CAP, "the relay's buffer toward the silent client to fill")
    stats = relay_stats(ssh_host)
    assert CAP <= stats["peak_unacked"] <= CAP + READ_CHUNK, stats
    assert answers(gt.local()), "another stream stalled behind the full one"
    reader.close()


def test_no_python3_falls_back_to_plain_forwarding(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    # The stand-in keeps a private interpreter; then python3 is removed from the host.
    ssh_host.sh("cp /usr/bin/python3 /usr/libexec/gtr-python && chmod 755 /usr/libexec/gtr-python")
    standin = tmp_path / "ccmux-server"
    source = STANDIN.read_text()
    standin.write_text("#!/usr/libexec/gtr-python\n" + source.split("\n", 1)[1])
    standin.chmod(0o755)
    ssh_host.sh("rm -f /usr/bin/python3*")
    assert ssh_host.exec("command -v python3")[0] != 0
    result = gt("up", ssh_host.alias, "--server-binary", str(standin), "--keepalive", "1", ssh_config=ssh_host.ssh_config)
    assert result.returncode == 0, result.stderr
    status = row(gt)
    assert status["resumable"] is False
    assert "no python3" in status["resumable_reason"]
    assert answers(gt.local()), "plain forwarding must still work"
    table = gt("status", "gaming-pc").stdout
    assert "not resumable: the remote has no python3" in table
    doctor = gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config)
    [check] = [c for c in json.loads(doctor.stdout) if c["name"] == "connections are resumable"]
    assert check["status"] == "warn" and "no python3" in check["detail"]


def test_sshd_without_stream_local_forwarding_carries_streams_over_the_stdio_transport(gt: Gt, ssh_host: SshHost) -> None:
    """A remote sshd that refuses direct-streamlocal channels costs no client, and no resume:
    streams go through the relay's bridge on an exec channel, saying why (#31)."""
    ssh_host.sh("sed -i 's/^AllowStreamLocalForwarding yes/AllowStreamLocalForwarding no/' /etc/ssh/sshd_config && kill -HUP 1")
    wait_for(ssh_host.answers_ssh, 15, "sshd to answer with its new configuration")
    result = gt.up(ssh_host, "--keepalive", "1")
    assert result.returncode == 0, result.stderr
    status = row(gt)
    assert status["resumable"] is True and status["transport"] == "stdio", status
    assert "OpenSSH_" in status["transport_reason"] and "refuses channels to Unix sockets" in status["transport_reason"]
    for _ in range(3):  # each new client is carried, none is closed for want of the relay
        assert answers(gt.local())


def test_transport_forward_keeps_to_sshds_channels_and_falls_back_to_plain(gt: Gt, ssh_host: SshHost) -> None:
    """`--transport forward`: where sshd refuses channels to the relay's socket, forwarding is
    plain, as it was before the stdio transport, and says why."""
    ssh_host.sh("sed -i 's/^AllowStreamLocalForwarding yes/AllowStreamLocalForwarding no/' /etc/ssh/sshd_config && kill -HUP 1")
    wait_for(ssh_host.answers_ssh, 15, "sshd to answer with its new configuration")
    result = gt.up(ssh_host, "--keepalive", "1", "--transport", "forward")
    assert result.returncode == 0, result.stderr
    status = row(gt)
    assert status["resumable"] is False
    assert "refuses channels to Unix sockets" in status["resumable_reason"]
    for _ in range(3):  # each new client is forwarded, none is closed for want of the relay
        assert answers(gt.local()), "plain forwarding must still work"


def test_status_shows_the_relays_count_of_this_supervisors_streams(gt: Gt, ssh_host: SshHost) -> None:
    """The relay's own count beside the laptop's: a stream the laptop no longer knows would
    show there and nowhere else. `down` closes every one the relay holds for it."""
    bring_up(gt, ssh_host)
    clients = [socket.create_connection(("127.0.0.1", gt.port()), timeout=5) for _ in range(2)]
    try:
        for client in clients:
            client.sendall(PING)
            assert recv_frame(client) == PONG
        wait_for(lambda: (s := row(gt))["streams_open"] == 2 and s["relay_streams"] == 2, 30, "status to show 2 streams here and 2 on the relay")
        assert "2 open (2 on the relay)" in gt("status", "gaming-pc").stdout
        assert gt("down", "gaming-pc").returncode == 0
        wait_for(lambda: relay_stats(ssh_host)["streams"] == 0, 20, "the relay to let go of every stream after down")
    finally:
        for client in clients:
            client.close()

