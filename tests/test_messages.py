"""Messages and exit codes: every error one line with a fix, the right exit code, and the
commands' edges (ping, exec, status, sync, doctor, -v/-q) said plainly."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gt_remote.base import progress
from gt_remote.base.config import HostSettings
from gt_remote.commands.sync import Transfer, rsync_command
from tests.conftest import Gt
from tests.helpers import one_error_line
from tests.testbed import STANDIN, SshHost, free_loopback_port, wait_for

# --- usage errors -----------------------------------------------------------------------

USAGE_ERRORS = [
    (["up"], "missing argument 'HOST'; see 'gt-remote up --help'"),
    (["exec", "gaming-pc"], "missing argument 'COMMAND...'; see 'gt-remote exec --help'"),
    (["up", "gaming-pc", "--bogus"], "no such option '--bogus'; see 'gt-remote up --help'"),
    (["--verbos", "status"], "no such option '--verbos'; did you mean one of: '--verbose', '--version'? see 'gt-remote --help'"),
    (["up", "gaming-pc", "--remote-port", "abc"], "invalid value for '--remote-port': 'abc' is not a valid integer; see 'gt-remote up --help'"),
    (["env", "gaming-pc", "--shell", "tcsh"], "invalid value for '--shell': 'tcsh' is not one of 'sh', 'bash', 'zsh', 'fish'; see 'gt-remote env --help'"),
    (["satus"], "no such command 'satus'; did you mean 'status'? see 'gt-remote --help'"),
    (["service", "instal", "gaming-pc"], "no such command 'instal'; did you mean one of: 'install', 'uninstall'? see 'gt-remote service --help'"),
    (["sync", "gaming-pc", "--push", "--pull"], "--push and --pull go opposite ways; run 'gt-remote sync gaming-pc --push' and then 'gt-remote sync gaming-pc --pull'"),
    (["down", "gaming-pc", "--all"], "--all stops every host, so it takes no HOST (got 'gaming-pc'); run 'gt-remote down gaming-pc' for that host, or 'gt-remote down --all' for all"),
    (["-v", "-q", "status"], "-v and -q contradict each other; pass one of them"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS, ids=[" ".join(args) for args, _ in USAGE_ERRORS])
def test_usage_errors_are_one_line_with_exit_2(gt: Gt, args: list[str], message: str) -> None:
    result = gt(*args)
    assert result.returncode == 2
    assert result.stderr == f"gt-remote: error: {message}\n"


def test_missing_config_file_is_an_error_like_a_missing_ssh_config(gt: Gt, tmp_path: Path) -> None:
    result = gt("--config", str(tmp_path / "nope.toml"), "status")
    assert result.returncode == 2
    assert f"config file {tmp_path / 'nope.toml'} does not exist" in one_error_line(result.stderr)
    assert len(result.stderr.splitlines()) == 1


def test_help_and_version_still_exit_0(gt: Gt) -> None:
    assert gt("--help").returncode == 0 and "Usage:" in gt("--help").stdout
    assert gt("-V").stdout.startswith("gt-remote, version")


def test_a_closed_output_is_not_a_crash(gt: Gt) -> None:
    """`gt-remote -V >&-` (stdout closed before the command started): Python has no stdout
    object at all, and the command's own exit must not trip over it."""
    closed = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "gt_remote", "-V"],
                            env=gt.env, capture_output=True, text=True, timeout=120)
    assert (closed.returncode, closed.stderr) == (0, "")


@pytest.mark.parametrize("args", [["-V"], ["--help"], ["status"], ["completion", "bash"]])
def test_an_output_that_cannot_be_written_is_one_line(gt: Gt, args: list[str]) -> None:
    """`gt-remote status > /dev/full`: the cause and the fix on stderr, not click's traceback."""
    full = subprocess.run(["sh", "-c", 'exec "$@" > /dev/full', "sh", sys.executable, "-m", "gt_remote", *args],
                          env=gt.env, capture_output=True, text=True, timeout=120)
    assert full.returncode == 1
    assert full.stderr == "gt-remote: error: cannot write the output: No space left on device; free space where it goes, or redirect it elsewhere\n"


def _gone_reader() -> Any:
    """A pipe's writing end whose reader went away: writing it gets EPIPE."""
    reader, writer = os.pipe()
    os.close(reader)
    return os.fdopen(writer, "w")


def test_env_still_says_why_when_its_output_cannot_be_written(gt: Gt) -> None:
    """The failing line for `eval` cannot be written either; the error on stderr still is."""
    for name, open_output in {"a full disk": lambda: open("/dev/full", "w"), "a reader that is gone": _gone_reader}.items():
        with open_output() as output:
            failed = subprocess.run([sys.executable, "-m", "gt_remote", "env", "gamign-pc"], stdout=output,
                                    env=gt.env, stderr=subprocess.PIPE, text=True, timeout=120)
        assert failed.returncode == 1, name
        assert failed.stderr == "gt-remote: error: gamign-pc is not up; run 'eval \"$(gt-remote up gamign-pc)\"' first\n", name


