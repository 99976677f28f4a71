"""`gt-remote up` failing at or after the connection: one error line naming cause and fix, a
non-zero exit, nothing left behind. The errors found before any connection:
tests/unit/test_up.py."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Gt
from tests.e2e.helpers import REMOTE_STATE, remote_ls, server_pids
from tests.helpers import assert_nothing_left, one_error_line, silent_server
from tests.testbed import SshHost, wait_for


def start_tcpless_server(host: SshHost) -> int:
    host.install_standin()
    host.spawn("exec ccmux-server 2>/tmp/own.log")
    wait_for(lambda: "listening on unix socket" in host.exec("cat /tmp/own.log")[1], 10, "the TCP-less server")
    [pid] = host.pids("/usr/local/bin/ccmux-server")
    return pid


def test_authentication_refused(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.sh(": > /home/gamer/.ssh/authorized_keys")
    result = gt.up(ssh_host)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "refused authentication" in line and "authorized_keys" in line
    assert_nothing_left(gt)


def test_no_common_algorithm(gt: Gt, ssh_host: SshHost) -> None:
    """A MAC (or cipher, or key exchange) the host does not offer: the kind is named, and the
    fix points at ssh_config, not at the network."""
    ssh_host.extra_config.extend(["Ciphers aes128-ctr", "MACs hmac-md5"])  # a cipher that needs a MAC; a MAC OpenSSH dropped
    ssh_host.write_ssh_config()
    result = gt.up(ssh_host)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "gaming-pc and this machine share no algorithm: No matching MAC algorithm" in line, line
    assert "MACs" in line and "ssh_config" in line and "network" not in line
    assert_nothing_left(gt)


def test_changed_host_key(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.pin_wrong_host_key()
    result = gt.up(ssh_host)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "host key of gaming-pc has CHANGED" in line and "ssh-keygen -R" in line
    assert_nothing_left(gt)
    assert server_pids(ssh_host) == []


def test_unknown_host_key(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.known_hosts.write_text("")
    result = gt.up(ssh_host)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "host key of gaming-pc is not in known_hosts yet" in line and "ssh gaming-pc" in line
    assert_nothing_left(gt)


def test_default_known_hosts_is_checked_too(gt: Gt, ssh_host: SshHost) -> None:
    """No UserKnownHostsFile: ~/.ssh/known_hosts of the (empty) home decides, and it knows nothing."""
    ssh_host.ssh_config.write_text("\n".join(line for line in ssh_host.config_block().splitlines() if "UserKnownHostsFile" not in line) + "\n")
    result = gt.up(ssh_host)
    assert result.returncode == 1
    assert "not in known_hosts yet" in one_error_line(result.stderr)
    assert_nothing_left(gt)


def test_ssh_config_cannot_turn_host_key_checking_off(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.ssh_config.write_text(ssh_host.config_block().replace(f"UserKnownHostsFile {ssh_host.known_hosts}", "UserKnownHostsFile none"))
    result = gt.up(ssh_host)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "turns host key checking off" in line and "always verifies host keys" in line
    assert_nothing_left(gt)
    assert server_pids(ssh_host) == []


def test_remote_port_held_by_another_program(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.hold_port(9999)
    result = gt.up(ssh_host)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    # It accepts and says nothing: told apart from a program that answers something else (tests/e2e/test_status.py).
    assert "127.0.0.1:9999 on gaming-pc accepts connections but nothing answered a ccmux Ping within 3 s" in line and "--remote-port" in line
    assert_nothing_left(gt)
    assert server_pids(ssh_host) == []


def test_server_running_without_tcp(gt: Gt, ssh_host: SshHost) -> None:
    pid = start_tcpless_server(ssh_host)
    result = gt.up(ssh_host, standin=False)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "already runs on gaming-pc without TCP" in line and "--restart-server" in line
    assert_nothing_left(gt)
    assert ssh_host.pids("/usr/local/bin/ccmux-server") == [pid]  # never killed without asking


def test_restart_server_gives_it_tcp(gt: Gt, ssh_host: SshHost) -> None:
    old = start_tcpless_server(ssh_host)
    result = gt.up(ssh_host, "--restart-server", standin=False)
    assert result.returncode == 0, result.stderr
    assert f"pid {old}" in result.stderr and "panes ended" in result.stderr
    [new] = server_pids(ssh_host)
    assert new != old


def test_server_that_never_answers_is_reported_with_its_log(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    silent = silent_server(tmp_path / "ccmux-server", 'silent server: loading a very large session state')
    result = gt("up", "gaming-pc", "--server-binary", str(silent), ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "never answered a Ping on 127.0.0.1:9999" in line and "loading a very large session state" in line
    assert_nothing_left(gt)
    wait_for(lambda: ssh_host.pids("ccmux-server --listen-tcp") == [], 10, "the silent server to be stopped")


def test_server_that_exits_at_start_leaves_no_pid_file(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.install_standin()
    ssh_host.spawn("exec ccmux-server 2>/tmp/own.log")  # owns the Unix socket, without TCP
    wait_for(lambda: "listening on unix socket" in ssh_host.exec("cat /tmp/own.log")[1], 10, "the TCP-less server")
    result = gt.up(ssh_host, standin=False)
    assert result.returncode == 1 and "without TCP" in one_error_line(result.stderr)
    assert remote_ls(ssh_host, REMOTE_STATE + "/*.pid") == []

