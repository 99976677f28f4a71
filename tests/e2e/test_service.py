"""Start at login: READY=1 only after the end-to-end Ping, one supervisor per host, and a login
unit that holds no setting of the config. The unit file itself: tests/unit/test_service_file.py."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import Gt
from tests.e2e.helpers import SECRET, private_setup
from tests.helpers import answers, one_error_line, openssl_mapped, received
from tests.testbed import STANDIN, SshHost

# --- the sd_notify datagram ---------------------------------------------------------------


# --- up --foreground under a service manager --------------------------------------------


def foreground_up(gt: Gt, host: SshHost, notify_socket: str, *args: str) -> subprocess.Popen[str]:
    cmd = gt.command("up", host.alias, "--foreground", *args, ssh_config=host.ssh_config)
    env = {**gt.env, "NOTIFY_SOCKET": notify_socket}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_ready(sock: socket.socket, proc: subprocess.Popen[str], timeout: float = 90) -> list[str]:
    """Datagrams up to and including READY=1; fails if the process exits first."""
    sock.settimeout(0.2)
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while not any("READY=1" in m.splitlines() for m in messages):
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            assert proc.poll() is None, f"up --foreground exited {proc.returncode} before READY=1: {proc.communicate()}"
            assert time.monotonic() < deadline, f"no READY=1 within {timeout} s; got {messages}"
    return messages


def test_ready_is_sent_only_once_the_tunnel_answers_a_ping(gt: Gt, ssh_host: SshHost, receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    proc = foreground_up(gt, ssh_host, path, "--server-binary", str(STANDIN))
    try:
        messages = wait_for_ready(sock, proc)
        # At the moment READY=1 arrives, the server answers through the local address ...
        local = gt.local()
        assert answers(local), "READY=1 came before the tunnel answered a Ping"
        # ... and READY=1 came after the progress of the whole bring-up, the Ping included.
        assert any(m.startswith(f"STATUS=checking {local} end to end with a ccmux Ping") for m in messages[:-1]), messages
        assert messages[-1].splitlines() == ["READY=1", f"STATUS=up: {local} -> gaming-pc:9999"]
        assert [row["supervisor_pid"] for row in gt.status("gaming-pc")] == [proc.pid]
        assert proc.stdout is not None and proc.stdout.readline() == f"export GASTOWN_CCMUX_ADDR={local}\n"
        assert openssl_mapped(proc.pid) == []  # a supervisor for as long as the service runs: lean as a detached one
    finally:
        proc.send_signal(signal.SIGTERM)  # what systemd sends on stop
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_a_failed_foreground_up_never_reports_ready(gt: Gt, ssh_host: SshHost, receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    no_server = foreground_up(gt, ssh_host, path)  # nothing installed and no --server-binary
    _, err = no_server.communicate(timeout=90)
    assert no_server.returncode == 1 and "ccmux-server is not installed on gaming-pc" in one_error_line(err)
    first = received(sock)
    assert first and not any("READY=1" in m for m in first), first  # progress, but never READY
    assert err.count("ccmux-server is not installed") == 1 and err.count("gt-remote: connecting to gaming-pc") == 1
    logged = gt("logs", "gaming-pc").stdout  # what a service's user reads: the steps and the error
    assert "connecting to gaming-pc" in logged and "ERROR gt_remote.runtime.supervisor: ccmux-server is not installed on gaming-pc" in logged

    ssh_host.sh(": > /home/gamer/.ssh/authorized_keys")
    refused = foreground_up(gt, ssh_host, path, "--server-binary", str(STANDIN))
    _, err = refused.communicate(timeout=90)
    assert refused.returncode == 1 and "refused authentication" in one_error_line(err)
    assert not any("READY=1" in m for m in received(sock))


def test_foreground_up_for_a_host_already_supervised_exits_non_zero(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    before = gt.status("gaming-pc")[0]["supervisor_pid"]
    second = gt("up", "gaming-pc", "--foreground", ssh_config=ssh_host.ssh_config)
    assert second.returncode == 1 and second.stdout == ""
    assert "gaming-pc is already up under another supervisor (pid %d)" % before in one_error_line(second.stderr)
    assert gt.status("gaming-pc")[0]["supervisor_pid"] == before and answers(gt.local())  # the first one is untouched


def test_the_login_unit_holds_no_setting_of_the_config(gt: Gt, ssh_host: SshHost) -> None:
    """`up HOST --foreground` reads the destination and install_command from the config at each
    start, so the unit (0600) names only the host and the files it was installed with."""
    setup = private_setup(gt, ssh_host)
    install = gt("--config", str(setup["config"]), "service", "install", "pc", "--platform", "systemd", "--no-start", ssh_config=Path(setup["ssh_config"]))
    assert install.returncode == 0, install.stderr
    unit = gt.home / ".config/systemd/user/gt-remote-pc.service"
    text = unit.read_text()
    assert SECRET not in text and str(setup["destination"]) not in text and str(STANDIN) not in text and str(setup["identity"]) not in text
    assert unit.stat().st_mode & 0o777 == 0o600

