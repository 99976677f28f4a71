"""Bring-up on remotes as people really have them: another account squatting the server's
port, a second account on the same machine, a WSL2 distro, and two aliases for one account.

The squatter is a real second account in the test container, running the stand-in on the
port the first account's server had: it answers a Ping, so only the ownership check
(the listener's uid in /proc/net/tcp) stops gt-remote from forwarding keystrokes to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
from pathlib import Path
from typing import Any

from gt_remote.remote.lease import holders
from gt_remote.remote.ownership import Holder, ascii_int, owner_from, refusal
from gt_remote.remote.probe import facts_from_fields, survey
from gt_remote.tunnel.connection import SshTarget, connect
from tests.conftest import Gt
from tests.helpers import STANDIN_PATTERN, answers, exports, one_error_line, supervisor_processes
from tests.test_resume import relay_request
from tests.testbed import STANDIN, USER, SshHost, combined_ssh_config, free_loopback_port, wait_for

PORT = 9999
SQUATTER = "squatter"
STANDIN_INSIDE = "/opt/ccmux-server-standin"


# --- numbers and names from the far side (pure logic) -----------------------------------


def test_far_side_numbers_are_ascii_digits_with_a_length_limit() -> None:
    assert ascii_int("1234") == 1234
    for hostile in ("²", "١٢", "9" * 5000, "", " 12", "12 ", "-1", "+1", "0x10", None):
        assert ascii_int(hostile) is None, hostile
    facts = facts_from_fields({"pid": "²", "other": "9" * 5000 + ":1", "os": "Linux", "arch": "x86_64"})
    assert facts.pid is None and facts.other_port is None


def test_a_banner_line_cannot_make_a_foreign_owner_look_like_ours() -> None:
    assert owner_from({"uid": "1000", "listen_uid": "1001", "listen_user": "eve\x1b]0;x\x07"}).holder is Holder.FOREIGN
    assert owner_from({"uid": "1000", "listen_uid": "1001", "listen_user": "eve\x1b]0;x\x07"}).user is None  # not shown raw
    assert owner_from({"uid": "1000", "listen_uid": "²"}).holder is Holder.UNKNOWN
    assert owner_from({"uid": "1000", "listen_uid": "1000"}).holder is Holder.MINE_OTHER
    assert owner_from({"uid": "1000", "listen_uid": "1000", "listen_pid": "42"}).holder is Holder.OURS
    error = refusal(owner_from({"uid": "1000", "listen_uid": "1001", "listen_user": "eve"}), "pc", PORT)
    assert error is not None and "uid 1001, eve" in error.cause and f"127.0.0.1:{PORT}" in error.cause
    assert holders(["lease=pc-a", "lease=../../etc", "lease=" + "x" * 500, "noise"]) == ["pc-a"]


# --- helpers inside the container -------------------------------------------------------


def add_account(host: SshHost, name: str, with_key: bool = False) -> int:
    """A second account on the gaming PC, made at run time."""
    host.sh(f"id {name} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {name}")
    if with_key:
        host.sh(f"usermod -p '*' {name} && install -d -m 0700 -o {name} -g {name} /home/{name}/.ssh")
        host.sh(f"install -m 0600 -o {name} -g {name} /home/{USER}/.ssh/authorized_keys /home/{name}/.ssh/authorized_keys")
    return int(host.sh(f"id -u {name}").strip())


def squat(host: SshHost, port: int = PORT) -> None:
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


def our_server_pids(host: SshHost) -> list[int]:
    code, output = host.exec(f"exec pgrep -u {USER} -f -- {shlex.quote(STANDIN_PATTERN + str(PORT))}")
    return [int(pid) for pid in output.split()] if code == 0 else []


def row(gt: Gt, name: str = "gaming-pc") -> dict[str, Any]:
    [status] = gt.status(name)
    return status


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
        squat(ssh_host)
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
    squat(ssh_host)
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
    squat(ssh_host)
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


def test_banner_lines_that_look_like_answers_are_no_internal_error(gt: Gt, ssh_host: SshHost) -> None:
    """A .bashrc printing `pid=²` or a 5,000-digit number: parsed as ASCII digits with a limit."""
    ssh_host.install_standin()
    noise = "echo 'pid=\u00b2'; echo 'other=" + "9" * 5000 + ":1'; echo 'free_kib=" + "7" * 5000 + "'"
    ssh_host.sh(f"printf '%s\\n' {shlex.quote(noise)} | cat - /home/{USER}/.bashrc > /tmp/bashrc.new && cat /tmp/bashrc.new > /home/{USER}/.bashrc", user=USER)
    local = f"tcp://127.0.0.1:{free_loopback_port()}"
    result = gt.up(ssh_host, "--local", local, "--no-resume", standin=False)
    assert "internal error" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert answers(local)


# --- WSL2 -------------------------------------------------------------------------------


FAKE_UNAME = """#!/bin/sh
# A WSL2 kernel, as `uname -r` shows it there; everything else as the real uname says.
case "$1" in -r) echo 5.15.153.1-microsoft-standard-WSL2 ;; *) exec /bin/uname "$@" ;; esac
"""


def test_a_wsl_looking_host_gets_the_idle_warning_and_works(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.container.copy_into_container(FAKE_UNAME.encode(), "/usr/local/bin/uname", 0o755)
    local = f"tcp://127.0.0.1:{free_loopback_port()}"
    result = gt.up(ssh_host, "--local", local)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "WSL2" in line]
    assert len(warnings) == 1, result.stderr
    assert "vmIdleTimeout=-1" in warnings[0] and "[wsl2]" in warnings[0] and ".wslconfig" in warnings[0] and "systemd" in warnings[0]
    assert exports(result.stdout) and answers(local)
    doctor = gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config)
    [check] = [check for check in json.loads(doctor.stdout) if "WSL" in check["name"]]
    assert check["status"] == "warn" and "vmIdleTimeout=-1" in check["fix"]


def test_a_plain_linux_host_gets_no_wsl_warning(gt: Gt, ssh_host: SshHost) -> None:
    result = gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{free_loopback_port()}")
    assert result.returncode == 0, result.stderr
    assert "WSL" not in result.stderr


# --- shared accounts --------------------------------------------------------------------


def test_two_aliases_share_one_server_knowingly(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    twin = SshHost(ssh_host.container, "twin-pc", ssh_host.port, ssh_host.directory, ssh_host.key, host_key_line=ssh_host.host_key_line)
    gt.ssh_config = combined_ssh_config(tmp_path / "both_config", ssh_host, twin)
    first, second = (f"tcp://127.0.0.1:{free_loopback_port()}" for _ in range(2))
    assert gt("up", "gaming-pc", "--server-binary", str(STANDIN), "--local", first, "--keepalive", "1").returncode == 0
    result = gt("up", "twin-pc", "--local", second, "--keepalive", "1")
    assert result.returncode == 0, result.stderr
    assert answers(first) and answers(second)
    [server] = our_server_pids(ssh_host)
    assert row(gt, "twin-pc")["tunnels_sharing_server"] == 2
    wait_for(lambda: row(gt, "gaming-pc")["tunnels_sharing_server"] == 2, 20, "the first tunnel to see the second")
    assert "shared by 2 tunnels" in gt("status", "gaming-pc").stdout

    refused = gt("down", "gaming-pc", "--stop-server")
    assert refused.returncode != 0
    line = one_error_line(refused.stderr)
    assert "twin-pc" in line and "--force" in line
    assert our_server_pids(ssh_host) == [server] and answers(second) and answers(first)  # nothing stopped

    # With the first tunnel already down, `down --stop-server` connects by itself: the same refusal.
    assert gt("down", "gaming-pc").returncode == 0
    offline = gt("down", "gaming-pc", "--stop-server")
    assert offline.returncode != 0 and "twin-pc" in one_error_line(offline.stderr)
    assert our_server_pids(ssh_host) == [server] and answers(second)

    forced = gt("down", "gaming-pc", "--stop-server", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"stopped the remote server (pid {server})" in forced.stderr
    wait_for(lambda: server not in our_server_pids(ssh_host), 10, "the server to stop")
    # twin-pc's supervisor is still up: to it the server died, and it starts another one (not a
    # check that no server runs, which raced that restart on a loaded machine).
    wait_for(lambda: answers(second), 30, "twin-pc's supervisor to start the server again")


def test_a_plain_down_releases_the_lease(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    twin = SshHost(ssh_host.container, "twin-pc", ssh_host.port, ssh_host.directory, ssh_host.key, host_key_line=ssh_host.host_key_line)
    gt.ssh_config = combined_ssh_config(tmp_path / "both_config", ssh_host, twin)
    assert gt("up", "gaming-pc", "--server-binary", str(STANDIN), "--local", f"tcp://127.0.0.1:{free_loopback_port()}").returncode == 0
    assert gt("up", "twin-pc", "--local", f"tcp://127.0.0.1:{free_loopback_port()}").returncode == 0
    assert gt("down", "twin-pc").returncode == 0
    result = gt("down", "gaming-pc", "--stop-server")
    assert result.returncode == 0, result.stderr
    assert "stopped the remote server" in result.stderr


# --- the facts of the one bring-up script -----------------------------------------------


def test_bring_up_script_reports_the_facts_in_one_round_trip(host_factory) -> None:  # type: ignore[no-untyped-def]
    """python3, free space, and an install dir on a noexec mount, seen from the one script."""
    host = host_factory(tmpfs={"/home/gamer/.local": "rw,noexec,mode=0755,uid=1000,gid=1000"})
    host.sh("mkdir -p /home/gamer/.local/share/gt-remote/servers", user=USER)
    host.container.copy_into_container(FAKE_UNAME.encode(), "/usr/local/bin/uname", 0o755)

    async def look() -> Any:
        conn = await connect(SshTarget(host.alias, str(host.ssh_config), 5.0))
        async with conn:
            return await survey(conn, "ccmux-server", PORT, "", "", "laptop-gaming-pc", 30)

    found = asyncio.run(look())
    assert found.install_dir == "noexec"
    assert found.python_version and found.python_version[0] == "3"
    assert found.free_kib is not None and found.free_kib > 0
    assert found.facts.os == "Linux" and found.facts.wsl == "unknown distro"
    assert found.owner.holder is Holder.NONE and found.lease_holders == []
    assert host.sh("cat /home/gamer/.local/state/gt-remote/leases/9999/laptop-gaming-pc", user=USER).strip() == "30"