# --- status of an unknown host ------------------------------------------------------------


def test_status_of_a_host_never_seen(gt: Gt) -> None:
    human = gt("status", "gamign-pc")
    assert human.returncode == 1 and human.stdout == ""
    assert "gt-remote has never brought up a host named 'gamign-pc'" in one_error_line(human.stderr)
    machine = gt("status", "gamign-pc", "--json")
    assert machine.returncode == 1 and json.loads(machine.stdout) == []


# --- ping -------------------------------------------------------------------------------


def test_ping_without_the_variable_names_the_missing_eval(gt: Gt) -> None:
    result = gt("ping")
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "GASTOWN_CCMUX_ADDR is unset in this shell" in line and 'eval "$(gt-remote up HOST)"' in line


def test_ping_of_a_closed_address_says_the_tunnel_is_down(gt: Gt) -> None:
    gt.env["GASTOWN_CCMUX_ADDR"] = f"tcp://127.0.0.1:{free_loopback_port()}"
    line = one_error_line(gt("ping").stderr)
    assert "the tunnel is down" in line and "Errno" not in line


def test_ping_of_an_unknown_host(gt: Gt) -> None:
    result = gt("ping", "gamign-pc")
    assert result.returncode == 1 and "never brought up a host named 'gamign-pc'" in one_error_line(result.stderr)


# --- against the test host ----------------------------------------------------------------


def test_ping_exec_and_status_around_down(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    pong = gt("ping", "gaming-pc")
    assert pong.returncode == 0 and pong.stdout.startswith("Pong from tcp://127.0.0.1:9999 in ")
    missing = gt("exec", "gaming-pc", "--", "no-such-command-xyz")
    assert missing.returncode == 127 and "command not found: no-such-command-xyz" in one_error_line(missing.stderr)
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    denied = gt("exec", "gaming-pc", "--", str(script))
    assert denied.returncode == 126 and f"{script} is not executable" in one_error_line(denied.stderr)
    assert gt("down", "gaming-pc").returncode == 0
    after = gt("ping", "gaming-pc")
    assert after.returncode == 1
    line = one_error_line(after.stderr)
    assert "the tunnel of gaming-pc is down" in line and "Errno" not in line
    gt.env["GASTOWN_CCMUX_ADDR"] = "tcp://127.0.0.1:9999"
    line = one_error_line(gt("ping").stderr)
    assert "the tunnel is down" in line and "Errno" not in line


def status_row(gt: Gt) -> dict[str, Any]:
    [row] = gt.status("gaming-pc")
    return row


def test_reconnect_status_fields(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host, "--keepalive", "1").returncode == 0
    wait_for(lambda: status_row(gt)["uptime_s"] >= 2, 20, "two seconds of uptime")
    for pid in ssh_host.pids("sshd: gamer"):
        ssh_host.kill(pid)
    row = wait_for(lambda: (r := status_row(gt))["reconnects"] == 1 and r["state"] == "up" and r, 30, "a reconnect")
    assert isinstance(row, dict)
    error = row["last_error"]
    assert error.startswith("connection lost") and error.lower().count("connection lost") == 1, error
    assert row["uptime_s"] < 2, "uptime counts from the current link, not from the first bring-up"
    ssh_host.pause()
    try:
        # While an attempt runs there is no next one (absent); once it fails, the next is ahead.
        waiting = wait_for(lambda: (r := status_row(gt))["state"] == "reconnecting" and r["next_attempt_at"] and r, 40, "a next attempt time")
        assert isinstance(waiting, dict)
        assert datetime.fromisoformat(waiting["next_attempt_at"]).timestamp() > time.time() - 1
        assert waiting["uptime_s"] is None
    finally:
        ssh_host.unpause()


def test_verbose_shows_ssh_steps_and_quiet_shows_nothing(gt: Gt, ssh_host: SshHost) -> None:
    verbose = gt("-v", "up", "gaming-pc", "--server-binary", str(STANDIN), ssh_config=ssh_host.ssh_config)
    assert verbose.returncode == 0, verbose.stderr
    said = verbose.stderr
    assert f"ssh_config {ssh_host.ssh_config}" in said and f"known_hosts {ssh_host.known_hosts}" in said
    assert f"keys {ssh_host.key.path}" in said and f"gamer@{ssh_host.hostname}:{ssh_host.port}" in said
    assert "authenticated as gamer" in said and "forward: listening on tcp://127.0.0.1:9999" in said
    assert gt("down", "gaming-pc").returncode == 0
    quiet = gt("-q", "up", "gaming-pc", ssh_config=ssh_host.ssh_config)
    assert quiet.returncode == 0 and quiet.stderr == "" and "GASTOWN_CCMUX_ADDR" in quiet.stdout


def test_sync_shows_rsyncs_own_messages(gt: Gt, ssh_host: SshHost) -> None:
    target = gt.home / "never-made"
    result = gt("sync", "gaming-pc", "--pull", str(target), ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    assert any(line.startswith("rsync: [sender] link_stat") and "No such file or directory" in line for line in result.stderr.splitlines()[:-1]), result.stderr
    line = one_error_line(result.stderr)
    assert "rsync with gaming-pc failed: " in line and "No such file or directory" in line
    assert "\r" not in result.stdout + result.stderr
    ssh_host.known_hosts.write_text("")
    unknown = gt("sync", "gaming-pc", str(gt.home), ssh_config=ssh_host.ssh_config)
    assert "Host key verification failed" in unknown.stderr and unknown.returncode == 1


def test_doctor_shows_what_ssh_config_resolved_and_when_up_can_work(gt: Gt, ssh_host: SshHost) -> None:
    result = gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config)
    found = {check["name"]: check for check in json.loads(result.stdout)}
    resolved = found["gaming-pc resolves through ssh_config"]["detail"]
    for part in (f"gamer@{ssh_host.hostname}:{ssh_host.port}", str(ssh_host.ssh_config), str(ssh_host.key.path), str(ssh_host.known_hosts)):
        assert part in resolved
    for client in ("ccmux", "ccmux-compat", "gt"):
        if found[f"{client} on PATH"]["status"] == "warn":
            assert "build" in found[f"{client} on PATH"]["fix"] and "from source" in found[f"{client} on PATH"]["fix"]
    ssh_host.sh(": > /home/gamer/.ssh/authorized_keys")
    refused = {check["name"]: check for check in json.loads(gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config).stdout)}
    assert refused["tunnel is up"]["fix"].startswith("fix 'SSH connection and authentication' above first")


