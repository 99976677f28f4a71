"""Checksummed streams through a real `gt-remote up` tunnel (resumable mode) while faults
hit one part of the path: the relay frozen, the supervisor frozen, the network silently
dropped, SSH sessions killed under connection churn.

The remote runs the ccmux-server stand-in with one addition (a checked push): every frame a
client sends or gets carries (client id, sequence number, payload, CRC32). The stand-in
echoes the client's frames whole and, on request, pushes numbered frames of its own, then
says how many it pushed. Each client checks every frame it gets: the CRC, the exact
sequence (nothing lost, duplicated or reordered), and that everything it sent came back.
Afterwards no stream is left on the relay and no connection on the server, once the
clients have closed and again after `gt-remote down`.

Waits are on observable state with deadlines; `time.sleep` is only ever a fault's length."""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Gt
from tests.e2e.helpers import PING, PONG, STANDIN_ECHO, kill_ssh_sessions, relay_pids, relay_stats, row, server_clients_inside
from tests.e2e.helpers import recv_exactly as resume_recv_exactly
from tests.helpers import answers, supervisor_processes
from tests.testbed import STANDIN, SshHost, free_loopback_port, wait_for

# The checked push: variants the stand-in does not know, added by checked_server() below.
PUSH_START, PUSH, PUSH_STOP, PUSH_END = 0x7FFF0101, 0x7FFF0102, 0x7FFF0103, 0x7FFF0104


LEN = struct.Struct(">I")  # the stand-in's frame header: the payload's length


HEAD = struct.Struct("<IIQ")  # a checked payload: variant, client id, sequence number ...


CRC = struct.Struct("<I")  # ... data, then the CRC32 of all that precedes it


PATTERN = bytes(range(256)) * 2  # a pushed frame's data: PATTERN[seq % 256:][:size]


CONNECT_TIMEOUT = 30.0  # a new client during an outage waits for the link (hello time 15 s)


STALL_S = 90.0  # a client socket's timeout: a fault stalls it, only this long is a hang


PROGRESS_S = 60.0  # after a fault, every client must move on within this


SETTLE_S = 20.0  # stream ends are asynchronous: the relay and the server let go within this


FINISH_S = 60.0  # a client's last echoes and the push's end come back within this


def push_size(seq: int, low: int, high: int) -> int:
    return low + (seq * 37) % (high - low + 1)


def sealed(variant: int, client: int, seq: int, data: bytes = b"") -> bytes:
    """A checked payload (without the length header)."""
    body = HEAD.pack(variant, client, seq) + data
    return body + CRC.pack(zlib.crc32(body))


def framed(body: bytes) -> bytes:
    return LEN.pack(len(body)) + body


