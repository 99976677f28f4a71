"""doctor and -v describe the connection gt-remote really makes: ssh_config from -F or the
default ~/.ssh/config, its Port and keys as paths, and its ConnectTimeout, which wins over ours."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from gt_remote.base.errors import ConnectFailed
from gt_remote.tunnel.connection import SshTarget, connect
from tests.conftest import Gt
from tests.testbed import SshHost


def default_ssh_config(gt: Gt, text: str) -> Path:
    """The test's private HOME gets ~/.ssh/config: no -F anywhere."""
    ssh_dir = gt.home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    config = ssh_dir / "config"
    config.write_text(text)
    config.chmod(0o600)
    return config


def doctor(gt: Gt, host: str = "gaming-pc") -> dict[str, dict[str, str]]:
    result = gt("doctor", host, "--json")
    return {check["name"]: check for check in json.loads(result.stdout)}


def test_doctor_resolves_through_the_default_ssh_config(gt: Gt, ssh_host: SshHost) -> None:
    default_ssh_config(gt, ssh_host.config_block())
    found = doctor(gt)
    resolved = found["gaming-pc resolves through ssh_config"]["detail"]
    assert f"gamer@{ssh_host.hostname}:{ssh_host.port}" in resolved, resolved
    assert f"keys {ssh_host.key.path};" in resolved and "b'" not in resolved
    assert "ssh_config ~/.ssh/config" in resolved
    assert found["SSH connection and authentication"]["status"] == "ok"


def test_doctor_shows_a_wrong_port_from_the_default_ssh_config(gt: Gt, ssh_host: SshHost) -> None:
    with socket.socket() as spare:  # a port where nothing listens once this closes
        spare.bind(("127.0.0.1", 0))
        wrong = spare.getsockname()[1]
    default_ssh_config(gt, ssh_host.config_block().replace(f"Port {ssh_host.port}", f"Port {wrong}"))
    found = doctor(gt)
    assert f"gamer@{ssh_host.hostname}:{wrong}" in found["gaming-pc resolves through ssh_config"]["detail"]
    assert found["SSH connection and authentication"]["status"] == "fail"


def test_verbose_up_describes_the_default_ssh_config(gt: Gt, ssh_host: SshHost) -> None:
    default_ssh_config(gt, ssh_host.config_block())
    result = gt("-v", "doctor", "gaming-pc")
    assert f"gamer@{ssh_host.hostname}:{ssh_host.port}" in result.stdout + result.stderr


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


def test_doctor_names_the_connect_timeout(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.extra_config.append("ConnectTimeout 7")
    ssh_host.write_ssh_config()
    result = gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config)
    found = {check["name"]: check for check in json.loads(result.stdout)}
    assert "connect timeout 7 s" in found["gaming-pc resolves through ssh_config"]["detail"]
