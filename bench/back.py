"""The back-tunnel section's tools: what runs inside the container (a MySQL-protocol client
timing `SELECT 1`, a transfer client, the query loop driving the real `mariadb` client), the
laptop-side source and sink, and the reading of the loop's log.

Everything inside the container is one stdlib-only python3 file (CONTAINER_SCRIPT), copied in
once and run as the login user: the relay accepts only the login user's connections. Its
timestamps are CLOCK_MONOTONIC, which a container shares with this machine (no time namespace),
so a fault stamped inside and an answer logged inside compare directly with each other.
"""

from __future__ import annotations

import json
import shlex
import socket
import socketserver
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.testbed import USER, SshHost

SCRIPT_PATH = "/tmp/bench_back.py"

CONTAINER_SCRIPT = r'''
import json, os, select, signal, socket, struct, subprocess, sys, time

# --- a minimal MySQL-protocol client: handshake as root without a password, COM_QUERY ---------

CAPS = 0x1 | 0x200 | 0x2000 | 0x8000 | 0x80000  # LONG_PASSWORD, PROTOCOL_41, TRANSACTIONS, SECURE_CONNECTION, PLUGIN_AUTH


def recv_exact(sock, size):
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the connection closed")
        data += chunk
    return bytes(data)


def read_packet(sock):
    head = recv_exact(sock, 4)
    return head[3], recv_exact(sock, head[0] | head[1] << 8 | head[2] << 16)


def write_packet(sock, seq, payload):
    sock.sendall(struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload)


def mysql_connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    seq, greeting = read_packet(sock)
    if greeting[0] != 10:
        raise RuntimeError("not a MySQL greeting: %r" % greeting[:20])
    write_packet(sock, seq + 1, struct.pack("<IIB", CAPS, 1 << 24, 33) + bytes(23) + b"root\0" + b"\0" + b"mysql_native_password\0")
    seq, reply = read_packet(sock)
    if reply[0] == 0xFE:  # auth switch: an empty password's answer is empty
        write_packet(sock, seq + 1, b"")
        seq, reply = read_packet(sock)
    if reply[0] != 0:
        raise RuntimeError("login refused: %r" % reply[:80])
    return sock


def mysql_query(sock, sql):
    """The rows of a text-protocol result set (raw row packets); the whole answer is read."""
    write_packet(sock, 0, b"\x03" + sql.encode())
    _, first = read_packet(sock)
    if first[0] == 0xFF:
        raise RuntimeError("query failed: %r" % first[:80])
    if first[0] == 0:
        return []
    eofs, rows = 0, []
    while eofs < 2:  # column definitions, EOF, rows, EOF
        _, packet = read_packet(sock)
        if packet[0] == 0xFE and len(packet) < 9:
            eofs += 1
        elif packet[0] == 0xFF:
            raise RuntimeError("query failed: %r" % packet[:80])
        elif eofs == 1:
            rows.append(packet)
    return rows


def rtt(port, count):
    """Round trips of SELECT 1 on one connection, in microseconds, after a short warm-up."""
    sock = mysql_connect(port)
    for _ in range(5):
        mysql_query(sock, "SELECT 1")
    out = []
    for _ in range(count):
        started = time.perf_counter()
        rows = mysql_query(sock, "SELECT 1")
        out.append(round((time.perf_counter() - started) * 1e6, 1))
        if rows != [b"\x011"]:
            raise RuntimeError("SELECT 1 answered %r" % rows)
    sock.close()
    print(json.dumps(out))


def cli_rtt(port, count):
    """The same through the real `mariadb` client, one process and connection, over pipes: what
    a polecat's client adds (its parsing, printing and the pipe) on top of the protocol."""
    proc = subprocess.Popen(["mariadb", "-h", "127.0.0.1", "-P", str(port), "-u", "root", "--batch", "--skip-column-names", "--unbuffered"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    out = []
    for n in range(count + 5):
        started = time.perf_counter()
        proc.stdin.write(b"SELECT %d;\n" % n)
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("mariadb ended: %r" % line)
            line += chunk
        if line != b"%d\n" % n:
            raise RuntimeError("SELECT %d answered %r" % (n, line))
        if n >= 5:
            out.append(round((time.perf_counter() - started) * 1e6, 1))
    proc.stdin.close()
    proc.wait()
    print(json.dumps(out))


# --- bulk transfer to and from the laptop's source and sink ------------------------------------

def transfer(direction, port, size):
    """MB/s (10**6 bytes) of `size` bytes read from the laptop's source or written to its sink,
    timed from after a first exchange (the connection reaches the laptop) to the last byte (for a
    write: to the sink's acknowledgement that it has them all)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"P")
    if recv_exact(sock, 1) != b"p":
        raise RuntimeError("the sink did not answer")
    block = bytearray(1 << 20)
    view = memoryview(block)
    started = time.perf_counter()
    if direction == "from":
        sock.sendall(b"R" + struct.pack(">Q", size))
        left = size
        while left:
            got = sock.recv_into(view[: min(left, len(block))])
            if not got:
                raise EOFError("%d bytes short" % left)
            left -= got
    else:
        sock.sendall(b"W" + struct.pack(">Q", size))
        left = size
        while left:
            step = min(left, len(block))
            sock.sendall(view[:step])
            left -= step
        if recv_exact(sock, 1) != b"K":
            raise RuntimeError("the sink did not acknowledge")
    elapsed = time.perf_counter() - started
    sock.close()
    print(json.dumps({"mb_s": size / 1e6 / elapsed, "seconds": elapsed}))


# --- the query loop: the real mariadb client, one connection while it lasts -----------------------

def loop(port, log_path, stop_path, gap, deadline, retry):
    """SELECT n, one at a time, `gap` apart, through one `mariadb` process. Each answer, failure
    or wrong answer is a line of the log: kind, n, sent, done (monotonic). A failure (an error
    line, the client's exit, no answer within `deadline`) ends that client; a new one is started
    after `retry`, as an application reconnects."""
    log = open(log_path, "a", buffering=1)
    # --skip-reconnect: the client's own reconnect (on by default) would hide a lost connection, and
    # the session state lost with it, behind a new one
    command = ["mariadb", "-h", "127.0.0.1", "-P", str(port), "-u", "root", "--batch", "--skip-column-names", "--unbuffered", "--connect-timeout=2",
               "--skip-reconnect"]

    def start():
        log.write("connect 0 %.6f %.6f\n" % (time.monotonic(), time.monotonic()))
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)

    def answer(proc, pending, until):
        while b"\n" not in pending:
            left = until - time.monotonic()
            if left <= 0:
                return "timeout", pending
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    return "exit " + pending.decode(errors="replace").strip()[:200], b""
                pending += chunk
        line, pending = pending.split(b"\n", 1)
        return line.decode(errors="replace"), pending

    def drain(proc, until):
        out = b""
        while time.monotonic() < until:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, until - time.monotonic()))
            if not ready:
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
        return out.decode(errors="replace")

    proc, pending, n = start(), b"", 0
    while not os.path.exists(stop_path):
        n += 1
        sent = time.monotonic()
        try:
            proc.stdin.write(b"SELECT %d;\n" % n)
            line, pending = answer(proc, pending, sent + deadline)
        except OSError as exc:  # the client has exited: a broken pipe
            line = "exit " + str(exc)
        done = time.monotonic()
        if line == str(n):
            log.write("ok %d %.6f %.6f\n" % (n, sent, done))
            time.sleep(gap)
            continue
        kind = "wrong" if line.isdigit() else "fail"
        if kind == "fail":  # the client prints the statement between dashes, then its ERROR line
            text = line + "\n" + pending.decode(errors="replace") + drain(proc, done + 1.0)
            line = next((part for part in text.splitlines() if part.startswith("ERROR")), line)
        log.write("%s %d %.6f %.6f %s\n" % (kind, n, sent, done, line.replace("\n", " ")[:200]))
        proc.kill()  # our own client, by its pid
        proc.wait()
        time.sleep(retry)
        proc, pending = start(), b""
    proc.kill()
    proc.wait()
    log.write("stopped 0 %.6f %.6f\n" % (time.monotonic(), time.monotonic()))


def signal_sessions(signame, pids):
    """Signal the sshd session processes (run as root); print the monotonic time right after."""
    for pid in pids:
        try:
            os.kill(pid, getattr(signal, "SIG" + signame))
        except ProcessLookupError:
            pass  # a session's child dies with its parent
    print("%.6f" % time.monotonic())


def listens(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "rtt":
        rtt(int(args[0]), int(args[1]))
    elif what == "cli-rtt":
        cli_rtt(int(args[0]), int(args[1]))
    elif what == "transfer":
        transfer(args[0], int(args[1]), int(args[2]))
    elif what == "loop":
        loop(int(args[0]), args[1], args[2], float(args[3]), float(args[4]), float(args[5]))
    elif what == "signal":
        signal_sessions(args[0], [int(pid) for pid in args[1:]])
    elif what == "listens":
        sys.exit(0 if all(listens(int(port)) for port in args) else 1)
'''


