"""Putting ccmux-server on the remote: upload (progress, interrupted, full disk, noexec home,
another architecture, a swapped build), a server already on PATH, `--install-command`, and
`--install-dir`."""

from __future__ import annotations

import hashlib
import platform
import re
import shlex
import signal
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from gt_remote.remote.relay import build as relay_build
from gt_remote.remote.relay import deploy as remote_relay
from tests.conftest import Gt
from tests.e2e.helpers import HELD_UPLOAD_MIB, SERVERS, HeldUpload, big_standin, on, server_pids, sha256, up, wait_for_no_partial_upload
from tests.helpers import assert_nothing_left, local_files, one_error_line, ping, rows, start_up, supervisor_processes
from tests.testbed import STANDIN, SshHost, free_loopback_port, wait_for


def other_arch_elf(directory: Path) -> tuple[Path, str]:
    """A 64-bit ELF header for an architecture that is not this machine's."""
    arch = "x86_64" if platform.machine() in ("aarch64", "arm64") else "aarch64"
    machine = {"x86_64": 62, "aarch64": 183}[arch]
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack("<HHI", 2, machine, 1) + bytes(44)
    path = directory / "ccmux-server"
    path.write_bytes(header)
    path.chmod(0o755)
    return path, arch


# --- noexec homes and --install-dir -----------------------------------------------------

NOEXEC_HOME = {"/home/gamer/.local": "rw,noexec,nosuid,size=64m,uid=1000,gid=1000,mode=0755"}


def test_server_missing_and_no_way_to_install(gt: Gt, ssh_host: SshHost) -> None:
    result = gt.up(ssh_host, standin=False)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "not installed" in line and "--server-binary" in line and "--install-command" in line
    assert_nothing_left(gt)


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


HELD_FOR_S = 8.0  # the remote frozen this long during the undo: longer than down's usual 5 s grace


def test_interrupt_during_a_large_upload_leaves_nothing_on_the_remote(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """Ctrl-C while the server's bytes are on their way. The remote end of the upload is held
    (its `cat` stopped, a fault in the test container) so the Ctrl-C lands mid-upload however
    fast the machine: on loopback 200 MB took a second or two, and a signal sent once
    `status` showed the upload could arrive after it had finished (a CI run's failure)."""
    big = big_standin(tmp_path / "ccmux-server", HELD_UPLOAD_MIB)
    port = free_loopback_port()
    held = HeldUpload(ssh_host)
    proc = start_up(gt, "gaming-pc", "--server-binary", str(big), "--local", f"tcp://127.0.0.1:{port}", ssh_config=ssh_host.ssh_config)
    try:
        held.wait()
        row = wait_for(lambda: next((r for r in rows(gt) if str(r.get("step", "")).startswith("uploading")), None), 60, "status to show the upload")
        assert row["state"] == "connecting" and row["step"].endswith(" %")  # type: ignore[index]
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: proc.poll() is not None, 30, "up to end after Ctrl-C")
    finally:
        held.release()
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate()
    assert proc.returncode == 130, stderr
    assert stdout.strip() == "false"
    wait_for(lambda: supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [], 30, "the supervisor to exit")
    wait_for_no_partial_upload(ssh_host)
    assert ssh_host.pids("--listen-tcp 127.0.0.1:") == [] and ssh_host.pids("relay_agent.py --socket") == []
    assert local_files(gt) == []


