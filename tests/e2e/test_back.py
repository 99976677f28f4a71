"""Back tunnels (issue #29): a client on the gaming PC reaches a real MySQL-protocol server on
the laptop (MariaDB, this test's own: tests/e2e/mariadb.py) through `up --back`, with the real
`mariadb` client in the container; through SSH sessions killed mid-query, against another
account, a held port, and in plain mode (sshd's remote forward) a port the dead session holds."""

from __future__ import annotations

import shlex
import socket
from typing import Any

from tests.conftest import Gt
from tests.e2e.helpers import add_account, bring_up, doctor, kill_ssh_sessions, row, wait_recovered
from tests.e2e.mariadb import LaptopMariaDB
from tests.helpers import one_error_line
from tests.testbed import USER, SshHost, wait_for

BACK_PORT = 3307  # inside the container, whose loopback is its own: gastown's default
KILLS = 10


def back_spec(mariadb: LaptopMariaDB, preset: str = "dolt") -> str:
    """The dolt preset, reaching the test's own MariaDB (never the laptop's real 3307)."""
    return f"{preset}:{BACK_PORT}:127.0.0.1:{mariadb.port}"


def back_row(gt: Gt) -> dict[str, Any]:
    [back] = row(gt)["back"]
    return dict(back)


def server_pid(host: SshHost) -> int:
    [pid] = host.pids("ccmux-server --listen-tcp 127.0.0.1:9999")
    return pid


# A "pane": a process with the server's environment, as the panes a server spawns inherit it.
IN_A_PANE = """
import os, subprocess, sys
environ = open('/proc/%d/environ', 'rb').read().split(b'\\0')
env = dict(item.decode().split('=', 1) for item in environ if b'=' in item)
sql = sys.argv[1]
done = subprocess.run(['mariadb', '-h', env['GT_DOLT_HOST'], '-P', env['GT_DOLT_PORT'], '-u', 'root', '--batch', '--skip-column-names', '-e', sql], env=env, capture_output=True, text=True)
sys.stdout.write(done.stdout + done.stderr)
sys.exit(done.returncode)
"""


def in_a_pane(host: SshHost, pid: int, sql: str, user: str = USER) -> tuple[int, str]:
    return host.exec(f"python3 -c {shlex.quote(IN_A_PANE % pid)} {shlex.quote(sql)}", user=user)


def mariadb_inside(host: SshHost, sql: str, user: str = USER, port: int = BACK_PORT) -> tuple[int, str]:
    return host.exec(f"mariadb -h 127.0.0.1 -P {port} -u root --batch --skip-column-names --connect-timeout=20 -e {shlex.quote(sql)}", user=user)


def connections(mariadb: LaptopMariaDB) -> int:
    """Connections the laptop's database has accepted, this query's own included."""
    [(_, count)] = mariadb.query("SHOW GLOBAL STATUS LIKE 'Connections'")
    return int(count)


def listens_inside(host: SshHost, port: int = BACK_PORT) -> bool:
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5).close()"
    return host.exec(f"python3 -c {shlex.quote(probe)}")[0] == 0


def test_a_pane_reads_and_writes_the_laptops_database_with_no_variable_set(gt: Gt, ssh_host: SshHost, laptop_mariadb: LaptopMariaDB) -> None:
    status = bring_up(gt, ssh_host, "--back", back_spec(laptop_mariadb))
    [back] = status["back"]
    assert back["state"] == "listening" and back["mode"] == "relay", back
    assert back["environment"]["GT_DOLT_PORT"] == str(BACK_PORT)
    pid = server_pid(ssh_host)
    code, output = in_a_pane(ssh_host, pid, "CREATE DATABASE beads; CREATE TABLE beads.issues (id INT PRIMARY KEY, title TEXT); INSERT INTO beads.issues VALUES (1, 'from a polecat'); SELECT title FROM beads.issues")
    assert code == 0, output
    assert output.strip() == "from a polecat"
    assert laptop_mariadb.query("SELECT title FROM beads.issues WHERE id = 1") == [("from a polecat",)], "the row is in the laptop's database"
    environ = ssh_host.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ", user=USER)
    for line in (f"GT_DOLT_PORT={BACK_PORT}", "GT_DOLT_HOST=127.0.0.1", f"BEADS_DOLT_PORT={BACK_PORT}", "BEADS_DOLT_SERVER_HOST=127.0.0.1"):
        assert line in environ.splitlines(), f"{line} is not in the server's environment"
    back = back_row(gt)
    assert back["connections_total"] >= 1 and back["bytes_to_laptop"] > 0 and back["bytes_to_remote"] > 0, back


def test_down_removes_the_remote_listener(gt: Gt, ssh_host: SshHost, laptop_mariadb: LaptopMariaDB) -> None:
    bring_up(gt, ssh_host, "--back", back_spec(laptop_mariadb))
    assert listens_inside(ssh_host)
    assert gt("down", "gaming-pc").returncode == 0
    assert not listens_inside(ssh_host), "the gaming PC's port still listens after down"


