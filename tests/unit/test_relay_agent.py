"""The uploaded relay, run as the remote runs it: its own file under the oldest Python it
claims (3.8), real Unix and TCP sockets, no SSH. A small echo server stands in for
ccmux-server; the test speaks the relay's frames itself, as the supervisor would."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import PYTHON_38, agent_file, load_agent
from tests.reaper import short_tempdir
from tests.testbed import wait_for
from tests.unit.helpers import HEADER


class EchoServer:
    """A TCP server on loopback that echoes, and counts the connections it holds open."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = 0
        self.total = 0
        self.silent = False  # accept, but never read (a server that stalls)
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.open += 1
                self.total += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        try:
            while True:
                if self.silent:
                    threading.Event().wait(0.05)
                    continue
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()
            with self._lock:
                self.open -= 1

    def close(self) -> None:
        self.listener.close()


@dataclass
class Channel:
    """One connection to the relay's socket, speaking frames."""

    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        self.sock.sendall(HEADER.pack(kind, len(payload)) + payload)

    def hello(self, **fields: object) -> None:
        self.send(b"H", json.dumps(fields).encode())

    def frame(self, timeout: float = 10.0) -> tuple[bytes, bytes]:
        """The next frame; EOFError when the relay closed the channel."""
        self.sock.settimeout(timeout)
        while True:
            if len(self.buffer) >= HEADER.size:
                kind, length = HEADER.unpack_from(self.buffer)
                if len(self.buffer) >= HEADER.size + length:
                    payload = bytes(self.buffer[HEADER.size : HEADER.size + length])
                    del self.buffer[: HEADER.size + length]
                    return kind, payload
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the relay closed the channel")
            self.buffer += chunk

    def reply(self) -> dict[str, object]:
        kind, payload = self.frame()
        assert kind == b"R", (kind, payload)
        return dict(json.loads(payload))

    def data(self, size: int) -> bytes:
        """`size` bytes of D frames (acks and heartbeats in between are skipped)."""
        got = bytearray()
        while len(got) < size:
            kind, payload = self.frame()
            if kind == b"D":
                got += payload
            else:
                assert kind in (b"A", b"K"), kind
        return bytes(got)

    def closed(self) -> bool:
        """Frames until EOF; True once the relay has closed the channel."""
        try:
            while True:
                self.frame()
        except EOFError:
            return True

    def close(self) -> None:
        self.sock.close()


@dataclass
class Relay:
    proc: subprocess.Popen[bytes]
    path: str
    server: EchoServer

    @property
    def directory(self) -> Path:
        """The relay's own temporary directory ("{dir}" in the fixture's arguments)."""
        return Path(self.path).parent

    def ask(self, **hello: object) -> dict[str, object]:
        """One hello on a channel of its own, and the reply (the relay closes the channel)."""
        channel = self.channel()
        channel.hello(**hello)
        try:
            return channel.reply()
        finally:
            channel.close()

    def channel(self) -> Channel:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(self.path)
        return Channel(sock)

    def stats(self) -> dict[str, object]:
        return self.ask(op="stats")

    def log(self) -> str:
        return Path(self.path).with_name("log").read_text()


def stream_id(n: int) -> str:
    return f"{n:032x}"


def accepts(path: str) -> bool:
    """Does a Unix socket at `path` take a connection now?"""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
            return True
        except OSError:
            return False


@pytest.fixture
def relay(request: pytest.FixtureRequest) -> Iterator[Relay]:
    with started_relay(getattr(request, "param", [])) as started:
        yield started


@contextlib.contextmanager
def started_relay(args: list[str]) -> Iterator[Relay]:
    assert PYTHON_38.exists(), f"{PYTHON_38} is missing: the relay must be tested under the oldest Python it claims"
    server = EchoServer()
    directory = str(short_tempdir("gtr-relay-"))
    path = os.path.join(directory, "sock")
    extra = [arg.replace("{dir}", directory) for arg in args]
    with open(os.path.join(directory, "log"), "wb") as log:
        proc = subprocess.Popen([str(PYTHON_38), str(agent_file()), "--socket", path, "--port", str(server.port), *extra], stdout=log, stderr=log)
    try:
        # A connect, not the file: the socket exists once bound, a moment before it listens.
        wait_for(lambda: accepts(path) or proc.poll() is not None, 30, "the relay to listen")
        assert proc.poll() is None, Path(directory, "log").read_text()
        yield Relay(proc, path, server)
    finally:
        proc.terminate()  # our own child, by pid
        proc.wait(10)
        server.close()


