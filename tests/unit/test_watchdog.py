"""The supervisor's watchdog: a background task that ends early ends the supervisor, loudly.

Before it, a dead health loop (or link watcher) left a supervisor that said "up" while
nothing watched the tunnel. These run the real Supervisor's serve_forever in-process with
one task made to fail, the others real; nothing remote is touched.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from gt_remote.base.config import HostSettings
from gt_remote.base.errors import SupervisorTaskEnded
from gt_remote.runtime.supervisor import Supervisor


@pytest.fixture
def supervisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Supervisor]:
    for var, sub in (("HOME", "home"), ("XDG_STATE_HOME", "state"), ("XDG_RUNTIME_DIR", "run"), ("XDG_CONFIG_HOME", "config")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    yield Supervisor(HostSettings("gaming-pc", "gamer@127.0.0.1", local_url="tcp://127.0.0.1:9", keepalive=0.05), lambda message: None)


async def forever() -> None:
    await asyncio.Event().wait()


def keep_link_waiting(supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    """No SSH connection in these tests: the link watcher just waits, as over a quiet link."""
    monkeypatch.setattr(supervisor.link, "run", forever)


def test_a_crashed_health_loop_ends_the_supervisor_with_its_cause(supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    keep_link_waiting(supervisor, monkeypatch)

    async def crashing_health_loop() -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError("a bug in the health loop")

    monkeypatch.setattr(supervisor, "_health_loop", crashing_health_loop)
    with caplog.at_level(logging.ERROR, logger="gt_remote.runtime.supervisor"), pytest.raises(SupervisorTaskEnded) as ended:
        asyncio.run(asyncio.wait_for(supervisor.serve_forever(), 20))
    assert "health loop ended unexpectedly: RuntimeError: a bug in the health loop" in str(ended.value)
    [logged] = [record for record in caplog.records if "health loop ended" in record.getMessage()]
    assert logged.exc_info is not None and "crashing_health_loop" in caplog.text  # the traceback, not just a line
    record = json.loads(supervisor.files.record.read_text())  # kept for `status` after the exit
    assert "a bug in the health loop" in record["status"]["exit_cause"]


def test_a_link_watcher_that_returns_ends_the_supervisor(supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    async def returning() -> None:
        await asyncio.sleep(0.1)

    monkeypatch.setattr(supervisor.link, "run", returning)
    with pytest.raises(SupervisorTaskEnded, match="link watcher ended unexpectedly: it returned"):
        asyncio.run(asyncio.wait_for(supervisor.serve_forever(), 20))


def test_a_stop_request_still_ends_it_cleanly(supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_link_waiting(supervisor, monkeypatch)

    async def scenario() -> None:
        serving = asyncio.create_task(supervisor.serve_forever())
        await asyncio.sleep(0.2)  # not a synchronisation: time for the health loop and wake watcher to run rounds
        supervisor.request_stop()
        await asyncio.wait_for(serving, 20)

    asyncio.run(scenario())
    assert supervisor.exit_cause is None and not supervisor.files.record.exists()
