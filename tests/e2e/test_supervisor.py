"""The supervisor's own life: final failures, a killed or stopped supervisor, clients in an
outage, runtime files remade, and settings that are not shown to other local accounts."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from gt_remote.ccmux import wire
from tests.conftest import Gt
from tests.e2e.helpers import SECRET, bring_up, private_setup, row
from tests.helpers import answers, openssl_mapped, ping, rows, supervisor_processes
from tests.testbed import STANDIN, SshHost, free_loopback_port, wait_for


def drop_connection(host: SshHost) -> None:
    for pid in host.pids("sshd: gamer"):
        host.kill(pid)


def auth_failures(host: SshHost) -> int:
    logs = host.wrapped.logs().decode(errors="replace")
    return sum("Connection closed by authenticating user gamer" in line for line in logs.splitlines())


async def _raw_ping(port: int, timeout: float) -> bytes:
    """Send one Ping through the local address; return what came back before EOF or timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(wire.PING)
    try:
        return await asyncio.wait_for(reader.read(8), timeout)
    finally:
        writer.close()


def test_supervisor_remakes_its_runtime_files_when_the_directory_vanishes(gt: Gt, ssh_host: SshHost) -> None:
    port = free_loopback_port()
    assert gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{port}").returncode == 0
    runtime = Path(gt.env["XDG_RUNTIME_DIR"]) / "gt-remote"
    shutil.rmtree(runtime)  # logind removing /run/user/UID at the last logout
    wait_for(lambda: (runtime / "gaming-pc.sock").exists() and (runtime / "gaming-pc.pid").exists(), 20, "the socket and pid file to be made again")
    [row] = rows(gt, "gaming-pc")
    assert row["state"] == "up"
    assert gt("down", "gaming-pc").returncode == 0
    wait_for(lambda: supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [], 10, "the supervisor to stop")


def test_the_supervisors_command_line_names_only_the_program_and_host(gt: Gt, ssh_host: SshHost) -> None:
    setup = private_setup(gt, ssh_host)
    result = gt("--config", str(setup["config"]), "up", "pc", ssh_config=Path(setup["ssh_config"]))
    assert result.returncode == 0, result.stderr
    [pid] = supervisor_processes(gt.env["XDG_RUNTIME_DIR"])  # our own child: its cmdline is as others see it
    args = [arg.decode() for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if arg]
    shown = " ".join(args)
    for private in (SECRET, "Authorization", setup["destination"], ssh_host.alias, setup["ssh_config"], setup["identity"], STANDIN, setup["config"]):
        assert str(private) not in shown, f"{private} is on the supervisor's command line: {shown}"
    assert args == [sys.executable, "-m", "gt_remote.runtime.supervisor", "pc"]
    [row] = gt.status("pc")  # and the settings did reach it, whole
    assert row["state"] == "up" and row["supervisor_pid"] == pid
    assert row["settings"]["destination"] == setup["destination"] and SECRET in row["settings"]["install_command"]
    assert row["settings"]["ssh_config"] == str(Path(setup["ssh_config"]).resolve())


def test_no_settings_file_is_left_for_a_later_supervisor(gt: Gt, ssh_host: SshHost) -> None:
    """The hand-over is a pipe: neither the runtime dir nor the state dir keeps a file with the
    token but the 0600 record and remote files, in 0700 directories, that `status` and `clean` read."""
    setup = private_setup(gt, ssh_host)
    assert gt("--config", str(setup["config"]), "up", "pc", ssh_config=Path(setup["ssh_config"])).returncode == 0
    holding = [path for root in (Path(gt.env["XDG_RUNTIME_DIR"]), gt.home / ".local/state") for path in root.rglob("*") if path.is_file() and SECRET.encode() in path.read_bytes()]
    assert sorted(path.parent.name for path in holding) == ["hosts", "remotes"], holding
    for path in holding:
        assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700, path


