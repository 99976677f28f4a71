"""`gt-remote up / status / down / env / exec` against real sshd containers."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests.conftest import Gt
from tests.helpers import STANDIN_PATTERN, exports, mode, ping, supervisor_processes, tcp_port_free, tcp_port_refuses
from tests.testbed import STANDIN, SshHost, free_loopback_port, wait_for

STATUS_KEYS = {"host", "state", "local", "remote_port", "supervisor_pid", "uptime_s", "reconnects", "rtt_ms", "server", "last_error"}


def remote_server_pids(host: SshHost, port: int = 9999) -> list[int]:
    return host.pids(f"{STANDIN_PATTERN}{port}")


def test_up_uploads_starts_and_exports(gt: Gt, ssh_host: SshHost) -> None:
    result = gt.up(ssh_host)
    assert result.returncode == 0, result.stderr
    assert exports(result.stdout) == {"GASTOWN_CCMUX_ADDR": "tcp://127.0.0.1:9999", "CCMUX_ADDR": "tcp://127.0.0.1:9999"}
    assert "uploading" in result.stderr and "starting ccmux-server 0.1.1" in result.stderr
    ping("tcp://127.0.0.1:9999")
    [pid] = remote_server_pids(ssh_host)
    cmdline = ssh_host.sh(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert "/home/gamer/.local/share/gt-remote/servers/" in cmdline and "--listen-tcp 127.0.0.1:9999" in cmdline
    # The remote server binds loopback only: 127.0.0.1:9999 is 0100007F:270F in /proc/net/tcp.
    listening = ssh_host.sh("awk '$4 == \"0A\" {print $2}' /proc/net/tcp").split()
    assert "0100007F:270F" in listening and "00000000:270F" not in listening
    # No partial upload left beside the binary; only its --version answer, kept for the next probe.
    assert ssh_host.sh("ls -A /home/gamer/.local/share/gt-remote/servers/*/").split() == ["ccmux-server", "ccmux-server.version"]


def test_up_reuses_a_running_server(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    [first_pid] = remote_server_pids(ssh_host)
    assert gt("down", "gaming-pc").returncode == 0
    assert remote_server_pids(ssh_host) == [first_pid]
    again = gt.up(ssh_host)
    assert again.returncode == 0, again.stderr
    assert f"reusing the running ccmux-server (pid {first_pid})" in again.stderr
    [row] = gt.status()
    assert row["server"]["pid"] == first_pid
    assert remote_server_pids(ssh_host) == [first_pid]


def test_up_is_idempotent(gt: Gt, ssh_host: SshHost) -> None:
    first = gt.up(ssh_host)
    second = gt.up(ssh_host)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    assert "already up" in second.stderr
    assert len(supervisor_processes(gt.env["XDG_RUNTIME_DIR"])) == 1
    assert len(remote_server_pids(ssh_host)) == 1


def test_racing_ups_leave_one_supervisor(gt: Gt, ssh_host: SshHost) -> None:
    results: list[subprocess.CompletedProcess[str]] = []
    threads = [threading.Thread(target=lambda: results.append(gt.up(ssh_host))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    assert len({r.stdout for r in results}) == 1
    assert len(supervisor_processes(gt.env["XDG_RUNTIME_DIR"])) == 1
    assert len(remote_server_pids(ssh_host)) == 1
    ping("tcp://127.0.0.1:9999")


def test_unix_socket_local(gt: Gt, ssh_host: SshHost) -> None:
    socket_path = Path(tempfile.mkdtemp(prefix="gtr-sock-")) / "gaming-pc.sock"
    result = gt.up(ssh_host, "--local", f"unix://{socket_path}")
    assert result.returncode == 0, result.stderr
    assert exports(result.stdout)["GASTOWN_CCMUX_ADDR"] == f"unix://{socket_path}"
    assert mode(socket_path) == 0o600
    ping(f"unix://{socket_path}")
    assert gt("down", "gaming-pc").returncode == 0
    assert not socket_path.exists()


def test_down_leaves_the_server_running(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    [pid] = remote_server_pids(ssh_host)
    result = gt("down", "gaming-pc")
    assert result.returncode == 0
    assert "keeps running" in result.stderr
    wait_for(lambda: tcp_port_refuses(9999), 2, "the local listener to close")
    assert remote_server_pids(ssh_host) == [pid]
    assert supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == []
    again = gt("down", "gaming-pc")
    assert again.returncode == 0 and "already down" in again.stderr


def test_down_stop_server_stops_only_ours(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    [pid] = remote_server_pids(ssh_host)
    result = gt("down", "gaming-pc", "--stop-server")
    assert result.returncode == 0
    assert f"stopped the remote server (pid {pid})" in result.stderr
    assert remote_server_pids(ssh_host) == []


def test_stop_server_leaves_a_server_gt_remote_did_not_start(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.install_standin()
    ssh_host.spawn("exec ccmux-server --listen-tcp 127.0.0.1:9999 2>/tmp/own.log")
    wait_for(lambda: "listening on tcp" in ssh_host.exec("cat /tmp/own.log")[1], 10, "the user's own server")
    [pid] = remote_server_pids(ssh_host)
    up = gt.up(ssh_host, standin=False)
    assert up.returncode == 0, up.stderr
    assert "did not start" in up.stderr
    result = gt("down", "gaming-pc", "--stop-server")
    assert result.returncode == 1 and "left running" in result.stderr and "the remote server still runs" in result.stderr
    assert remote_server_pids(ssh_host) == [pid]


def test_status_fields_and_exit_codes(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    live = gt("status", "--json")
    assert live.returncode == 0
    [row] = json.loads(live.stdout)
    assert STATUS_KEYS <= set(row)
    assert row["state"] == "up" and row["host"] == "gaming-pc" and row["local"] == "tcp://127.0.0.1:9999"
    assert row["remote_port"] == 9999 and row["reconnects"] == 0 and row["last_error"] is None
    assert row["rtt_ms"] > 0 and row["uptime_s"] >= 0
    assert row["server"]["version"] == "0.1.1" and row["server"]["pid"] == remote_server_pids(ssh_host)[0]
    assert row["supervisor_pid"] in supervisor_processes(gt.env["XDG_RUNTIME_DIR"])
    human = gt("status")
    assert human.returncode == 0 and "gaming-pc: up" in human.stdout and "0.1.1" in human.stdout
    assert gt("down", "gaming-pc").returncode == 0
    gone = gt("status", "gaming-pc", "--json")
    assert gone.returncode == 1
    assert json.loads(gone.stdout)[0]["state"] == "down"


def test_env_prints_exports_only_when_up(gt: Gt, ssh_host: SshHost) -> None:
    down = gt("env", "gaming-pc")
    assert down.returncode != 0 and "gaming-pc is not up" in down.stderr
    up = gt.up(ssh_host)
    env = gt("env", "gaming-pc")
    assert env.returncode == 0 and env.stdout == up.stdout
    fish = gt("env", "gaming-pc", "--shell", "fish")
    assert fish.stdout.splitlines() == ["set -gx GASTOWN_CCMUX_ADDR 'tcp://127.0.0.1:9999'", "set -gx CCMUX_ADDR 'tcp://127.0.0.1:9999'"]


def test_exec_sets_the_variables_and_passes_the_exit_code(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    program = (
        "import os, sys, asyncio; sys.path.insert(0, os.environ['PYTHONPATH']);"
        "from gt_remote.ccmux.wire import ping_address; from gt_remote.base.addresses import address_from_env;"
        "asyncio.run(ping_address(address_from_env())); print(os.environ['GASTOWN_CCMUX_ADDR'], os.environ['CCMUX_ADDR']); sys.exit(7)"
    )
    result = gt("exec", "gaming-pc", "--", sys.executable, "-c", program)
    assert result.returncode == 7, result.stderr
    assert result.stdout.split() == ["tcp://127.0.0.1:9999", "tcp://127.0.0.1:9999"]


def test_private_file_modes_local_and_remote(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    state = gt.home / ".local/state/gt-remote"
    runtime = Path(gt.env["XDG_RUNTIME_DIR"]) / "gt-remote"
    for directory in (state, state / "hosts", state / "logs", runtime):
        assert mode(directory) == 0o700, directory
    for path in (state / "hosts/gaming-pc.json", state / "logs/gaming-pc.log", runtime / "gaming-pc.sock", runtime / "gaming-pc.pid", runtime / "gaming-pc.lock"):
        assert mode(path) == 0o600, path
    remote = ssh_host.sh("cd ~ && stat -c '%a %n' .local/state/gt-remote .local/state/gt-remote/* .local/share/gt-remote/servers/*", user="gamer")
    modes = dict(line.split(" ", 1)[::-1] for line in remote.strip().splitlines())
    assert modes[".local/state/gt-remote"] == "700"
    assert modes[".local/state/gt-remote/ccmux-server-9999.pid"] == "600"
    assert modes[".local/state/gt-remote/ccmux-server-9999.log"] == "600"
    assert all(value == "700" for key, value in modes.items() if key.startswith(".local/share/gt-remote/servers/"))


def test_non_loopback_local_is_refused(gt: Gt, ssh_host: SshHost) -> None:
    result = gt.up(ssh_host, "--local", "tcp://0.0.0.0:9999")
    assert result.returncode == 2
    assert "not loopback" in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == "false\n"  # no exports: only the line that fails the eval
    assert remote_server_pids(ssh_host) == []


def test_server_already_on_path_is_used(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.install_standin("/usr/local/bin/ccmux-server")
    result = gt.up(ssh_host, standin=False)
    assert result.returncode == 0, result.stderr
    assert "uploading" not in result.stderr
    assert "/usr/local/bin/ccmux-server" in ssh_host.sh(f"tr '\\0' ' ' < /proc/{remote_server_pids(ssh_host)[0]}/cmdline")


def test_install_command_installs_the_server(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.install_standin("/opt/ccmux-build/ccmux-server")
    command = "mkdir -p ~/.local/bin && cp /opt/ccmux-build/ccmux-server ~/.local/bin/"
    result = gt.up(ssh_host, "--install-command", command, standin=False)
    assert result.returncode == 0, result.stderr
    assert "running the install command" in result.stderr
    ping("tcp://127.0.0.1:9999")


def test_fugue_server_exports_fugue_addr(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.install_standin("/usr/local/bin/fugue-server")
    result = gt.up(ssh_host, "--server", "fugue-server", standin=False)
    assert result.returncode == 0, result.stderr
    assert set(exports(result.stdout)) == {"GASTOWN_CCMUX_ADDR", "CCMUX_ADDR", "FUGUE_ADDR"}


def test_config_file_host_table(gt: Gt, ssh_host: SshHost) -> None:
    port = free_loopback_port()
    config = gt.home / "gt-remote.toml"
    config.write_text(f'[hosts.pc]\nssh = "gaming-pc"\nremote_port = 9998\nlocal = "tcp://127.0.0.1:{port}"\nserver_binary = "{STANDIN}"\n')
    result = gt("--config", str(config), "up", "pc", ssh_config=ssh_host.ssh_config)
    assert result.returncode == 0, result.stderr
    assert exports(result.stdout)["GASTOWN_CCMUX_ADDR"] == f"tcp://127.0.0.1:{port}"
    assert remote_server_pids(ssh_host, 9998)
    override = gt("--config", str(config), "up", "pc", "--remote-port", "9997", ssh_config=ssh_host.ssh_config)
    assert override.returncode == 2 and "already up" in override.stderr


def test_foreground_mode_serves_until_terminated(gt: Gt, ssh_host: SshHost) -> None:
    cmd = [sys.executable, "-m", "gt_remote", "-F", str(ssh_host.ssh_config), "up", "gaming-pc", "--foreground", "--server-binary", str(STANDIN)]
    proc = subprocess.Popen(cmd, env=gt.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first == "export GASTOWN_CCMUX_ADDR=tcp://127.0.0.1:9999\n"
        ping("tcp://127.0.0.1:9999")
        assert gt.status()[0]["supervisor_pid"] == proc.pid
    finally:
        proc.terminate()  # the process this test started, by its pid
        assert proc.wait(10) == 0
    assert tcp_port_free(9999)


def test_a_warm_up_runs_no_server_process_to_learn_its_version(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """An uploaded build's `--version` answer is kept beside it (its directory is named by its
    content hash, so the answer cannot change): later probes read it instead of starting the
    program, which for a slow-starting server was most of a warm `up`."""
    counting = tmp_path / "ccmux-server"
    counting.write_text(STANDIN.read_text().replace(
        "import uuid\n",
        "import uuid\nif sys.argv[1:2] == ['--version']:\n    open(os.path.expanduser('~/version-asked'), 'a').write('asked\\n')\n", 1))
    counting.chmod(0o755)
    first = gt("up", "gaming-pc", "--server-binary", str(counting), ssh_config=ssh_host.ssh_config)
    assert first.returncode == 0, first.stderr
    assert gt("down", "gaming-pc").returncode == 0
    again = gt("-v", "up", "gaming-pc", "--server-binary", str(counting), ssh_config=ssh_host.ssh_config)
    assert again.returncode == 0, again.stderr
    assert "reusing the running ccmux-server" in again.stderr and "version 0.1.1" in again.stderr
    # Once, when the upload was checked; never again.
    assert ssh_host.sh("cat /home/gamer/version-asked", user="gamer").split() == ["asked"]