def test_a_connection_from_another_account_is_refused_before_a_byte_moves(gt: Gt, ssh_host: SshHost, laptop_mariadb: LaptopMariaDB) -> None:
    bring_up(gt, ssh_host, "--back", back_spec(laptop_mariadb))
    intruder = add_account(ssh_host, "intruder")
    connections_before = connections(laptop_mariadb)
    code, output = mariadb_inside(ssh_host, "SELECT 'leaked'", user="intruder")
    assert code != 0 and "leaked" not in output, output
    wait_for(lambda: back_row(gt)["connections_refused"] == 1, 20, "the refusal to reach status")
    back = back_row(gt)
    assert f"uid {intruder} (intruder)" in back["last_error"], back
    assert back["connections_total"] == 0, "the laptop dialled its database for another account"
    assert connections(laptop_mariadb) == connections_before + 1, "the laptop's database saw a connection besides this count's own"
    code, output = mariadb_inside(ssh_host, "SELECT 'mine'")
    assert (code, output.strip()) == (0, "mine"), output


def test_a_port_held_on_the_gaming_pc_is_refused_naming_its_owner(gt: Gt, ssh_host: SshHost, laptop_mariadb: LaptopMariaDB) -> None:
    owner = add_account(ssh_host, "mysql-owner")
    ssh_host.spawn(f"exec python3 -c 'import socket,time; s=socket.create_server((\"127.0.0.1\", {BACK_PORT})); time.sleep(3600)'", user="mysql-owner")
    wait_for(lambda: listens_inside(ssh_host), 10, "the other account's listener")
    result = gt.up(ssh_host, "--back", back_spec(laptop_mariadb))
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert f"127.0.0.1:{BACK_PORT} on the remote is held by uid {owner} (mysql-owner)" in line, line
    assert "--back dolt:13307" in line, line
    assert not gt.supervisor_pids(), "a refused up left its supervisor running"


def test_a_query_loop_keeps_working_across_ten_ssh_kills_with_every_row_once(gt: Gt, ssh_host: SshHost, laptop_mariadb: LaptopMariaDB) -> None:
    bring_up(gt, ssh_host, "--back", back_spec(laptop_mariadb))
    laptop_mariadb.query("CREATE DATABASE beads; CREATE TABLE beads.rows (n INT PRIMARY KEY)")
    # One client connection for the whole loop: its queries in flight cross every kill.
    loop = (
        "i=0; while [ ! -e /tmp/stop-loop ]; do i=$((i+1)); echo \"INSERT INTO beads.rows VALUES ($i); SELECT $i;\"; sleep 0.01; done"
        f" | mariadb -h 127.0.0.1 -P {BACK_PORT} -u root --batch --skip-column-names --unbuffered > /tmp/loop.out 2>&1; echo $? > /tmp/loop.rc"
    )
    ssh_host.spawn(loop, user=USER)

    def answered() -> int:
        lines = ssh_host.sh("cat /tmp/loop.out 2>/dev/null || true").split()
        return int(lines[-1]) if lines and lines[-1].isdigit() else 0

    wait_for(lambda: answered() > 20, 30, "the loop's first answers")
    for kill in range(1, KILLS + 1):
        reconnects = row(gt)["reconnects"]
        kill_ssh_sessions(ssh_host)
        wait_recovered(gt, reconnects + 1)
        mark = answered()
        wait_for(lambda: answered() > mark + 5, 30, f"queries to go on after kill {kill}")
    ssh_host.sh("touch /tmp/stop-loop")
    wait_for(lambda: ssh_host.exec("test -s /tmp/loop.rc")[0] == 0, 30, "the loop to end")
    assert ssh_host.sh("cat /tmp/loop.rc").strip() == "0", ssh_host.sh("tail -n 5 /tmp/loop.out")
    last = answered()
    count, distinct, low, high = laptop_mariadb.query("SELECT COUNT(*), COUNT(DISTINCT n), MIN(n), MAX(n) FROM beads.rows")[0]
    assert (int(count), int(distinct), int(low), int(high)) == (last, last, 1, last), "a row was lost or inserted twice"
    assert back_row(gt)["connections_total"] == 1, "the client's one connection was dialled again"


def test_a_long_query_in_flight_across_a_kill_returns_normally(gt: Gt, ssh_host: SshHost, laptop_mariadb: LaptopMariaDB) -> None:
    bring_up(gt, ssh_host, "--back", back_spec(laptop_mariadb))
    ssh_host.spawn(f"mariadb -h 127.0.0.1 -P {BACK_PORT} -u root --batch --skip-column-names -e 'SELECT SLEEP(3), 42' > /tmp/sleep.out 2>&1; echo $? > /tmp/sleep.rc", user=USER)
    wait_for(lambda: "SLEEP(3)" in str(laptop_mariadb.query("SHOW PROCESSLIST")), 20, "the query to run on the laptop")
    reconnects = row(gt)["reconnects"]
    kill_ssh_sessions(ssh_host)
    wait_recovered(gt, reconnects + 1)
    wait_for(lambda: ssh_host.exec("test -s /tmp/sleep.rc")[0] == 0, 30, "the query to return")
    assert ssh_host.sh("cat /tmp/sleep.rc").strip() == "0", ssh_host.sh("cat /tmp/sleep.out")
    assert ssh_host.sh("cat /tmp/sleep.out").split() == ["0", "42"]


