"""Bad input: a one-line error naming cause and fix, a non-zero exit, nothing left behind."""

from __future__ import annotations

import platform
import socket
import struct
from pathlib import Path

import pytest

from tests.conftest import Gt
from tests.helpers import STANDIN_PATTERN, assert_nothing_left, one_error_line, silent_server
from tests.testbed import STANDIN, SshHost, free_loopback_port, wait_for


def server_pids(host: SshHost, port: int = 9999) -> list[int]:
    return host.pids(f"{STANDIN_PATTERN}{port}")


def test_unknown_host(gt: Gt, ssh_host: SshHost) -> None:
    result = gt("up", "no-such-host.invalid", ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    assert "cannot resolve host 'no-such-host.invalid'" in one_error_line(result.stderr)
    assert result.stdout == "false\n"  # no exports: only the line that fails the eval
    assert_nothing_left(gt)


def test_connection_refused(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.ssh_config.write_text(ssh_host.config_block().replace(f"Port {ssh_host.port}", f"Port {free_loopback_port()}"))
    result = gt.up(ssh_host)
    assert result.returncode == 1
    assert "refused the connection" in one_error_line(result.stderr)
    assert_nothing_left(gt)


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


def test_local_port_in_use(gt: Gt, ssh_host: SshHost) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        result = gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{port}")
        assert result.returncode == 1
        assert f"local address tcp://127.0.0.1:{port} is already in use" in one_error_line(result.stderr)
        assert_nothing_left(gt)
        # The local check comes first: nothing was uploaded or started on the remote.
        assert server_pids(ssh_host) == []
        assert ssh_host.exec("test -e /home/gamer/.local/share/gt-remote")[0] != 0
    finally:
        holder.close()


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("http://127.0.0.1:9999", "unknown scheme 'http'"),
        ("tcp://127.0.0.1", "missing port"),
        ("tcp://127.0.0.1:70000", "port 70000 is out of range"),
        ("unix://relative/x.sock", "is relative"),
        ("127.0.0.1:9999", "missing scheme"),
    ],
)
def test_malformed_local_url(gt: Gt, ssh_host: SshHost, url: str, part: str) -> None:
    result = gt.up(ssh_host, "--local", url)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert part in line and "write it like " in line
    assert_nothing_left(gt)


def test_non_loopback_local(gt: Gt, ssh_host: SshHost) -> None:
    result = gt.up(ssh_host, "--local", "tcp://192.0.2.1:9999")
    assert result.returncode == 2
    assert "not loopback" in one_error_line(result.stderr)
    assert_nothing_left(gt)


def test_server_missing_and_no_way_to_install(gt: Gt, ssh_host: SshHost) -> None:
    result = gt.up(ssh_host, standin=False)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "not installed" in line and "--server-binary" in line and "--install-command" in line
    assert_nothing_left(gt)


def other_arch_elf(directory: Path) -> tuple[Path, str]:
    """A 64-bit ELF header for an architecture that is not this machine's."""
    arch = "x86_64" if platform.machine() in ("aarch64", "arm64") else "aarch64"
    machine = {"x86_64": 62, "aarch64": 183}[arch]
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack("<HHI", 2, machine, 1) + bytes(44)
    path = directory / "ccmux-server"
    path.write_bytes(header)
    path.chmod(0o755)
    return path, arch


def test_binary_for_another_architecture(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    binary, arch = other_arch_elf(tmp_path)
    remote_arch = ssh_host.sh("uname -m").strip()
    result = gt("up", "gaming-pc", "--server-binary", str(binary), ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert f"Linux {arch} binary" in line and f"Linux {remote_arch} (uname -m)" in line
    assert_nothing_left(gt)
    assert ssh_host.exec("ls -A /home/gamer/.local/share/gt-remote/servers/*/ 2>/dev/null")[1].strip() == ""


def test_binary_that_cannot_run_on_the_remote(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    broken = tmp_path / "ccmux-server"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    result = gt("up", "gaming-pc", "--server-binary", str(broken), ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    remote_arch = ssh_host.sh("uname -m").strip()
    assert "cannot run on gaming-pc, which is Linux " + remote_arch in line
    assert_nothing_left(gt)
    assert ssh_host.exec("ls -A /home/gamer/.local/share/gt-remote/servers/*/ 2>/dev/null")[1].strip() == ""


def test_remote_port_held_by_another_program(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.hold_port(9999)
    result = gt.up(ssh_host)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    # It accepts and says nothing: told apart from a program that answers something else (test_status_truth.py).
    assert "127.0.0.1:9999 on gaming-pc accepts connections but nothing answered a ccmux Ping within 3 s" in line and "--remote-port" in line
    assert_nothing_left(gt)
    assert server_pids(ssh_host) == []


def start_tcpless_server(host: SshHost) -> int:
    host.install_standin()
    host.spawn("exec ccmux-server 2>/tmp/own.log")
    wait_for(lambda: "listening on unix socket" in host.exec("cat /tmp/own.log")[1], 10, "the TCP-less server")
    [pid] = host.pids("/usr/local/bin/ccmux-server")
    return pid


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


def test_disk_full_during_upload(gt: Gt, host_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    host = host_factory(tmpfs={"/home/gamer/.local/share": "size=256k,uid=1000,gid=1000,mode=0700"})
    big = tmp_path / "ccmux-server"
    big.write_bytes(STANDIN.read_bytes() + b"\n# padding\n" + b"#" * (2 * 1024 * 1024) + b"\n")
    result = gt("up", "gaming-pc", "--server-binary", str(big), ssh_config=host.ssh_config)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "partial file was removed" in line and "df -h" in line
    assert_nothing_left(gt)
    leftovers = host.sh("find /home/gamer/.local/share -type f", user="gamer").strip()
    assert leftovers == ""


def test_missing_ssh_config_file(gt: Gt, tmp_path: Path) -> None:
    result = gt("up", "gaming-pc", ssh_config=tmp_path / "nope")
    assert result.returncode == 2
    assert "does not exist" in one_error_line(result.stderr)


def test_bad_config_file(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[hosts.gaming-pc]\nremote_prot = 9999\n")
    result = gt("--config", str(config), "up", "gaming-pc", ssh_config=ssh_host.ssh_config)
    assert result.returncode == 2
    assert "unknown key(s) remote_prot" in one_error_line(result.stderr)


def test_server_that_never_answers_is_reported_with_its_log(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    silent = silent_server(tmp_path / "ccmux-server", 'silent server: loading a very large session state')
    result = gt("up", "gaming-pc", "--server-binary", str(silent), ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "never answered a Ping on 127.0.0.1:9999" in line and "loading a very large session state" in line
    assert_nothing_left(gt)
    wait_for(lambda: ssh_host.pids("ccmux-server --listen-tcp") == [], 10, "the silent server to be stopped")
