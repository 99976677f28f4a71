"""What the benchmark measures with: Pings, echo throughput, process memory and CPU."""

from __future__ import annotations

import asyncio
import os
import statistics
import struct
import time

from gt_remote.base.addresses import TcpAddress
from gt_remote.base.errors import PingFailed
from gt_remote.tunnel import wire

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


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)
