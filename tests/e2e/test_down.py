"""`gt-remote down` against a real sshd: the server keeps running unless `--stop-server` (which
stops only a server gt-remote started, with or without a supervisor), `--all` goes through every
host, and a `down` from another shell cancels a bring-up."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import Gt
from tests.e2e.helpers import HELD_UPLOAD_MIB, REMOTE_STATE, HeldUpload, big_standin, free_local, other_shell, remote_ls, server_pids, wait_for_no_partial_upload
from tests.helpers import local_files, one_error_line, rows, start_up, supervisor_processes, tcp_port_free, tcp_port_refuses
from tests.testbed import SshHost, free_loopback_port, wait_for


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


def test_down_from_another_shell_cancels_a_bring_up_and_undoes_it(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """`down` in another shell (its own runtime dir: it finds the supervisor through its record)
    while `up` uploads. Same shell: tests/e2e/test_install.py's test_down_during_the_bring_up_*."""
    big = big_standin(tmp_path / "ccmux-server", HELD_UPLOAD_MIB)
    port = free_loopback_port()
    held = HeldUpload(ssh_host)
    first = start_up(gt, "gaming-pc", "--server-binary", str(big), "--local", f"tcp://127.0.0.1:{port}", ssh_config=ssh_host.ssh_config)
    other = other_shell(gt, tmp_path)
    try:
        held.wait()
        wait_for(lambda: any(str(r.get("step")).startswith("uploading") for r in rows(other)), 60, "the other shell to see the upload")
        down = other("down", "gaming-pc")
        _, err = first.communicate(timeout=60)
    finally:
        held.release()
        if first.poll() is None:
            first.kill()
    assert down.returncode == 0, down.stderr
    assert first.returncode == 1 and "cancelled by 'gt-remote down' while uploading" in err, err
    wait_for(lambda: supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [], 10, "the supervisor to exit")
    wait_for_no_partial_upload(ssh_host)
    assert tcp_port_free(port) and rows(gt) == []


def test_down_all_goes_through_every_host_and_names_each_failure(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host, "--local", free_local()).returncode == 0
    remember_unreachable_remote(gt, tmp_path, "broken-pc")  # sorts before gaming-pc: fails first
    result = gt("down", "--all", "--stop-server")
    assert result.returncode == 1, result.stderr
    assert "gt-remote: error: broken-pc: " in result.stderr and "refused the connection" in result.stderr
    assert "gaming-pc: down; stopped the remote server" in result.stderr  # reached after the failure
    assert one_error_line(result.stderr).startswith("gt-remote: error: 'down --all' failed for 1 of 2 hosts: broken-pc;")
    assert gt.status("gaming-pc")[0]["state"] == "down"


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
    assert gt("clean", "gaming-pc", "--forget", ssh_config=ssh_host.ssh_config).returncode == 0
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


def test_down_leaves_the_server_running(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    [pid] = server_pids(ssh_host)
    result = gt("down", "gaming-pc")
    assert result.returncode == 0
    assert "keeps running" in result.stderr
    wait_for(lambda: tcp_port_refuses(gt.port()), 2, "the local listener to close")
    assert server_pids(ssh_host) == [pid]
    assert supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == []
    again = gt("down", "gaming-pc")
    assert again.returncode == 0 and "already down" in again.stderr


def test_down_stop_server_stops_only_ours(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    [pid] = server_pids(ssh_host)
    result = gt("down", "gaming-pc", "--stop-server")
    assert result.returncode == 0
    assert f"stopped the remote server (pid {pid})" in result.stderr
    assert server_pids(ssh_host) == []


def test_stop_server_leaves_a_server_gt_remote_did_not_start(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.install_standin()
    ssh_host.spawn("exec ccmux-server --listen-tcp 127.0.0.1:9999 2>/tmp/own.log")
    wait_for(lambda: "listening on tcp" in ssh_host.exec("cat /tmp/own.log")[1], 10, "the user's own server")
    [pid] = server_pids(ssh_host)
    up = gt.up(ssh_host, standin=False)
    assert up.returncode == 0, up.stderr
    assert "did not start" in up.stderr
    result = gt("down", "gaming-pc", "--stop-server")
    assert result.returncode == 1 and "left running" in result.stderr and "the remote server still runs" in result.stderr
    assert server_pids(ssh_host) == [pid]