def test_plain_mode_reconnects_while_the_dead_session_holds_the_port_and_recovers(gt: Gt, ssh_host: SshHost, laptop_mariadb: LaptopMariaDB) -> None:
    """Without a relay, sshd listens. A session frozen mid-drop keeps the port: the new
    connection's forward is retried (and `status` says so) until the port is released."""
    bring_up(gt, ssh_host, "--no-resume", "--back", back_spec(laptop_mariadb))
    assert back_row(gt)["mode"] == "plain"
    frozen = ssh_host.pids("sshd: gamer")
    reconnects = row(gt)["reconnects"]
    for pid in frozen:
        ssh_host.kill(pid, "STOP")
    wait_recovered(gt, reconnects + 1)
    wait_for(lambda: back_row(gt)["state"] == "waiting" and "still held" in (back_row(gt)["why"] or ""), 30, "status to say the port is still held")
    for pid in frozen:
        ssh_host.kill(pid, "KILL")
    wait_for(lambda: back_row(gt)["state"] == "listening", 30, "the forward once the port is released")
    code, output = mariadb_inside(ssh_host, "SELECT 'back again'")
    assert (code, output.strip()) == (0, "back again"), output


def test_a_laptop_service_not_started_yet_is_a_warning_and_the_tunnel_waits(gt: Gt, ssh_host: SshHost) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    result = gt.up(ssh_host, "--keepalive", "1", "--back", f"dolt:{BACK_PORT}:127.0.0.1:{free}")
    assert result.returncode == 0, result.stderr
    assert "warning: back tunnel" in result.stderr and f"127.0.0.1:{free}" in result.stderr, result.stderr
    assert back_row(gt)["state"] == "listening"


def test_status_and_doctor_show_the_back_tunnel_and_whether_the_laptops_service_answers(gt: Gt, ssh_host: SshHost, laptop_mariadb: LaptopMariaDB) -> None:
    bring_up(gt, ssh_host, "--back", back_spec(laptop_mariadb))
    assert mariadb_inside(ssh_host, "SELECT 1")[0] == 0
    text = gt("status", "gaming-pc").stdout
    [line] = [line for line in text.splitlines() if line.strip().startswith("back")]
    assert f"remote 127.0.0.1:{BACK_PORT} -> here 127.0.0.1:{laptop_mariadb.port}, listening, relay;" in line and "1 in all" in line, line
    checks = doctor(gt)
    listens = checks[f"back tunnel {back_spec(laptop_mariadb)}: 127.0.0.1:{BACK_PORT} listens on gaming-pc"]
    assert listens["status"] == "ok", listens
    answers = checks[f"back tunnel {back_spec(laptop_mariadb)}: the laptop's 127.0.0.1:{laptop_mariadb.port} answers"]
    assert answers["status"] == "ok" and "MySQL protocol 10" in answers["detail"] and "MariaDB" in answers["detail"], answers
    laptop_mariadb.stop()
    answers = doctor(gt)[f"back tunnel {back_spec(laptop_mariadb)}: the laptop's 127.0.0.1:{laptop_mariadb.port} answers"]
    assert answers["status"] == "warn" and "nothing listens" in answers["detail"], answers


def test_other_back_tunnels_than_the_running_ones_are_refused_not_dropped(gt: Gt, ssh_host: SshHost, laptop_mariadb: LaptopMariaDB) -> None:
    bring_up(gt, ssh_host, "--back", back_spec(laptop_mariadb))
    result = gt.up(ssh_host, "--keepalive", "1", "--back", back_spec(laptop_mariadb), "--back", "8080")
    assert result.returncode == 2, result.stderr
    assert "back tunnels" in result.stderr and "--back 8080" in result.stderr, result.stderr


def test_a_running_server_without_the_variables_is_named_not_restarted_until_asked(gt: Gt, ssh_host: SshHost, laptop_mariadb: LaptopMariaDB) -> None:
    bring_up(gt, ssh_host)
    pid = server_pid(ssh_host)
    assert gt("down", "gaming-pc").returncode == 0  # the server stays, its panes with it
    result = gt.up(ssh_host, "--keepalive", "1", "--back", back_spec(laptop_mariadb))
    assert result.returncode == 0, result.stderr
    assert server_pid(ssh_host) == pid, "the server was restarted without being asked"
    assert f"was started without BEADS_DOLT_PORT={BACK_PORT}" in result.stderr and "gt-remote restart-server gaming-pc --yes" in result.stderr, result.stderr
    assert row(gt)["server_env_lacking"]["GT_DOLT_PORT"] == str(BACK_PORT)
    restarted = gt("restart-server", "gaming-pc", "--yes")
    assert restarted.returncode == 0, restarted.stderr
    new_pid = server_pid(ssh_host)
    assert new_pid != pid and not row(gt)["server_env_lacking"]
    code, output = in_a_pane(ssh_host, new_pid, "SELECT 'panes find it now'")
    assert (code, output.strip()) == (0, "panes find it now"), output
