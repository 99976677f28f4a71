"""Remotes as gaming PCs have them: login shells that print banners (with `key=value` lines that
look like gt-remote's answers), floods from start-up files, Windows' shells."""

from __future__ import annotations

import shlex
import sys
import tracemalloc
from typing import Any

import pytest

from gt_remote.base.errors import NonPosixShell, RemoteOutputTooLarge
from gt_remote.remote.relay import deploy as remote_relay
from gt_remote.remote.scripts import ascii_int, run_script
from tests.conftest import Gt
from tests.e2e.helpers import on, sha256, up
from tests.helpers import answers, assert_nothing_left, one_error_line
from tests.testbed import STANDIN, USER, SshHost, free_loopback_port, wait_for

NOISY_SHELLS = {"bashy": "bash", "zshy": "zsh", "fishy": "fish", "dashy": "dash", "ashy": "busybox ash"}


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


def test_banner_lines_that_look_like_answers_are_no_internal_error(gt: Gt, ssh_host: SshHost) -> None:
    """A .bashrc printing `pid=²` or a 5,000-digit number: parsed as ASCII digits with a limit."""
    ssh_host.install_standin()
    noise = "echo 'pid=\u00b2'; echo 'other=" + "9" * 5000 + ":1'; echo 'free_kib=" + "7" * 5000 + "'"
    ssh_host.sh(f"printf '%s\\n' {shlex.quote(noise)} | cat - /home/{USER}/.bashrc > /tmp/bashrc.new && cat /tmp/bashrc.new > /home/{USER}/.bashrc", user=USER)
    local = f"tcp://127.0.0.1:{free_loopback_port()}"
    result = gt.up(ssh_host, "--local", local, "--no-resume", standin=False)
    assert "internal error" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert answers(local)


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
    build = f"./servers/{sha256(STANDIN)[:16]}/ccmux-server"
    assert files == sorted([f"./relay/{remote_relay.agent_digest()}/relay_agent.py", build, f"{build}.version", f"{build}.answered"])
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

