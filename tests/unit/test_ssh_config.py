"""The connection gt-remote makes from ssh_config: its ConnectTimeout wins over ours."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from gt_remote.base.errors import ConnectFailed
from gt_remote.tunnel.connection import SshTarget, connect


@pytest.fixture
def silent_listener() -> object:
    """Accepts TCP connections (the kernel's backlog) and never says a word: no SSH banner."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_ssh_config_connect_timeout_wins_over_the_default(tmp_path: Path, silent_listener: int) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host quiet\n    HostName 127.0.0.1\n    Port {silent_listener}\n    ConnectTimeout 1\n    UserKnownHostsFile {tmp_path / 'known_hosts'}\n")
    (tmp_path / "known_hosts").write_text("")
    target = SshTarget("quiet", str(config), connect_timeout=60.0)

    async def attempt() -> None:
        with pytest.raises(ConnectFailed, match="timed out"):
            # The outer bound is a deadline for the test, far below our 60 s default.
            await asyncio.wait_for(connect(target), 30)

    asyncio.run(attempt())

