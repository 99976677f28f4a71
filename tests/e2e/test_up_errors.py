"""`gt-remote up` failing at or after the connection: one error line naming cause and fix, a
non-zero exit, nothing left behind. The errors found before any connection:
tests/unit/test_up.py."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from tests.conftest import Gt
from tests.e2e.helpers import REMOTE_STATE, default_ssh_config, remote_ls, server_pids
from tests.helpers import assert_nothing_left, one_error_line, ping, silent_server
from tests.testbed import FOREIGN_HOST_KEY, STANDIN, ClientKey, SshHost, free_loopback_port, wait_for


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


def test_a_key_that_needs_its_passphrase_is_named_with_ssh_add(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """#30.7: the only key, authorised on the host, is encrypted and no agent runs (the runner
    unsets SSH_AUTH_SOCK): the error names the key and ssh-add, not authorized_keys. Then the fix
    as given: an agent holding the key, and `up` works."""
    key = tmp_path / "id_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-C", "locked", "-f", str(key)], check=True, timeout=30)
    public = Path(f"{key}.pub").read_text().strip()
    ssh_host.sh(f"printf '%s\\n' {shlex.quote(public)} >> /home/gamer/.ssh/authorized_keys", user="gamer")
    ssh_host.key = ClientKey(key, public)  # ssh_config's IdentityFile
    ssh_host.write_ssh_config()
    assert "SSH_AUTH_SOCK" not in gt.env
    result = gt.up(ssh_host)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert f"gaming-pc refused authentication: the key {key} needs its passphrase, and gt-remote runs unattended and never prompts" in line
    assert f"add it to your agent with 'ssh-add {key}' (and make sure SSH_AUTH_SOCK reaches gt-remote)" in line and "authorized_keys" not in line
    assert_nothing_left(gt, port=None)

    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(socket_path.is_socket, 10, "the agent's socket")
        askpass = tmp_path / "askpass"
        askpass.write_text("#!/bin/sh\necho secret\n")
        askpass.chmod(0o700)
        agent_env = {**gt.env, "SSH_AUTH_SOCK": str(socket_path), "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
        added = subprocess.run(["ssh-add", str(key)], env=agent_env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert added.returncode == 0, added.stderr
        gt.env["SSH_AUTH_SOCK"] = str(socket_path)
        works = gt.up(ssh_host)
        assert works.returncode == 0, works.stderr
        assert gt("down", "gaming-pc").returncode == 0  # before the agent goes
    finally:
        agent.kill()  # the agent this test started, by its pid
        agent.wait(10)


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
    """The fix names the known_hosts file in use (the ssh_config's UserKnownHostsFile) and the
    name the key is saved under, and the ssh command carries -F (#30.7); its ssh-keygen line,
    run as given, removes the old key."""
    ssh_host.pin_wrong_host_key()
    result = gt.up(ssh_host)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    keygen = f'ssh-keygen -R "[127.0.0.1]:{ssh_host.port}" -f {ssh_host.known_hosts}'
    assert "host key of gaming-pc has CHANGED" in line and f"remove the old key with '{keygen}'" in line
    assert f"connect once with 'ssh -F {ssh_host.ssh_config} gaming-pc'" in line
    assert_nothing_left(gt)
    assert server_pids(ssh_host) == []
    removed = subprocess.run(shlex.split(keygen), capture_output=True, text=True, timeout=30)
    assert removed.returncode == 0 and FOREIGN_HOST_KEY not in ssh_host.known_hosts.read_text(), removed.stderr


def test_unknown_host_key(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.known_hosts.write_text("")
    result = gt.up(ssh_host)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "host key of gaming-pc is not in known_hosts yet" in line and f"connect once with 'ssh -F {ssh_host.ssh_config} gaming-pc'" in line
    assert_nothing_left(gt)


def test_changed_host_key_in_the_default_files_names_no_file(gt: Gt, ssh_host: SshHost) -> None:
    """~/.ssh/config and ~/.ssh/known_hosts, no -F: the hint is the plain commands ssh users know."""
    block = "\n".join(line for line in ssh_host.config_block().splitlines() if "UserKnownHostsFile" not in line) + "\n"
    default_ssh_config(gt, block)
    (gt.home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{ssh_host.port} ssh-ed25519 {FOREIGN_HOST_KEY}\n")
    result = gt("up", "gaming-pc", "--server-binary", str(STANDIN))
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert f"remove the old key with 'ssh-keygen -R \"[127.0.0.1]:{ssh_host.port}\"' and connect once with 'ssh gaming-pc'" in line


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



def test_a_local_port_held_by_our_own_tunnel_is_named_and_a_typo_comes_first(gt: Gt, ssh_host: SshHost, untouched_host: Path, tmp_path: Path) -> None:
    """#30.2: the user's tunnel to gaming-pc holds the default local address (no --local
    anywhere: the remote port's number; a free port stands for 9999, whose laptop side the
    user's real tunnel may hold). `up` of another host on the same default is told which
    tunnel holds it and how to free it; a mistyped alias is told it does not resolve, first."""
    port = free_loopback_port()
    first = gt.up(ssh_host, "--remote-port", str(port), own_local=False)
    assert first.returncode == 0, first.stderr
    other = tmp_path / "other_ssh_config"  # another gaming PC, which resolves and is never dialled
    other.write_text(untouched_host.read_text().replace("Host gaming-pc", "Host other-pc"))
    taken = gt("up", "other-pc", "--remote-port", str(port), ssh_config=other, own_local=False)
    assert taken.returncode == 1 and taken.stdout == "false\n"
    line = one_error_line(taken.stderr)
    assert f"local address tcp://127.0.0.1:{port} is already in use by gt-remote's tunnel to gaming-pc" in line, line
    assert "--local" in line and "'gt-remote down gaming-pc'" in line
    typo = gt("up", "gamng-pc", "--remote-port", str(port), ssh_config=ssh_host.ssh_config, own_local=False)
    assert typo.returncode == 1
    line = one_error_line(typo.stderr)
    assert "cannot resolve host 'gamng-pc'" in line and "in use" not in line, line
    assert [row["host"] for row in gt.status()] == ["gaming-pc"]  # no trace of the two that failed
    ping(f"tcp://127.0.0.1:{port}")  # and the running tunnel untouched
