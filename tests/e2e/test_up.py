"""`gt-remote up` against a real sshd: upload, start and export; reuse and idempotence; racing
ups; the local socket; options for a host already up; WSL; -v and -q; foreground mode."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from gt_remote.remote.ownership import Holder
from gt_remote.remote.probe import file_digest, survey
from gt_remote.tunnel.connection import SshTarget, connect
from tests.conftest import Gt
from tests.e2e.helpers import PORT, SERVERS, default_ssh_config, new_build, other_shell, remote_ls, server_pids
from tests.helpers import answers, exports, gt_on_path, in_a_terminal, mode, one_error_line, ping, rows, run_in, sock_dir, start_up, supervisor_processes, tcp_port_free
from tests.reaper import short_tempdir
from tests.testbed import STANDIN, USER, SshHost, free_loopback_port, wait_for

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
    assert "instanceIdleTimeout=-1 under [general]" in warnings[0] and ".wslconfig" in warnings[0] and "vmIdleTimeout=-1" not in warnings[0]  # the distro's timer, not the VM's
    assert exports(result.stdout) and answers(local)
    doctor = gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config)
    [check] = [check for check in json.loads(doctor.stdout) if "WSL" in check["name"]]
    assert check["status"] == "warn" and "instanceIdleTimeout=-1 under [general]" in check["fix"]


def test_a_plain_linux_host_gets_no_wsl_warning(gt: Gt, ssh_host: SshHost) -> None:
    result = gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{free_loopback_port()}")
    assert result.returncode == 0, result.stderr
    assert "WSL" not in result.stderr


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


# --- a second `up` and `status` from another shell ------------------------------------------


def test_second_up_from_another_shell_waits_for_the_first_then_shares_it(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    big = tmp_path / "big" / "ccmux-server"
    big.parent.mkdir()
    big.write_text(STANDIN.read_text() + "\n#" + "x" * (80 << 20))  # a slow enough upload to be seen
    big.chmod(0o755)
    port = free_loopback_port()
    args = ("--server-binary", str(big), "--local", f"tcp://127.0.0.1:{port}")
    first = start_up(gt, "gaming-pc", *args, ssh_config=ssh_host.ssh_config)
    other = other_shell(gt, tmp_path)
    try:
        wait_for(lambda: any(r["state"] == "connecting" for r in rows(other)), 60, "the other shell to see the bring-up")
        second = other("up", "gaming-pc", *args, ssh_config=ssh_host.ssh_config, timeout=300)
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    assert "still coming up" in second.stderr
    assert exports(second.stdout) == exports(out)
    assert len(supervisor_processes(gt.env["XDG_RUNTIME_DIR"])) == 1
    ping(f"tcp://127.0.0.1:{port}")


# --- options of a running tunnel --------------------------------------------------------------


def test_up_with_another_resume_setting_is_refused_naming_the_running_value(gt: Gt, ssh_host: SshHost) -> None:
    port = free_loopback_port()
    local = ("--local", f"tcp://127.0.0.1:{port}")
    assert gt.up(ssh_host, *local).returncode == 0
    window = gt.up(ssh_host, *local, "--resume-window", "60")
    assert window.returncode == 2 and window.stdout.strip() == "false"
    line = one_error_line(window.stderr)
    assert "resume window 900.0 (asked: 60.0)" in line and "gt-remote down gaming-pc" in line
    plain = gt.up(ssh_host, *local, "--no-resume")
    assert plain.returncode == 2
    assert "resume on (asked: off (--no-resume))" in one_error_line(plain.stderr)
    assert gt.up(ssh_host, *local).returncode == 0  # the same options are still fine


def test_a_bare_up_on_a_tunnel_brought_up_with_options_prints_its_lines(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """Defaults stay defaults (#30.4): only what the user gave, on the command line or in the
    config, is compared with the running tunnel; a default is no request. The hint shown on a
    terminal carries -F and --config, and runs as shown. (Every command here is typed in a
    shell, as the user would, so no option is added on the way.)"""
    local = f"tcp://127.0.0.1:{free_loopback_port()}"
    config = tmp_path / "config.toml"
    config.write_text("[hosts.gaming-pc]\nresume_window = 600\n")
    env = gt_on_path(gt, tmp_path)
    given = f"-F {ssh_host.ssh_config} --config {config}"
    first = run_in("sh", f"gt-remote {given} up gaming-pc --server-binary {STANDIN} --local {local} --keepalive 2", env)
    assert first.returncode == 0, first.stderr
    bare = run_in("sh", f"gt-remote -F {ssh_host.ssh_config} up gaming-pc", env)  # no --local, --keepalive or config: defaults, none asked for
    assert bare.returncode == 0, bare.stderr
    assert exports(bare.stdout) == {"GASTOWN_CCMUX_ADDR": local, "CCMUX_ADDR": local}
    shown = in_a_terminal(["gt-remote", *given.split(), "up", "gaming-pc"], env)
    [hint] = [line.removeprefix("# Run: ") for line in shown.splitlines() if line.startswith("# Run: ")]
    assert hint == f'eval "$(gt-remote {given} up gaming-pc)"', shown
    evaluated = run_in("sh", f'set -e; {hint}; echo "addr=$GASTOWN_CCMUX_ADDR"', env)
    assert evaluated.returncode == 0 and evaluated.stdout.strip() == f"addr={local}", evaluated.stderr
    differing = run_in("sh", f"gt-remote {given} up gaming-pc --keepalive 7", env)  # an option given that differs: refused, as ever
    assert differing.returncode == 2 and differing.stdout.strip() == "false"
    assert "with keepalive 2.0 (asked: 7.0);" in one_error_line(differing.stderr)
    config.write_text("[hosts.gaming-pc]\nresume_window = 60\n")  # the config's value is asked for too
    by_config = run_in("sh", f"gt-remote {given} up gaming-pc", env)
    assert by_config.returncode == 2 and "with resume window 600.0 (asked: 60.0);" in one_error_line(by_config.stderr)
    assert len(supervisor_processes(gt.env["XDG_RUNTIME_DIR"])) == 1


def test_hints_for_a_tunnel_whose_supervisor_died_carry_its_ssh_config(gt: Gt, ssh_host: SshHost) -> None:
    """After a reboot or a kill the record stays: status's `bring it up with` and env's error
    give the `up` with the -F it was brought up with (#30.4)."""
    assert gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{free_loopback_port()}").returncode == 0
    [pid] = supervisor_processes(gt.env["XDG_RUNTIME_DIR"])
    os.kill(pid, signal.SIGKILL)  # the supervisor this test's `up` started, by its pid
    wait_for(lambda: supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [], 10, "the supervisor to be gone")
    again = f"gt-remote -F {ssh_host.ssh_config} up gaming-pc"
    status = gt("status", "gaming-pc")
    assert f'bring it up with: eval "$({again})"' in status.stdout and "died or was killed" in status.stdout, status.stdout
    env = gt("env", "gaming-pc")
    assert env.returncode == 1 and f"run 'eval \"$({again})\"' first" in one_error_line(env.stderr)


def test_a_dead_socket_at_the_local_path_is_replaced(gt: Gt, ssh_host: SshHost) -> None:
    """What the removal is for: a socket left by a supervisor that died is taken over."""
    path = sock_dir(gt) / "ccmux.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()
    result = gt.up(ssh_host, "--local", f"unix://{path}")
    assert result.returncode == 0, result.stderr
    assert path.is_socket() and not path.is_symlink()
    assert answers(f"unix://{path}"), "our listener answers where the dead socket was"


def test_verbose_shows_ssh_steps_and_quiet_shows_nothing(gt: Gt, ssh_host: SshHost) -> None:
    verbose = gt("-v", "up", "gaming-pc", "--server-binary", str(STANDIN), ssh_config=ssh_host.ssh_config)
    assert verbose.returncode == 0, verbose.stderr
    said = verbose.stderr
    assert f"ssh_config {ssh_host.ssh_config}" in said and f"known_hosts {ssh_host.known_hosts}" in said
    assert f"keys {ssh_host.key.path}" in said and f"gamer@{ssh_host.hostname}:{ssh_host.port}" in said
    assert "authenticated as gamer" in said and f"forward: listening on {gt.local()}" in said
    assert gt("down", "gaming-pc").returncode == 0
    quiet = gt("-q", "up", "gaming-pc", ssh_config=ssh_host.ssh_config)
    assert quiet.returncode == 0 and quiet.stderr == "" and "GASTOWN_CCMUX_ADDR" in quiet.stdout


def test_verbose_up_describes_the_default_ssh_config(gt: Gt, ssh_host: SshHost) -> None:
    default_ssh_config(gt, ssh_host.config_block())
    result = gt("-v", "doctor", "gaming-pc")
    assert f"gamer@{ssh_host.hostname}:{ssh_host.port}" in result.stdout + result.stderr


# --- one server per remote user --------------------------------------------------------


def test_second_port_for_the_same_user_is_refused_before_uploading(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    config = tmp_path / "config.toml"
    config.write_text('[hosts.same-pc]\nssh = "gaming-pc"\n')
    build = new_build(tmp_path)
    result = gt("--config", str(config), "up", "same-pc", "--remote-port", "9998", "--server-binary", str(build), ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "serving 127.0.0.1:9999" in line and "--remote-port 9999" in line and "down HOST --stop-server" in line
    assert "uploading" not in result.stderr
    assert remote_ls(ssh_host, SERVERS) == [file_digest(str(STANDIN))]
    assert tcp_port_free(gt.port("same-pc"))  # its local address was let go too


# --- options for a host that is already up ----------------------------------------------


def test_options_for_a_host_already_up_are_refused_naming_the_difference(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    keepalive = gt.up(ssh_host, "--keepalive", "7")
    assert keepalive.returncode == 2
    assert "keepalive 5.0 (asked: 7.0)" in one_error_line(keepalive.stderr)
    port = gt.up(ssh_host, "--remote-port", "9998")
    assert port.returncode == 2 and "remote port 9999 (asked: 9998)" in one_error_line(port.stderr)
    install_dir = gt.up(ssh_host, "--install-dir", "/opt/gt")  # builds and the relay would go elsewhere
    assert install_dir.returncode == 2 and "install dir ~/.local/share (the default) (asked: /opt/gt)" in one_error_line(install_dir.stderr)
    binary = gt("up", "gaming-pc", "--server-binary", str(new_build(tmp_path)), ssh_config=ssh_host.ssh_config)
    assert binary.returncode == 2
    assert "gt-remote upgrade gaming-pc --server-binary" in one_error_line(binary.stderr)
    assert len(server_pids(ssh_host)) == 1


def test_records_are_private(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    assert gt("down", "gaming-pc").returncode == 0
    [remote] = (gt.home / ".local/state/gt-remote/remotes").glob("*.json")
    assert os.stat(remote).st_mode & 0o777 == 0o600
    assert json.loads(remote.read_text())["settings"]["remote_port"] == 9999


def test_up_uploads_starts_and_exports(gt: Gt, ssh_host: SshHost) -> None:
    result = gt.up(ssh_host)
    assert result.returncode == 0, result.stderr
    assert exports(result.stdout) == {"GASTOWN_CCMUX_ADDR": gt.local(), "CCMUX_ADDR": gt.local()}
    assert "uploading" in result.stderr and "starting ccmux-server 0.1.1" in result.stderr
    ping(gt.local())
    [pid] = server_pids(ssh_host)
    cmdline = ssh_host.sh(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert "/home/gamer/.local/share/gt-remote/servers/" in cmdline and "--listen-tcp 127.0.0.1:9999" in cmdline
    # The remote server binds loopback only: 127.0.0.1:9999 is 0100007F:270F in /proc/net/tcp.
    listening = ssh_host.sh("awk '$4 == \"0A\" {print $2}' /proc/net/tcp").split()
    assert "0100007F:270F" in listening and "00000000:270F" not in listening
    # No partial upload left beside the binary; only its --version answer, kept for the next probe,
    # and the mark that it answered a Ping (only such a build is the one a plain `up` starts).
    assert ssh_host.sh("ls -A /home/gamer/.local/share/gt-remote/servers/*/").split() == ["ccmux-server", "ccmux-server.answered", "ccmux-server.version"]


def test_the_local_address_defaults_to_the_remote_port(gt: Gt, ssh_host: SshHost) -> None:
    """No --local anywhere: the tunnel listens on the laptop's 127.0.0.1 at the remote port's
    number (9999 unless told). A free port stands for 9999 here, whose laptop side the user's
    own tunnel may hold."""
    port = free_loopback_port()
    result = gt.up(ssh_host, "--remote-port", str(port), own_local=False)
    assert result.returncode == 0, result.stderr
    assert exports(result.stdout)["GASTOWN_CCMUX_ADDR"] == f"tcp://127.0.0.1:{port}"
    ping(f"tcp://127.0.0.1:{port}")
    assert server_pids(ssh_host, port)  # the remote server on the same number, inside the container
    assert gt("down", "gaming-pc").returncode == 0
    assert tcp_port_free(port)


def test_up_reuses_a_running_server(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    [first_pid] = server_pids(ssh_host)
    assert gt("down", "gaming-pc").returncode == 0
    assert server_pids(ssh_host) == [first_pid]
    again = gt.up(ssh_host)
    assert again.returncode == 0, again.stderr
    assert f"reusing the running ccmux-server (pid {first_pid})" in again.stderr
    [row] = gt.status()
    assert row["server"]["pid"] == first_pid
    assert server_pids(ssh_host) == [first_pid]


def test_up_is_idempotent(gt: Gt, ssh_host: SshHost) -> None:
    first = gt.up(ssh_host)
    second = gt.up(ssh_host)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    assert "already up" in second.stderr
    assert len(supervisor_processes(gt.env["XDG_RUNTIME_DIR"])) == 1
    assert len(server_pids(ssh_host)) == 1


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
    assert len(server_pids(ssh_host)) == 1
    ping(gt.local())


def test_unix_socket_local(gt: Gt, ssh_host: SshHost) -> None:
    socket_path = short_tempdir("gtr-sock-") / "gaming-pc.sock"
    result = gt.up(ssh_host, "--local", f"unix://{socket_path}")
    assert result.returncode == 0, result.stderr
    assert exports(result.stdout)["GASTOWN_CCMUX_ADDR"] == f"unix://{socket_path}"
    assert mode(socket_path) == 0o600
    ping(f"unix://{socket_path}")
    assert gt("down", "gaming-pc").returncode == 0
    assert not socket_path.exists()


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
    assert server_pids(ssh_host, 9998)
    override = gt("--config", str(config), "up", "pc", "--remote-port", "9997", ssh_config=ssh_host.ssh_config)
    assert override.returncode == 2 and "already up" in override.stderr


def test_foreground_mode_serves_until_terminated(gt: Gt, ssh_host: SshHost) -> None:
    cmd = gt.command("up", "gaming-pc", "--foreground", "--server-binary", str(STANDIN), ssh_config=ssh_host.ssh_config)
    proc = subprocess.Popen(cmd, env=gt.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first == f"export GASTOWN_CCMUX_ADDR={gt.local()}\n"
        ping(gt.local())
        assert gt.status()[0]["supervisor_pid"] == proc.pid
    finally:
        proc.terminate()  # the process this test started, by its pid
        assert proc.wait(10) == 0
    assert tcp_port_free(gt.port())


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