# Added to the stand-in's source before its `if __name__ == "__main__":` line, so the server
# the tunnel starts is the stand-in (Ping, GetServerStatus with its client count, echo) plus
# the checked push. Runs on the remote's python3.
SERVER_ADDITION = '''
# --- this file's own: a checked push -------------------------------
import zlib

PUSH_START, PUSH, PUSH_STOP, PUSH_END = 0x7FFF0101, 0x7FFF0102, 0x7FFF0103, 0x7FFF0104
HEAD = struct.Struct("<IIQ")
PATTERN = bytes(range(256)) * 2
PUSH_BATCH = 2000  # frames in one write at most, then drain: the socket's backpressure counts


def sealed_frame(variant, client, seq, data=b""):
    body = HEAD.pack(variant, client, seq) + data
    return frame(body + struct.pack("<I", zlib.crc32(body)))


class Push:
    """`rate` frames a second, numbered from 1, each of low..high data bytes; it falls behind
    while the socket is full and catches up after."""

    def __init__(self, writer, client, rate, low, high):
        self.writer, self.client, self.rate, self.low, self.high = writer, client, rate, low, high
        self.seq = 0
        self.stopping = False
        self.task = asyncio.ensure_future(self.run())

    async def run(self):
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not self.stopping:
            due = min(int((loop.time() - start) * self.rate), self.seq + PUSH_BATCH)
            if due <= self.seq:
                await asyncio.sleep(0.005)
                continue
            parts = []
            for seq in range(self.seq + 1, due + 1):
                size = self.low + (seq * 37) % (self.high - self.low + 1)
                parts.append(sealed_frame(PUSH, self.client, seq, PATTERN[seq % 256:seq % 256 + size]))
            self.seq = due
            self.writer.write(b"".join(parts))
            await self.writer.drain()


class CheckedServer(Server):
    async def serve_client(self, reader, writer):
        self.clients += 1
        push = None
        try:
            while True:
                (length,) = struct.unpack(">I", await reader.readexactly(4))
                if length > MAX_PAYLOAD:
                    return
                payload = await reader.readexactly(length)
                variant = struct.unpack_from("<I", payload)[0] if len(payload) >= 4 else -1
                if variant == PUSH_START and push is None:
                    _, client, rate, low, high = struct.unpack_from("<IIIII", payload)
                    push = Push(writer, client, rate, low, high)
                    continue
                if variant == PUSH_STOP and push is not None:
                    push.stopping = True
                    await push.task
                    writer.write(sealed_frame(PUSH_END, push.client, push.seq))
                    await writer.drain()
                    continue
                answer = self.reply(payload)
                if answer:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if push is not None:
                push.task.cancel()
            self.clients -= 1
            writer.close()


Server = CheckedServer

'''


MAIN_LINE = '\nif __name__ == "__main__":'


def checked_server(directory: Path) -> Path:
    source = STANDIN.read_text()
    assert source.count(MAIN_LINE) == 1, "the stand-in's main guard moved: update SERVER_ADDITION's insertion point"
    path = directory / "ccmux-server-checked"
    path.write_text(source.replace(MAIN_LINE, SERVER_ADDITION + MAIN_LINE))
    path.chmod(0o755)
    return path


def bring_up_checked(gt: Gt, host: SshHost, tmp_path: Path) -> int:
    """The tunnel up with the checked server, on a local port of its own (the remote port is
    9999, as in the other tests); that local port."""
    local = free_loopback_port()
    server = checked_server(tmp_path)
    result = gt("up", host.alias, "--server-binary", str(server), "--keepalive", "1", "--local", f"tcp://127.0.0.1:{local}", ssh_config=host.ssh_config)
    assert result.returncode == 0, result.stderr
    status = row(gt)
    assert status["resumable"] is True, status
    wait_for(lambda: answers(f"tcp://127.0.0.1:{local}"), 30, "the tunnel to answer a Ping")
    return local


class Broken(Exception):
    """What a client saw that a resumable stream must never show."""


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    try:
        return resume_recv_exactly(sock, size)
    except EOFError as eof:  # an EOF mid-stream is what a resumable stream must never show
        raise Broken(str(eof)) from None


def recv_body(sock: socket.socket) -> bytes:
    (length,) = LEN.unpack(recv_exactly(sock, 4))
    return recv_exactly(sock, length)


def seq_of(body: bytes) -> int:
    return int(HEAD.unpack_from(body)[2]) if len(body) >= HEAD.size else -1


