"""A pytest session's reaper: what a killed or interrupted test run leaves running, ended.

`gt-remote up` starts each supervisor detached, in a session of its own, and the Docker daemon
owns the containers: neither dies with pytest. Each test's teardown stops them; a run that ends
without its teardowns (Ctrl-C pressed again during them, its process group killed with SIGKILL,
a closed terminal) would leave them running, a supervisor holding its laptop port, a container
its memory, until the user found and ended them by hand.

tests/conftest.py starts this once per session, in a session of its own (the signal that ends
the run's process group misses it), as `python -m tests.reaper PID SESSION ROOT LOG`. It waits
for pytest (PID, its parent) to end, whatever ends it, then ends what that session started:

- the gt-remote supervisors (and `up --foreground` processes): their pids from the pid files
  under ROOT (every test's XDG_RUNTIME_DIR is there) and from /proc, each checked to be
  gt-remote's (its command line) and this session's (GT_REMOTE_TEST_SESSION=SESSION in its
  environment, or its runtime dir under ROOT); signalled through a pidfd, so a pid reused
  between the check and the signal cannot redirect it: SIGTERM, then SIGKILL after a grace;
- the laptop mariadbd servers of tests/e2e/mariadb.py, which already die with pytest
  (PR_SET_PDEATHSIG): one left anyway is ended by the pid file in its directory, checked to be
  mariadbd serving that directory, and the directories are removed;
- the reference tunnels the bench's smoke test starts beside gt-remote (autossh, which would
  start ssh again forever once its container is gone, then ssh), found by the session's name in
  their environment, ended through pidfds as the supervisors are;
- the containers and networks labelled gt-remote.test-session=SESSION (docker rm -f);
- the bench's scratch directories (the throwaway client key among them) whose marker names the
  session (bench/scratch.py);

and removes ROOT. A run that ended normally has nothing left: the reaper finds nothing. What it
ended goes to LOG (in pytest's base temp dir), a line each.

Standard library only until pytest is gone: it waits beside the whole run, and costs nothing then.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

SESSION_ENV = "GT_REMOTE_TEST_SESSION"  # a session's name, in the environment of all it starts
SESSION_LABEL = "gt-remote.test-session"  # the same name, on its containers and networks
ROOT_ENV = "GT_REMOTE_TEST_ROOT"  # the session's ROOT, for short_tempdir in its tests and the processes they start
MARIADB_PREFIX = "gtr-mdb-"  # tests/e2e/mariadb.py's directories: /tmp/gtr-mdb-<pytest pid>-XXXX
GRACE_S = 10.0  # a supervisor's clean stop (SIGTERM) before SIGKILL
POLL_S = 0.5  # how often the parent is checked where pidfds are missing (not Linux 5.3+)


def short_tempdir(prefix: str) -> Path:
    """A new private directory with a short path, for tests that put Unix sockets in it (their
    paths are limited to about 100 bytes): under the running session's ROOT, which its reaper
    removes however the run ends, so no test leaves directories in /tmp (a run's relay and
    hypothesis tests make thousands). Outside a test run, in the system's temporary directory."""
    root = os.environ.get(ROOT_ENV)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root if root and os.path.isdir(root) else None))


def wait_for_parent(pid: int) -> None:
    """Return once process `pid`, this one's parent, has ended."""
    try:
        handle = os.pidfd_open(pid)
    except (ProcessLookupError, AttributeError, OSError):
        handle = None
    if handle is not None:
        try:
            if os.getppid() == pid:  # still our parent: the pidfd names it, not a process that reused the pid
                _block(handle)
        finally:
            os.close(handle)
        return
    while os.getppid() == pid:  # no pidfds here: orphaned once it ends
        time.sleep(POLL_S)


def _block(handle: int) -> None:
    waiter = select.poll()
    waiter.register(handle, select.POLLIN)
    while not waiter.poll():
        pass


