"""A real MySQL-protocol server on the laptop (this machine), owned by one test.

Back tunnels let a polecat on the gaming PC reach a service on the laptop, gastown's Dolt SQL
server first of all (MySQL protocol, `root` with no password). The tests reach a real server of
that kind: MariaDB's `mariadbd`, installed by docker/testbed.sh (the -core packages: no system
service). Each test gets its own: a fresh data directory made by `mariadb-install-db` in a
short-named directory under /tmp, a free loopback port (never 3306 or 3307, which the user's own
servers may hold), its Unix socket in that directory. `root` has no password, as with Dolt.

Start-up is quick: about 0.7 s on the 2-CPU test bed (0.6 s for mariadb-install-db's data
directory, 0.1 s until the greeting; up to 1.7 s while other tests load the machine), and a stop
0.05 s. So a server per test (function scope): it costs little and shares nothing between tests.

Nothing is left running, whatever ends the run: the fixture ends the server by its pid (SIGTERM,
then SIGKILL after a deadline) and removes its directory; an interpreter that exits without the
fixture's teardown still ends every server it started (atexit); and a pytest killed outright takes
its servers with it, as the kernel sends them SIGKILL when their parent dies (PR_SET_PDEATHSIG).
The directories of runs killed that way are removed by the next run (their pid is in the name).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.testbed import free_loopback_port, wait_for

HOST = "127.0.0.1"
START_S = 30.0  # a loaded machine's start-up, with room: it usually answers in a tenth of a second
STOP_S = 10.0  # SIGTERM's clean shutdown, then SIGKILL
PREFIX = "gtr-mdb-"  # /tmp/gtr-mdb-<pytest pid>-XXXX: short, as sun_path holds about 100 bytes
PR_SET_PDEATHSIG = 1
# Small files: the default redo log alone is 96 MiB, per test.
SERVER_SIZES = ["--innodb-log-file-size=4M", "--innodb-buffer-pool-size=32M"]

_running: dict[int, LaptopMariaDB] = {}  # pid -> server: ended at exit if its teardown never ran


def _program(name: str) -> str:
    """mariadbd lives in /usr/sbin, which a user's PATH may not name."""
    path = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")
    assert path, f"{name} is missing: run docker/testbed.sh (make testbed)"
    return path


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGKILL when the parent (pytest) dies, and at once if it already
    has (the parent could die between fork and prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
        os._exit(1)


def _as_user() -> list[str]:
    """mariadbd refuses to run as root unless told to: allowed for CI, which runs as root."""
    return ["--user=root"] if os.getuid() == 0 else []


def _sweep_dead_runs() -> None:
    """Remove the directories of earlier runs whose pytest is gone (killed: no teardown ran).
    Their servers died with it (PR_SET_PDEATHSIG), so nothing uses the files."""
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        owner = path.name[len(PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or int(owner) == os.getpid():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def greets(port: int) -> bool:
    """The server's first packet arrived on the port: a MySQL handshake (protocol version 10)."""
    try:
        with socket.create_connection((HOST, port), timeout=1) as conn:
            header = conn.recv(5)
    except OSError:
        return False
    return len(header) == 5 and header[3] == 0 and header[4] == 10


@dataclass
class LaptopMariaDB:
    """One running mariadbd this test started: `port` on 127.0.0.1, `root` without a password."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    host: str = HOST

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def error_log(self) -> str:
        """The server's own log, for a failing test's message."""
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def query(self, sql: str) -> list[tuple[str, ...]]:
        """Rows of `sql` run by the laptop's `mariadb` client over TCP, as root with no password.
        Values are text as the client's batch mode prints them (NULL as "NULL"; a tab, newline or
        backslash inside a value escaped as \\t, \\n, \\\\)."""
        command = [
            _program("mariadb"), "--no-defaults", "--protocol=tcp", "-h", self.host, "-P", str(self.port),
            "-u", "root", "--batch", "--skip-column-names", "-e", sql,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"mariadb -e {sql!r} exited {result.returncode}: {result.stderr.strip()}"
        return [tuple(line.split("\t")) for line in result.stdout.splitlines()]

    def stop(self) -> None:
        """End the server this test started, by its pid: SIGTERM, SIGKILL after STOP_S; then its files."""
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(STOP_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(STOP_S)
        finally:
            _running.pop(self.process.pid, None)
            shutil.rmtree(self.directory, ignore_errors=True)


def _end_leftovers() -> None:
    """At interpreter exit: servers whose teardown never ran, ended by pid, and their files removed."""
    for server in list(_running.values()):
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(STOP_S)
        shutil.rmtree(server.directory, ignore_errors=True)


atexit.register(_end_leftovers)


class _PortTaken(Exception):
    """mariadbd could not bind the port chosen for it: another program took it meanwhile."""


def start_mariadb(*options: str, attempts: int = 3) -> LaptopMariaDB:
    """A fresh server answering on a free loopback port; `options` go to mariadbd as they are
    (e.g. "--max-connect-errors=2"). Another program may take the port between choosing it and
    the server's bind: then again on another port, up to `attempts` times."""
    _sweep_dead_runs()
    for attempt in range(attempts):
        directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        try:
            return _start_in(directory, options)
        except _PortTaken:
            shutil.rmtree(directory, ignore_errors=True)
            if attempt == attempts - 1:
                raise AssertionError(f"mariadbd found its port taken {attempts} times running") from None
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
    raise AssertionError("unreachable")


def _start_in(directory: Path, options: tuple[str, ...]) -> LaptopMariaDB:
    data = directory / "data"
    install = subprocess.run(
        [
            _program("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
            "--skip-test-db", *_as_user(), *SERVER_SIZES,
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert install.returncode == 0, f"mariadb-install-db exited {install.returncode}: {install.stdout[-2000:]}{install.stderr[-2000:]}"
    port = free_loopback_port()
    command = [
        _program("mariadbd"), "--no-defaults", f"--datadir={data}", f"--port={port}", f"--bind-address={HOST}",
        "--skip-networking=0", f"--socket={directory / 'sock'}", f"--pid-file={directory / 'mariadbd.pid'}",
        f"--log-error={directory / 'error.log'}", f"--tmpdir={directory}", *_as_user(), *SERVER_SIZES, *options,
    ]  # fmt: skip
    parent = os.getpid()
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: _die_with_parent(parent),
    )  # fmt: skip
    server = LaptopMariaDB(port, directory, process)
    _running[process.pid] = server
    try:
        wait_for(lambda: process.poll() is not None or greets(port), START_S, f"mariadbd to greet on {HOST}:{port}")
        if process.poll() is not None:
            log = server.error_log
            if "Address already in use" in log or "Bind on TCP/IP port" in log:
                raise _PortTaken()
            raise AssertionError(f"mariadbd exited {process.returncode} before it answered: {log[-3000:]}")
    except BaseException:
        server.stop()
        raise
    return server


def wait_gone(pid: int, timeout: float = STOP_S) -> None:
    """A pid no longer names a live process (a zombie counts as gone: it runs nothing)."""

    def gone() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(gone, timeout, f"process {pid} to end")