class CheckedClient:
    """One long-lived connection through the tunnel. A sender thread sends echo frames of
    1..100 data bytes; the server may also push frames of its own; a reader thread checks
    every frame that comes back. The first thing wrong is kept in `error`."""

    def __init__(self, port: int, cid: int, echo_pause: float | None = 0.01, push: tuple[int, int, int] | None = None) -> None:
        self.cid = cid
        self.push = push  # (frames a second, fewest data bytes, most data bytes)
        self.pending: deque[bytes] = deque()  # echo payloads sent and not yet back, in order
        self.echo_sent = 0
        self.echoed = 0
        self.pushed = 0  # push frames received and checked
        self.push_end: int | None = None  # how many the server says it pushed
        self.bytes_in = 0
        self.error: str | None = None
        self.closing = False
        self._stop = threading.Event()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
        self.sock.settimeout(STALL_S)
        if push is not None:
            rate, low, high = push
            self.sock.sendall(framed(struct.pack("<IIIII", PUSH_START, cid, rate, low, high)))
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"reader-{cid}")
        self._reader.start()
        self._sender: threading.Thread | None = None
        if echo_pause is not None:
            self._sender = threading.Thread(target=self._send, args=(echo_pause,), daemon=True, name=f"sender-{cid}")
            self._sender.start()

    def fail(self, what: str) -> None:
        if self.error is None:
            self.error = what

    def _send(self, pause: float) -> None:
        rng = random.Random(self.cid)
        seq = 0
        try:
            while not self._stop.is_set() and self.error is None:
                batch = []
                for _ in range(rng.randint(1, 3)):
                    seq += 1
                    body = sealed(STANDIN_ECHO, self.cid, seq, rng.randbytes(rng.randint(1, 100)))
                    self.pending.append(body)  # before it is sent: its echo may come back at once
                    batch.append(framed(body))
                self.echo_sent = seq
                self.sock.sendall(b"".join(batch))
                self._stop.wait(pause)  # pacing
        except OSError as exc:
            if not self.closing:
                self.fail(f"sending echo {seq} failed: {exc!r}")

    def _read(self) -> None:
        buffer = bytearray()
        try:
            while True:
                chunk = self.sock.recv(256 * 1024)
                if not chunk:
                    if not self.closing:
                        self.fail(f"the stream ended (EOF) after {self.bytes_in} bytes, {self.echoed} echoes and {self.pushed} pushed frames")
                    return
                self.bytes_in += len(chunk)
                buffer += chunk
                at, end = 0, len(buffer)
                while end - at >= 4:
                    (length,) = LEN.unpack_from(buffer, at)
                    if end - at - 4 < length:
                        break
                    self._check(bytes(buffer[at + 4 : at + 4 + length]))
                    at += 4 + length
                del buffer[:at]
        except Broken as exc:
            self.fail(str(exc))
        except OSError as exc:  # a reset, or no byte for STALL_S
            if not self.closing:
                self.fail(f"the stream failed after {self.bytes_in} bytes: {exc!r}")

    def _check(self, body: bytes) -> None:
        if len(body) < HEAD.size + CRC.size:
            raise Broken(f"a {len(body)}-byte frame that is no checked frame: {body[:32]!r}")
        if zlib.crc32(body[: -CRC.size]) != CRC.unpack_from(body, len(body) - CRC.size)[0]:
            raise Broken(f"a {len(body)}-byte frame fails its CRC32 (bytes corrupted, or spliced from two frames) after {self.echoed} echoes, {self.pushed} pushed")
        variant, cid, seq = HEAD.unpack_from(body)
        if cid != self.cid:
            raise Broken(f"a frame of client {cid} arrived on client {self.cid}'s stream")
        if variant == STANDIN_ECHO:
            if not self.pending:
                raise Broken(f"echo {seq} came back though no echo was outstanding (duplicated)")
            expected = self.pending.popleft()
            if body != expected:
                due = seq_of(expected)
                how = "lost" if seq > due else "duplicated or reordered"
                raise Broken(f"echo {seq} arrived where echo {due} was due: bytes {how}")
            self.echoed += 1
        elif variant == PUSH:
            due = self.pushed + 1
            if seq != due:
                how = "lost" if seq > due else "duplicated or reordered"
                raise Broken(f"pushed frame {seq} arrived where {due} was due: bytes {how}")
            assert self.push is not None
            size = push_size(seq, self.push[1], self.push[2])
            if body[HEAD.size : -CRC.size] != PATTERN[seq % 256 : seq % 256 + size]:
                raise Broken(f"pushed frame {seq} carries the wrong data")
            self.pushed = seq
        elif variant == PUSH_END:
            if seq != self.pushed:
                raise Broken(f"the server pushed {seq} frames, the client got {self.pushed}")
            self.push_end = seq
        else:
            raise Broken(f"an unexpected frame (variant {variant:#x})")

    def done(self) -> bool:
        """Everything sent has come back, and the push (if any) has ended."""
        return not self.pending and (self.push is None or self.push_end is not None)

    def finish(self, problems: list[str]) -> None:
        """Stop sending, end the push, wait for every echo and the push's end, close."""
        self._stop.set()
        if self._sender is not None:
            self._sender.join(STALL_S)
        if self.error is None and self.push is not None:
            try:
                self.sock.sendall(framed(sealed(PUSH_STOP, self.cid, 0)))
            except OSError as exc:
                self.fail(f"asking the push to stop failed: {exc!r}")
        if self.error is None:
            try:
                wait_for(lambda: self.error is not None or self.done(), FINISH_S, f"client {self.cid}'s last echoes and push end")
            except AssertionError as exc:
                self.fail(f"{exc}: {len(self.pending)} of {self.echo_sent} echoes never came back, push end {self.push_end} after {self.pushed} frames")
        self.close()
        if self.error is not None:
            problems.append(f"client {self.cid}: {self.error}")

    def close(self) -> None:
        self.closing = True
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread
        except OSError:
            pass
        self._reader.join(10)
        self.sock.close()

    def summary(self) -> str:
        return f"client {self.cid}: {self.echoed}/{self.echo_sent} echoes, {self.pushed} pushed, {self.bytes_in} bytes in"


