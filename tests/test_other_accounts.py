"""Another account on the gaming PC gets no byte and runs no process of ours (issue #27).

The intruder is a real second account in the test container. It takes the server's port
the way the listings missed (an AF_INET6 socket on ::ffff:0.0.0.0, which takes IPv4
connections to 127.0.0.1) or the plain way, before `up` or the instant the user's server
dies; or it plants code in a shared install dir. Its squatter (tests/standin/port-squatter)
answers a Ping as ccmux would and logs every byte it is sent: each test ends by reading
that log, so "nothing reached it" is checked, not assumed.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import socket

import pytest

from gt_remote.remote.relay import build as relay_build
from tests.conftest import Gt
from tests.helpers import agent_file, answers, one_error_line, supervisor_processes
from tests.test_bringup import add_account, our_server_pids, row
from tests.test_resume import relay_request
from tests.testbed import REPO, USER, SshHost, free_loopback_port, wait_for

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


def stop_squatting(host: SshHost) -> None:
    for pid in host.pids(f"{SQUATTER_INSIDE} "):
        host.kill(pid)


def local_address() -> str:
    return f"tcp://127.0.0.1:{free_loopback_port()}"


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