def test_refused_auth_on_reconnect_is_final_not_a_storm(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    ssh_host.sh(": > /home/gamer/.ssh/authorized_keys")
    drop_connection(ssh_host)
    status = wait_for(lambda: (s := row(gt))["state"] == "failed" and s, 30, "state failed")
    assert "refused authentication" in status["last_error"] and "authorized_keys" in status["last_error"]
    next_at = datetime.fromisoformat(status["next_attempt_at"]).timestamp()
    assert next_at - time.time() > 45, "a final error must not be retried soon"
    failures = auth_failures(ssh_host)
    assert failures == 1
    for _ in range(5):  # status polls take real time; no attempt may happen meanwhile
        assert row(gt)["state"] == "failed"
    assert auth_failures(ssh_host) == failures


def test_changed_host_key_on_reconnect_is_final(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    ssh_host.pin_wrong_host_key()
    drop_connection(ssh_host)
    status = wait_for(lambda: (s := row(gt))["state"] == "failed" and s, 30, "state failed")
    assert "host key" in status["last_error"] and "ssh-keygen -R" in status["last_error"]


def test_server_binary_gone_after_restart_is_final(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    ssh_host.sh("rm -rf /home/gamer/.local/share/gt-remote")
    ssh_host.restart()
    status = wait_for(lambda: (s := row(gt))["state"] == "failed" and s, 45, "state failed")
    assert "binary is gone" in status["last_error"] and "--server-binary" in status["last_error"]


def test_transient_loss_shows_reconnecting_with_reason_and_since(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    before = time.time()
    ssh_host.pause()
    try:
        status = wait_for(lambda: (s := row(gt))["state"] == "reconnecting" and s, 15, "state reconnecting")
        assert status["last_error"] and datetime.fromisoformat(status["since"]).timestamp() >= before - 1
        human = gt("status")
        assert human.returncode == 1 and "reconnecting" in human.stdout and "last error" in human.stdout
    finally:
        ssh_host.unpause()
    wait_for(lambda: row(gt)["state"] == "up", 45, "state up again")


def test_sigkilled_supervisor_shows_down_and_up_recovers(gt: Gt, ssh_host: SshHost) -> None:
    first = bring_up(gt, ssh_host)
    os.kill(first["supervisor_pid"], signal.SIGKILL)  # a supervisor this test started, by pid
    wait_for(lambda: supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [], 10, "the supervisor to die")
    result = gt("status", "gaming-pc", "--json")
    assert result.returncode == 1
    status = row(gt)
    assert status["state"] == "down" and "died or was killed" in status["last_error"]
    again = gt.up(ssh_host)
    assert again.returncode == 0, again.stderr
    assert f"reusing the running ccmux-server (pid {first['server']['pid']})" in again.stderr
    ping(gt.local())
    assert row(gt)["state"] == "up"


@pytest.mark.parametrize("algorithms", [(), ("Ciphers aes128-ctr", "MACs hmac-sha2-256-etm@openssh.com")], ids=["default", "hmac"])
def test_supervisor_process_leaves_out_pythons_openssl(gt: Gt, ssh_host: SshHost, algorithms: tuple[str, ...]) -> None:
    """One supervisor per host, all day: Python's ssl and _hashlib (the system's libssl and
    libcrypto, about 5 MiB each time) stay out of its process. Its SSH still connects, checks
    the host key and reconnects on hashlib's built-in hashes, also with a cipher that needs an
    HMAC (hmac's pure-Python construction then signs every packet)."""
    ssh_host.extra_config.extend(algorithms)
    ssh_host.write_ssh_config()
    status = bring_up(gt, ssh_host)
    assert openssl_mapped(status["supervisor_pid"]) == []
    ping(gt.local())
    drop_connection(ssh_host)
    wait_for(lambda: (s := row(gt))["state"] == "up" and s["reconnects"] >= 1, 45, "a reconnect")
    ping(gt.local())


def test_sigstopped_supervisor_recovers_by_itself(gt: Gt, ssh_host: SshHost) -> None:
    pid = bring_up(gt, ssh_host)["supervisor_pid"]
    os.kill(pid, signal.SIGSTOP)  # a sleeping laptop
    try:
        stopped = row(gt)
        assert stopped["state"] == "down" and "does not answer" in stopped["last_error"]
        time.sleep(4)  # the fault itself: asleep for longer than keepalive x 3 (3 s)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: row(gt)["state"] == "up", 30, "the supervisor to be up again")
    wait_for(lambda: answers(gt.local()), 30, "a Pong after the resume")
    assert row(gt)["supervisor_pid"] == pid


def test_client_in_an_outage_waits_then_is_closed_cleanly(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    ssh_host.pause()
    try:
        wait_for(lambda: row(gt)["state"] == "reconnecting", 15, "state reconnecting")
        started = time.monotonic()
        assert asyncio.run(_raw_ping(gt.port(), timeout=40)) == b""  # EOF, not a hang
        assert time.monotonic() - started < 40
    finally:
        ssh_host.unpause()


def test_client_in_a_short_outage_is_served_when_the_link_returns(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    ssh_host.pause()
    wait_for(lambda: row(gt)["state"] == "reconnecting", 15, "state reconnecting")

    async def scenario() -> bytes:
        pending = asyncio.create_task(_raw_ping(gt.port(), timeout=30))
        await asyncio.to_thread(wait_for, lambda: row(gt)["clients"] >= 1, 10, "the client to wait inside the outage")
        await asyncio.to_thread(ssh_host.unpause)
        return await pending

    assert asyncio.run(scenario()) == wire.PING  # the Pong has the same 8 bytes

