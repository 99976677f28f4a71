"""Other accounts on the gaming PC: a squatter on the server's port (before `up` or after a
crash) hears nothing, the relay checks whose socket answered, a second account's `up` gets no
address into the first's server, and planted builds or relay directories run nothing."""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import socket
from pathlib import Path

import pytest

from gt_remote.remote.relay import build as relay_build
from tests.conftest import Gt
from tests.e2e.helpers import PORT, add_account, our_server_pids, relay_request, row
from tests.helpers import STANDIN_PATTERN, agent_file, answers, one_error_line, supervisor_processes
from tests.testbed import REPO, STANDIN, USER, SshHost, free_loopback_port, wait_for

SQUATTER = "squatter"


STANDIN_INSIDE = "/opt/ccmux-server-standin"


def squat_with_a_standin(host: SshHost, port: int = PORT) -> None:
    """The squatter runs a ccmux stand-in on the port: it even answers a Ping."""
    if host.exec(f"test -x {STANDIN_INSIDE}")[0] != 0:
        host.container.copy_into_container(STANDIN.read_bytes(), STANDIN_INSIDE, 0o755)
    host.spawn(f"cd /tmp && exec {STANDIN_INSIDE} --listen-tcp 127.0.0.1:{port} >/dev/null 2>&1", user=SQUATTER)
    wait_for(lambda: squatter_pids(host), 10, "the squatter's server")
    listening = f"import socket; socket.create_connection(('127.0.0.1', {port}))"
    wait_for(lambda: host.exec(f"python3 -c {shlex.quote(listening)}")[0] == 0, 10, "the squatter to listen")


def squatter_pids(host: SshHost) -> list[int]:
    code, output = host.exec(f"exec pgrep -u {SQUATTER} -f -- {shlex.quote(STANDIN_PATTERN + str(PORT))}")
    return [int(pid) for pid in output.split()] if code == 0 else []


PORT = 9999


INTRUDER = "intruder"


SQUATTER_TOOL = REPO / "tests" / "standin" / "port-squatter"


SQUATTER_INSIDE = "/opt/port-squatter"


SHARED = "/var/tmp/shared"  # like /var/tmp itself: root's, sticky, writable by everyone


# --- the intruder's tools -------------------------------------------------------------------


def squat(host: SshHost, address: str = "::ffff:0.0.0.0", port: int = PORT) -> str:
    """The intruder takes the port on `address`; the path of the log of what it hears."""
    if host.exec(f"test -x {SQUATTER_INSIDE}")[0] != 0:
        host.container.copy_into_container(SQUATTER_TOOL.read_bytes(), SQUATTER_INSIDE, 0o755)
    log = f"/tmp/heard-by-{INTRUDER}-{port}"
    host.sh(f"rm -f {log}")
    host.spawn(f"exec {SQUATTER_INSIDE} {port} {log} {shlex.quote(address)}", user=INTRUDER)
    wait_for(lambda: host.exec(f"test -f {log}")[0] == 0, 15, "the squatter to listen")
    return log


def heard(host: SshHost, log: str) -> str:
    """Everything the squatter was sent (the intruder's log, read as root)."""
    return host.sh(f"cat {log}")


def local_address() -> str:
    return f"tcp://127.0.0.1:{free_loopback_port()}"


# --- code planted in a shared install dir -----------------------------------------------------


def shared_install_dir(host: SshHost) -> None:
    host.sh(f"install -d -m 1777 {SHARED}")


def plant(host: SshHost, path: str, content: bytes, mode: int = 0o644) -> None:
    """A file the intruder owns, in directories the intruder made."""
    host.sh(f"install -d -o {INTRUDER} -g {INTRUDER} -m 755 {shlex.quote(os.path.dirname(path))}")
    host.sh(f"d={shlex.quote(os.path.dirname(path))}; while [ \"$d\" != {SHARED} ]; do chown {INTRUDER}:{INTRUDER} \"$d\"; d=${{d%/*}}; done")
    host.container.copy_into_container(content, path, mode)
    host.sh(f"chown {INTRUDER}:{INTRUDER} {shlex.quote(path)}")


def ran_as_the_user(host: SshHost) -> list[str]:
    code, output = host.exec("ls /tmp/pwned-* 2>/dev/null")
    return output.split() if code == 0 else []


# --- port ownership ---------------------------------------------------------------------


