"""The remote server's whole life: stop after `down`, upgrade, one server per user,
options for a host already up, `clean`, and failed `up`s that leave nothing behind."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from gt_remote.remote.probe import file_digest
from tests.conftest import Gt
from tests.helpers import STANDIN_PATTERN, exports, one_error_line, ping, silent_server, tcp_port_free
from tests.testbed import STANDIN, SshHost, wait_for

SERVERS = "/home/gamer/.local/share/gt-remote/servers"
REMOTE_STATE = "/home/gamer/.local/state/gt-remote"


def server_pids(host: SshHost, port: int = 9999) -> list[int]:
    return host.pids(f"{STANDIN_PATTERN}{port}")


def new_build(tmp_path: Path, version: str = "0.1.2") -> Path:
    """Another build of the stand-in: another version, so another hash."""
    path = tmp_path / "new" / "ccmux-server"
    path.parent.mkdir(exist_ok=True)
    path.write_text(STANDIN.read_text().replace('VERSION = "0.1.1"', f'VERSION = "{version}"'))
    path.chmod(0o755)
    return path


def remote_ls(host: SshHost, path: str) -> list[str]:
    code, output = host.exec(f"ls -A {path}", user="gamer")
    return output.split() if code == 0 else []


def local_files(gt: Gt) -> list[str]:
    """Every file gt-remote keeps locally (directories do not count)."""
    roots = [gt.home / ".local/state/gt-remote", Path(gt.env["XDG_RUNTIME_DIR"]) / "gt-remote"]
    return sorted(str(path) for root in roots if root.exists() for path in root.rglob("*") if not path.is_dir())


# --- down --stop-server after a plain down -------------------------------------------


def test_down_stop_server_after_a_plain_down_stops_it(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    [pid] = server_pids(ssh_host)
    assert gt("down", "gaming-pc").returncode == 0
    assert server_pids(ssh_host) == [pid]
    result = gt("down", "gaming-pc", "--stop-server")
    assert result.returncode == 0, result.stderr
    assert "already down" in result.stderr and f"stopped the remote server (pid {pid})" in result.stderr
    assert server_pids(ssh_host) == []
    assert remote_ls(ssh_host, REMOTE_STATE + "/*.pid") == []


def test_down_all_stop_server_covers_hosts_without_a_supervisor(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    [pid] = server_pids(ssh_host)
    assert gt("down", "--all").returncode == 0
    result = gt("down", "--all", "--stop-server")
    assert result.returncode == 0, result.stderr
    assert f"gaming-pc: already down; stopped the remote server (pid {pid})" in result.stderr
    assert server_pids(ssh_host) == []


def test_down_stop_server_after_clean_connects_with_the_ssh_config_given(gt: Gt, ssh_host: SshHost) -> None:
    """With no local record left, `-F` and the host name are enough to find and stop it."""
    assert gt.up(ssh_host).returncode == 0
    [pid] = server_pids(ssh_host)
    assert gt("down", "gaming-pc").returncode == 0
    assert gt("clean", "gaming-pc", ssh_config=ssh_host.ssh_config).returncode == 0
    assert local_files(gt) == []
    result = gt("down", "gaming-pc", "--stop-server", ssh_config=ssh_host.ssh_config)
    assert result.returncode == 0, result.stderr
    assert f"stopped the remote server (pid {pid})" in result.stderr
    assert server_pids(ssh_host) == []


def test_down_stop_server_after_down_leaves_a_server_gt_remote_did_not_start(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.install_standin()
    ssh_host.spawn("exec ccmux-server --listen-tcp 127.0.0.1:9999 2>/tmp/own.log")
    wait_for(lambda: "listening on tcp" in ssh_host.exec("cat /tmp/own.log")[1], 10, "the user's own server")
    [pid] = server_pids(ssh_host)
    assert gt.up(ssh_host, standin=False).returncode == 0
    assert gt("down", "gaming-pc").returncode == 0
    result = gt("down", "gaming-pc", "--stop-server")
    assert result.returncode == 0, result.stderr
    assert "no server that gt-remote started runs on gaming-pc" in result.stderr
    assert server_pids(ssh_host) == [pid]


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
    ping("tcp://127.0.0.1:9999")
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
    ping("tcp://127.0.0.1:9999")


def test_status_shows_the_running_version_and_another_installed_build(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    build = new_build(tmp_path)
    assert gt("upgrade", "gaming-pc", "--server-binary", str(build), "--yes").returncode == 0
    assert gt("down", "gaming-pc").returncode == 0
    assert gt.up(ssh_host).returncode == 0  # offers the old build, which is installed but not running
    [row] = gt.status()
    assert row["server"]["version"] == "0.1.2"
    assert row["server"]["other_build"]["version"] == "0.1.1"
    text = gt("status", "gaming-pc").stdout
    assert "installed   another build there: 0.1.1" in text and "gt-remote upgrade gaming-pc" in text


# --- one server per remote user --------------------------------------------------------


def test_second_port_for_the_same_user_is_refused_before_uploading(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    config = tmp_path / "config.toml"
    config.write_text('[hosts.same-pc]\nssh = "gaming-pc"\n')
    build = new_build(tmp_path)
    result = gt("--config", str(config), "up", "same-pc", "--remote-port", "9998", "--server-binary", str(build), ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "serving 127.0.0.1:9999" in line and "--remote-port 9999" in line and "down HOST --stop-server" in line
    assert "uploading" not in result.stderr
    assert remote_ls(ssh_host, SERVERS) == [file_digest(str(STANDIN))]
    assert tcp_port_free(9998)


# --- options for a host that is already up ----------------------------------------------


def test_options_for_a_host_already_up_are_refused_naming_the_difference(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    keepalive = gt.up(ssh_host, "--keepalive", "7")
    assert keepalive.returncode == 2
    assert "keepalive 5.0 (asked: 7.0)" in one_error_line(keepalive.stderr)
    port = gt.up(ssh_host, "--remote-port", "9998")
    assert port.returncode == 2 and "remote port 9999 (asked: 9998)" in one_error_line(port.stderr)
    install_dir = gt.up(ssh_host, "--install-dir", "/opt/gt")  # builds and the relay would go elsewhere
    assert install_dir.returncode == 2 and "install dir ~/.local/share (the default) (asked: /opt/gt)" in one_error_line(install_dir.stderr)
    binary = gt("up", "gaming-pc", "--server-binary", str(new_build(tmp_path)), ssh_config=ssh_host.ssh_config)
    assert binary.returncode == 2
    assert "gt-remote upgrade gaming-pc --server-binary" in one_error_line(binary.stderr)
    assert len(server_pids(ssh_host)) == 1


# --- clean -----------------------------------------------------------------------------


def test_clean_dry_run_then_clean(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    old = file_digest(str(STANDIN))
    build = new_build(tmp_path)
    assert gt("upgrade", "gaming-pc", "--server-binary", str(build), "--yes").returncode == 0
    [pid] = server_pids(ssh_host)
    assert gt("down", "gaming-pc").returncode == 0
    ssh_host.sh(f"echo 999999 > {REMOTE_STATE}/ccmux-server-9990.pid", user="gamer")
    ssh_host.sh(f"mkdir -p {SERVERS}/0123456789abcdef", user="gamer")  # an empty install directory
    ssh_host.sh(f"touch {SERVERS}/{old}/ccmux-server", user="gamer")  # the old build is now the newest...
    ssh_host.sh(f"mkdir -p {SERVERS}/aaaaaaaaaaaaaaaa && cp {SERVERS}/{old}/ccmux-server {SERVERS}/aaaaaaaaaaaaaaaa/", user="gamer")
    ssh_host.sh(f"touch -d '2001-01-01' {SERVERS}/aaaaaaaaaaaaaaaa/ccmux-server", user="gamer")  # ...and this one old
    before = local_files(gt)
    assert before
    dry = gt("clean", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"gaming-pc: would remove {SERVERS}/aaaaaaaaaaaaaaaa (an old build)" in dry.stdout
    assert f"gaming-pc: would remove {REMOTE_STATE}/ccmux-server-9990.pid (stale pid file)" in dry.stdout
    assert f"gaming-pc: would remove {SERVERS}/0123456789abcdef (empty or half-uploaded)" in dry.stdout
    assert f"kept {SERVERS}/{file_digest(str(build))}/ccmux-server (running)" in dry.stdout
    assert "local: would remove" in dry.stdout
    assert local_files(gt) == before and len(remote_ls(ssh_host, SERVERS)) == 4
    result = gt("clean")
    assert result.returncode == 0, result.stderr
    assert sorted(remote_ls(ssh_host, SERVERS)) == sorted([old, file_digest(str(build))])
    assert remote_ls(ssh_host, REMOTE_STATE + "/*.pid") == [f"{REMOTE_STATE}/ccmux-server-9999.pid", f"{REMOTE_STATE}/relay-9999.pid"]  # both live: kept
    assert server_pids(ssh_host) == [pid]
    assert local_files(gt) == []


def test_clean_keeps_the_local_files_of_a_host_that_is_up(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    before = local_files(gt)
    result = gt("clean")
    assert result.returncode == 0, result.stderr
    assert "local:" not in result.stdout
    assert local_files(gt) == before
    ping("tcp://127.0.0.1:9999")


# --- a failed up leaves nothing behind ----------------------------------------------------


def test_failed_up_of_a_mistyped_host_leaves_no_local_files(gt: Gt, tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host *\n    ConnectTimeout 5\n")
    result = gt("up", "no-such-host.invalid", "--remote-port", "9997", ssh_config=ssh_config)
    assert result.returncode != 0
    one_error_line(result.stderr)
    assert local_files(gt) == []
    again = gt("down", "no-such-host.invalid")
    assert again.returncode == 0 and local_files(gt) == []


def test_server_that_exits_at_start_leaves_no_pid_file(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.install_standin()
    ssh_host.spawn("exec ccmux-server 2>/tmp/own.log")  # owns the Unix socket, without TCP
    wait_for(lambda: "listening on unix socket" in ssh_host.exec("cat /tmp/own.log")[1], 10, "the TCP-less server")
    result = gt.up(ssh_host, standin=False)
    assert result.returncode == 1 and "without TCP" in one_error_line(result.stderr)
    assert remote_ls(ssh_host, REMOTE_STATE + "/*.pid") == []


def test_failed_upload_check_leaves_no_empty_install_directory(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    broken = tmp_path / "ccmux-server"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    result = gt("up", "gaming-pc", "--server-binary", str(broken), ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    one_error_line(result.stderr)
    assert ssh_host.exec(f"find {SERVERS} -mindepth 1", user="gamer")[1].strip() == ""


def test_records_are_private(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    assert gt("down", "gaming-pc").returncode == 0
    [remote] = (gt.home / ".local/state/gt-remote/remotes").glob("*.json")
    assert os.stat(remote).st_mode & 0o777 == 0o600
    assert json.loads(remote.read_text())["settings"]["remote_port"] == 9999