def test_relay_runs_under_python_3_8() -> None:
    version = subprocess.run([str(PYTHON_38), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == "(3, 8)"


def test_new_stream_carries_data_both_ways(relay: Relay) -> None:
    channel = relay.channel()
    channel.hello(op="new", id=stream_id(1), window=60, heartbeat=1)
    assert channel.reply() == {"received": 0, "consumed": 0, "replaying": 0}
    channel.send(b"D", b"ping")
    assert channel.data(4) == b"ping"
    kind, payload = channel.frame()  # the relay acknowledges what arrived and what its server took
    assert (kind, payload) == (b"A", struct.pack(">QQ", 4, 4))
    channel.send(b"K")
    assert channel.frame() == (b"K", b""), "a heartbeat is answered"
    channel.close()


def test_resume_replays_what_the_client_missed(relay: Relay) -> None:
    first = relay.channel()
    first.hello(op="new", id=stream_id(2), window=60, heartbeat=1)
    first.reply()
    first.send(b"D", b"hello ")
    first.send(b"D", b"world")
    wait_for(lambda: relay.stats()["unacked_total"] == 11, 10, "the echo to reach the relay")
    first.close()  # the path dies before the client read the echo
    wait_for(lambda: relay.stats()["channels"] == 1, 10, "the relay to see the channel go (only the asker is left)")
    second = relay.channel()
    second.hello(op="resume", id=stream_id(2), received=6, consumed=6)  # the client had only "hello "
    answer = second.reply()
    assert answer == {"received": 11, "consumed": 11, "replaying": 5}, answer
    assert second.data(5) == b"world"
    second.send(b"A", struct.pack(">QQ", 11, 11))
    second.send(b"D", b"!")
    assert second.data(1) == b"!"
    assert relay.server.total == 1, "a resume must not dial the server again"
    stats = relay.stats()
    assert stats["resumes"] == 1 and stats["bytes_replayed"] == 5
    second.close()


def test_resume_of_an_unknown_stream_is_refused(relay: Relay) -> None:
    channel = relay.channel()
    channel.hello(op="resume", id=stream_id(3), received=0)
    assert channel.reply() == {"error": "unknown"}
    assert channel.closed()


def test_close_frame_releases_the_server_connection(relay: Relay) -> None:
    channel = relay.channel()
    channel.hello(op="new", id=stream_id(4), window=60)
    channel.reply()
    wait_for(lambda: relay.server.open == 1, 10, "the server to see the stream")
    channel.send(b"C")
    assert channel.closed()
    wait_for(lambda: relay.server.open == 0, 10, "the server connection to be closed")
    assert relay.stats()["streams"] == 0


def test_close_op_ends_detached_streams(relay: Relay) -> None:
    ids = [stream_id(10), stream_id(11)]
    for one in ids:
        channel = relay.channel()
        channel.hello(op="new", id=one, window=600)
        channel.reply()
        channel.close()
    wait_for(lambda: relay.server.open == 2, 10, "two server connections")
    closer = relay.channel()
    closer.hello(op="close", ids=[*ids, stream_id(12)])
    assert closer.reply() == {"closed": 2}
    wait_for(lambda: relay.server.open == 0, 10, "the detached streams' server connections to close")


def test_window_runs_from_the_last_frame_not_from_the_channel(relay: Relay) -> None:
    """A channel that stays open but silent (a partition sshd has not noticed) does not keep
    the stream: the window runs from the last frame, and heartbeats keep an idle one."""
    beating, silent = relay.channel(), relay.channel()
    beating.hello(op="new", id=stream_id(20), window=1.5, heartbeat=0.5)
    beating.reply()
    silent.hello(op="new", id=stream_id(21), window=1.5, heartbeat=0.5)
    silent.reply()
    wait_for(lambda: relay.server.open == 2, 10, "two server connections")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.3):
            beating.send(b"K")

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        assert silent.closed(), "the silent stream's channel is closed when its window ends"
        wait_for(lambda: relay.server.open == 1, 10, "the silent stream's server connection to close")
        assert "nothing from the laptop for" in relay.log()
        # The beating stream outlived its window several times over and still works.
        wait_for(lambda: beating.frame()[0] == b"K", 10, "a heartbeat answer")
        assert relay.server.open == 1
    finally:
        stop.set()
        beater.join(5)
    beating.send(b"D", b"still here")
    assert beating.data(10) == b"still here"


@pytest.mark.parametrize(
    "hello",
    [
        b'{"op": "new", "id": "' + b"a" * 32 + b'", "window": 1' + b"0" * 400 + b"}",
        b'{"op": "new", "id": "' + b"b" * 32 + b'", "window": 1e999}',
        b'{"op": "new", "id": "' + b"c" * 32 + b'", "window": NaN}',
        b'{"op": "new", "id": "' + b"d" * 32 + b'", "window": -1}',
        b'{"op": "new", "id": "' + b"e" * 32 + b'", "window": 86401}',
        b"[" * 5000 + b"]" * 5000,
        b'{"nope": 1}',
        b'{"op": "resume", "id": "' + b"f" * 32 + b'", "received": true}',
        b'{"op": "new", "id": "short"}',
        b"\xff\xfe not utf-8",
        b"[1, 2]",
    ],
    ids=["400-digit-window", "infinite-window", "nan-window", "negative-window", "window-over-a-day", "nested-json", "no-op", "bool-count", "short-id", "not-utf8", "not-an-object"],
)
def test_malformed_hello_is_answered_and_closed(relay: Relay, hello: bytes) -> None:
    channel = relay.channel()
    channel.send(b"H", hello)
    answer = channel.reply()
    assert "error" in answer, answer
    assert channel.closed()
    assert relay.server.total == 0
    assert relay.stats()["streams"] == 0, "the relay keeps serving"


def test_oversized_or_wrong_first_frame_is_answered_and_closed(relay: Relay) -> None:
    big = relay.channel()
    big.sock.sendall(HEADER.pack(b"H", 1024 * 1024))  # announces a 1 MiB hello
    assert "error" in big.reply()
    assert big.closed()
    data_first = relay.channel()
    data_first.send(b"D", b"x")
    assert data_first.reply() == {"error": "expected a hello"}
    assert relay.stats()["channels"] == 1  # only the asker


def test_pending_hellos_are_capped(relay: Relay) -> None:
    """Channels that never finish their hello cannot pile up (nor their half-sent bytes)."""
    idle = [relay.channel() for _ in range(64)]
    for channel in idle:
        channel.sock.sendall(HEADER.pack(b"H", 100) + b"{")  # half a hello
    wait_for(lambda: "too many hellos" in str(_answer(relay)), 10, "a new channel to be refused while 64 hellos are pending")
    for channel in idle:
        channel.close()
    wait_for(lambda: "streams" in _answer(relay), 10, "the relay to serve again once they are gone")
    assert relay.stats()["channels"] == 1


def _answer(relay: Relay) -> dict[str, object]:
    """What a stats hello gets now (an error while the relay is full)."""
    channel = relay.channel()
    try:
        channel.hello(op="stats")
        return channel.reply()
    finally:
        channel.close()


def test_stalled_reader_is_capped_and_released(relay: Relay) -> None:
    """A client that never reads: the relay holds at most CAP (plus one read) and, once the
    stream closes, nothing."""
    channel = relay.channel()
    channel.hello(op="new", id=stream_id(30), window=60)
    channel.reply()
    block = b"x" * 65536
    cap = 4 * 1024 * 1024
    sent = 0
    channel.sock.setblocking(False)
    while relay.stats()["peak_unacked"] < cap:  # the echo fills the relay; we never read
        try:
            sent += channel.sock.send(HEADER.pack(b"D", len(block)) + block)
        except BlockingIOError:
            wait_for(lambda: relay.stats()["peak_unacked"] >= cap or _writable(channel.sock), 30, "room to send, or the cap")
    stats = relay.stats()
    assert cap <= int(stats["peak_unacked"]) <= cap + 256 * 1024, stats
    channel.sock.setblocking(True)
    channel.close()
    closer = relay.channel()
    closer.hello(op="close", ids=[stream_id(30)])
    assert closer.reply() == {"closed": 1}
    assert relay.stats()["unacked_total"] == 0


def _writable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([], [sock], [], 0.2)[1])


