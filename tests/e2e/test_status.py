"""`gt-remote status` against a real sshd: its fields and exit codes, true during an outage and
a reconnect, from another shell or runtime dir, for a hung server or a program that is no
ccmux-server, the running version beside another installed build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import Gt
from tests.e2e.helpers import bring_up_local, free_local, new_build, other_shell, row, server_pids
from tests.helpers import STANDIN_PATTERN, one_error_line, rows, supervisor_processes, tcp_port_free
from tests.helpers import TITLE_CLIPBOARD_SHOWN as SHOWN
from tests.testbed import SshHost, free_loopback_port, wait_for


def status_row(gt: Gt) -> dict[str, Any]:
    [row] = gt.status("gaming-pc")
    return row


STATUS_KEYS = {"host", "state", "local", "remote_port", "supervisor_pid", "uptime_s", "reconnects", "rtt_ms", "server", "last_error"}


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


def test_status_of_a_host_that_is_down_says_so_in_words(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host, "--local", free_local()).returncode == 0
    assert gt("down", "gaming-pc").returncode == 0
    result = gt("status", "gaming-pc")
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == "gaming-pc: down"
    assert " -" not in result.stdout and "pid -" not in result.stdout and ":-" not in result.stdout, result.stdout
    assert 'bring it up with: eval "$(gt-remote up gaming-pc)"' in result.stdout


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


def test_escape_sequence_in_the_servers_version_is_shown_escaped(gt: Gt, ssh_host: SshHost) -> None:
    """A server binary whose `--version` prints a window-title and an OSC 52 sequence."""
    ssh_host.install_standin("/usr/local/lib/ccmux-standin")
    wrapper = (
        "#!/bin/sh\n"
        "if [ \"$1\" = --version ]; then printf 'ccmux-server \\033]0;pwned\\007\\033]52;c;cHduZWQ=\\007\\n'; exit 0; fi\n"
        'exec /usr/local/lib/ccmux-standin "$@"\n'
    )
    ssh_host.container.copy_into_container(wrapper.encode(), "/usr/local/bin/ccmux-server", 0o755)
    up = gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{free_loopback_port()}", standin=False)
    assert up.returncode == 0, up.stderr
    assert f"starting ccmux-server {SHOWN} on gaming-pc" in up.stderr
    status = gt("status", "gaming-pc")
    assert f"server      ccmux-server {SHOWN} pid" in status.stdout
    [row] = json.loads(gt("status", "gaming-pc", "--json").stdout)
    assert row["state"] == "up" and row["server"]["version"] == SHOWN  # live, from the supervisor
    record = (gt.home / ".local/state/gt-remote/hosts/gaming-pc.json").read_text()
    log = gt("logs", "gaming-pc").stdout
    for text in (up.stderr, up.stdout, status.stdout, record, log, Path(gt.home / ".local/state/gt-remote/logs/gaming-pc.log").read_text()):
        assert "\x1b" not in text and "\x07" not in text


def test_status_shows_the_running_version_and_another_installed_build(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    build = new_build(tmp_path)
    assert gt("upgrade", "gaming-pc", "--server-binary", str(build), "--yes").returncode == 0
    assert gt("down", "gaming-pc").returncode == 0
    assert gt.up(ssh_host).returncode == 0  # offers the old build, which is installed but not running
    [row] = gt.status()
    assert row["server"]["version"] == "0.1.2"
    assert row["server"]["other_build"]["version"] == "0.1.1"
    text = gt("status", "gaming-pc").stdout
    assert "installed   another build there: 0.1.1" in text and "gt-remote upgrade gaming-pc" in text


def test_outage_clears_the_rtt_and_recovery_is_told_in_the_past(gt: Gt, ssh_host: SshHost) -> None:
    bring_up_local(gt, ssh_host, "--keepalive", "1")
    wait_for(lambda: row(gt)["rtt_ms"] is not None, 10, "a round trip to be measured")
    ssh_host.pause()
    try:
        down = wait_for(lambda: (s := row(gt))["state"] in ("reconnecting", "failed") and s, 20, "the link to drop")
        assert down["rtt_ms"] is None  # type: ignore[index]
        for _ in range(5):  # every look at a failing link: never a time already past
            status = row(gt)
            assert status["rtt_ms"] is None
            if status["next_attempt_at"] is not None:
                assert datetime.fromisoformat(status["next_attempt_at"]).timestamp() > time.time() - 1
    finally:
        ssh_host.unpause()
    up = wait_for(lambda: (s := row(gt))["state"] == "up" and s, 60, "the link to come back")
    error = up["last_error"]  # type: ignore[index]
    print(error)
    assert error and "reconnecting" not in error and "recovered" in error, error
    assert up["last_error_past"] is True  # type: ignore[index]
    text = gt("status", "gaming-pc").stdout
    assert f"last error  {error}" in text and "(since" not in text.split("last error")[1]
    assert up["next_attempt_at"] is None  # type: ignore[index]


def test_a_hung_server_of_ours_is_not_called_another_program(gt: Gt, ssh_host: SshHost) -> None:
    local = bring_up_local(gt, ssh_host)
    assert gt("down", "gaming-pc").returncode == 0  # the server keeps running
    [pid] = ssh_host.pids(f"{STANDIN_PATTERN}9999")
    ssh_host.kill(pid, "STOP")  # hung
    try:
        result = gt.up(ssh_host, "--local", local)
        assert result.returncode == 1
        line = one_error_line(result.stderr)
        assert f"ccmux-server (pid {pid}) on gaming-pc accepts connections but did not answer a Ping within 3 s: hung or overloaded" in line
        assert "not a ccmux server" not in line
    finally:
        ssh_host.kill(pid, "CONT")


def test_a_hung_server_while_up_is_reported_as_hung_with_a_reason_in_the_log(gt: Gt, ssh_host: SshHost) -> None:
    bring_up_local(gt, ssh_host, "--keepalive", "1")
    [pid] = ssh_host.pids(f"{STANDIN_PATTERN}9999")
    ssh_host.kill(pid, "STOP")
    try:
        status = wait_for(lambda: (s := row(gt))["last_error"] and "hung or overloaded" in s["last_error"] and s, 30, "the hang to be reported")
        assert f"pid {pid}" in status["last_error"] and status["rtt_ms"] is None  # type: ignore[index]
    finally:
        ssh_host.kill(pid, "CONT")
    log = (gt.home / ".local/state/gt-remote/logs/gaming-pc.log").read_text()
    failures = [line for line in log.splitlines() if "health Ping failed:" in line]
    assert failures and all(line.split("health Ping failed:")[1].strip() for line in failures), failures


def test_a_program_that_answers_something_else_is_not_a_ccmux_server(gt: Gt, ssh_host: SshHost) -> None:
    talker = (
        "import socket\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 9999)); s.listen()\n"
        "while True:\n"
        "    c, _ = s.accept(); c.sendall(b'HTTP/1.0 400 Bad Request\\r\\n\\r\\n'); c.close()\n"
    )
    ssh_host.sh(f"cat > /tmp/talker.py <<'EOF'\n{talker}EOF")
    ssh_host.spawn("exec python3 /tmp/talker.py")
    wait_for(lambda: ssh_host.pids("talker.py"), 10, "the talker to run")
    wait_for(lambda: ssh_host.exec("python3 -c \"import socket; socket.create_connection(('127.0.0.1', 9999))\"")[0] == 0, 10, "port 9999 to be held")
    result = gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{free_loopback_port()}")
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "127.0.0.1:9999 on gaming-pc is held by a program that is not a ccmux server" in line


def test_status_fields_and_exit_codes(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    live = gt("status", "--json")
    assert live.returncode == 0
    [row] = json.loads(live.stdout)
    assert STATUS_KEYS <= set(row)
    assert row["state"] == "up" and row["host"] == "gaming-pc" and row["local"] == gt.local()
    assert row["remote_port"] == 9999 and row["reconnects"] == 0 and row["last_error"] is None
    assert row["rtt_ms"] > 0 and row["uptime_s"] >= 0
    assert row["server"]["version"] == "0.1.1" and row["server"]["pid"] == server_pids(ssh_host)[0]
    assert row["supervisor_pid"] in supervisor_processes(gt.env["XDG_RUNTIME_DIR"])
    human = gt("status")
    assert human.returncode == 0 and "gaming-pc: up" in human.stdout and "0.1.1" in human.stdout
    assert gt("down", "gaming-pc").returncode == 0
    gone = gt("status", "gaming-pc", "--json")
    assert gone.returncode == 1
    assert json.loads(gone.stdout)[0]["state"] == "down"



def test_a_server_restart_says_that_the_panes_ended(gt: Gt, ssh_host: SshHost) -> None:
    """A server that died and was started again, then one restarted on request: the count, and
    a line saying when, why, which pids and that the panes' processes ended."""
    bring_up_local(gt, ssh_host, "--keepalive", "1")
    [first] = server_pids(ssh_host)
    before = gt("status", "gaming-pc").stdout
    assert "server restarts 0," in before and "panes" not in before and row(gt)["last_server_restart"] is None
    ssh_host.kill(first)  # as a crash would: every pane's process ends with the server
    revived = wait_for(lambda: (s := row(gt))["server_restarts"] == 1 and s, 30, "the server to be started again")
    assert isinstance(revived, dict)
    [second] = server_pids(ssh_host)
    last = revived["last_server_restart"]
    assert last["old_pid"] == first and last["pid"] == second, last
    assert f"the server (pid {first}) had stopped" in last["cause"] and datetime.fromisoformat(last["at"]).timestamp() > time.time() - 60
    text = gt("status", "gaming-pc").stdout
    assert "server restarts 1 (its panes ended)," in text, text
    assert f"  restarted   server at {last['at']}: {last['cause']}; pid {first} -> {second}; its panes' processes ended" in text.splitlines(), text
    restart = gt("restart-server", "gaming-pc", "--yes")
    assert restart.returncode == 0, restart.stderr
    [third] = server_pids(ssh_host)
    again = row(gt)
    assert again["server_restarts"] == 2 and again["last_server_restart"]["old_pid"] == second and again["last_server_restart"]["pid"] == third
    text = gt("status", "gaming-pc").stdout
    assert "server restarts 2 (the panes ended each time)," in text and "restarted on request ('gt-remote restart-server')" in text, text
