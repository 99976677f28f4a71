"""Issue 17: Ctrl-C during `up` undoes it, status is true during the bring-up, the supervisor
is found from any shell, options are never silently ignored, and an upgrade sticks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gt_remote.remote.probe import file_digest
from tests.conftest import Gt
from tests.helpers import exports, one_error_line, ping, supervisor_processes, tcp_port_free
from tests.testbed import STANDIN, SshHost, free_loopback_port, wait_for

SERVERS = "/home/gamer/.local/share/gt-remote/servers"
INTERRUPT_DEADLINE = 5.0  # well under the 10 s connect timeout a late Ctrl-C used to wait for


def rows(gt: Gt, host: str | None = None) -> list[dict[str, Any]]:
    result = gt("status", *([host] if host else []), "--json")
    return list(json.loads(result.stdout or "[]"))


def start_up(gt: Gt, host: str, *args: str, ssh_config: Path | None = None) -> subprocess.Popen[str]:
    """`gt-remote up` as a background process this test signals by pid."""
    config = ssh_config or gt.ssh_config
    cmd = [sys.executable, "-m", "gt_remote", *(["-F", str(config)] if config else []), "up", host, *args]
    return subprocess.Popen(cmd, env=gt.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def other_shell(gt: Gt, tmp_path: Path) -> Gt:
    """The same user in another shell: same home, another XDG_RUNTIME_DIR (su, cron, ssh -T)."""
    runtime = Path(os.path.join("/tmp", f"gtr-other-{os.getpid()}-{tmp_path.name[-12:]}"))
    runtime.mkdir(mode=0o700, exist_ok=True)
    other = Gt(gt.home, runtime)
    other.env = {**gt.env, "XDG_RUNTIME_DIR": str(runtime)}
    return other


@pytest.fixture
def silent_host(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A host whose port accepts TCP connections and never says a word (no SSH banner)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    config = tmp_path / "silent_ssh_config"
    config.write_text(f"Host silent-pc\n    HostName 127.0.0.1\n    Port {listener.getsockname()[1]}\n    User gamer\n")
    yield "silent-pc", config
    listener.close()


def local_files(gt: Gt) -> list[str]:
    roots = [gt.home / ".local/state/gt-remote", Path(gt.env["XDG_RUNTIME_DIR"]) / "gt-remote"]
    return sorted(str(path) for root in roots if root.exists() for path in root.rglob("*") if not path.is_dir())


# --- Ctrl-C and SIGTERM during the bring-up ----------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_while_connecting_to_a_host_that_never_answers(gt: Gt, silent_host: tuple[str, Path], signum: int) -> None:
    name, config = silent_host
    port = free_loopback_port()
    proc = start_up(gt, name, "--local", f"tcp://127.0.0.1:{port}", ssh_config=config)
    try:
        # Status is true from the first moment: connecting, with the step; text and JSON agree.
        [row] = wait_for(lambda: rows(gt), 10, "the connecting supervisor in status --json")  # type: ignore[misc]
        assert row["host"] == name and row["state"] == "connecting" and row["step"] == "connecting"
        text = gt("status")
        assert text.returncode == 1 and text.stdout.splitlines()[0] == f"{name}: connecting (connecting)"
        for command in (["env", name], ["reconnect", name]):  # not up yet, said so, not "refused"
            early = gt(*command)
            assert early.returncode == 1 and f"{name} is still coming up (connecting)" in one_error_line(early.stderr)
        proc.send_signal(signum)  # the `up` this test started, by pid
        wait_for(lambda: proc.poll() is not None, INTERRUPT_DEADLINE, "up to end after the signal")
    finally:
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate()
    assert proc.returncode == 130, stderr
    assert stdout.strip() == "false"
    assert "interrupted" in stderr
    wait_for(lambda: supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [], 10, "the supervisor to exit")
    assert local_files(gt) == []
    assert tcp_port_free(port)
    assert rows(gt) == []


def test_interrupt_during_a_large_upload_leaves_nothing_on_the_remote(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    big = tmp_path / "big" / "ccmux-server"
    big.parent.mkdir()
    with big.open("w") as handle:  # the stand-in, padded to 200 MB by a comment
        handle.write(STANDIN.read_text() + "\n#")
        chunk = "x" * (1 << 20)
        for _ in range(200):
            handle.write(chunk)
    big.chmod(0o755)
    port = free_loopback_port()
    proc = start_up(gt, "gaming-pc", "--server-binary", str(big), "--local", f"tcp://127.0.0.1:{port}", ssh_config=ssh_host.ssh_config)
    try:
        row = wait_for(lambda: next((r for r in rows(gt) if str(r.get("step", "")).startswith("uploading")), None), 60, "status to show the upload")
        assert row["state"] == "connecting" and row["step"].endswith(" %")  # type: ignore[index]
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: proc.poll() is not None, 30, "up to end after Ctrl-C")
    finally:
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate()
    assert proc.returncode == 130, stderr
    assert stdout.strip() == "false"
    wait_for(lambda: supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [], 30, "the supervisor to exit")
    _, partial = ssh_host.exec(f"find {SERVERS} -name '.*part*' 2>/dev/null", user="gamer")
    assert partial.strip() == "", f"a partial upload was left: {partial}"
    assert ssh_host.pids("--listen-tcp 127.0.0.1:") == [] and ssh_host.pids("relay_agent.py --socket") == []
    assert local_files(gt) == []


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


def test_down_from_another_shell_cancels_a_bring_up_and_undoes_it(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    big = tmp_path / "big" / "ccmux-server"
    big.parent.mkdir()
    big.write_text(STANDIN.read_text() + "\n#" + "x" * (200 << 20))
    big.chmod(0o755)
    port = free_loopback_port()
    first = start_up(gt, "gaming-pc", "--server-binary", str(big), "--local", f"tcp://127.0.0.1:{port}", ssh_config=ssh_host.ssh_config)
    other = other_shell(gt, tmp_path)
    try:
        wait_for(lambda: any(str(r.get("step")).startswith("uploading") for r in rows(other)), 60, "the other shell to see the upload")
        down = other("down", "gaming-pc")
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert down.returncode == 0, down.stderr
    assert first.returncode == 130 and "interrupted while uploading" in err, err
    wait_for(lambda: supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [], 10, "the supervisor to exit")
    _, partial = ssh_host.exec(f"find {SERVERS} -name '.*part*' 2>/dev/null", user="gamer")
    assert partial.strip() == ""
    assert tcp_port_free(port) and rows(gt) == []


def test_status_and_down_from_a_shell_with_another_runtime_dir(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    port = free_loopback_port()
    assert gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{port}").returncode == 0
    [pid] = supervisor_processes(gt.env["XDG_RUNTIME_DIR"])
    other = other_shell(gt, tmp_path)
    [row] = rows(other, "gaming-pc")
    assert row["state"] == "up" and row["supervisor_pid"] == pid
    assert "gaming-pc: up" in other("status").stdout
    down = other("down", "gaming-pc")
    assert down.returncode == 0 and "already down" not in down.stderr, down.stderr
    wait_for(lambda: supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [], 10, "the supervisor to stop")
    assert tcp_port_free(port)


def test_status_and_down_from_a_shell_without_xdg_runtime_dir(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """cron, `su`, `ssh -T`: no XDG_RUNTIME_DIR, so this shell's runtime dir is $TMPDIR/gt-remote-UID
    (a private TMPDIR here, so the machine's /tmp is not touched); the record still leads to the supervisor."""
    port = free_loopback_port()
    assert gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{port}").returncode == 0
    [pid] = supervisor_processes(gt.env["XDG_RUNTIME_DIR"])
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(mode=0o700)
    bare = Gt(gt.home, Path(gt.env["XDG_RUNTIME_DIR"]))
    bare.env = {key: value for key, value in gt.env.items() if key != "XDG_RUNTIME_DIR"} | {"TMPDIR": str(tmpdir)}
    [row] = rows(bare, "gaming-pc")
    assert row["state"] == "up" and row["supervisor_pid"] == pid
    down = bare("down", "gaming-pc")
    assert down.returncode == 0 and "already down" not in down.stderr, down.stderr
    wait_for(lambda: supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [], 10, "the supervisor to stop")
    assert tcp_port_free(port)


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


def test_a_dead_supervisors_record_is_not_trusted_for_a_reused_pid(gt: Gt, ssh_host: SshHost) -> None:
    """The record names a pid; a live process with that pid that is not our supervisor is not it."""
    port = free_loopback_port()
    assert gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{port}").returncode == 0
    [pid] = supervisor_processes(gt.env["XDG_RUNTIME_DIR"])
    record_path = gt.home / ".local/state/gt-remote/hosts/gaming-pc.json"
    record = json.loads(record_path.read_text())
    assert record["supervisor"]["pid"] == pid and record["supervisor"]["start_time"]
    os.kill(pid, signal.SIGKILL)  # the supervisor this test started
    wait_for(lambda: supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [], 10, "the supervisor to die")
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record["supervisor"]["pid"] = stranger.pid  # as if the pid had been reused
        record_path.write_text(json.dumps(record))
        [row] = rows(gt, "gaming-pc")
        assert row["state"] == "down" and "died or was killed" in row["last_error"]
        assert stranger.poll() is None
        assert gt("down", "gaming-pc").returncode == 0
        assert stranger.poll() is None, "down must never signal a process that is not our supervisor"
    finally:
        stranger.kill()
        stranger.wait()


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


# --- an upgrade that sticks -------------------------------------------------------------------


def test_up_after_upgrade_uses_the_new_build_with_the_config_untouched(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    port = free_loopback_port()
    config = gt.home / ".config/gt-remote/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[hosts.gaming-pc]\nserver_binary = "{STANDIN}"\nlocal = "tcp://127.0.0.1:{port}"\n')
    assert gt("up", "gaming-pc", ssh_config=ssh_host.ssh_config).returncode == 0
    build = tmp_path / "new" / "ccmux-server"
    build.parent.mkdir()
    build.write_text(STANDIN.read_text().replace('VERSION = "0.1.1"', 'VERSION = "0.1.2"'))
    build.chmod(0o755)
    assert gt("upgrade", "gaming-pc", "--server-binary", str(build), "--yes").returncode == 0
    again = gt("up", "gaming-pc", ssh_config=ssh_host.ssh_config)  # the tunnel is up: accepted, not refused
    assert again.returncode == 0, again.stderr
    assert gt("down", "gaming-pc").returncode == 0
    fresh = gt("up", "gaming-pc", ssh_config=ssh_host.ssh_config)  # as the login unit would
    assert fresh.returncode == 0, fresh.stderr
    assert "installed by 'gt-remote upgrade'" in fresh.stderr
    [row] = rows(gt, "gaming-pc")
    assert row["server"]["build"] == file_digest(str(build)) and row["server"]["version"] == "0.1.2"
    # Once the config names another build, the config wins again.
    assert gt("down", "gaming-pc").returncode == 0
    third = tmp_path / "third" / "ccmux-server"
    third.parent.mkdir()
    third.write_text(STANDIN.read_text().replace('VERSION = "0.1.1"', 'VERSION = "0.1.3"'))
    third.chmod(0o755)
    config.write_text(f'[hosts.gaming-pc]\nserver_binary = "{third}"\nlocal = "tcp://127.0.0.1:{port}"\n')
    changed = gt("up", "gaming-pc", ssh_config=ssh_host.ssh_config)
    assert changed.returncode == 0 and "installed by 'gt-remote upgrade'" not in changed.stderr
    assert f"gt-remote upgrade gaming-pc --server-binary {third}" in changed.stderr


def test_build_note_never_suggests_a_build_for_another_machine(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    port = free_loopback_port()
    local = ("--local", f"tcp://127.0.0.1:{port}")
    assert gt.up(ssh_host, *local).returncode == 0
    assert gt("down", "gaming-pc").returncode == 0
    arm = tmp_path / "arm" / "ccmux-server"
    arm.parent.mkdir()
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + (2).to_bytes(2, "little") + (183).to_bytes(2, "little")  # ELF, aarch64
    arm.write_bytes(header + bytes(64))
    result = gt("up", "gaming-pc", "--server-binary", str(arm), *local, ssh_config=ssh_host.ssh_config)
    assert result.returncode == 0, result.stderr
    assert "cannot run there" in result.stderr and "aarch64" in result.stderr
    assert "gt-remote upgrade gaming-pc" not in result.stderr




def test_troubleshooting_has_a_row_for_each_new_message() -> None:
    rows_text = (Path(__file__).parent.parent / "docs" / "troubleshooting.md").read_text()
    for message in (
        "accepts connections but did not answer a Ping within 3 s: hung or overloaded",
        "accepts connections but nothing answered a ccmux Ping within 3 s",
        "interrupted: undoing what this up started on X",
        "which is still coming up: STEP",
        "installed by 'gt-remote upgrade'",
        "cannot run there",
        "recovered in S s",
        "the relay there (which carries resumable connections) does not pass it on",
        "the tunnel of X is reconnecting",
        "the runtime directory D vanished",
        "resume window 900.0 (asked: 60.0)",
    ):
        assert message in rows_text, message
    usage = (Path(__file__).parent.parent / "docs" / "usage.md").read_text()
    assert "exits\n130" in usage or "exits 130" in usage
    assert "`step`" in usage and "`last_error_past`" in usage
