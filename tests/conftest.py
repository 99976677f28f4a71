"""Fixtures: the test image, a client key per run, containers per test, and a CLI runner
whose state, runtime and config directories are private to the test."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testcontainers.core.image import DockerImage

from tests.reaper import ROOT_ENV, SESSION_ENV
from tests.testbed import BASE_TAG, REPO, TEST_IMAGE, ClientKey, Gt, SshHost, context_hash, session_labels, start_host

__all__ = ["Gt"]  # tests import the runner from here

# This run's name, in the environment of every process it starts (the supervisors too) and on
# its containers: what its reaper ends, and only that. Set anew in a pytest started by a test.
SESSION = f"{os.getpid()}-{secrets.token_hex(4)}"
os.environ[SESSION_ENV] = SESSION
_reaper: subprocess.Popen[bytes] | None = None  # held for the whole run: it outlives pytest by design

# The run's short root (Unix socket paths are limited), made as pytest loads this file: test
# modules that build the relay's file as they are collected (tests.helpers.agent_file) put it
# there too, through tests.reaper.short_tempdir. The reaper removes it; a run that never gets
# to start one (`--collect-only`) removes it as it exits.
SESSION_ROOT = Path(tempfile.mkdtemp(prefix=f"gtr-{os.getpid()}-"))
os.environ[ROOT_ENV] = str(SESSION_ROOT)
atexit.register(lambda: _reaper is None and shutil.rmtree(SESSION_ROOT, ignore_errors=True))

# A run started in the background of a non-interactive shell (`make test &`, nohup, some CI
# runners) inherits SIGINT ignored, and so would every `up` it starts: the tests that press
# Ctrl-C on `up` or the bench would then see it ignored, as `up` rightly keeps an inherited
# SIG_IGN. A handled SIGINT is reset to its default at exec, so the children get a terminal's.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

HOG_LIMIT_S = 2 * 3600  # the hog ends by itself after this, or when pytest is gone
HOG = """
import os, sys, time
parent, end = os.getppid(), time.monotonic() + float(sys.argv[1])
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, the same one all along
while time.monotonic() < end and os.getppid() == parent:
    for _ in range(200000):
        pass
"""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-hog",
        action="store_true",
        default=os.environ.get("GT_REMOTE_CPU_HOG", "") not in ("", "0"),
        help="keep one core busy for the whole run (a bounded busy loop this run starts and ends), to prove tests wait on state, not on time; also GT_REMOTE_CPU_HOG=1",
    )


CONTAINER_FIXTURES = frozenset({"ssh_host", "host_factory", "test_image", "dropbear_host", "hardened_host", "other_sshd_host"})
E2E_DIR = Path(__file__).parent / "e2e"
RELEASE_TESTS = "tests/contracts/test_packaging.py::"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `docker` every test that starts a container: all of tests/e2e/, and anywhere else any
    test that uses a container fixture (directly or through another fixture), so that
    `pytest -m "not docker"` never needs the Docker engine."""
    for item in items:
        in_e2e = E2E_DIR in Path(str(item.path)).parents
        if in_e2e or CONTAINER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)
    # The release build's tests last: the build (started once collection ends) runs beside the rest.
    items.sort(key=lambda item: item.nodeid.startswith(RELEASE_TESTS))  # stable: the order is kept otherwise


def pytest_collection_finish(session: pytest.Session) -> None:
    """The release build of tests/contracts/test_packaging.py takes seconds of other processes:
    started now, beside the tests before them, when this run holds them."""
    if any(item.nodeid.startswith(RELEASE_TESTS) for item in session.items):
        from tests.contracts.test_packaging import RELEASE

        RELEASE.start()


@pytest.fixture(scope="session", autouse=True)
def cpu_hog(request: pytest.FixtureRequest) -> Iterator[int | None]:
    """With --cpu-hog: a busy loop on one core for the session; its pid, ended by pid after."""
    if not request.config.getoption("--cpu-hog"):
        yield None
        return
    hog = subprocess.Popen([sys.executable, "-c", HOG, str(HOG_LIMIT_S)])
    try:
        yield hog.pid
    finally:
        hog.kill()  # the process this fixture started, by its pid
        hog.wait(10)


