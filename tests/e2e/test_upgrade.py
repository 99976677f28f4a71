"""`gt-remote upgrade` and builds: `--yes` without a terminal, a question on one, the new build
restarted with the tunnel kept, a build that never answers rolled back, `--install-dir`, and
`up` after an upgrade."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

from gt_remote.remote.probe import file_digest
from tests.conftest import Gt
from tests.e2e.helpers import SERVERS, new_build, remote_ls, server_pids, sha256, up
from tests.helpers import exports, one_error_line, ping, rows, silent_server
from tests.testbed import STANDIN, SshHost, free_loopback_port

# --- an upgrade that sticks -------------------------------------------------------------------


def test_up_after_upgrade_uses_the_new_build_with_the_config_untouched(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    port = free_loopback_port()
    config = gt.home / ".config/gt-remote/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[hosts.gaming-pc]\nserver_binary = "{STANDIN}"\nlocal = "tcp://127.0.0.1:{port}"\n')
    assert gt("up", "gaming-pc", ssh_config=ssh_host.ssh_config).returncode == 0
    build = tmp_path / "new" / "ccmux-server"
    build.parent.mkdir()
    build.write_text(STANDIN.read_text().replace('VERSION = "0.1.1"', 'VERSION = "0.1.2"'))
    build.chmod(0o755)
    assert gt("upgrade", "gaming-pc", "--server-binary", str(build), "--yes").returncode == 0
    again = gt("up", "gaming-pc", ssh_config=ssh_host.ssh_config)  # the tunnel is up: accepted, not refused
    assert again.returncode == 0, again.stderr
    assert gt("down", "gaming-pc").returncode == 0
    fresh = gt("up", "gaming-pc", ssh_config=ssh_host.ssh_config)  # as the login unit would
    assert fresh.returncode == 0, fresh.stderr
    assert "installed by 'gt-remote upgrade'" in fresh.stderr
    [row] = rows(gt, "gaming-pc")
    assert row["server"]["build"] == file_digest(str(build)) and row["server"]["version"] == "0.1.2"
    # Once the config names another build, the config wins again.
    assert gt("down", "gaming-pc").returncode == 0
    third = tmp_path / "third" / "ccmux-server"
    third.parent.mkdir()
    third.write_text(STANDIN.read_text().replace('VERSION = "0.1.1"', 'VERSION = "0.1.3"'))
    third.chmod(0o755)
    config.write_text(f'[hosts.gaming-pc]\nserver_binary = "{third}"\nlocal = "tcp://127.0.0.1:{port}"\n')
    changed = gt("up", "gaming-pc", ssh_config=ssh_host.ssh_config)
    assert changed.returncode == 0 and "installed by 'gt-remote upgrade'" not in changed.stderr
    assert f"gt-remote upgrade gaming-pc --server-binary {third}" in changed.stderr


def test_build_note_never_suggests_a_build_for_another_machine(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    port = free_loopback_port()
    local = ("--local", f"tcp://127.0.0.1:{port}")
    assert gt.up(ssh_host, *local).returncode == 0
    assert gt("down", "gaming-pc").returncode == 0
    arm = tmp_path / "arm" / "ccmux-server"
    arm.parent.mkdir()
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + (2).to_bytes(2, "little") + (183).to_bytes(2, "little")  # ELF, aarch64
    arm.write_bytes(header + bytes(64))
    result = gt("up", "gaming-pc", "--server-binary", str(arm), *local, ssh_config=ssh_host.ssh_config)
    assert result.returncode == 0, result.stderr
    assert "cannot run there" in result.stderr and "aarch64" in result.stderr
    assert "gt-remote upgrade gaming-pc" not in result.stderr


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


# --- upgrade -------------------------------------------------------------------------


def test_up_with_another_build_says_which_runs_and_uploads_nothing(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    assert gt("down", "gaming-pc").returncode == 0
    build = new_build(tmp_path)
    result = gt("up", "gaming-pc", "--server-binary", str(build), ssh_config=ssh_host.ssh_config)
    assert result.returncode == 0, result.stderr
    digest = file_digest(str(build))
    assert f"keeps running ccmux-server 0.1.1, build {file_digest(str(STANDIN))}" in result.stderr
    assert f"build {digest}" in result.stderr and f"gt-remote upgrade gaming-pc --server-binary {build}" in result.stderr
    assert remote_ls(ssh_host, SERVERS) == [file_digest(str(STANDIN))]


def test_upgrade_needs_yes_without_a_terminal(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    [pid] = server_pids(ssh_host)
    result = gt("upgrade", "gaming-pc", "--server-binary", str(new_build(tmp_path)))
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "ends the panes' processes" in line and "--yes" in line
    assert "upgrading restarts ccmux-server 0.1.1" in result.stderr
    assert server_pids(ssh_host) == [pid]
    assert len(remote_ls(ssh_host, SERVERS)) == 1  # nothing uploaded


def test_upgrade_asks_on_a_terminal_and_no_changes_nothing(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    [pid] = server_pids(ssh_host)
    main, child = pty.openpty()
    try:
        cmd = [sys.executable, "-m", "gt_remote", "upgrade", "gaming-pc", "--server-binary", str(new_build(tmp_path))]
        process = subprocess.Popen(cmd, env=gt.env, stdin=child, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.write(main, b"n\n")
        _, stderr = process.communicate(timeout=60)
    finally:
        os.close(main)
        os.close(child)
    assert process.returncode == 1
    assert "restart the server now?" in stderr and "upgrade cancelled; nothing changed" in stderr
    assert server_pids(ssh_host) == [pid]


def test_upgrade_restarts_the_new_build_and_the_tunnel_keeps_working(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    first = gt.up(ssh_host)
    assert first.returncode == 0
    [old_pid] = server_pids(ssh_host)
    [before] = gt.status()
    build = new_build(tmp_path)
    result = gt("upgrade", "gaming-pc", "--server-binary", str(build), "--yes")
    assert result.returncode == 0, result.stderr
    [new_pid] = server_pids(ssh_host)
    assert new_pid != old_pid
    [row] = gt.status()
    assert row["state"] == "up" and row["supervisor_pid"] == before["supervisor_pid"]
    assert row["server"]["version"] == "0.1.2" and row["server"]["pid"] == new_pid and row["server"]["build"] == file_digest(str(build))
    ping(gt.local())
    # The same build again: no restart; `up` with it is what runs now, so it is accepted.
    again = gt("upgrade", "gaming-pc", "--server-binary", str(build))
    assert again.returncode == 0 and "nothing to do" in again.stderr
    same = gt("up", "gaming-pc", "--server-binary", str(build), ssh_config=ssh_host.ssh_config)
    assert same.returncode == 0 and exports(same.stdout) == exports(first.stdout)
    assert server_pids(ssh_host) == [new_pid]


def test_upgrade_to_a_build_that_never_answers_brings_the_previous_one_back(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    silent = silent_server(tmp_path / "ccmux-server")
    result = gt("upgrade", "gaming-pc", "--server-binary", str(silent), "--yes")
    assert result.returncode == 1
    assert "the previous build runs again" in one_error_line(result.stderr)
    [row] = gt.status()
    assert row["state"] == "up" and row["server"]["version"] == "0.1.1"
    assert [row["server"]["pid"]] == server_pids(ssh_host)
    ping(gt.local())