@pytest.mark.parametrize("relay", [["--budget", str(6 * 1024 * 1024)]], indirect=True)
def test_total_budget_stops_the_largest_stream(relay: Relay) -> None:
    """Two clients that never read, each allowed 4 MiB: past a 6 MiB budget in all, the relay
    stops reading the server of the stream that holds the most, and the total stays put."""
    budget, read = 6 * 1024 * 1024, 256 * 1024
    channels = []
    for n in (40, 41):
        channel = relay.channel()
        channel.hello(op="new", id=stream_id(n), window=60)
        channel.reply()
        channel.sock.setblocking(False)
        channels.append(channel)
    block = b"y" * 65536
    frame = HEADER.pack(b"D", len(block)) + block
    sent = [0, 0]

    def offer() -> bool:
        for i, channel in enumerate(channels):
            if sent[i] < 8 * 1024 * 1024:
                try:
                    channel.sock.send(frame)
                    sent[i] += len(block)
                except BlockingIOError:
                    pass
        return int(relay.stats()["unacked_total"]) >= budget

    wait_for(offer, 60, "the two stalled streams to reach the budget", interval=0)
    for _ in range(50):  # keep offering: the total must not grow past the budget by more than a read per stream
        offer()
    stats = relay.stats()
    assert int(stats["peak_unacked_total"]) <= budget + 2 * read, stats
    assert max(stats["unacked"].values()) <= 4 * 1024 * 1024 + read  # type: ignore[union-attr]
    for channel in channels:
        channel.close()