def short_exchange(port: int, cid: int, seq: int, rng: random.Random) -> None:
    """A new connection, 1..3 checked echo frames and a Ping, then close: raises on anything wrong."""
    with socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT) as sock:
        sock.settimeout(STALL_S)
        bodies = [sealed(STANDIN_ECHO, cid, seq + n, rng.randbytes(rng.randint(1, 100))) for n in range(rng.randint(1, 3))]
        sock.sendall(b"".join(framed(body) for body in bodies) + PING)
        for body in bodies:
            got = recv_body(sock)
            if got != body:
                raise Broken(f"echo {seq_of(got)} came back where {seq_of(body)} was due (or corrupted)")
        if framed(recv_body(sock)) != PONG:
            raise Broken("the Ping after the echoes was not answered by a Pong")


def newcomer(port: int, cid: int, problems: list[str]) -> None:
    try:
        short_exchange(port, cid, 1, random.Random(cid))
    except (OSError, Broken) as exc:
        problems.append(f"a new client ({cid}) failed: {exc!r}")


def wait_progress(clients: list[CheckedClient], echoes: int, pushed: int, what: str) -> bool:
    """Every client has moved on by `echoes` echoes and `pushed` pushed frames (or one broke:
    then False, and its error says what)."""
    marks = [(c, c.echoed + echoes, c.pushed + pushed) for c in clients]
    try:
        wait_for(
            lambda: any(c.error for c in clients) or all(c.echoed >= e and c.pushed >= p for c, e, p in marks),
            PROGRESS_S,
            f"every client to move on ({echoes} echoes, {pushed} pushed frames each) {what}",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; now " + "; ".join(c.summary() for c in clients)) from None
    return not any(c.error for c in clients)


def remote_counts(host: SshHost) -> tuple[int, int, dict[str, Any]]:
    """(streams on the relay, connections on the server, the relay's stats), asked inside the container."""
    stats = relay_stats(host) if relay_pids(host) else {"streams": 0}  # no relay, no stream
    return int(stats["streams"]), server_clients_inside(host), stats


def leftovers(gt: Gt, stats: dict[str, Any]) -> str:
    """For the failure message: which streams are left, and what the laptop knows of them."""
    ids = sorted(stats.get("unacked", {}))
    words = [f"relay channels {stats.get('channels')}, stream ids {ids}"]
    try:
        words.append(f"laptop streams_open {row(gt)['streams_open']}")
    except (ValueError, KeyError):  # no such tunnel any more (after down)
        pass
    logs = "".join(path.read_text() for path in (gt.home / ".local/state/gt-remote/logs").glob("*.log")).splitlines()
    named = [line for line in logs if any(sid in line for sid in ids)]
    words.append(f"supervisor log on them: {named[-6:]}" if named else "the supervisor log names none of them")
    return "; ".join(words)


def expect_nothing_left(gt: Gt, host: SshHost, when: str, problems: list[str]) -> None:
    last: list[tuple[int, int, dict[str, Any]]] = []

    def clear() -> bool:
        last.append(remote_counts(host))
        return last[-1][:2] == (0, 0)

    try:
        wait_for(clear, SETTLE_S, when, interval=0.2)
    except AssertionError:
        streams, connections, stats = last[-1]
        problems.append(f"{when}: {streams} streams left on the relay and {connections} connections on the server after {SETTLE_S:g} s ({leftovers(gt, stats)})")


def close_and_check(gt: Gt, host: SshHost, clients: list[CheckedClient], problems: list[str], started: float) -> None:
    """Every client finishes (all its bytes checked), then nothing is left on the remote, and
    again after `gt-remote down`. Fails with everything that went wrong."""
    for client in clients:
        client.finish(problems)
    for client in clients:
        print(client.summary())
    if relay_pids(host):
        stats = relay_stats(host)
        print(f"relay: peak unacknowledged {stats.get('peak_unacked')} bytes on one stream, {stats.get('peak_unacked_total')} in all, {stats.get('streams_total')} streams")
    expect_nothing_left(gt, host, "after the clients closed", problems)
    down = gt("down", host.alias, timeout=60)
    if down.returncode != 0:
        problems.append(f"gt-remote down exited {down.returncode}: {down.stderr.strip()}")
    expect_nothing_left(gt, host, "after gt-remote down", problems)
    print(f"took {time.monotonic() - started:.1f} s")
    assert not problems, "\n".join(problems)


def run_faults(
    gt: Gt, host: SshHost, tmp_path: Path, inject: Callable[[int], None], faults: int, clients_n: int = 3,
    echo_pause: float | None = 0.01, push: tuple[int, int, int] | None = (200, 1, 100),
    before: tuple[int, int] = (50, 50), after: tuple[int, int] = (50, 50),
) -> list[CheckedClient]:
    """Bring the tunnel up, start the clients, inject `faults` faults, each followed by every
    client moving on (`after`: echoes, pushed frames) and a new client's exchange; then close
    and check everything."""
    started = time.monotonic()
    local = bring_up_checked(gt, host, tmp_path)
    problems: list[str] = []
    clients = [CheckedClient(local, n, echo_pause, push) for n in range(1, clients_n + 1)]
    try:
        if wait_progress(clients, *before, "before the first fault"):
            for n in range(faults):
                fault_at = time.monotonic()
                inject(n)
                if not wait_progress(clients, *after, f"after fault {n + 1}"):
                    break
                print(f"fault {n + 1}: every client moved on {time.monotonic() - fault_at:.1f} s after it began")
                newcomer(local, 100 + n, problems)
    except BaseException:
        for client in clients:
            client.close()
        raise
    close_and_check(gt, host, clients, problems, started)
    return clients


class Churn:
    """`threads` threads, each opening a new connection, doing a short checked exchange and
    closing, over and over."""

    def __init__(self, port: int, threads: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.attempts = 0
        self.succeeded = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True, name=f"churn-{n}") for n in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self, n: int) -> None:
        rng = random.Random(1000 + n)
        cid = 1000 + n
        seq = 1
        while not self.stop.is_set():
            with self.lock:
                self.attempts += 1
            try:
                short_exchange(self.port, cid, seq, rng)
                with self.lock:
                    self.succeeded += 1
            except (OSError, Broken) as exc:
                with self.lock:
                    self.failures.append(f"thread {n}, connection with echo {seq}: {exc!r}")
            seq += 4
            self.stop.wait(0.02)  # pacing

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(STALL_S + CONNECT_TIMEOUT)
            assert not thread.is_alive(), f"{thread.name} did not end"