def test_down_during_the_bring_up_waits_for_the_undo(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """`down` from another shell while `up` uploads: the bring-up is cancelled and undone, and
    `down` waits for that rather than killing the supervisor after its usual grace (which left
    the relay and half an upload on the remote). The undo is slowed by freezing the gaming PC
    for HELD_FOR_S (a fault in the test container) just as `down` asks."""
    held = HeldUpload(ssh_host)
    proc = start_up(gt, "gaming-pc", "--server-binary", str(big_standin(tmp_path / "ccmux-server", HELD_UPLOAD_MIB)), "--local", f"tcp://127.0.0.1:{free_loopback_port()}", ssh_config=ssh_host.ssh_config)
    try:
        held.wait()
        wait_for(lambda: any(str(r.get("step", "")).startswith("uploading") for r in rows(gt)), 60, "status to show the upload")
        [supervisor] = supervisor_processes(gt.env["XDG_RUNTIME_DIR"])
        ssh_host.pause()
        try:
            down = subprocess.Popen(gt.command("down", "gaming-pc"), env=gt.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            threading.Event().wait(HELD_FOR_S)  # the fault's length, not a synchronisation
        finally:
            ssh_host.unpause()
        out, err = down.communicate(timeout=60)
        up_out, up_err = proc.communicate(timeout=60)
    finally:
        held.release()
        if proc.poll() is None:  # only when the test failed before `up` ended
            proc.kill()  # the `up` this test started, by pid
            proc.communicate()
    assert down.returncode == 0, err
    assert "the bring-up was cancelled" in err, (out, err)  # what `down` says goes to stderr; stdout stays for eval
    assert proc.returncode == 1 and up_out.strip() == "false", (up_out, up_err)
    assert "cancelled by 'gt-remote down'" in up_err and "nothing it started was left running" in up_err, up_err
    assert supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [] and not Path(f"/proc/{supervisor}").exists()
    wait_for_no_partial_upload(ssh_host)
    assert ssh_host.pids("--listen-tcp 127.0.0.1:") == [] and ssh_host.pids("relay_agent.py --socket") == []
    assert local_files(gt) == []


def test_a_large_upload_shows_progress_on_a_terminal(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    binary = big_standin(tmp_path / "ccmux-server", 384)
    command = gt.command("up", "gaming-pc", "--server-binary", str(binary), ssh_config=ssh_host.ssh_config)
    ran = subprocess.run(["script", "-qec", shlex.join(command), "/dev/null"], env=gt.env, capture_output=True, timeout=300)
    shown = ran.stdout.decode().replace("\r\n", "\n")  # bytes: text mode would turn each \r into a newline
    assert "GASTOWN_CCMUX_ADDR" in shown, shown
    progress_lines = [part for part in shown.split("\r") if part.startswith("gt-remote: uploading ")]
    assert progress_lines, shown
    assert all(re.search(r"uploading +\d+% +[\d.]+ MiB/s \d+:\d\d left", line) for line in progress_lines)
    assert gt("down", "gaming-pc").returncode == 0


def test_a_noexec_home_is_named_with_the_fix(gt: Gt, host_factory: Any) -> None:
    host: SshHost = host_factory(tmpfs=NOEXEC_HOME)
    result, local = up(gt, host)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "/home/gamer/.local" in line and "noexec" in line and "--install-dir" in line, line
    assert "build ccmux-server for" not in line  # not mistaken for a wrong architecture
    assert_nothing_left(gt, local)
    assert host.sh("find /home/gamer/.local/share -type f 2>/dev/null || true", user="gamer").strip() == ""


def test_install_dir_puts_builds_and_relay_there_and_clean_follows(gt: Gt, host_factory: Any) -> None:
    host: SshHost = host_factory(tmpfs=NOEXEC_HOME)
    host.sh("install -d -o gamer -g gamer /opt/gt")
    result, _ = up(gt, host, "--install-dir", "/opt/gt")
    assert result.returncode == 0, result.stderr
    assert "connections are resumable" in result.stderr
    files = sorted(host.sh("cd /opt/gt/gt-remote && find . -type f", user="gamer").split())
    build = f"./servers/{sha256(STANDIN)[:16]}/ccmux-server"
    assert files == sorted([f"./relay/{remote_relay.agent_digest()}/relay_agent.py", build, f"{build}.version", f"{build}.answered"])
    assert host.sh("find /home/gamer/.local/share -type f 2>/dev/null || true", user="gamer").strip() == ""
    assert "/opt/gt/gt-remote/servers/" in " ".join(host.sh("ps -eo args", user="gamer").splitlines())

    # clean looks there: an old build under /opt/gt goes, the running one stays.
    host.sh("mkdir -p /opt/gt/gt-remote/servers/0123456789abcdef && cp /opt/gt/gt-remote/servers/*/ccmux-server /opt/gt/gt-remote/servers/*/ccmux-server.answered /opt/gt/gt-remote/servers/0123456789abcdef/ && touch -d '2020-01-01' /opt/gt/gt-remote/servers/0123456789abcdef/ccmux-server", user="gamer")
    cleaned = gt("clean", "gaming-pc")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "/opt/gt/gt-remote/servers/0123456789abcdef (an old build)" in cleaned.stdout
    assert host.exec("test -e /opt/gt/gt-remote/servers/0123456789abcdef")[0] != 0

    down = gt("down", "gaming-pc", "--stop-server")
    assert down.returncode == 0 and "stopped the remote server" in down.stdout + down.stderr


def test_install_dir_in_the_config(gt: Gt, host_factory: Any) -> None:
    host: SshHost = host_factory()
    host.sh("install -d -o gamer -g gamer /srv/tools")
    config = gt.home / "config.toml"
    config.write_text('[hosts.gaming-pc]\ninstall_dir = "/srv/tools"\n')
    local = free_loopback_port()
    result = gt("--config", str(config), "up", "gaming-pc", "--server-binary", str(STANDIN), "--local", f"tcp://127.0.0.1:{local}", ssh_config=host.ssh_config)
    assert result.returncode == 0, result.stderr
    assert host.exec(f"test -x /srv/tools/gt-remote/servers/{sha256(STANDIN)[:16]}/ccmux-server")[0] == 0


# --- which build is "the newest" (#30) -------------------------------------------------------


def test_a_program_that_is_no_server_is_refused_and_its_upload_removed(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """`--server-binary /bin/true`: its `--version` answers `true (GNU coreutils) 9.1`, which names
    no ccmux-server (once read as version 9.1, kept, and started again by every plain `up`)."""
    like_true = tmp_path / "true" / "ccmux-server"  # what /bin/true does, the same on every laptop
    like_true.parent.mkdir()
    like_true.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'true (GNU coreutils) 9.1'\nexit 0\n")
    like_true.chmod(0o755)
    result = gt("up", "gaming-pc", "--server-binary", str(like_true), "--local", f"tcp://127.0.0.1:{free_loopback_port()}", ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert f"{like_true} is not a ccmux-server build" in line and "true (GNU coreutils) 9.1" in line and "'ccmux-server VERSION'" in line, line
    assert ssh_host.exec(f"find {SERVERS} -mindepth 1", user="gamer")[1].strip() == ""
    assert_nothing_left(gt, port=None)


def test_a_plain_up_starts_the_newest_build_that_answered_a_ping(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """A newer upload that says it is ccmux-server but never answers (it exits at once) fails
    its `up`, and the next plain `up` starts the build that once answered, not that one."""
    local = f"tcp://127.0.0.1:{free_loopback_port()}"
    assert gt.up(ssh_host, "--local", local).returncode == 0
    assert gt("down", "gaming-pc", "--stop-server").returncode == 0
    broken = tmp_path / "broken" / "ccmux-server"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'ccmux-server 9.9.9'; exit 0; fi\necho 'ccmux-server: cannot start' >&2\nexit 1\n")
    broken.chmod(0o755)
    failed = gt("up", "gaming-pc", "--server-binary", str(broken), "--local", local, ssh_config=ssh_host.ssh_config)
    assert failed.returncode == 1 and "exited right after starting" in one_error_line(failed.stderr)
    good, bad = f"{SERVERS}/{sha256(STANDIN)[:16]}/ccmux-server", f"{SERVERS}/{sha256(broken)[:16]}/ccmux-server"
    assert ssh_host.exec(f"test -x {bad} && test {bad} -nt {good}")[0] == 0  # the newer file of the two

    plain = gt("up", "gaming-pc", "--local", local, ssh_config=ssh_host.ssh_config)
    assert plain.returncode == 0, plain.stderr
    assert "starting ccmux-server 0.1.1 on gaming-pc" in plain.stderr
    [pid] = server_pids(ssh_host)
    assert good in ssh_host.sh(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert ssh_host.exec(f"test -e {good}.answered && ! test -e {bad}.answered")[0] == 0
    assert rows(gt)[0]["server"]["version"] == "0.1.1"


# --- integrity of what runs -------------------------------------------------------------


def test_a_swapped_installed_build_is_uploaded_again_not_run(gt: Gt, host_factory: Any) -> None:
    host: SshHost = host_factory()
    result, _ = up(gt, host)
    assert result.returncode == 0, result.stderr
    assert gt("down", "gaming-pc", "--stop-server").returncode == 0
    build = f"/home/gamer/.local/share/gt-remote/servers/{sha256(STANDIN)[:16]}/ccmux-server"
    host.sh(f"printf '#!/bin/sh\\necho swapped > /tmp/swapped-ran\\nexec sleep 60\\n' > {build}", user="gamer")
    again, _ = up(gt, host)
    assert again.returncode == 0, again.stderr
    assert "uploading" in again.stderr  # the altered file was not trusted
    assert host.sh(f"sha256sum {build}").split()[0] == sha256(STANDIN)
    assert host.exec("test -e /tmp/swapped-ran")[0] != 0


def test_a_swapped_relay_is_uploaded_again(gt: Gt, host_factory: Any) -> None:
    host: SshHost = host_factory()
    result, _ = up(gt, host)
    assert result.returncode == 0, result.stderr
    assert gt("down", "gaming-pc", "--stop-server").returncode == 0
    agent = f"/home/gamer/.local/share/gt-remote/relay/{remote_relay.agent_digest()}/relay_agent.py"
    host.sh(f"echo 'open(\"/tmp/relay-swapped-ran\", \"w\")' > {agent}", user="gamer")
    again, _ = up(gt, host)
    assert again.returncode == 0 and "connections are resumable" in again.stderr, again.stderr
    assert host.sh(f"sha256sum {agent}").split()[0] == hashlib.sha256(relay_build.agent()).hexdigest()
    assert host.exec("test -e /tmp/relay-swapped-ran")[0] != 0


# --- a full disk, for the relay too ------------------------------------------------------


def test_relay_upload_on_a_full_disk_leaves_nothing_and_counts_the_space(host_factory: Any) -> None:
    host: SshHost = host_factory(tmpfs={"/home/gamer/.local/share": "size=12k,uid=1000,gid=1000,mode=0700"})
    state = on(host, lambda conn: remote_relay.ensure_relay(conn, 9999))
    assert state.socket is None and state.reason is not None
    assert "the partial file was removed" in state.reason and "unknown" not in state.reason, state.reason
    assert re.search(r"\d+ KiB free there", state.reason), state.reason
    assert host.sh("find /home/gamer/.local/share -type f", user="gamer").strip() == ""


def test_a_failing_install_command_is_reported_with_its_last_lines(chatty: SshHost) -> None:
    """The user's own command runs in their login shell; a long output is read as a bounded tail."""
    from gt_remote.base.errors import InstallFailed
    from gt_remote.remote.install import run_install_command

    host = chatty.as_user("bashy")
    command = "head -c 3000000 /dev/zero | tr '\\0' y | fold -w 100; echo 'error: linker failed' >&2; exit 3"
    with pytest.raises(InstallFailed) as raised:
        on(host, lambda conn: run_install_command(conn, command, "pc"))
    assert "exited 3 on pc" in str(raised.value) and "linker failed" in str(raised.value)


def test_failed_upload_check_leaves_no_empty_install_directory(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    broken = tmp_path / "ccmux-server"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    result = gt("up", "gaming-pc", "--server-binary", str(broken), ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    one_error_line(result.stderr)
    assert ssh_host.exec(f"find {SERVERS} -mindepth 1", user="gamer")[1].strip() == ""


def test_server_already_on_path_is_used(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.install_standin("/usr/local/bin/ccmux-server")
    result = gt.up(ssh_host, standin=False)
    assert result.returncode == 0, result.stderr
    assert "uploading" not in result.stderr
    assert "/usr/local/bin/ccmux-server" in ssh_host.sh(f"tr '\\0' ' ' < /proc/{server_pids(ssh_host)[0]}/cmdline")


def test_install_command_installs_the_server(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.install_standin("/opt/ccmux-build/ccmux-server")
    command = "mkdir -p ~/.local/bin && cp /opt/ccmux-build/ccmux-server ~/.local/bin/"
    result = gt.up(ssh_host, "--install-command", command, standin=False)
    assert result.returncode == 0, result.stderr
    assert "running the install command" in result.stderr
    ping(gt.local())