def test_a_squatted_port_is_never_forwarded_to(gt: Gt, ssh_host: SshHost) -> None:
    """A running supervisor goes `failed` naming the squatter's uid, forwards nothing, and
    recovers by itself once the port is the user's again; a new `up` refuses meanwhile."""
    uid = add_account(ssh_host, SQUATTER)
    local = f"tcp://127.0.0.1:{free_loopback_port()}"
    result = gt.up(ssh_host, "--local", local, "--keepalive", "1")
    assert result.returncode == 0, result.stderr
    assert answers(local)
    [server] = our_server_pids(ssh_host)

    # The server dies; another account takes its port before gt-remote can restart it.
    [supervisor] = gt.supervisor_pids()
    os.kill(supervisor, signal.SIGSTOP)  # our own child, by pid: only to order the race
    try:
        ssh_host.kill(server)
        wait_for(lambda: not our_server_pids(ssh_host), 10, "our server to die")
        squat_with_a_standin(ssh_host)
    finally:
        os.kill(supervisor, signal.SIGCONT)

    status = wait_for(lambda: (s := row(gt))["state"] == "failed" and s, 30, "the supervisor to go failed")
    assert isinstance(status, dict)
    assert f"uid {uid}, {SQUATTER}" in status["last_error"] and f"127.0.0.1:{PORT}" in status["last_error"], status["last_error"]
    assert not answers(local)  # the squatter answers a Ping, but nothing reaches it through the tunnel
    assert not our_server_pids(ssh_host)  # and gt-remote did not fight it for the port
    again = gt.up(ssh_host, "--local", local, "--keepalive", "1")  # the tunnel runs, but has no address to give
    assert again.returncode != 0 and f"uid {uid}, {SQUATTER}" in one_error_line(again.stderr)

    # The squatter leaves: the supervisor starts our server again and forwards again.
    for pid in squatter_pids(ssh_host):
        ssh_host.kill(pid)
    wait_for(lambda: row(gt)["state"] == "up" and answers(local), 60, "recovery once the port is ours again")
    assert our_server_pids(ssh_host)

    # After a plain down, the port is squatted again: `up` refuses in one line, naming the uid.
    assert gt("down", "gaming-pc").returncode == 0
    for pid in our_server_pids(ssh_host):
        ssh_host.kill(pid)
    wait_for(lambda: not our_server_pids(ssh_host), 10, "our server to die")
    squat_with_a_standin(ssh_host)
    refused = gt.up(ssh_host, "--local", local)
    assert refused.returncode != 0
    line = one_error_line(refused.stderr)
    assert f"uid {uid}, {SQUATTER}" in line and f"127.0.0.1:{PORT}" in line and "internal error" not in line
    assert supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == []


def test_the_relay_does_not_dial_another_accounts_listener(gt: Gt, ssh_host: SshHost) -> None:
    uid = add_account(ssh_host, SQUATTER)
    result = gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{free_loopback_port()}")
    assert result.returncode == 0, result.stderr
    assert gt("down", "gaming-pc").returncode == 0  # the relay and the server keep running
    for pid in our_server_pids(ssh_host):
        ssh_host.kill(pid)
    wait_for(lambda: not our_server_pids(ssh_host), 10, "our server to die")
    squat_with_a_standin(ssh_host)
    reply = relay_request(ssh_host, {"op": "new", "id": "a" * 32, "window": 60})
    assert f"held by uid {uid}" in reply["error"], reply


