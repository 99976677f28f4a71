"""Remotes as gaming PCs have them: login shells that print banners (with `key=value` lines
that look like gt-remote's answers) for every command, noexec homes, Windows' shells.

The accounts come from docker/shells.sh: bashy (~/.bashrc), zshy (~/.zshenv), fishy
(config.fish), dashy and ashy (~/.ssh/rc), each printing /etc/gt-remote-banner (4 KiB) on
stdout and a line on stderr; winny and poshy answer like cmd.exe and PowerShell. MOTD is on.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest

from gt_remote.base.errors import NonPosixShell, RemoteOutputTooLarge
from gt_remote.bootstrap import relay as remote_relay
from gt_remote.bootstrap.remote import ascii_int, run_script, use_install_dir
from gt_remote.tunnel.connection import SshTarget, connect
from tests.conftest import Gt
from tests.helpers import assert_nothing_left, one_error_line
from tests.testbed import STANDIN, SshHost, wait_for

T = TypeVar("T")

NOISY_SHELLS = {"bashy": "bash", "zshy": "zsh", "fishy": "fish", "dashy": "dash", "ashy": "busybox ash"}
STARTUP_FILES = {"bashy": "~/.bashrc", "zshy": "~/.zshenv", "fishy": "~/.config/fish/config.fish", "dashy": "~/.ssh/rc", "ashy": "~/.ssh/rc"}
MOTD_ON = ["sh", "-c", "sed -i 's/^PrintMotd no/PrintMotd yes/' /etc/ssh/sshd_config && exec /usr/sbin/sshd -D -e"]


def on(host: SshHost, action: Callable[[asyncssh.SSHClientConnection], Awaitable[T]], install_dir: str | None = None) -> T:
    async def main() -> T:
        conn = await connect(SshTarget(host.alias, str(host.ssh_config)))
        use_install_dir(conn, install_dir)
        try:
            return await action(conn)
        finally:
            conn.close()
            await conn.wait_closed()

    return asyncio.run(main())


@pytest.fixture
def chatty(host_factory: Any) -> SshHost:
    """One container with MOTD on; tests reach its accounts with `as_user`."""
    host: SshHost = host_factory(command=MOTD_ON)
    return host


# --- the marker: banners never read as answers ----------------------------------------


@pytest.mark.parametrize("user", sorted(NOISY_SHELLS))
def test_banner_lines_are_never_read_as_answers(chatty: SshHost, user: str) -> None:
    host = chatty.as_user(user)
    raw = on(host, lambda conn: conn.run("echo plain", check=False))
    assert "pid=1" in str(raw.stdout) and "model=RTX" in str(raw.stdout), "the account must really be chatty"
    result = on(host, lambda conn: run_script(conn, 'echo "answer=$1"; echo "shell=$0"', "x y"))
    assert result.fields == {"answer": "x y", "shell": "sh"}
    assert "pid=1" not in result.stdout and "fortune" not in result.stdout
    assert result.exit_status == 0


def test_a_banner_without_a_final_newline_does_not_hide_the_marker(chatty: SshHost) -> None:
    host = chatty.as_user("dashy")
    chatty.sh("echo 'printf \"pid=7 no newline\"' >> /home/dashy/.ssh/rc")
    result = on(host, lambda conn: run_script(conn, 'echo "pid=$$"'))
    assert ascii_int(result.fields["pid"]) not in (None, 7)


def test_a_flood_from_a_start_up_file_stays_under_the_cap(chatty: SshHost) -> None:
    """300 MB of banner: the command fails with a message naming the cause; the laptop reads at most ~1 MiB."""
    host = chatty.as_user("bashy")
    chatty.sh("sed -i '1i head -c 300000000 /dev/zero | tr \"\\\\0\" x' /home/bashy/.bashrc")
    with pytest.raises(RemoteOutputTooLarge) as raised:
        on(host, lambda conn: run_script(conn, "echo ok=1"))
    assert "more than 1 MiB" in str(raised.value) and "[ -t 1 ]" in str(raised.value)


@pytest.mark.parametrize(("user", "shell"), [("winny", "cmd.exe"), ("poshy", "PowerShell")])
def test_a_windows_shell_is_named(chatty: SshHost, user: str, shell: str) -> None:
    host = chatty.as_user(user)
    with pytest.raises(NonPosixShell) as raised:
        on(host, lambda conn: run_script(conn, "echo ok=1"))
    assert shell in str(raised.value) and "docs/wsl.md" in str(raised.value)


def test_ascii_int() -> None:
    assert ascii_int("1234") == 1234
    assert ascii_int("²") is None and ascii_int("٣") is None
    assert ascii_int("9" * 5000) is None and ascii_int("9" * 11) is None and ascii_int("9" * 11, 12) == 99999999999
    assert ascii_int("") is None and ascii_int(None) is None and ascii_int("-1") is None and ascii_int(" 1") is None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