def test_frozen_relay_loses_no_byte_in_either_direction(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """The relay SIGSTOPped for 3 s, 5 times, while 3 clients send echo frames of 1..100 data
    bytes and the server pushes frames of 1..100 data bytes to each."""
    pids: list[int] = []

    def freeze_relay(_: int) -> None:
        found = relay_pids(ssh_host)
        assert len(found) == 1, f"one relay expected on the remote before freeze {len(pids) + 1}, found {found}"
        pid = found[0]
        pids.append(pid)
        ssh_host.kill(pid, "STOP")
        try:
            time.sleep(3.0)  # the fault's length
        finally:
            ssh_host.kill(pid, "CONT")

    run_faults(gt, ssh_host, tmp_path, freeze_relay, faults=5)
    assert len(set(pids)) == 1, f"the relay was restarted during 3 s freezes: pids {pids}"


def test_frozen_supervisor_loses_no_pushed_byte(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """Our supervisor (this test's child, found by its runtime dir) SIGSTOPped for 12 s while
    the server pushes 40-byte frames to 3 clients, 10000 a second each: more than the relay's
    4 MiB per stream in 12 s, so its backpressure is reached."""
    rate = 10_000
    runtime = gt.env["XDG_RUNTIME_DIR"]

    def freeze_supervisor(_: int) -> None:
        [pid] = supervisor_processes(runtime)
        assert pid == row(gt)["supervisor_pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(12.0)  # the fault's length
        finally:
            os.kill(pid, signal.SIGCONT)

    # 16 data bytes: 40-byte frames with the length header. After the freeze, every client
    # gets at least the 12 s the server had to hold back: the backlog went through.
    run_faults(gt, ssh_host, tmp_path, freeze_supervisor, faults=1, echo_pause=None, push=(rate, 16, 16), before=(0, rate), after=(0, 12 * rate))


def test_silent_network_drops_lose_no_byte(gt: Gt, host_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The host's network cut for 6 s, 5 times (docker network disconnect: packets to it go
    nowhere, nothing is refused), under echo and pushed frames of 1..100 data bytes."""
    host = host_factory(own_network=True)

    def drop(_: int) -> None:
        host.disconnect()
        try:
            time.sleep(6.0)  # the fault's length
        finally:
            host.connect()

    run_faults(gt, host, tmp_path, drop, faults=5)


def test_ssh_session_kills_during_connection_churn(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """20 kills of the sshd processes serving our connection, while 8 threads keep opening a
    new connection, exchanging checked echo frames and a Ping, and closing: every attempt
    succeeds, and no stream or server connection is left behind (a kill during a new
    stream's hello must not leave a ghost)."""
    started = time.monotonic()
    local = bring_up_checked(gt, ssh_host, tmp_path)
    problems: list[str] = []
    churn = Churn(local, 8)
    try:
        wait_for(lambda: churn.succeeded >= 16, PROGRESS_S, "the churn to get going")
        for n in range(20):
            reconnects = row(gt)["reconnects"]
            kill_ssh_sessions(ssh_host)
            wait_for(lambda: (s := row(gt))["state"] == "up" and s["reconnects"] > reconnects, PROGRESS_S, f"the tunnel to reconnect after kill {n + 1}", interval=0.2)
            mark = churn.succeeded + 8
            wait_for(lambda: churn.succeeded >= mark, PROGRESS_S, f"8 more connections to succeed after kill {n + 1}")
    finally:
        churn.finish()
    print(f"churn: {churn.attempts} connections, {churn.succeeded} succeeded, {len(churn.failures)} failed")
    if churn.failures:
        problems.append(f"{len(churn.failures)} of {churn.attempts} connections failed, e.g. " + "; ".join(churn.failures[:5]))
    if churn.succeeded + len(churn.failures) != churn.attempts:
        problems.append(f"{churn.attempts} attempts but {churn.succeeded} succeeded and {len(churn.failures)} failed")
    close_and_check(gt, ssh_host, [], problems, started)