@pytest.fixture(scope="session", autouse=True)
def session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short directory under /tmp holding every test's XDG_RUNTIME_DIR, and this run's reaper
    (tests/reaper.py), started once in a session of its own: when pytest ends, however it ends
    (Ctrl-C, SIGKILL of make's process group), it ends the supervisors and removes the containers
    this run started, and this directory. Its log: reaper.log in pytest's base temp dir."""
    global _reaper
    root = SESSION_ROOT
    log = tmp_path_factory.getbasetemp() / "reaper.log"
    with log.open("ab") as errors:  # its own lines, and a traceback if it ever failed
        _reaper = subprocess.Popen(
            [sys.executable, "-m", "tests.reaper", str(os.getpid()), SESSION, str(root), str(log)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True,
        )  # fmt: skip
    return root


@pytest.fixture(scope="session")
def test_image() -> str:
    """Built once per session (a cache hit after `make test`'s set-up built it)."""
    labels = {"gt-remote.context": context_hash()}  # the label docker/testbed.sh checks
    DockerImage(path=REPO / "docker", tag=TEST_IMAGE, clean_up=False, buildargs={"BASE_IMAGE": BASE_TAG}, labels=labels).build()
    return TEST_IMAGE


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> ClientKey:
    return ClientKey.create(tmp_path_factory.mktemp("client-key"))


HostFactory = Callable[..., SshHost]


@pytest.fixture
def host_factory(tmp_path: Path, client_key: ClientKey, test_image: str) -> Iterator[HostFactory]:
    started: list[SshHost] = []
    networks: list[Any] = []

    def make(alias: str = "gaming-pc", own_network: bool = False, **kwargs: Any) -> SshHost:
        network = None
        if own_network:
            from docker import from_env

            net = from_env().networks.create(f"gtr-{os.getpid()}-{len(networks)}-{alias}", driver="bridge", labels=session_labels())
            networks.append(net)
            network = net.name
        host = start_host(tmp_path / alias, client_key, alias=alias, network=network, **kwargs)
        started.append(host)
        return host

    yield make
    for host in started:
        try:
            host.unpause()
        except Exception:
            pass
        host.container.stop()
    for net in networks:
        net.remove()


@pytest.fixture
def ssh_host(host_factory: HostFactory) -> SshHost:
    return host_factory()


@pytest.fixture
def dropbear_host(host_factory: HostFactory) -> SshHost:
    """The gaming PC with Dropbear in sshd's place: commands run, no stream-local forwarding (#31)."""
    return host_factory(kind="dropbear")


@pytest.fixture
def hardened_host(host_factory: HostFactory) -> SshHost:
    """The gaming PC's OpenSSH with `DisableForwarding yes`: commands run, every forward refused (#31)."""
    return host_factory(kind="hardened")


@pytest.fixture(params=["dropbear", "hardened"])
def other_sshd_host(request: pytest.FixtureRequest, host_factory: HostFactory) -> SshHost:
    """The same test once on each SSH server that does not forward (#31): Dropbear, then
    OpenSSH under `DisableForwarding yes`. A test takes it in place of ssh_host."""
    return host_factory(kind=request.param)


@pytest.fixture
def untouched_host(tmp_path: Path) -> Iterator[Path]:
    """An ssh config naming gaming-pc at a loopback port that listens and never answers, for errors
    found before any connection: no container, and the listener fails the test if `up` dialled it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    config = tmp_path / "untouched_ssh_config"
    config.write_text(f"Host gaming-pc\n    HostName 127.0.0.1\n    Port {listener.getsockname()[1]}\n    User gamer\n")
    yield config
    listener.setblocking(False)
    try:
        dialled, _ = listener.accept()
    except BlockingIOError:
        return
    finally:
        listener.close()
    dialled.close()
    pytest.fail("the error was to come before any connection, but gaming-pc was dialled")


@pytest.fixture
def gt(tmp_path: Path, session_root: Path) -> Iterator[Gt]:
    runtime = Path(tempfile.mkdtemp(prefix="r-", dir=session_root))  # short: Unix socket paths are limited
    runner = Gt(tmp_path / "home", runtime)
    (tmp_path / "home").mkdir()
    yield runner
    kept = [runtime / "gt-remote", runner.home / ".local/state/gt-remote"]
    if not any(path.is_file() or path.is_socket() for root in kept if root.exists() for path in root.rglob("*")):
        return  # gt-remote kept nothing: no supervisor, no record, nothing `down --all` could stop
    runner("down", "--all", timeout=60)
    from gt_remote.runtime.control import supervisor_alive

    for pid_file in (runtime / "gt-remote").glob("*.pid"):
        pid = supervisor_alive(pid_file)
        if pid and pid > 0:  # a supervisor this test started and `down` could not stop
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's notify socket, at a short path."""
    path = Path(f"/tmp/gtr-notify-{os.getpid()}-{time.monotonic_ns()}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield sock, str(path)
    finally:
        sock.close()
        path.unlink(missing_ok=True)
