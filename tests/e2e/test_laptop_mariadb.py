"""The laptop's end of a back tunnel, for real: a mariadbd the test owns (tests/e2e/mariadb.py),
probed as `doctor` and `up` probe the town's Dolt (gt_remote/base/service_probe.py), and asked a
query by the real `mariadb` client. No container: the gaming PC's side is in the back tunnel tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from gt_remote.base.service_probe import ServiceAnswer, probe_service
from tests.e2e.mariadb import LaptopMariaDB, greets, start_mariadb, wait_gone
from tests.testbed import REPO


def probe(port: int, timeout: float = 5) -> ServiceAnswer:
    return asyncio.run(probe_service("127.0.0.1", port, "mysql", timeout))


def test_probe_reads_the_real_greeting_and_the_client_runs_a_query(laptop_mariadb: LaptopMariaDB) -> None:
    answer = probe(laptop_mariadb.port)
    [(version,)] = laptop_mariadb.query("SELECT VERSION()")
    assert answer == ServiceAnswer(True, f"MySQL protocol 10, server {version}")
    assert "MariaDB" in version
    laptop_mariadb.query("CREATE DATABASE town; CREATE TABLE town.beads (id INT PRIMARY KEY, title TEXT); INSERT INTO town.beads VALUES (1, 'first'), (2, 'second')")
    assert laptop_mariadb.query("SELECT id, title FROM town.beads ORDER BY id") == [("1", "first"), ("2", "second")]
    assert laptop_mariadb.query("SELECT CURRENT_USER()") == [("root@localhost",)]  # root, no password, as with Dolt


def test_the_server_is_private_to_the_test(laptop_mariadb: LaptopMariaDB) -> None:
    """A free loopback port (never the user's 3306 or 3307), 127.0.0.1 only, its socket in its own directory."""
    assert laptop_mariadb.port not in (3306, 3307)
    [(port, bound, sock)] = laptop_mariadb.query("SELECT @@port, @@bind_address, @@socket")
    assert (int(port), bound) == (laptop_mariadb.port, "127.0.0.1")
    assert sock == str(laptop_mariadb.directory / "sock")


def test_repeated_probes_never_get_the_laptop_blocked() -> None:
    """Each probe reads the greeting and hangs up, which a server counts as a failed connection;
    MySQL-family servers block a host after max_connect_errors of them, but not loopback clients,
    as a back tunnel's are. Checked with the limit at 2, so `up` and `doctor` may probe at will."""
    server = start_mariadb("--max-connect-errors=2")
    try:
        for _ in range(6):
            answer = probe(server.port)
            assert answer.answers, answer.detail
        assert server.query("SELECT 1") == [("1",)]
    finally:
        server.stop()


def test_stop_ends_the_server_by_pid_and_removes_its_files() -> None:
    server = start_mariadb()
    server.stop()
    wait_gone(server.pid)
    assert not server.directory.exists()
    assert not greets(server.port)
    answer = probe(server.port)
    assert not answer.answers and "connection refused" in answer.detail, answer.detail


def test_a_killed_test_run_leaves_no_server_running() -> None:
    """pytest killed outright (SIGKILL: no teardown, no atexit): the kernel ends its servers
    (PR_SET_PDEATHSIG), and the next run removes their directories."""
    starter = "from tests.e2e.mariadb import start_mariadb\ns = start_mariadb()\nprint(s.pid, s.directory, flush=True)\nimport time\ntime.sleep(600)\n"
    child = subprocess.Popen([sys.executable, "-W", "ignore", "-c", starter], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline() if child.stdout else ""
        pid_text, directory = line.split()
    finally:
        child.kill()  # the process this test started, by its pid
        child.wait(30)
    wait_gone(int(pid_text))
    server = start_mariadb()  # the next run sweeps what the killed one left
    try:
        assert not os.path.exists(directory)
    finally:
        server.stop()
