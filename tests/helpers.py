"""Small checks shared by the product tests."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import importlib.util
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from gt_remote.base.addresses import parse_address
from gt_remote.base.errors import PingFailed
from gt_remote.ccmux.wire import ping_address
from tests.testbed import REPO

STANDIN_PATTERN = "--listen-tcp 127.0.0.1:"
T = TypeVar("T")


def ping(url: str, timeout: float = 5.0) -> float:
    return asyncio.run(ping_address(parse_address(url), timeout))


def answers(url: str = "tcp://127.0.0.1:9999", timeout: float = 2.0) -> bool:
    """Does a Ping through `url` get a Pong? For wait_for conditions."""
    try:
        ping(url, timeout)
        return True
    except PingFailed:
        return False


def exports(stdout: str) -> dict[str, str]:
    pairs = {}
    for line in stdout.splitlines():
        assert line.startswith("export "), f"stdout must hold only export lines, got {line!r}"
        name, _, value = line.removeprefix("export ").partition("=")
        pairs[name] = value.strip("'")
    return pairs


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def tcp_port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def tcp_port_refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def supervisor_processes(runtime_dir: str) -> list[int]:
    """Our supervisors for this test: processes of gt_remote.runtime.supervisor with this runtime dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"gt_remote.runtime.supervisor" in cmdline and f"XDG_RUNTIME_DIR={runtime_dir}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def openssl_mapped(pid: int) -> list[str]:
    """Python's OpenSSL bindings (and the system's libssl) in a process's memory map, by file name:
    what a supervisor's process leaves out (gt_remote/base/lean.py)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted({line.rsplit("/", 1)[-1] for line in maps.splitlines() if "/_ssl." in line or "/_hashlib." in line or "/libssl.so" in line})


def assert_nothing_left(gt, port: int | None = 9999) -> None:  # type: ignore[no-untyped-def]
    """After a failed `up`: no supervisor, no control socket, no record, the port free (unless
    `port` is None: a test that never bound one, or whose port something else holds)."""
    runtime = Path(gt.env["XDG_RUNTIME_DIR"])
    assert supervisor_processes(str(runtime)) == []
    assert list((runtime / "gt-remote").glob("*.sock")) == []
    assert list((gt.home / ".local/state/gt-remote/hosts").glob("*.json")) == []
    assert port is None or tcp_port_free(port)


def one_error_line(stderr: str) -> str:
    """The last stderr line is the error; it names a cause and a fix (`cause; fix`)."""
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("gt-remote: error: "), stderr
    assert "; " in lines[-1], f"no fix in {lines[-1]!r}"
    assert not any("Traceback" in line for line in lines), stderr
    print(lines[-1])
    return lines[-1]


def silent_server(path: Path, log_line: str = "") -> Path:
    """A fake ccmux-server that passes `--version`, then never answers on TCP (logging `log_line`)."""
    say = f"print({log_line!r}, file=sys.stderr, flush=True)\n" if log_line else ""
    path.write_text(
        "#!/usr/bin/env python3\n"
        "import sys, time\n"
        "if sys.argv[1:] == ['--version']:\n"
        "    print('ccmux-server 0.0.0-silent'); sys.exit(0)\n"
        f"{say}"
        "time.sleep(3600)\n"
    )
    path.chmod(0o755)
    return path


@functools.cache
def agent_file() -> Path:
    """The relay exactly as it is uploaded (gt_remote/remote/relay/build.py), as a file of this test
    run's own, so tests run what the remote runs: the built file, not its sources."""
    from gt_remote.remote.relay import build as relay_build

    return relay_build.write(Path(tempfile.mkdtemp(prefix="gtr-agent-")))


def load_agent() -> ModuleType:
    """The uploaded relay's file as a module, for its parts that need no sockets."""
    spec = importlib.util.spec_from_file_location("relay_agent_under_test", agent_file())
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass-free, but `from __future__ import annotations` wants a home
    spec.loader.exec_module(module)
    return module


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the gt_remote package found first on PYTHONPATH=root."""
    lint = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(lint), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=root, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120,
    )


class Background:
    """`work(a fresh directory)` run once in a thread of its own, started by `start()` (at the latest
    by `result()`): for slow set-up that waits on other processes and can run beside the tests."""

    def __init__(self, work: Callable[[Path], T]) -> None:
        self.work = work
        self.future: concurrent.futures.Future[T] | None = None

    def start(self) -> None:
        if self.future is None:
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gtr-background")
            root = tempfile.mkdtemp(prefix="gtr-background-")
            atexit.register(shutil.rmtree, root, True)  # when this run ends: nothing left in /tmp
            self.future = pool.submit(self.work, Path(root))
            pool.shutdown(wait=False)

    def result(self, timeout: float = 900) -> T:
        self.start()
        assert self.future is not None
        return self.future.result(timeout)