# --- leases -------------------------------------------------------------------------------

LEASES = "{dir}/home/.local/state/gt-remote/leases/9999"  # where relay_start points --leases


def shell_leases(home: Path, script: str, *args: str) -> list[str]:
    """The remote script's own lease functions (the prelude), run under the local sh with HOME
    set as on the remote; the lease= lines they print."""
    from gt_remote.remote.scripts import script_text

    result = subprocess.run(["sh", "-s"], input=script_text(script, args).encode(), capture_output=True, timeout=60, env={**os.environ, "HOME": str(home)})
    assert result.returncode == 0, result.stderr
    return sorted(line[6:] for line in result.stdout.decode().splitlines() if line.startswith("lease="))


@pytest.mark.parametrize("relay", [["--leases", LEASES]], indirect=True)
def test_the_lease_op_keeps_the_lease_the_remote_script_reads(relay: Relay) -> None:
    home = relay.directory / "home"
    leases = home / ".local/state/gt-remote/leases/9999"
    shell_leases(home, 'lease_touch 9999 other-pc 30')  # another tunnel, through the script
    assert relay.ask(op="lease", name="laptop-gaming-pc", ttl=16) == {"holders": ["other-pc"], "streams": 0}
    mine = leases / "laptop-gaming-pc"
    assert mine.read_text() == "16\n"
    assert mine.stat().st_mode & 0o777 == 0o600 and leases.stat().st_mode & 0o777 == 0o700
    assert shell_leases(home, 'lease_others 9999 other-pc') == ["laptop-gaming-pc"], "the script sees the relay's lease"
    before = mine.stat().st_mtime_ns
    os.utime(mine, ns=(before - 10**9, before - 10**9))
    relay.ask(op="lease", name="laptop-gaming-pc", ttl=16)
    assert mine.stat().st_mtime_ns > before - 10**9, "a touch renews the lease"


@pytest.mark.parametrize("relay", [["--leases", LEASES]], indirect=True)
def test_the_lease_op_drops_expired_leases_and_skips_what_is_not_one(relay: Relay) -> None:
    leases = relay.directory / "home/.local/state/gt-remote/leases/9999"
    leases.mkdir(parents=True, mode=0o700)
    (leases / "live-pc").write_text("60\n")
    expired = leases / "gone-pc"
    expired.write_text("15\n")
    os.utime(expired, (1, 1))
    (leases / "no-ttl-pc").write_text("")  # no number: 60 s, as lease_others reads it
    (leases / "half.tmp").write_text("60\n")
    (leases / ".hidden").write_text("60\n")
    (leases / "dir-pc").mkdir()
    os.mkfifo(leases / "fifo-pc")  # reading it would block the relay
    assert relay.ask(op="lease", name="laptop-gaming-pc", ttl=16) == {"holders": ["live-pc", "no-ttl-pc"], "streams": 0}
    assert not expired.exists(), "an expired lease is removed, as lease_others removes it"
    assert relay.stats()["streams"] == 0, "the relay keeps serving"


