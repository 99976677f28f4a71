"""Remotes as gaming PCs have them: login shells that print banners (with `key=value` lines
that look like gt-remote's answers) for every command, noexec homes, Windows' shells.

The accounts come from docker/shells.sh: bashy (~/.bashrc), zshy (~/.zshenv), fishy
(config.fish), dashy and ashy (~/.ssh/rc), each printing /etc/gt-remote-banner (4 KiB) on
stdout and a line on stderr; winny and poshy answer like cmd.exe and PowerShell. MOTD is on.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gt_remote.base.errors import GtRemoteError, NonPosixShell, RemoteOutputTooLarge
from gt_remote.remote import scripts as remote_scripts
from gt_remote.remote.relay import build as relay_build
from gt_remote.remote.relay import deploy as remote_relay
from gt_remote.remote.scripts import ascii_int, run_script, use_install_dir
from gt_remote.tunnel.connection import SshTarget, connect
from tests.conftest import Gt
from tests.helpers import assert_nothing_left, one_error_line
from tests.testbed import STANDIN, SshHost, free_loopback_port, wait_for

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
    tracemalloc.start()
    try:
        with pytest.raises(RemoteOutputTooLarge) as raised:
            on(host, lambda conn: run_script(conn, "echo ok=1"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "more than 1 MiB" in str(raised.value) and "[ -t 1 ]" in str(raised.value)
    assert peak < 16 * (1 << 20), f"the laptop held {peak / (1 << 20):.1f} MiB for a 300 MB banner"


@pytest.mark.parametrize(("user", "shell"), [("winny", "cmd.exe"), ("poshy", "PowerShell")])
def test_a_windows_shell_is_named(chatty: SshHost, user: str, shell: str) -> None:
    host = chatty.as_user(user)
    with pytest.raises(NonPosixShell) as raised:
        on(host, lambda conn: run_script(conn, "echo ok=1"))
    assert shell in str(raised.value) and "docs/wsl.md" in str(raised.value)


def test_ascii_int() -> None:
    assert ascii_int("1234") == 1234
    assert ascii_int("²") is None and ascii_int("٣") is None
    assert ascii_int("9" * 5000) is None and ascii_int("9" * 20) is None and ascii_int("9" * 11, 10) is None and ascii_int("9" * 11, 12) == 99999999999
    assert ascii_int("") is None and ascii_int(None) is None and ascii_int("-1") is None and ascii_int(" 1") is None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def up(gt: Gt, host: SshHost, *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """`up` with the stand-in uploaded, on a free local port (other tunnels may hold 9999)."""
    local = free_loopback_port()
    result = gt("up", host.alias, "--server-binary", str(STANDIN), "--local", f"tcp://127.0.0.1:{local}", *args, ssh_config=host.ssh_config)
    return result, local


def status_row(gt: Gt, host: SshHost) -> dict[str, Any]:
    [row] = [row for row in gt.status() if row.get("host") == host.alias]
    return row


def nested(row: dict[str, Any], key: str) -> Any:
    """A key of `status --json`, wherever it sits in the row."""
    if key in row:
        return row[key]
    for value in row.values():
        if isinstance(value, dict):
            found = nested(value, key)
            if found is not None:
                return found
    return None


# --- the whole job on each chatty login shell -----------------------------------------


@pytest.mark.parametrize("user", sorted(NOISY_SHELLS))
def test_up_exec_status_down_on_a_chatty_login_shell(gt: Gt, chatty: SshHost, user: str) -> None:
    host = chatty.as_user(user, alias="pc")
    result, local = up(gt, host)
    assert result.returncode == 0, result.stderr
    assert "uploading" in result.stderr and "connections are resumable" in result.stderr, result.stderr
    assert f"GASTOWN_CCMUX_ADDR=tcp://127.0.0.1:{local}" in result.stdout.replace("'", "").replace('"', "")

    # Both uploads landed whole, under their content hashes, and nothing half-written beside them.
    files = sorted(chatty.sh(f"cd /home/{user}/.local/share/gt-remote && find . -type f", user=user).split())
    assert files == sorted([f"./relay/{remote_relay.agent_digest()}/relay_agent.py", f"./servers/{sha256(STANDIN)[:16]}/ccmux-server", f"./servers/{sha256(STANDIN)[:16]}/ccmux-server.version"])
    assert chatty.sh(f"sha256sum /home/{user}/.local/share/gt-remote/servers/*/ccmux-server", user=user).split()[0] == sha256(STANDIN)

    program = "import os, sys, asyncio; sys.path.insert(0, os.environ['PYTHONPATH']); from gt_remote.ccmux.wire import ping_address; from gt_remote.base.addresses import address_from_env; asyncio.run(ping_address(address_from_env())); print('pong')"
    ran = gt("exec", host.alias, "--", sys.executable, "-c", program)
    assert ran.returncode == 0 and ran.stdout.strip() == "pong", ran.stderr

    row = status_row(gt, host)
    assert row["state"] == "up" and nested(row, "resumable") is True, row
    assert chatty.pids("ccmux-server --listen-tcp") != []

    down = gt("down", host.alias, "--stop-server")
    assert down.returncode == 0, down.stderr
    assert "stopped the remote server" in down.stdout + down.stderr
    wait_for(lambda: chatty.pids("ccmux-server --listen-tcp") == [] and chatty.pids("relay_agent.py --socket") == [], 15, "the server and relay to stop")


@pytest.mark.parametrize(("user", "file", "guard"), [("bashy", "~/.bashrc", "[ -t 1 ]"), ("zshy", "~/.zshenv", "[ -t 1 ]"), ("fishy", "~/.config/fish/config.fish", "status is-interactive"), ("dashy", "~/.ssh/rc", "[ -t 1 ]")])
def test_sync_on_a_chatty_shell_names_the_start_up_file(gt: Gt, chatty: SshHost, user: str, file: str, guard: str) -> None:
    host = chatty.as_user(user, alias="pc")
    folder = gt.home / "rig"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello\n")
    result = gt("sync", host.alias, "--push", str(folder), ssh_config=host.ssh_config)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "protocol version mismatch" in line and file in line and guard in line


def test_sync_works_once_the_start_up_file_is_guarded(gt: Gt, chatty: SshHost) -> None:
    """The fix the message gives really fixes it."""
    host = chatty.as_user("fishy", alias="pc")
    chatty.sh("printf 'if status is-interactive\\n    cat /etc/gt-remote-banner\\nend\\n' > /home/fishy/.config/fish/config.fish")
    folder = gt.home / "rig"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello\n")
    result = gt("sync", host.alias, "--push", str(folder), ssh_config=host.ssh_config)
    assert result.returncode == 0, result.stderr
    assert chatty.sh("cat /home/fishy/rig/notes.txt", user="fishy") == "hello\n"


# --- Windows' shells: one line, nothing uploaded ----------------------------------------


@pytest.mark.parametrize(("user", "shell"), [("winny", "cmd.exe"), ("poshy", "PowerShell")])
def test_up_on_a_windows_shell_names_windows_and_uploads_nothing(gt: Gt, chatty: SshHost, user: str, shell: str) -> None:
    host = chatty.as_user(user, alias="pc")
    result, local = up(gt, host)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert f"login shell is Windows' {shell}" in line or f"login shell is Windows {shell}" in line
    assert "docs/wsl.md" in line and "uploading" not in result.stderr
    assert_nothing_left(gt, local)
    assert chatty.exec(f"test -e /home/{user}/.local")[0] != 0


# --- noexec homes and --install-dir -----------------------------------------------------

NOEXEC_HOME = {"/home/gamer/.local": "rw,noexec,nosuid,size=64m,uid=1000,gid=1000,mode=0755"}


def test_a_noexec_home_is_named_with_the_fix(gt: Gt, host_factory: Any) -> None:
    host: SshHost = host_factory(tmpfs=NOEXEC_HOME)
    result, local = up(gt, host)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "/home/gamer/.local" in line and "noexec" in line and "--install-dir" in line, line
    assert "build ccmux-server for" not in line  # not mistaken for a wrong architecture
    assert_nothing_left(gt, local)
    assert host.sh("find /home/gamer/.local/share -type f 2>/dev/null || true", user="gamer").strip() == ""


def test_install_dir_puts_builds_and_relay_there_and_clean_follows(gt: Gt, host_factory: Any) -> None:
    host: SshHost = host_factory(tmpfs=NOEXEC_HOME)
    host.sh("install -d -o gamer -g gamer /opt/gt")
    result, _ = up(gt, host, "--install-dir", "/opt/gt")
    assert result.returncode == 0, result.stderr
    assert "connections are resumable" in result.stderr
    files = sorted(host.sh("cd /opt/gt/gt-remote && find . -type f", user="gamer").split())
    assert files == sorted([f"./relay/{remote_relay.agent_digest()}/relay_agent.py", f"./servers/{sha256(STANDIN)[:16]}/ccmux-server", f"./servers/{sha256(STANDIN)[:16]}/ccmux-server.version"])
    assert host.sh("find /home/gamer/.local/share -type f 2>/dev/null || true", user="gamer").strip() == ""
    assert "/opt/gt/gt-remote/servers/" in " ".join(host.sh("ps -eo args", user="gamer").splitlines())

    # clean looks there: an old build under /opt/gt goes, the running one stays.
    host.sh("mkdir -p /opt/gt/gt-remote/servers/0123456789abcdef && cp /opt/gt/gt-remote/servers/*/ccmux-server /opt/gt/gt-remote/servers/0123456789abcdef/ && touch -d '2020-01-01' /opt/gt/gt-remote/servers/0123456789abcdef/ccmux-server", user="gamer")
    cleaned = gt("clean", "gaming-pc")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "/opt/gt/gt-remote/servers/0123456789abcdef (an old build)" in cleaned.stdout
    assert host.exec("test -e /opt/gt/gt-remote/servers/0123456789abcdef")[0] != 0

    down = gt("down", "gaming-pc", "--stop-server")
    assert down.returncode == 0 and "stopped the remote server" in down.stdout + down.stderr


def test_install_dir_in_the_config(gt: Gt, host_factory: Any) -> None:
    host: SshHost = host_factory()
    host.sh("install -d -o gamer -g gamer /srv/tools")
    config = gt.home / "config.toml"
    config.write_text('[hosts.gaming-pc]\ninstall_dir = "/srv/tools"\n')
    local = free_loopback_port()
    result = gt("--config", str(config), "up", "gaming-pc", "--server-binary", str(STANDIN), "--local", f"tcp://127.0.0.1:{local}", ssh_config=host.ssh_config)
    assert result.returncode == 0, result.stderr
    assert host.exec(f"test -x /srv/tools/gt-remote/servers/{sha256(STANDIN)[:16]}/ccmux-server")[0] == 0


# --- integrity of what runs -------------------------------------------------------------


def test_a_swapped_installed_build_is_uploaded_again_not_run(gt: Gt, host_factory: Any) -> None:
    host: SshHost = host_factory()
    result, _ = up(gt, host)
    assert result.returncode == 0, result.stderr
    assert gt("down", "gaming-pc", "--stop-server").returncode == 0
    build = f"/home/gamer/.local/share/gt-remote/servers/{sha256(STANDIN)[:16]}/ccmux-server"
    host.sh(f"printf '#!/bin/sh\\necho swapped > /tmp/swapped-ran\\nexec sleep 60\\n' > {build}", user="gamer")
    again, _ = up(gt, host)
    assert again.returncode == 0, again.stderr
    assert "uploading" in again.stderr  # the altered file was not trusted
    assert host.sh(f"sha256sum {build}").split()[0] == sha256(STANDIN)
    assert host.exec("test -e /tmp/swapped-ran")[0] != 0


def test_a_swapped_relay_is_uploaded_again(gt: Gt, host_factory: Any) -> None:
    host: SshHost = host_factory()
    result, _ = up(gt, host)
    assert result.returncode == 0, result.stderr
    assert gt("down", "gaming-pc", "--stop-server").returncode == 0
    agent = f"/home/gamer/.local/share/gt-remote/relay/{remote_relay.agent_digest()}/relay_agent.py"
    host.sh(f"echo 'open(\"/tmp/relay-swapped-ran\", \"w\")' > {agent}", user="gamer")
    again, _ = up(gt, host)
    assert again.returncode == 0 and "connections are resumable" in again.stderr, again.stderr
    assert host.sh(f"sha256sum {agent}").split()[0] == hashlib.sha256(relay_build.agent()).hexdigest()
    assert host.exec("test -e /tmp/relay-swapped-ran")[0] != 0


# --- a full disk, for the relay too ------------------------------------------------------


def test_relay_upload_on_a_full_disk_leaves_nothing_and_counts_the_space(host_factory: Any) -> None:
    host: SshHost = host_factory(tmpfs={"/home/gamer/.local/share": "size=12k,uid=1000,gid=1000,mode=0700"})
    state = on(host, lambda conn: remote_relay.ensure_relay(conn, 9999))
    assert state.socket is None and state.reason is not None
    assert "the partial file was removed" in state.reason and "unknown" not in state.reason, state.reason
    assert re.search(r"\d+ KiB free there", state.reason), state.reason
    assert host.sh("find /home/gamer/.local/share -type f", user="gamer").strip() == ""


# --- the parser, fuzzed ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(noise=st.binary(max_size=4096), answers=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40), max_size=5))
def test_whatever_precedes_the_marker_never_becomes_an_answer(noise: bytes, answers: dict[str, str]) -> None:
    token = "0123456789abcdef"
    body = "".join(f"{key}={value}\n" for key, value in answers.items()).encode()
    result = remote_scripts._result(0, noise + b"\n" + (remote_scripts.MARKER_PREFIX + token).encode() + b"\n" + body, b"", token)
    assert result.fields == answers


@settings(max_examples=200, deadline=None)
@given(output=st.binary(max_size=2048), exit_status=st.one_of(st.none(), st.integers(0, 255)))
def test_output_without_the_marker_is_a_typed_error(output: bytes, exit_status: int | None) -> None:
    with pytest.raises(GtRemoteError):
        remote_scripts._result(exit_status, output.replace(remote_scripts.MARKER_PREFIX.encode(), b""), output, "0123456789abcdef")


@given(st.text(max_size=30))
def test_ascii_int_takes_only_ascii_digits(text: str) -> None:
    value = remote_scripts.ascii_int(text)
    assert value is None or (text.isascii() and text.isdigit() and value == int(text))


def test_upgrade_with_install_dir_puts_the_new_build_there(gt: Gt, host_factory: Any, tmp_path: Path) -> None:
    host: SshHost = host_factory()
    host.sh("install -d -o gamer -g gamer /opt/gt")
    result, _ = up(gt, host)
    assert result.returncode == 0, result.stderr
    build = tmp_path / "new" / "ccmux-server"
    build.parent.mkdir()
    build.write_text(STANDIN.read_text().replace('VERSION = "0.1.1"', 'VERSION = "0.1.2"'))
    build.chmod(0o755)
    upgraded = gt("upgrade", "gaming-pc", "--server-binary", str(build), "--install-dir", "/opt/gt", "--yes")
    assert upgraded.returncode == 0, upgraded.stderr
    running = f"/opt/gt/gt-remote/servers/{sha256(build)[:16]}/ccmux-server"
    assert f"now runs {running} 0.1.2" in upgraded.stderr
    assert host.pids(f"{running} --listen-tcp") != []
    host.sh("mkdir -p /opt/gt/gt-remote/servers/0123456789abcdef", user="gamer")  # an empty leftover there
    cleaned = gt("clean", "gaming-pc", "--dry-run")
    assert "would remove /opt/gt/gt-remote/servers/0123456789abcdef" in cleaned.stdout, cleaned.stdout  # clean follows the new dir
    down = gt("down", "gaming-pc", "--stop-server")
    assert down.returncode == 0 and "stopped the remote server" in down.stdout + down.stderr
    assert host.pids(f"{running} --listen-tcp") == []


def test_install_dir_with_a_control_character_is_refused(gt: Gt, host_factory: Any) -> None:
    host: SshHost = host_factory()
    result = gt("up", "gaming-pc", "--install-dir", "/opt/gt\nExecStartPost=x", ssh_config=host.ssh_config)
    assert result.returncode == 2
    assert "control character" in one_error_line(result.stderr)


def test_rsync_operands_follow_a_double_dash() -> None:
    """No path, local or remote, is ever read as an rsync option (#15.8)."""
    from gt_remote.base.config import HostSettings
    from gt_remote.commands.sync import Transfer, rsync_command

    settings = HostSettings(name="pc", destination="pc", local_url="tcp://127.0.0.1:9999")
    for push in (True, False):
        command = rsync_command(settings, Transfer(Path("/tmp/-e sh"), "-e sh", False), push, False, False)
        assert command[-3] == "--" and "/tmp/-e sh" in command[-2:] and "pc:-e sh" in command[-2:]


def test_noisy_shell_message_names_each_start_up_file() -> None:
    from gt_remote.commands.sync import noisy_shell_error

    assert "~/.bashrc" in str(noisy_shell_error("pc", "/bin/bash")) and "[ -t 1 ]" in str(noisy_shell_error("pc", "/bin/bash"))
    assert "~/.zshenv" in str(noisy_shell_error("pc", "/usr/bin/zsh"))
    assert "config.fish" in str(noisy_shell_error("pc", "/usr/bin/fish")) and "status is-interactive" in str(noisy_shell_error("pc", "/usr/bin/fish"))
    assert "~/.ssh/rc" in str(noisy_shell_error("pc", None))


def test_a_failing_install_command_is_reported_with_its_last_lines(chatty: SshHost) -> None:
    """The user's own command runs in their login shell; a long output is read as a bounded tail."""
    from gt_remote.base.errors import InstallFailed
    from gt_remote.remote.install import run_install_command

    host = chatty.as_user("bashy")
    command = "head -c 3000000 /dev/zero | tr '\\0' y | fold -w 100; echo 'error: linker failed' >&2; exit 3"
    with pytest.raises(InstallFailed) as raised:
        on(host, lambda conn: run_install_command(conn, command, "pc"))
    assert "exited 3 on pc" in str(raised.value) and "linker failed" in str(raised.value)