def argv_of(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def environment_of(pid: int) -> set[bytes]:
    try:
        return set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return set()


def is_gt_remote_supervisor(argv: list[bytes]) -> bool:
    """A detached supervisor (`-m gt_remote.runtime.supervisor HOST`) or `gt-remote up --foreground`."""
    return b"gt_remote.runtime.supervisor" in argv or (b"gt_remote" in argv and b"up" in argv and b"--foreground" in argv)


def our_supervisors(session: str, root: Path) -> list[int]:
    """This session's live supervisors: from the pid files under ROOT and from /proc."""
    candidates = {int(text) for path in root.glob("**/gt-remote/*.pid") if (text := _read(path).strip()).isdigit()}
    candidates |= {int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()}
    return [pid for pid in sorted(candidates - {os.getpid()}) if is_our_supervisor(pid, session, root)]


def is_our_supervisor(pid: int, session: str, root: Path) -> bool:
    """gt-remote's supervisor, started by this session: its environment names the session, or
    its runtime dir is under the session's ROOT."""
    if not is_gt_remote_supervisor(argv_of(pid)):
        return False
    environment = environment_of(pid)
    runtime = next((item.split(b"=", 1)[1] for item in environment if item.startswith(b"XDG_RUNTIME_DIR=")), b"")
    return f"{SESSION_ENV}={session}".encode() in environment or (bool(runtime) and Path(os.fsdecode(runtime)).is_relative_to(root))


REFERENCE_TOOLS = (b"autossh", b"ssh")  # ended in this order: autossh first, or it starts another ssh


def our_reference_tools(session: str, program: bytes) -> list[int]:
    """This session's live `program` processes (autossh or ssh), by its name in their environment."""
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [pid for pid in pids if pid != os.getpid() and is_our_reference_tool(pid, session, program)]


def is_our_reference_tool(pid: int, session: str, program: bytes) -> bool:
    argv = argv_of(pid)
    return bool(argv) and os.path.basename(argv[0]) == program and f"{SESSION_ENV}={session}".encode() in environment_of(pid)


def end_reference_tools(session: str) -> list[int]:
    ended = []
    for program in REFERENCE_TOOLS:
        ended += end_processes(our_reference_tools(session, program), lambda pid, program=program: is_our_reference_tool(pid, session, program))
    return ended


def remove_bench_scratch(session: str) -> list[str]:
    """The bench's scratch dirs of this session (bench/scratch.py: imported only now, pytest gone)."""
    from bench import scratch

    return [str(path) for path in scratch.sweep_session(session)]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def end_processes(pids: Iterable[int], still_ours: Callable[[int], bool], grace: float = GRACE_S) -> list[int]:
    """SIGTERM (and SIGCONT: a stopped process acts on it only once resumed), SIGKILL after
    `grace`; each through a pidfd opened before `still_ours` checked the process. The pids ended."""
    handles: dict[int, int] = {}
    for pid in pids:
        try:
            handle = os.pidfd_open(pid)
        except OSError:
            continue  # gone already
        if still_ours(pid):
            handles[pid] = handle
        else:
            os.close(handle)
    try:
        for handle in handles.values():
            _send(handle, signal.SIGTERM)
            _send(handle, signal.SIGCONT)
        deadline = time.monotonic() + grace
        for handle in handles.values():
            if not _wait_exit(handle, deadline - time.monotonic()):
                _send(handle, signal.SIGKILL)
                _wait_exit(handle, grace)
    finally:
        for handle in handles.values():
            os.close(handle)
    return sorted(handles)


def _send(handle: int, signum: int) -> None:
    try:
        signal.pidfd_send_signal(handle, signum)
    except ProcessLookupError:
        pass


def _wait_exit(handle: int, timeout: float) -> bool:
    waiter = select.poll()
    waiter.register(handle, select.POLLIN)
    return bool(waiter.poll(max(0, int(timeout * 1000))))


def end_mariadb(pytest_pid: int) -> list[int]:
    """mariadbd servers left in this run's directories (normally none: they died with pytest)."""
    directories = list(Path(tempfile.gettempdir()).glob(f"{MARIADB_PREFIX}{pytest_pid}-*"))
    wanted = {}
    for directory in directories:
        text = _read(directory / "mariadbd.pid").strip()
        if text.isdigit():
            wanted[int(text)] = f"--datadir={directory / 'data'}".encode()

    def serves_its_directory(pid: int) -> bool:
        argv = argv_of(pid)
        return bool(argv) and os.path.basename(argv[0]) == b"mariadbd" and wanted[pid] in argv

    ended = end_processes(wanted, serves_its_directory)
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
    return ended


def remove_containers(session: str) -> list[str]:
    """The session's containers (forced: running or not), then its networks; their names."""
    import docker  # only now: pytest is gone, and a run that started no container never pays for it

    try:
        client = docker.from_env(timeout=60)
    except docker.errors.DockerException:
        return []  # no engine to reach (make test-quick's machine): no container of ours can run there
    try:
        selector = {"label": f"{SESSION_LABEL}={session}"}
        removed = []
        for container in client.containers.list(all=True, filters=selector):
            container.remove(force=True, v=True)
            removed.append(container.name)
        for network in client.networks.list(filters=selector):
            network.remove()
            removed.append(network.name)
        return removed
    finally:
        client.close()


def reap(pytest_pid: int, session: str, root: Path, say: Callable[[str], None]) -> None:
    """End what the session left, each kind on its own: one failing never keeps the others running."""
    running = "ended the session's {} left running"
    steps: list[tuple[str, str, Callable[[], list[object]]]] = [
        ("supervisors", running, lambda: list(end_processes(our_supervisors(session, root), lambda pid: is_our_supervisor(pid, session, root)))),
        ("reference tunnels (autossh, ssh)", running, lambda: list(end_reference_tools(session))),
        ("mariadbd servers", running, lambda: list(end_mariadb(pytest_pid))),
        ("containers and networks", running, lambda: list(remove_containers(session))),
        ("bench scratch directories", "removed the session's {} left behind", lambda: list(remove_bench_scratch(session))),
    ]
    for what, told, step in steps:
        try:
            done = step()
        except Exception as exc:  # the docker engine gone, say: the next kind still runs
            say(f"could not end the session's {what}: {exc!r}")
            continue
        if done:
            say(f"{told.format(what)}: {', '.join(map(str, done))}")
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    pytest_pid, session, root, log = int(argv[1]), argv[2], Path(argv[3]), Path(argv[4])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # in its own session already; a stray Ctrl-C is not its end
    wait_for_parent(pytest_pid)

    def say(line: str) -> None:
        with log.open("a") as out:
            out.write(f"{time.strftime('%H:%M:%S')} reaper of session {session}: {line}\n")

    reap(pytest_pid, session, root, say)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