@pytest.mark.parametrize("relay", [["--leases", LEASES]], indirect=True)
def test_a_lease_name_with_control_characters_adds_no_answer_line(relay: Relay) -> None:
    """A lease file named `x\nlisten_uid=1000` (any account that could write the directory, or a
    bug) is no lease: neither the upkeep script nor the relay passes its name on, where its
    newline would add a `key=value` line to the answer that decides who holds the port."""
    from gt_remote.remote.scripts import parse_fields, script_text

    home = relay.directory / "home"
    leases = home / ".local/state/gt-remote/leases/9999"
    leases.mkdir(parents=True, mode=0o700)
    (leases / "live-pc").write_text("60\n")
    for name in ("x\nlisten_uid=1000", "tab\tpc", "esc\x1b]0;pwned\x07", "bell\x07pc"):
        (leases / name).write_text("60\n")
    result = subprocess.run(["sh", "-s"], input=script_text('lease_others 9999 mine', ()).encode(), capture_output=True, timeout=60, env={**os.environ, "HOME": str(home)})
    assert result.stdout.decode().splitlines() == ["lease=live-pc"], result.stdout
    assert "listen_uid" not in parse_fields(result.stdout.decode())
    assert relay.ask(op="lease", name="laptop-gaming-pc", ttl=16) == {"holders": ["live-pc"], "streams": 0}


@pytest.mark.parametrize("relay", [["--leases", LEASES]], indirect=True)
@pytest.mark.parametrize(
    "fields",
    [
        {"name": "..", "ttl": 16},
        {"name": "../escaped", "ttl": 16},
        {"name": "a/b", "ttl": 16},
        {"name": ".hidden", "ttl": 16},
        {"name": "", "ttl": 16},
        {"name": "x" * 121, "ttl": 16},
        {"name": ["laptop"], "ttl": 16},
        {"name": "laptop-pc", "ttl": 0},
        {"name": "laptop-pc", "ttl": True},
        {"name": "laptop-pc", "ttl": 1.5},
        {"name": "laptop-pc", "ttl": 86401},
        {"name": "laptop-pc"},
    ],
    ids=["dot-dot", "parent-path", "slash", "dot-file", "empty", "too-long", "not-a-string", "zero-ttl", "bool-ttl", "float-ttl", "ttl-over-a-day", "no-ttl"],
)
def test_a_bad_lease_hello_is_refused_and_writes_nothing(relay: Relay, fields: dict[str, object]) -> None:
    answer = relay.ask(op="lease", **fields)
    assert "error" in answer, answer
    written = sorted(str(path.relative_to(relay.directory)) for path in relay.directory.rglob("*"))
    assert written == ["log", "sock"], written


def test_a_relay_started_without_a_leases_directory_refuses_the_lease_op(relay: Relay) -> None:
    answer = relay.ask(op="lease", name="laptop-gaming-pc", ttl=16)
    assert "keeps no leases" in str(answer.get("error")), answer


# --- who answered the connection the relay made -------------------------------------------

PEER_PROBE = """
import importlib.util, json, socket, sys
spec = importlib.util.spec_from_file_location("agent", sys.argv[1])
agent = importlib.util.module_from_spec(spec)
spec.loader.exec_module(agent)
listener = socket.socket(socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET)
listener.bind((sys.argv[2], 0))
listener.listen(1024)
port = listener.getsockname()[1]
clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(int(sys.argv[3]))]
accepted = [listener.accept()[0] for _ in clients]
local_port = clients[-1].getsockname()[1]
answers = [agent._peer_uid_from_diag(port, local_port), agent.peer_uid(port, local_port), agent.peer_uid_from_proc(port, local_port)]
unused = max(c.getsockname()[1] for c in clients) + 1  # a client port no connection here has
strangers = [agent.peer_uid(port, port), agent.peer_uid(port, unused), agent.peer_uid_from_proc(port, unused)]
print(json.dumps([answers, strangers]))
"""