def test_a_second_accounts_up_gets_no_address_into_the_first_accounts_server(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    first_uid = int(ssh_host.sh(f"id -u {USER}").strip())
    assert gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{free_loopback_port()}").returncode == 0
    add_account(ssh_host, "other", with_key=True)
    config = tmp_path / "other_config"
    config.write_text(ssh_host.config_block().replace("Host gaming-pc", "Host other-pc").replace(f"User {USER}", "User other"))
    other = Gt(tmp_path / "other-home", Path(gt.env["XDG_RUNTIME_DIR"]) / "other")
    other.home.mkdir()
    Path(other.env["XDG_RUNTIME_DIR"]).mkdir(mode=0o700)
    try:
        result = other("up", "other-pc", "--server-binary", str(STANDIN), "--local", f"tcp://127.0.0.1:{free_loopback_port()}", ssh_config=config)
        assert result.returncode != 0, result.stdout
        line = one_error_line(result.stderr)
        assert f"uid {first_uid}, {USER}" in line and f"127.0.0.1:{PORT}" in line
    finally:
        other("down", "--all", timeout=60)


# --- the port, taken where no listing looked --------------------------------------------------


def test_a_squatter_on_the_v4_mapped_wildcard_before_up_is_refused_and_hears_nothing(gt: Gt, ssh_host: SshHost) -> None:
    """::ffff:0.0.0.0 takes connections to 127.0.0.1: `up` names its owner and sends it nothing,
    not even the Ping that would tell a ccmux server from another program."""
    uid = add_account(ssh_host, INTRUDER)
    log = squat(ssh_host)
    result = gt.up(ssh_host, "--local", local_address())
    assert result.returncode != 0, result.stderr
    line = one_error_line(result.stderr)
    assert f"uid {uid}, {INTRUDER}" in line and f"127.0.0.1:{PORT}" in line, line
    assert heard(ssh_host, log) == ""
    assert not our_server_pids(ssh_host)
    assert supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == []


@pytest.mark.parametrize(
    ("mode", "address", "secret"),
    [("resumable", "::ffff:0.0.0.0", b"TYPED-AFTER-CRASH"), ("plain", "127.0.0.1", b"PLAIN-MODE-SECRET")],
)
def test_a_squatter_that_takes_the_port_after_a_crash_hears_nothing(gt: Gt, ssh_host: SshHost, mode: str, address: str, secret: bytes) -> None:
    """The user's server dies and the intruder binds its port at once. Health Pings and a
    client's keystrokes never reach it: the relay checks whose socket answered each connection
    it makes before it sends a byte, and plain forwarding and Pings go to the server's own
    Unix socket. The tunnel goes `failed`, naming the owner."""
    uid = add_account(ssh_host, INTRUDER)
    local = local_address()
    result = gt.up(ssh_host, "--local", local, "--keepalive", "1", *(["--no-resume"] if mode == "plain" else []))
    assert result.returncode == 0, result.stderr
    assert row(gt)["resumable"] is (mode == "resumable")
    [server] = our_server_pids(ssh_host)

    # The server dies and the port is taken before the supervisor can look: it is stopped
    # meanwhile (our own child, by pid), and a client types at once when it runs again.
    [supervisor] = gt.supervisor_pids()
    os.kill(supervisor, signal.SIGSTOP)
    try:
        ssh_host.kill(server)
        wait_for(lambda: not our_server_pids(ssh_host), 10, "our server to die")
        log = squat(ssh_host, address)
        host, port = local.removeprefix("tcp://").rsplit(":", 1)
        client = socket.create_connection((host, int(port)), timeout=10)  # queued until the supervisor runs
        client.sendall(secret)
    finally:
        os.kill(supervisor, signal.SIGCONT)
    try:
        status = wait_for(lambda: (s := row(gt))["state"] == "failed" and s, 30, "the supervisor to go failed")
        assert isinstance(status, dict)
        assert f"uid {uid}, {INTRUDER}" in status["last_error"], status["last_error"]
        assert not answers(local)
    finally:
        client.close()
    assert heard(ssh_host, log) == "", "the intruder heard something"
    assert not our_server_pids(ssh_host)  # and gt-remote did not fight it for the port


def test_the_relay_checks_whose_socket_answered_before_it_sends_a_byte(gt: Gt, ssh_host: SshHost) -> None:
    """The relay's own check, without a supervisor in front: a stream's hello carrying data
    is refused, naming the uid, and the squatter hears nothing of it."""
    uid = add_account(ssh_host, INTRUDER)
    assert gt.up(ssh_host, "--local", local_address()).returncode == 0
    assert gt("down", "gaming-pc").returncode == 0  # the relay and the server keep running
    for pid in our_server_pids(ssh_host):
        ssh_host.kill(pid)
    wait_for(lambda: not our_server_pids(ssh_host), 10, "our server to die")
    log = squat(ssh_host)
    reply = relay_request(ssh_host, {"op": "new", "id": "b" * 32, "window": 60})
    assert f"held by uid {uid}" in reply["error"], reply
    assert heard(ssh_host, log) == ""


def test_a_planted_relay_directory_runs_nothing_as_the_user(gt: Gt, ssh_host: SshHost) -> None:
    """The genuine relay (its hash checks out) with an argparse.py beside it, in directories the
    intruder made under a shared install dir: `up` refuses in one line naming the directory,
    and nothing there runs. In a directory of the user's own, the relay runs with python3 -I."""
    uid = add_account(ssh_host, INTRUDER)
    shared_install_dir(ssh_host)
    planted = f"{SHARED}/gt-remote/relay/{relay_build.digest()}"
    plant(ssh_host, f"{planted}/{relay_build.NAME}", agent_file().read_bytes())
    plant(ssh_host, f"{planted}/argparse.py", b"import os\nopen('/tmp/pwned-argparse-%d' % os.getuid(), 'w').close()\n")

    result = gt.up(ssh_host, "--local", local_address(), "--install-dir", SHARED)
    assert result.returncode != 0, result.stderr
    line = one_error_line(result.stderr)
    assert f"{SHARED}/gt-remote" in line and f"uid {uid}" in line and "mkdir -m 700" in line, line
    assert ran_as_the_user(ssh_host) == []
    assert ssh_host.pids(f"{planted}/") == []

    # The fix the message names works, and the relay there runs isolated from its directory.
    own = f"/var/tmp/gt-{USER}"
    ssh_host.sh(f"mkdir -m 700 {own}", user=USER)
    again = gt.up(ssh_host, "--local", local_address(), "--install-dir", own)
    assert again.returncode == 0, again.stderr
    assert ssh_host.pids(f"-I {own}/gt-remote/relay/"), "the relay runs without python3 -I"
    assert ran_as_the_user(ssh_host) == []


def test_a_planted_newer_build_is_never_run(gt: Gt, ssh_host: SshHost) -> None:
    """A build the intruder placed (intact: its directory is named by its own hash) with an
    mtime of 2099, in a shared install dir: a plain `up` never runs it, for --version or as
    the server."""
    add_account(ssh_host, INTRUDER)
    shared_install_dir(ssh_host)
    ssh_host.install_standin("/opt/ccmux-server-standin")
    build = b'#!/bin/sh\ntouch /tmp/pwned-build-$(id -u)\nexec /opt/ccmux-server-standin "$@"\n'
    path = f"{SHARED}/gt-remote/servers/{hashlib.sha256(build).hexdigest()[:16]}/ccmux-server"
    plant(ssh_host, path, build, 0o755)
    ssh_host.sh(f"touch -d '2099-01-01' {path}")

    result = gt.up(ssh_host, "--local", local_address(), "--install-dir", SHARED, standin=False)
    assert result.returncode != 0, result.stderr
    assert f"{SHARED}/gt-remote" in one_error_line(result.stderr)
    assert ran_as_the_user(ssh_host) == []
    assert not our_server_pids(ssh_host)


def test_a_build_directory_others_may_write_to_is_refused_by_name(gt: Gt, ssh_host: SshHost) -> None:
    """The user's own install dir, but one build's directory left writable by everyone (a
    careless chmod): anyone could swap the build after its hash check, so nothing runs from it."""
    assert gt.up(ssh_host, "--local", local_address()).returncode == 0
    assert gt("down", "gaming-pc", "--stop-server").returncode == 0
    build_dir = ssh_host.sh("ls -d ~/.local/share/gt-remote/servers/*/", user=USER).split()[0].rstrip("/")
    ssh_host.sh(f"chmod 777 {shlex.quote(build_dir)}", user=USER)
    result = gt.up(ssh_host, "--local", local_address())
    assert result.returncode != 0, result.stderr
    line = one_error_line(result.stderr)
    assert build_dir in line and "writable by other accounts" in line, line
    assert not our_server_pids(ssh_host)


def test_install_dir_checks_hold_in_every_posix_shell_the_remote_may_have(ssh_host: SshHost) -> None:
    """install_dir_safe's arithmetic on modes and its stat calls, under dash, busybox ash and
    bash, against what each case should say."""
    from gt_remote.remote.scripts import PRELUDE

    functions = PRELUDE[PRELUDE.index("owner_mode_of()") : PRELUDE.index("# Run `$1 --version`")]
    ssh_host.container.copy_into_container(functions.encode(), "/tmp/install-dir-fns.sh", 0o644)
    base = "/tmp/idcheck"
    cases = [
        ("chmod 700 B/gt-remote", "ok"),
        ("chmod 777 B/gt-remote/servers/abc", "B/gt-remote/servers/abc is writable by other accounts (mode 777)"),
        ("chmod 1777 B", "ok"),
        ("chmod 777 B", "B is writable by other accounts (mode 777)"),
        ("ln -s /tmp B/gt-remote/relay/x", "B/gt-remote/relay/x is a symbolic link"),
    ]
    for shell in ("dash", "busybox ash", "bash"):
        for setup, expected in cases:
            script = (
                f"rm -rf {base}; mkdir -p {base}/gt-remote/servers/abc {base}/gt-remote/relay; chmod 700 {base}/gt-remote {base}/gt-remote/*; "
                + setup.replace("B", base)
                + f"; gt_base={base} install_root={base}/gt-remote/servers relay_root={base}/gt-remote/relay; . /tmp/install-dir-fns.sh; "
                + 'if out=$(install_dir_safe); then echo ok; else printf "%s %s\\n" "${out%%\n*}" "${out#*unsafe_why=}" | sed "s/^unsafe_dir=//"; fi'
            )
            output = ssh_host.sh(f"{shell} -c {shlex.quote(script)}", user=USER).strip()
            assert output == expected.replace("B", base), (shell, setup, output)

