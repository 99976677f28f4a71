"""What the benchmark measures with: Pings, echo throughput, process memory and CPU."""

from __future__ import annotations

import asyncio
import bisect
import os
import statistics
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from gt_remote.base.addresses import TcpAddress
from gt_remote.base.errors import PingFailed
from gt_remote.ccmux import wire

STANDIN_ECHO = 0x7FFF0001  # the stand-in's benchmark-only echo message
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


async def ping_once(port: int, timeout: float) -> bool:
    try:
        await wire.ping_address(TcpAddress("127.0.0.1", port), timeout)
        return True
    except PingFailed:
        return False


async def time_to_pong(port: int, since: float, cap: float, attempt_timeout: float = 1.0) -> float | None:
    """Seconds from `since` until a Ping through `port` is answered; None past the cap."""
    while time.monotonic() - since < cap:
        if await ping_once(port, attempt_timeout):
            return time.monotonic() - since
        await asyncio.sleep(0.01)
    return None


async def ping_rtts(port: int, count: int) -> list[float]:
    """Round trips of sequential Pings on one connection, in microseconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return [await wire.ping(reader, writer, 5.0) * 1e6 for _ in range(count)]
    finally:
        writer.close()


async def connect_and_ping(port: int) -> float:
    """A new connection's first answer, in microseconds: connect, one Ping, its Pong. What a
    client that connects for each request waits (the tunnel opens a channel, and in
    resumable mode the relay dials the server)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await wire.ping(reader, writer, 5.0)
        return (time.perf_counter() - started) * 1e6
    finally:
        writer.close()


def echo_frame(size: int) -> bytes:
    payload = struct.pack("<I", STANDIN_ECHO) + bytes(size - 4)
    return struct.pack(">I", len(payload)) + payload


async def echo_throughput(port: int, frames: int, size: int = 1 << 20) -> float:
    """MiB/s of payload echoed with the writer and reader running at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frame = echo_frame(size)

    async def send() -> None:
        for _ in range(frames):
            writer.write(frame)
            await writer.drain()

    async def receive() -> None:
        for _ in range(frames):
            await reader.readexactly(len(frame))

    started = time.perf_counter()
    await asyncio.gather(send(), receive())
    elapsed = time.perf_counter() - started
    writer.close()
    return frames * size / (1 << 20) / elapsed


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def private_kib(pid: int) -> int:
    """Memory only this process holds (USS): what ending it gives back; shared library pages are not in it."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def rss_by_mapping(pid: int) -> dict[str, int]:
    """Where a process's RSS is, in KiB: "anonymous" (the heap: for Python, its objects and the
    code of every imported module) and each mapped file by name, from /proc/PID/smaps."""
    found: dict[str, int] = {}
    name = "anonymous"
    with open(f"/proc/{pid}/smaps") as handle:
        for line in handle:
            head = line.split(maxsplit=6)
            if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:  # a mapping's first line
                path = head[5].strip() if len(head) > 5 else ""
                name = os.path.basename(path) if path.startswith("/") else "anonymous"
            elif head[0] == "Rss:":
                found[name] = found.get(name, 0) + int(head[1])
    return found


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


class WrongAnswer(Exception):
    """The tunnel answered something other than what was asked: data lost, doubled or reordered."""


@dataclass
class AttachedClient:
    """A long-lived client, like the ccmux TUI or an MCP bridge: one connection through the
    tunnel, a Ping and an echo frame in turn, one request in flight, each with a deadline.

    A reset is the loss of a connection that had been answering (EOF, ECONNRESET, any
    connection error, or a request past its deadline); the client then reconnects, as a
    patient user would, so measuring goes on. Connections that fail before their first
    answer are failed attempts, not further resets.
    """

    name: str
    port: int
    gap_s: float
    deadline_s: float
    echo_size: int = 4096
    answered: list[float] = field(default_factory=list)  # monotonic times of answers
    resets: list[float] = field(default_factory=list)
    hangs: list[float] = field(default_factory=list)  # resets that were a deadline passing
    wrong: list[float] = field(default_factory=list)  # resets that were a wrong answer
    connections: int = 0
    failed_attempts: int = 0
    stopping: bool = False

    def answered_since(self, since: float) -> float | None:
        """Seconds from `since` to the first answer after it, if there was one yet."""
        first = bisect.bisect_left(self.answered, since)  # appended in time order
        return self.answered[first] - since if first < len(self.answered) else None

    def resets_between(self, start: float, end: float) -> int:
        return sum(start <= when < end for when in self.resets)

    async def run(self) -> None:
        seq = 0
        while not self.stopping:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 2.0)
            except (OSError, TimeoutError):
                self.failed_attempts += 1
                await asyncio.sleep(0.05)
                continue
            self.connections += 1
            established = False
            try:
                while not self.stopping:
                    seq += 1
                    await asyncio.wait_for(self._request(reader, writer, seq), self.deadline_s)
                    established = True
                    self.answered.append(time.monotonic())
                    await asyncio.sleep(self.gap_s)
            except TimeoutError:
                self._lost(established, self.hangs)
            except (WrongAnswer, PingFailed):  # PingFailed: a frame over the size limit
                self._lost(established, self.wrong)
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                self._lost(established, None)
            finally:
                writer.close()
            if not established:
                await asyncio.sleep(0.05)

    def _lost(self, established: bool, kind: list[float] | None) -> None:
        if not established:
            self.failed_attempts += 1
            return
        now = time.monotonic()
        self.resets.append(now)
        if kind is not None:
            kind.append(now)

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seq: int) -> None:
        if seq % 2:
            writer.write(wire.PING)
            payload = await wire.read_frame(reader)
            if len(payload) < 4 or wire.variant_of(payload) != wire.PONG_VARIANT:
                raise WrongAnswer(f"expected a Pong, got variant {wire.variant_of(payload)}")
            return
        frame = numbered_echo_frame(seq, self.echo_size)
        writer.write(frame)
        await writer.drain()
        if await reader.readexactly(len(frame)) != frame:
            raise WrongAnswer(f"echo {seq} came back different")


def numbered_echo_frame(seq: int, size: int) -> bytes:
    """An echo frame whose payload says which request it is, so loss, doubling or reordering show."""
    body = struct.pack("<IQ", STANDIN_ECHO, seq)
    body += (seq.to_bytes(8, "little") * (size // 8 + 1))[: size - len(body)]
    return struct.pack(">I", len(body)) + body
