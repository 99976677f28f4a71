"""The test bed itself: real sshd containers, the stand-in, and fault helpers that work."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from gt_remote.ccmux import wire
from tests.testbed import RESTARTABLE_SSHD, SshHost, wait_for

STANDIN = "/usr/local/bin/ccmux-server"


async def connect(host: SshHost, timeout: float = 10) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(host.alias, config=[str(host.ssh_config)], connect_timeout=timeout)


def can_login(host: SshHost, timeout: float = 10) -> bool:
    async def attempt() -> bool:
        async with await connect(host, timeout) as conn:
            return (await conn.run("true")).exit_status == 0

    return asyncio.run(attempt())


def start_standin(host: SshHost, port: int = 9999) -> int:
    host.install_standin(STANDIN)
    host.spawn(f"exec {STANDIN} --listen-tcp 127.0.0.1:{port} 2>/tmp/standin.log")
    wait_for(lambda: "listening on tcp" in host.exec("cat /tmp/standin.log")[1], 10, "the stand-in to listen")
    return host.pids(f"{STANDIN} --listen-tcp")[0]


async def remote_ping(host: SshHost, port: int = 9999) -> float:
    async with await connect(host) as conn:
        reader, writer = await conn.open_connection("127.0.0.1", port)
        return await wire.ping(reader, writer, 5)


def test_login_and_command_through_the_alias(ssh_host: SshHost) -> None:
    async def scenario() -> str:
        async with await connect(ssh_host) as conn:
            return str((await conn.run("id -un", check=True)).stdout).strip()

    assert asyncio.run(scenario()) == "gamer"
    assert can_login(ssh_host)


def test_host_key_is_pinned_strictly(ssh_host: SshHost) -> None:
    ssh_host.pin_wrong_host_key()
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(connect(ssh_host))


def test_ping_pong_through_an_ssh_forward(ssh_host: SshHost) -> None:
    start_standin(ssh_host)

    async def scenario() -> bytes:
        async with await connect(ssh_host) as conn:
            listener = await conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", 9999)
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.get_port())
            writer.write(wire.PING)
            answer = await asyncio.wait_for(reader.readexactly(8), 5)
            writer.close()
            return answer

    assert asyncio.run(scenario()) == bytes.fromhex("0000000411000000")


def test_server_status_decodes(ssh_host: SshHost) -> None:
    start_standin(ssh_host)

    async def scenario() -> wire.ServerStatus:
        async with await connect(ssh_host) as conn:
            reader, writer = await conn.open_connection("127.0.0.1", 9999)
            return await wire.server_status(reader, writer, 5)

    status = asyncio.run(scenario())
    assert status.client_count == 1 and status.wal_healthy and status.checkpoint_healthy
    assert not status.human_control_active


def test_second_standin_refuses_to_start(ssh_host: SshHost) -> None:
    start_standin(ssh_host)
    code, output = ssh_host.exec(f"{STANDIN} --listen-tcp 127.0.0.1:9998", user="gamer")
    assert code != 0
    assert "Another ccmux server is already running" in output


def test_standin_with_taken_port_keeps_running_on_its_socket(ssh_host: SshHost) -> None:
    ssh_host.hold_port(9999)
    ssh_host.install_standin(STANDIN)
    ssh_host.spawn(f"exec {STANDIN} --listen-tcp 127.0.0.1:9999 2>/tmp/standin.log")
    wait_for(lambda: "Failed to bind TCP listener" in ssh_host.exec("cat /tmp/standin.log")[1], 10, "the bind failure in the log")
    assert ssh_host.pids(f"{STANDIN} --listen-tcp")
    probe = (
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/tmp/ccmux-1000/ccmux.sock'); "
        "s.sendall(bytes.fromhex('0000000411000000')); print(s.recv(8).hex())"
    )
    assert ssh_host.sh(f'python3 -c "{probe}"', user="gamer").strip() == "0000000411000000"


def test_standin_command_line(ssh_host: SshHost) -> None:
    ssh_host.install_standin(STANDIN)
    assert ssh_host.sh(f"{STANDIN} --version").strip() == "ccmux-server 0.1.1"
    code, output = ssh_host.exec(f"{STANDIN} --bogus")
    assert code != 0 and "Unknown argument: --bogus" in output


def test_pause_silences_and_unpause_restores(ssh_host: SshHost) -> None:
    ssh_host.pause()
    with pytest.raises((asyncio.TimeoutError, asyncssh.Error, OSError)):
        can_login(ssh_host, timeout=2)
    ssh_host.unpause()
    assert can_login(ssh_host)


def test_network_disconnect_and_connect(host_factory) -> None:  # type: ignore[no-untyped-def]
    host = host_factory(own_network=True)
    host.disconnect()
    with pytest.raises((asyncio.TimeoutError, asyncssh.Error, OSError)):
        can_login(host, timeout=2)
    host.connect()
    wait_for(host.answers_ssh, 15, "sshd to be reachable after the network came back")
    assert can_login(host)


def test_restart_kills_processes_and_sshd_comes_back(ssh_host: SshHost) -> None:
    pid = start_standin(ssh_host)
    ssh_host.restart()
    assert pid not in ssh_host.pids(f"{STANDIN} --listen-tcp")
    assert can_login(ssh_host)


def test_sshd_restarted_inside_drops_sessions_and_comes_back(host_factory) -> None:  # type: ignore[no-untyped-def]
    host = host_factory(command=RESTARTABLE_SSHD)

    async def scenario() -> None:
        async with await connect(host) as conn:
            listener = host.pids("sshd: /usr/sbin/sshd")
            host.restart_sshd()
            with pytest.raises((asyncssh.Error, OSError)):  # the session died with its sshd
                await asyncio.wait_for(conn.run("true", check=True), 10)
            assert host.pids("sshd: /usr/sbin/sshd") and host.pids("sshd: /usr/sbin/sshd") != listener

    asyncio.run(scenario())
    assert can_login(host)


def test_kill_a_process_inside_by_pid(ssh_host: SshHost) -> None:
    pid = start_standin(ssh_host)
    ssh_host.kill(pid)
    wait_for(lambda: pid not in ssh_host.pids(f"{STANDIN} --listen-tcp"), 10, "the stand-in to die")
    with pytest.raises(asyncssh.ChannelOpenError):
        asyncio.run(remote_ping(ssh_host))
