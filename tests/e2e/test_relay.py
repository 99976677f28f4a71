"""The relay on a real remote: silent partitions, a killed supervisor, `down` in an outage, a
hostile relay reply, clients that never read, relay kills and freezes, and another gt-remote
version's relay."""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import socket
import threading
import time
from pathlib import Path

from gt_remote.ccmux import wire
from gt_remote.protocol.stream import CAP  # per stream and direction, at both ends
from gt_remote.remote.relay.deploy import agent_digest
from tests.conftest import Gt
from tests.e2e.helpers import GET_SERVER_STATUS, HOME, PING, PONG, PORT, bring_up, expect_clean_close, offer_until_full, recv_frame, relay_pids, relay_stats, row, server_clients_inside
from tests.helpers import agent_file, answers
from tests.testbed import SshHost, free_loopback_port, wait_for

WINDOW = 6.0


KEEPALIVE = 1.0


SLACK = 6.0  # a loaded machine: docker exec, the stand-in noticing the close


def attached_client(gt: Gt) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", gt.port()), timeout=10)
    client.sendall(PING)
    assert recv_frame(client) == PONG
    return client


def supervisor_log(gt: Gt) -> str:
    return "".join(path.read_text() for path in (gt.home / ".local/state/gt-remote/logs").glob("*.log"))