def peer_answers(address: str, connections: int = 1) -> tuple[list[int | None], list[int | None]]:
    """Under the oldest Python the relay claims, with a listener on `address` and `connections`
    made to 127.0.0.1 on its port: for the last one, (sock_diag's uid, the relay's answer,
    /proc's answer), and the answers for port pairs that are not that connection's."""
    result = subprocess.run([str(PYTHON_38), "-c", PEER_PROBE, str(agent_file()), address, str(connections)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answers, strangers = json.loads(result.stdout)
    return answers, strangers


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "::", "::ffff:127.0.0.1", "::ffff:0.0.0.0"])
def test_the_socket_that_answered_is_found_on_every_address_that_takes_loopback(address: str) -> None:
    """Whatever the listener bound (a v4-mapped wildcard included, which no listing of
    listeners showed before), its accepted socket is found, with its uid, by sock_diag and by
    /proc alike; a port pair that is not the connection's finds nothing."""
    answers, strangers = peer_answers(address)
    assert answers == [os.getuid()] * 3
    assert strangers == [None, None, None]


def test_sock_diag_answers_that_span_many_datagrams_are_read_to_the_end() -> None:
    """Hundreds of connections to the port: the last one's far end is still found."""
    answers, _ = peer_answers("127.0.0.1", connections=600)
    assert answers == [os.getuid()] * 3


class SilentListener:
    """A port whose listener never accepts and whose queue is full: a dial to it hangs."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.port = self.listener.getsockname()[1]
        self.queued = [socket.create_connection(("127.0.0.1", self.port), timeout=5)]  # Linux queues backlog + 1

    def close(self) -> None:
        for sock in self.queued:
            sock.close()
        self.listener.close()


def test_a_stream_id_being_dialled_is_not_dialled_again() -> None:
    """A new stream's hello retried on another channel while the first dial still runs (the
    SSH connection died under it) is refused, not dialled a second time: one stream, one
    server connection, and its bytes delivered once."""
    silent = SilentListener()
    directory = str(short_tempdir("gtr-relay-"))
    path = os.path.join(directory, "sock")
    with open(os.path.join(directory, "log"), "wb") as log:
        proc = subprocess.Popen([str(PYTHON_38), str(agent_file()), "--socket", path, "--port", str(silent.port)], stdout=log, stderr=log)
    try:
        wait_for(lambda: accepts(path) or proc.poll() is not None, 30, "the relay to listen")
        relay = Relay(proc, path, EchoServer())
        first = relay.channel()
        first.hello(op="new", id=stream_id(7), window=60, heartbeat=1)
        wait_for(lambda: relay.stats()["channels"] == 2, 10, "the first hello to be dialling")  # it and the asker
        second = relay.channel()
        second.hello(op="new", id=stream_id(7), window=60, heartbeat=1)
        assert second.reply() == {"error": "bad stream id"}
        first.close()
        second.close()
        relay.server.close()
    finally:
        proc.terminate()  # our own child, by pid
        proc.wait(10)
        silent.close()


def test_a_lease_name_is_never_one_the_listers_skip() -> None:
    from gt_remote.base.config import HostSettings
    from gt_remote.remote.lease import lease_name

    name = lease_name(HostSettings(name="box.tmp", destination="box", local_url="tcp://127.0.0.1:9999"))
    assert name.endswith("-box_tmp"), name
    assert load_agent()._lease_name(name) == name


# --- the hello deadline: its 10 s run beside the rest of this module -------------------------


@pytest.fixture(scope="module", autouse=True)
def hello_cut_short() -> Iterator[Channel]:
    """A relay sent a hello that never ends, as this module starts: the test below, last in the
    module, reads what became of it, so the deadline's wait runs while the other tests do."""
    with started_relay([]) as relay:
        channel = relay.channel()
        channel.sock.sendall(HEADER.pack(b"H", 50) + b'{"op": ')  # and then nothing
        yield channel


def test_a_hello_that_never_comes_is_answered_within_the_deadline(hello_cut_short: Channel) -> None:
    channel = hello_cut_short
    kind, payload = channel.frame(timeout=60)  # HELLO_DEADLINE is 10 s; a loaded machine may be late
    assert kind == b"R" and "no hello within" in json.loads(payload)["error"]
    assert channel.closed()