def install(host: SshHost) -> None:
    host.container.copy_into_container(CONTAINER_SCRIPT.encode(), SCRIPT_PATH, 0o755)


def inside(host: SshHost, *args: object, user: str = USER) -> str:
    """Run the container script; its stdout. A failure raises with what it printed."""
    command = "python3 " + SCRIPT_PATH + " " + " ".join(shlex.quote(str(arg)) for arg in args)
    code, output = host.exec(command, user=user)
    if code != 0:
        raise RuntimeError(f"bench: `{command}` in {host.alias} exited {code}: {output.strip()[-600:]}")
    return output


def listening(host: SshHost, *ports: int) -> bool:
    return host.exec(f"python3 {SCRIPT_PATH} listens " + " ".join(str(port) for port in ports), user=USER)[0] == 0


def rtts(host: SshHost, port: int, count: int, through_client: bool = False) -> list[float]:
    return [float(v) for v in json.loads(inside(host, "cli-rtt" if through_client else "rtt", port, count))]


def local_rtts(port: int, count: int) -> list[float]:
    """The same round trips from this machine straight to the server: the floor, no tunnel."""
    result = subprocess.run([sys.executable, "-c", CONTAINER_SCRIPT, "rtt", str(port), str(count)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"bench: the local SELECT 1 client failed: {result.stderr.strip()[-600:]}")
    return [float(v) for v in json.loads(result.stdout)]


def transfer(host: SshHost, direction: str, port: int, size: int) -> float:
    return float(json.loads(inside(host, "transfer", direction, port, size))["mb_s"])


def signal_sessions(host: SshHost, signame: str, pids: list[int]) -> float:
    """Signal these sshd session processes in one exec, as root; the container's monotonic time right after."""
    return float(inside(host, "signal", signame, *pids, user="root").strip())


# --- the laptop side ---------------------------------------------------------------------


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            self._serve(self.request)
        except (EOFError, OSError):
            pass  # a probe that only checked the port listens, or a connection cut by a fault

    @staticmethod
    def _serve(sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if _recv_exact(sock, 1) != b"P":
            return
        sock.sendall(b"p")
        kind = _recv_exact(sock, 1)
        (size,) = struct.unpack(">Q", _recv_exact(sock, 8))
        if kind == b"R":
            block = bytes(1 << 20)
            view = memoryview(block)
            while size:
                step = min(size, len(block))
                sock.sendall(view[:step])
                size -= step
        elif kind == b"W":
            buffer = bytearray(1 << 20)
            view = memoryview(buffer)
            while size:
                got = sock.recv_into(view[: min(size, len(buffer))])
                if not got:
                    return
                size -= got
            sock.sendall(b"K")


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("closed")
        data += chunk
    return bytes(data)


class SourceSink:
    """A laptop-side TCP service on a free loopback port: a first byte answered (the connection
    reaches the laptop), then 'R' + count: it sends count bytes; 'W' + count: it reads them, then
    answers one byte. A thread per connection; closed by `close`."""

    def __init__(self) -> None:
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the query loop's log ------------------------------------------------------------------


@dataclass
class LoopLog:
    """One loop's events, read from its log: (kind, n, sent, done, detail)."""

    events: list[tuple[str, int, float, float, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> LoopLog:
        events = []
        for line in text.splitlines():
            parts = line.split(" ", 4)
            if len(parts) >= 4:
                events.append((parts[0], int(parts[1]), float(parts[2]), float(parts[3]), parts[4] if len(parts) > 4 else ""))
        return cls(events)

    def first_answer_sent_after(self, since: float, until: float = float("inf")) -> float | None:
        """Seconds from `since` to the answer of the first query sent at or after it (before `until`)."""
        for kind, _, sent, done, _ in self.events:
            if kind == "ok" and since <= sent < until:
                return done - since
        return None

    def count(self, kind: str, start: float, end: float) -> int:
        return sum(1 for k, _, sent, _, _ in self.events if k == kind and start <= sent < end)

    def details(self, kind: str, start: float, end: float) -> list[str]:
        return [detail for k, _, sent, _, detail in self.events if k == kind and start <= sent < end]

    def answered(self) -> int:
        return sum(1 for event in self.events if event[0] == "ok")


class Loop:
    """A query loop inside the container, through one tool's back tunnel. Its log is read through
    /proc/PID/root of the container's first process where this process may (as root), which costs
    the machine nothing; else with a docker exec, which costs it a tenth of a second of CPU."""

    def __init__(self, host: SshHost, name: str, port: int, gap: float, deadline: float, retry: float) -> None:
        self.host, self.name, self.port = host, name, port
        slug = "".join(c if c.isalnum() else "-" for c in name)
        self.log_path, self.stop_path = f"/tmp/back-loop-{slug}.log", f"/tmp/back-loop-{slug}.stop"
        host.wrapped.reload()
        self.direct = Path(f"/proc/{host.wrapped.attrs['State']['Pid']}/root{self.log_path}")
        host.spawn(f"exec python3 {SCRIPT_PATH} loop {port} {self.log_path} {self.stop_path} {gap} {deadline} {retry}", user=USER)

    def read(self) -> LoopLog:
        try:
            return LoopLog.parse(self.direct.read_text())
        except FileNotFoundError:
            return LoopLog()  # not written yet
        except OSError:  # not ours to read directly
            return LoopLog.parse(self.host.exec(f"cat {self.log_path} 2>/dev/null")[1])

    def stop(self) -> None:
        self.host.exec(f"touch {self.stop_path}", user=USER)


def read_all(loops: list[Loop]) -> dict[str, LoopLog]:
    return {loop.name: loop.read() for loop in loops}


def summarise(log: LoopLog, faults: list[float], start: float, end: float, cap: float, releases: list[float] | None = None) -> dict[str, Any]:
    """Per fault: the time to the answer of the first query sent after it (and after the release
    that ended a freeze), if it came within `cap` seconds of the fault (of the release); the failed
    and wrong queries and new connections up to the next fault. Failed queries between `start` and
    the first fault are counted apart."""
    bounds = [*faults[1:], end]
    out: dict[str, Any] = {"recovery_s": [], "failed": [], "wrong": [], "connections": [], "failures": []}

    def within(since: float, until: float, limit: float) -> float | None:
        seconds = log.first_answer_sent_after(since, until)
        return seconds if seconds is not None and since + seconds <= limit else None

    for index, (fault, until) in enumerate(zip(faults, bounds)):
        deadline = (releases[index] if releases is not None else fault) + cap
        out["recovery_s"].append(within(fault, until, deadline))
        out["failed"].append(log.count("fail", fault, until))
        out["wrong"].append(log.count("wrong", fault, until))
        out["connections"].append(log.count("connect", fault, until))
        out["failures"].append(log.details("fail", fault, until)[:3])
        if releases is not None:
            out.setdefault("after_release_s", []).append(within(releases[index], until, deadline))
    out["failed_before_faults"] = log.count("fail", start, faults[0] if faults else end)
    out["answered"] = sum(1 for kind, _, sent, _, _ in log.events if kind == "ok" and start <= sent < end)
    return out