def rss_kib_inside(host: SshHost, pid: int) -> int:
    return int(host.sh(f"awk '/VmRSS/ {{print $2}}' /proc/{pid}/status"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# A relay that answers a new stream's hello only once the client's first bytes have come with
# it, then forwards them to the server: no real relay waits so, but it shows which side waits.
RELAY_THAT_WAITS_FOR_THE_BYTES = r"""
import json, os, socket, struct, sys, threading
path, port = sys.argv[1], int(sys.argv[2])
os.path.exists(path) and os.unlink(path)
listener = socket.socket(socket.AF_UNIX)
listener.bind(path)
listener.listen()

def frame(kind, body):
    return kind + struct.pack(">I", len(body)) + body

def serve(channel):
    channel.settimeout(60)
    data, frames = b"", []
    try:
        while len(frames) < 2:
            chunk = channel.recv(65536)
            if not chunk:
                return
            data += chunk
            while len(data) >= 5 and len(data) >= 5 + struct.unpack(">I", data[1:5])[0]:
                size = struct.unpack(">I", data[1:5])[0]
                frames.append((data[:1], data[5:5 + size]))
                data = data[5 + size:]
            if frames and json.loads(frames[0][1]).get("op") != "new":
                channel.sendall(frame(b"R", b'{"error": "not served here"}'))
                return
        if frames[1][0] != b"D":
            return
        server = socket.create_connection(("127.0.0.1", port))
        server.sendall(frames[1][1])
        answer = server.recv(65536)
        channel.sendall(frame(b"R", b'{"received": 0, "replaying": 0}') + frame(b"D", answer))
        while channel.recv(65536):
            pass
    except OSError:
        pass
    finally:
        channel.close()

while True:
    threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
"""


CLIENTS = 12


OVER_S = 3.0


def bring_up_resumable_on_a_port(gt: Gt, host: SshHost, keepalive: str) -> int:
    """Up with resumable streams on a local port of its own; the local port."""
    port = free_loopback_port()
    result = gt.up(host, "--keepalive", keepalive, "--local", f"tcp://127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    assert row(gt)["resumable"] is True
    return port


def ping_once(port: int) -> str:
    """'pong', or what went wrong: an EOF, a reset, a timeout."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(wire.PING)
            data = b""
            while len(data) < 8:
                chunk = client.recv(8 - len(data))
                if not chunk:
                    return f"EOF after {len(data)} bytes"
                data += chunk
            return "pong" if data == wire.PING else f"not a Pong: {data.hex()}"
    except OSError as exc:
        return repr(exc)


STATE = f"{HOME}/.local/state/gt-remote"


RELAYS = f"{HOME}/.local/share/gt-remote/relay"


OTHER_LEASE = "other-laptop-gaming-pc"


def start_other_version(host: SshHost) -> tuple[str, int]:
    """Another gt-remote version's relay for PORT, running as `gamer`: its agent path and pid."""
    agent = agent_file().read_bytes() + b"# another gt-remote version\n"
    agent_path = f"{RELAYS}/{hashlib.sha256(agent).hexdigest()[:16]}/relay_agent.py"
    assert agent_digest() not in agent_path
    q = shlex.quote
    host.sh(f"umask 077 && mkdir -p {q(agent_path.rsplit('/', 1)[0])} {q(STATE)}/relay-{PORT}", user="gamer")
    host.container.copy_into_container(agent, agent_path, 0o600)
    host.sh(f"chown gamer:gamer {q(agent_path)}")
    sock, pidfile = f"{STATE}/relay-{PORT}/sock", f"{STATE}/relay-{PORT}.pid"
    host.sh(
        f"umask 077; setsid nohup python3 -I {q(agent_path)} --socket {q(sock)} --port {PORT} --leases {q(STATE)}/leases/{PORT} </dev/null >>{q(STATE)}/relay-{PORT}.log 2>&1 & echo $! > {q(pidfile)}",
        user="gamer",
    )
    wait_for(lambda: host.exec(f"test -S {q(sock)}", user="gamer")[0] == 0, 15, "the other version's relay to listen")
    return agent_path, int(host.sh(f"cat {q(pidfile)}", user="gamer"))


def write_lease(host: SshHost, name: str, ttl: int, age: str = "") -> None:
    """A lease file as lease_touch writes it; `age` back-dates it (touch -d) to expire it."""
    path = shlex.quote(f"{STATE}/leases/{PORT}/{name}")
    host.sh(f"umask 077 && mkdir -p {shlex.quote(STATE)}/leases/{PORT} && echo {ttl} > {path}", user="gamer")
    if age:
        host.sh(f"touch -d {shlex.quote(age)} {path}", user="gamer")


def bring_up_on_a_port(gt: Gt, host: SshHost) -> int:
    """`up` on a local port of its own; the port."""
    port = free_loopback_port()
    result = gt.up(host, "--local", f"tcp://127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    return port


def test_silent_partition_leaves_no_ghost_on_the_remote(gt: Gt, host_factory) -> None:  # type: ignore[no-untyped-def]
    """sshd never notices a silent partition; the relay still lets go of the server
    connection one window after the last heartbeat, and the laptop ends the client then too."""
    host = host_factory(own_network=True)
    bring_up(gt, host, "--resume-window", f"{WINDOW:g}")
    client = attached_client(gt)
    assert server_clients_inside(host) == 1
    host.disconnect()
    lost_at = time.monotonic()
    try:
        wait_for(lambda: server_clients_inside(host) == 0, WINDOW + KEEPALIVE + SLACK, "the relay to release the server connection one window after the last heartbeat")
        released = time.monotonic() - lost_at
        print(f"released {released:.1f} s after the partition (window {WINDOW:g} s)")
        assert relay_stats(host)["streams"] == 0
        expect_clean_close(client)
        assert time.monotonic() - lost_at < WINDOW + 30, "the laptop must count the window from the last frame, not from noticing"
        wait_for(lambda: "nothing from the relay for" in supervisor_log(gt), 10, "the log to say how long the relay was silent")
    finally:
        host.connect()
        client.close()


def test_killed_supervisor_releases_the_server_connections(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host, "--resume-window", f"{WINDOW:g}")
    clients = [attached_client(gt) for _ in range(3)]
    assert server_clients_inside(ssh_host) == 3
    pid = row(gt)["supervisor_pid"]
    assert pid in gt.supervisor_pids()  # the supervisor this test started
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: server_clients_inside(ssh_host) == 0, WINDOW + KEEPALIVE + SLACK, "the relay to release every server connection after window + keepalive")
    print(f"released {time.monotonic() - killed_at:.1f} s after kill -9 (window {WINDOW:g} s)")
    for client in clients:
        client.close()


def test_down_during_an_outage_ends_the_streams_with_the_window_not_after_it(gt: Gt, ssh_host: SshHost) -> None:
    """`down` while the remote is unreachable: the relay cannot be told, and still releases the
    server connection one window after the last heartbeat, not one window after it next
    hears from sshd."""
    window = 10.0
    bring_up(gt, ssh_host, "--resume-window", f"{window:g}")
    client = attached_client(gt)
    ssh_host.pause()
    paused_at = time.monotonic()
    try:
        wait_for(lambda: row(gt)["state"] == "reconnecting", 15, "the silent link to be noticed")
        assert gt("down", "gaming-pc").returncode == 0
        # The window (from the last heartbeat, before the pause) runs out while paused.
        wait_for(lambda: time.monotonic() > paused_at + window + KEEPALIVE, window + 30, "the resume window to pass")
    finally:
        ssh_host.unpause()
    unpaused_at = time.monotonic()
    wait_for(lambda: server_clients_inside(ssh_host) == 0, window * 0.8, "the relay to release the server connection at once (its window had passed)")
    print(f"released {time.monotonic() - unpaused_at:.1f} s after the remote came back")
    client.close()


def test_bad_relay_reply_ends_that_stream_not_the_link(gt: Gt, ssh_host: SshHost) -> None:
    """A relay (or whatever holds its socket) that answers `{"nope": 1}`: the client gets a
    clean close, the SSH connection stays, plain traffic on it still flows."""
    bring_up(gt, ssh_host)
    [pid] = relay_pids(ssh_host)
    socket_path = f"/home/gamer/.local/state/gt-remote/relay-{PORT}/sock"
    fake = (
        "import json, os, socket, struct\n"
        f"path = {socket_path!r}\n"
        "os.path.exists(path) and os.unlink(path)\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(path); s.listen()\n"
        "while True:\n"
        "    c, _ = s.accept(); c.recv(65536)\n"
        "    body = json.dumps({'nope': 1}).encode()\n"
        "    c.sendall(b'R' + struct.pack('>I', len(body)) + body)\n"
    )
    ssh_host.kill(pid)
    ssh_host.spawn(f"exec python3 -c {shlex.quote(fake)}")
    wait_for(lambda: ssh_host.exec(f"test -S {socket_path} && pgrep -f 'nope'")[0] == 0, 10, "the fake relay to listen")
    reconnects = row(gt)["reconnects"]
    for _ in range(3):
        client = socket.create_connection(("127.0.0.1", gt.port()), timeout=10)
        client.sendall(PING)
        expect_clean_close(client)  # EOF, not a reset, not a hang
        client.close()
    wait_for(lambda: "the relay's reply has no byte counts" in supervisor_log(gt), 10, "the log to name the bad reply")
    status = row(gt)
    assert status["reconnects"] == reconnects and status["state"] == "up", "one bad reply must not drop the SSH connection"


def test_clients_that_never_read_stay_within_the_budget_and_memory_comes_back(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    [relay_pid] = relay_pids(ssh_host)
    supervisor_pid = row(gt)["supervisor_pid"]
    wait_for(lambda: answers(gt.local()), 15, "the tunnel to answer")
    relay_before, supervisor_before = rss_kib_inside(ssh_host, relay_pid), rss_kib(supervisor_pid)
    readers = []
    for n in range(4):
        reader = socket.create_connection(("127.0.0.1", gt.port()), timeout=5)
        reader.setblocking(False)
        readers.append(reader)
        offer_until_full(reader, GET_SERVER_STATUS * 8192, lambda n=n: len(relay_stats(ssh_host)["unacked"]) > n and max(relay_stats(ssh_host)["unacked"].values()) >= CAP and sorted(relay_stats(ssh_host)["unacked"].values())[-n - 1] >= CAP, f"stalled stream {n + 1} to fill the relay's cap")
    stats = relay_stats(ssh_host)
    budget = int(stats["budget"])
    relay_full, supervisor_full = rss_kib_inside(ssh_host, relay_pid), rss_kib(supervisor_pid)
    print(f"relay {relay_before} -> {relay_full} KiB, supervisor {supervisor_before} -> {supervisor_full} KiB, relay holds {stats['unacked_total']} bytes")
    assert int(stats["peak_unacked_total"]) <= budget
    assert (relay_full - relay_before) * 1024 <= budget, "the relay grew past the budget"
    assert (supervisor_full - supervisor_before) * 1024 <= budget, "the supervisor grew past the budget"
    assert answers(gt.local()), "another stream stalled behind the full ones"
    for reader in readers:
        reader.close()
    wait_for(lambda: relay_stats(ssh_host)["streams"] == 0, 30, "the stalled streams to close")
    # Deadlines, not durations: a stalled stream's server socket lingers 5 s after its close (a FIN,
    # not a reset), and only then is its memory trimmed; a loaded 2-core CI machine needs more room.
    wait_for(lambda: rss_kib_inside(ssh_host, relay_pid) - relay_before < 8 * 1024, 90, "the relay's memory to come back")
    wait_for(lambda: rss_kib(supervisor_pid) - supervisor_before < 16 * 1024, 90, "the supervisor's memory to come back")
    print(f"after: relay {rss_kib_inside(ssh_host, relay_pid)} KiB, supervisor {rss_kib(supervisor_pid)} KiB")


def test_a_new_streams_first_bytes_go_with_its_hello(gt: Gt, ssh_host: SshHost) -> None:
    """The relay keeps the frames that come after a hello until it has dialled the server, so
    the supervisor sends a new stream's bytes at once, not one round trip after the hello.
    Against a relay that answers only once those bytes have come, the Ping is answered; a
    supervisor that waited for the answer first would wait out its hello time and close."""
    bring_up(gt, ssh_host)
    [pid] = relay_pids(ssh_host)
    socket_path = f"/home/gamer/.local/state/gt-remote/relay-{PORT}/sock"
    ssh_host.kill(pid)
    ssh_host.spawn(f"exec python3 -c {shlex.quote(RELAY_THAT_WAITS_FOR_THE_BYTES)} {socket_path} {PORT}")
    connects = f"import socket; socket.socket(socket.AF_UNIX).connect({socket_path!r})"
    wait_for(lambda: ssh_host.exec(f"python3 -c {shlex.quote(connects)}", user="gamer")[0] == 0, 10, "the stand-in relay to listen")
    with socket.create_connection(("127.0.0.1", gt.port()), timeout=10) as client:
        client.sendall(PING)
        assert recv_frame(client) == PONG
    assert relay_pids(ssh_host) == [], "answered by the stand-in, not by a relay started again"


def test_clients_that_close_at_once_leave_nothing_on_the_remote(gt: Gt, ssh_host: SshHost) -> None:
    """A client that sends and closes before the relay has answered its stream's hello (a
    port check, an impatient script): its bytes and its close went with the hello, and the
    relay, once it has dialled, ends that server connection too."""
    bring_up(gt, ssh_host)
    before = server_clients_inside(ssh_host)
    for _ in range(10):
        client = socket.create_connection(("127.0.0.1", gt.port()), timeout=10)
        client.sendall(PING)
        client.close()
    wait_for(lambda: relay_stats(ssh_host)["streams"] == 0 and server_clients_inside(ssh_host) == before, 30, "the relay and the server to let go of every stream")
    assert relay_stats(ssh_host)["streams_total"] >= 10


def test_new_clients_after_a_relay_kill_all_get_their_pong(gt: Gt, ssh_host: SshHost) -> None:
    port = bring_up_resumable_on_a_port(gt, ssh_host, keepalive="30")  # the health loop stays out of it: the streams do it
    [pid] = relay_pids(ssh_host)
    ssh_host.kill(pid)
    wait_for(lambda: relay_pids(ssh_host) == [], 10, "the killed relay to be gone")
    results: list[str] = [""] * CLIENTS
    started = time.monotonic()

    def client(index: int) -> None:
        time.sleep(max(0.0, started + index * OVER_S / CLIENTS - time.monotonic()))  # the schedule: spread over 3 s
        results[index] = ping_once(port)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == ["pong"] * CLIENTS, results
    status = row(gt)
    assert status["relay_restarts"] == 1, status
    assert "a new stream found no relay" in status["last_relay_death"]["cause"], status["last_relay_death"]
    assert len(relay_pids(ssh_host)) == 1 and status["state"] == "up" and status["last_error"] is None
    shown = gt("status", "gaming-pc").stdout
    assert "relay       restarted 1 time(s), last at " in shown and ": a new stream found no relay" in shown, shown


def test_a_frozen_relay_shows_in_status_and_is_replaced(gt: Gt, ssh_host: SshHost) -> None:
    port = bring_up_resumable_on_a_port(gt, ssh_host, keepalive="1")
    [pid] = relay_pids(ssh_host)
    ssh_host.kill(pid, "STOP")
    status = wait_for(lambda: (s := row(gt))["relay_error"] and s, 30, "the frozen relay to show in status")
    assert "Pong" in status["relay_error"], status["relay_error"]
    status = wait_for(lambda: (s := row(gt))["relay_restarts"] == 1 and s, 60, "the frozen relay to be replaced")
    assert "the relay stopped answering" in status["last_relay_death"]["cause"], status["last_relay_death"]
    wait_for(lambda: len(pids := relay_pids(ssh_host)) == 1 and pid not in pids, 15, "one new relay, the frozen one gone")
    wait_for(lambda: answers(f"tcp://127.0.0.1:{port}"), 15, "a Pong through the new relay")
    wait_for(lambda: row(gt)["relay_error"] is None, 15, "status to clear the relay error")
    assert row(gt)["server_restarts"] == 0


def test_another_versions_relay_with_a_live_lease_is_left_running(gt: Gt, ssh_host: SshHost) -> None:
    agent_path, pid = start_other_version(ssh_host)
    write_lease(ssh_host, OTHER_LEASE, ttl=3600)
    port = bring_up_on_a_port(gt, ssh_host)
    status = row(gt)
    assert status["resumable"] is False, status
    reason = status["resumable_reason"]
    assert "another gt-remote version" in reason and f"lease {OTHER_LEASE}" in reason and f"pid {pid}" in reason, reason
    assert ssh_host.pids(agent_path) == [pid], "the other laptop's relay was stopped"
    assert ssh_host.sh(f"cat {STATE}/relay-{PORT}.pid", user="gamer").strip() == str(pid)
    assert answers(f"tcp://127.0.0.1:{port}"), "the tunnel forwards plainly"
    shown = gt("status", "gaming-pc").stdout
    assert f"lease {OTHER_LEASE}" in shown, shown


def test_another_versions_relay_is_replaced_once_no_other_lease_holds_it(gt: Gt, ssh_host: SshHost) -> None:
    """Left over by an older gt-remote of our own (its lease long expired): replaced at `up`."""
    agent_path, pid = start_other_version(ssh_host)
    write_lease(ssh_host, OTHER_LEASE, ttl=60, age="2 hours ago")
    port = bring_up_on_a_port(gt, ssh_host)
    assert row(gt)["resumable"] is True, row(gt)
    assert ssh_host.pids(agent_path) == []
    assert len(ssh_host.pids(f"{RELAYS}/{agent_digest()}/relay_agent.py --socket")) == 1
    assert answers(f"tcp://127.0.0.1:{port}")


def test_a_reconnect_takes_the_port_back_once_the_other_tunnel_is_gone(gt: Gt, ssh_host: SshHost) -> None:
    """Reconnects check the relay with this supervisor's own lease name: its own lease never
    counts as another tunnel's, so once the other one's is gone, our relay replaces theirs."""
    agent_path, pid = start_other_version(ssh_host)
    write_lease(ssh_host, OTHER_LEASE, ttl=3600)
    port = bring_up_on_a_port(gt, ssh_host)
    assert row(gt)["resumable"] is False
    ssh_host.sh(f"rm {STATE}/leases/{PORT}/{OTHER_LEASE}", user="gamer")  # that laptop's `down`
    result = gt("reconnect", "gaming-pc", "--force")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: row(gt)["resumable"] is True, 30, "our relay to serve the port after the reconnect")
    assert ssh_host.pids(agent_path) == []
    assert answers(f"tcp://127.0.0.1:{port}")