# --- progress only where a person watches -------------------------------------------------


def test_rsync_progress_only_on_a_terminal() -> None:
    settings = HostSettings(name="gaming-pc", destination="gaming-pc", local_url="tcp://127.0.0.1:9999")
    command = rsync_command(settings, Transfer(Path("/tmp/x"), "x", False), True, False, False)
    assert "--info=progress2,stats1" not in command and "--info=stats1" in command  # pytest's stdout is no terminal


def test_upload_progress_on_a_terminal_only_once_it_takes_time() -> None:
    main, other = os.openpty()
    with os.fdopen(main, "rb", buffering=0) as reader, open(other, "w") as terminal:
        display = progress.TransferDisplay(terminal, delay=1.0)
        display.update(1 << 20, 8 << 20, 0.5)  # quick so far: nothing
        display.update(4 << 20, 8 << 20, 2.0)
        display.finish()
        shown = reader.read(4096).decode()
    assert "\rgt-remote: uploading  50%    2.0 MiB/s 0:02 left" in shown and shown.count("uploading") == 1
    piped = io.StringIO()
    not_a_terminal = progress.TransferDisplay(piped, delay=0.0)
    not_a_terminal.update(4 << 20, 8 << 20, 2.0)
    not_a_terminal.finish()
    assert piped.getvalue() == ""


def big_standin(path: Path, padding_mib: int) -> Path:
    """The stand-in as a zipapp with incompressible padding: a large build that still runs."""
    import zipfile

    path.write_bytes(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as archive:
        archive.writestr("__main__.py", STANDIN.read_text())
        with archive.open("padding.bin", "w") as padding:
            for _ in range(padding_mib):
                padding.write(os.urandom(1 << 20))
    path.chmod(0o755)
    return path


def test_a_large_upload_shows_progress_on_a_terminal(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    binary = big_standin(tmp_path / "ccmux-server", 384)
    command = [sys.executable, "-m", "gt_remote", "-F", str(ssh_host.ssh_config), "up", "gaming-pc", "--server-binary", str(binary)]
    ran = subprocess.run(["script", "-qec", shlex.join(command), "/dev/null"], env=gt.env, capture_output=True, timeout=300)
    shown = ran.stdout.decode().replace("\r\n", "\n")  # bytes: text mode would turn each \r into a newline
    assert "GASTOWN_CCMUX_ADDR" in shown, shown
    progress_lines = [part for part in shown.split("\r") if part.startswith("gt-remote: uploading ")]
    assert progress_lines, shown
    assert all(re.search(r"uploading +\d+% +[\d.]+ MiB/s \d+:\d\d left", line) for line in progress_lines)
    assert gt("down", "gaming-pc").returncode == 0
