"""A bounded soak: 50 clients Ping through the tunnel while faults are injected every few
seconds. Every Ping is answered or its connection fails cleanly (EOF or reset, never a
hang), and afterwards the supervisor's fds and asyncio tasks are back to their baseline."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from gt_remote.ccmux import wire
from tests.conftest import Gt
from tests.helpers import STANDIN_PATTERN
from tests.testbed import SshHost, wait_for

CLIENTS = 50
SOAK_SECONDS = 120.0
FAULT_EVERY = 6.0
PING_DEADLINE = 20.0  # longer than keepalive x 3 plus a reconnect: past this a Ping has hung


@dataclass
class Tally:
    answered: int = 0
    failed_cleanly: int = 0
    hung: int = 0
    errors: list[str] = field(default_factory=list)


async def client(port: int, stop: asyncio.Event, tally: Tally) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), PING_DEADLINE)
        except (TimeoutError, OSError) as exc:
            tally.errors.append(f"connect: {exc!r}")  # the listener must stay open throughout
            await asyncio.sleep(0.1)
            continue
        try:
            while not stop.is_set():
                try:
                    await wire.ping(reader, writer, PING_DEADLINE)
                    tally.answered += 1
                except wire.PingFailed as exc:
                    if "no Pong within" in exc.cause:
                        tally.hung += 1
                    else:
                        tally.failed_cleanly += 1
                    break
        finally:
            writer.close()


def inject_faults(host: SshHost, stop: threading.Event, log: list[str]) -> None:
    """Rotate through faults; each lasts a moment, then the next waits for FAULT_EVERY."""
    faults = ["kill-sshd", "pause", "kill-server", "kill-sshd", "pause"]
    index = 0
    while not stop.wait(FAULT_EVERY):
        fault = faults[index % len(faults)]
        index += 1
        if fault == "kill-sshd":
            for pid in host.pids("sshd: gamer"):
                host.exec(f"kill -KILL {pid}")  # a session's child dies with its parent: gone already is fine
        elif fault == "pause":
            host.pause()
            stop.wait(4.0)  # the fault's length: beyond keepalive x 3
            host.unpause()
        elif fault == "kill-server":
            for pid in host.pids(f"{STANDIN_PATTERN}9999"):
                host.exec(f"kill -KILL {pid}")
        log.append(fault)


def internals(gt: Gt) -> dict[str, Any]:
    [status] = gt.status("gaming-pc")
    return status | status["internals"]


def quiet_internals(gt: Gt) -> dict[str, Any]:
    """A reading between health checks. A check holds streams and tasks of its own (its Ping,
    the load read) for a moment every keepalive: a baseline taken mid-check would never be
    matched by an idle supervisor, and one taken after could hide a leak of the same size."""
    reading = wait_for(lambda: None if (s := internals(gt))["health_check_running"] else s, 30, "a moment between health checks")
    assert isinstance(reading, dict)
    return reading


def test_soak_with_faults(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host, "--keepalive", "1").returncode == 0
    baseline = quiet_internals(gt)
    tally, faults = Tally(), []
    stop_faults = threading.Event()
    injector = threading.Thread(target=inject_faults, args=(ssh_host, stop_faults, faults))

    async def soak() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(client(gt.port(), stop, tally)) for _ in range(CLIENTS)]
        injector.start()
        await asyncio.sleep(SOAK_SECONDS)  # the soak's length, not a synchronisation
        stop_faults.set()
        await asyncio.to_thread(injector.join)
        await asyncio.to_thread(wait_for, lambda: internals(gt)["state"] == "up", 60, "the tunnel to settle")
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), PING_DEADLINE * 2)

    asyncio.run(soak())
    print(f"soak: {tally.answered} answered, {tally.failed_cleanly} failed cleanly, {tally.hung} hung; faults {faults}")
    assert len(faults) >= 10
    assert tally.hung == 0
    assert tally.errors == []
    assert tally.answered > 1000 and tally.failed_cleanly > 0
    last: dict[str, Any] = {}

    def back_to_baseline() -> dict[str, Any] | None:
        last.update(s := internals(gt))
        settled = not s["health_check_running"] and s["clients"] == 0 and s["asyncio_tasks"] == baseline["asyncio_tasks"] and s["open_fds"] == baseline["open_fds"]
        return s if settled else None

    try:
        settled = wait_for(back_to_baseline, 30, f"fds and tasks back to baseline {baseline['open_fds']}/{baseline['asyncio_tasks']}")
    except AssertionError as exc:
        seen = {key: (baseline.get(key), last.get(key)) for key in ("clients", "asyncio_tasks", "open_fds", "task_kinds", "fd_kinds")}
        raise AssertionError(f"{exc}; (baseline, last seen): {seen}") from None
    assert settled["state"] == "up" and settled["local"] == baseline["local"]
