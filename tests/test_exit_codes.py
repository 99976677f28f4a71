"""Exit codes that tell the truth: `down --all` goes through every host and names each that
failed; `status HOST` of a host that is down says so in words, without placeholders."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import Gt
from tests.helpers import one_error_line
from tests.testbed import SshHost


def free_local() -> str:
    """A local address no other test (of any worktree on this machine) is using now."""
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{spare.getsockname()[1]}"


def remember_unreachable_remote(gt: Gt, tmp_path: Path, name: str) -> None:
    """What a past `up` of `name` left behind (HostFiles.remote), pointing at a dead port."""
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        dead_port = spare.getsockname()[1]
    config = tmp_path / "dead_ssh_config"
    config.write_text(f"Host {name}\n    HostName 127.0.0.1\n    Port {dead_port}\n    UserKnownHostsFile {tmp_path / 'none'}\n")
    code = (
        "import sys; from gt_remote.runtime import reach; from gt_remote.base.config import resolve;"
        "reach.remember(resolve(sys.argv[1], {}, {}, sys.argv[2]))"
    )
    subprocess.run([sys.executable, "-c", code, name, str(config)], env=gt.env, check=True)


def test_down_all_goes_through_every_host_and_names_each_failure(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host, "--local", free_local()).returncode == 0
    remember_unreachable_remote(gt, tmp_path, "broken-pc")  # sorts before gaming-pc: fails first
    result = gt("down", "--all", "--stop-server")
    assert result.returncode == 1, result.stderr
    assert "gt-remote: error: broken-pc: " in result.stderr and "refused the connection" in result.stderr
    assert "gaming-pc: down; stopped the remote server" in result.stderr  # reached after the failure
    assert one_error_line(result.stderr).startswith("gt-remote: error: 'down --all' failed for 1 of 2 hosts: broken-pc;")
    assert gt.status("gaming-pc")[0]["state"] == "down"


def test_status_of_a_host_that_is_down_says_so_in_words(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host, "--local", free_local()).returncode == 0
    assert gt("down", "gaming-pc").returncode == 0
    result = gt("status", "gaming-pc")
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == "gaming-pc: down"
    assert " -" not in result.stdout and "pid -" not in result.stdout and ":-" not in result.stdout, result.stdout
    assert 'bring it up with: eval "$(gt-remote up gaming-pc)"' in result.stdout
