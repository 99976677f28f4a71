"""Small checks shared by the product tests."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from gt_remote.base.addresses import parse_address
from gt_remote.base.errors import PingFailed
from gt_remote.ccmux.wire import ping_address
from tests.reaper import short_tempdir
from tests.testbed import REPO, Gt

STANDIN_PATTERN = "--listen-tcp 127.0.0.1:"
T = TypeVar("T")


def ping(url: str, timeout: float = 5.0) -> float:
    return asyncio.run(ping_address(parse_address(url), timeout))


def answers(url: str, timeout: float = 2.0) -> bool:
    """Does a Ping through `url` get a Pong? For wait_for conditions. No default address: a
    test's tunnel listens on its own port (Gt.local), never on the user's 127.0.0.1:9999."""
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


def assert_nothing_left(gt, port: int | None | str = "gaming-pc") -> None:  # type: ignore[no-untyped-def]
    """After a failed `up`: no supervisor, no control socket, no record, the port free: `port`, or
    the test's own local port for the host named by `port` (by default gaming-pc's), unless
    None (a test that never bound one, or whose port something else holds)."""
    local_port: int | None = gt.port(port) if isinstance(port, str) else port
    runtime = Path(gt.env["XDG_RUNTIME_DIR"])
    assert supervisor_processes(str(runtime)) == []
    assert list((runtime / "gt-remote").glob("*.sock")) == []
    assert list((gt.home / ".local/state/gt-remote/hosts").glob("*.json")) == []
    assert local_port is None or tcp_port_free(local_port)


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

    return relay_build.write(short_tempdir("gtr-agent-"))


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


# --- shared by the unit and end-to-end tests, or the contracts -----------------------------

STANDIN_ECHO = 0x7FFF0001  # the stand-in echoes this frame back (its benchmark message)


ECHO_FRAME = struct.pack(">I", 4 + 32 * 1024) + struct.pack("<I", STANDIN_ECHO) + bytes(32 * 1024)


PYTHON_38 = Path.home() / ".pyenv/versions/3.8.18/bin/python3"


def local_files(gt: Gt) -> list[str]:
    """Every file gt-remote keeps locally (directories do not count)."""
    roots = [gt.home / ".local/state/gt-remote", Path(gt.env["XDG_RUNTIME_DIR"]) / "gt-remote"]
    # machine-id is not a host's: it names this laptop on every gaming PC (paths.machine_tag), made once
    return sorted(str(path) for root in roots if root.exists() for path in root.rglob("*") if not path.is_dir() and path.name != "machine-id")


def rows(gt: Gt, host: str | None = None) -> list[dict[str, Any]]:
    result = gt("status", *([host] if host else []), "--json")
    return list(json.loads(result.stdout or "[]"))


def start_up(gt: Gt, host: str, *args: str, ssh_config: Path | None = None) -> subprocess.Popen[str]:
    """`gt-remote up` as a background process this test signals by pid (on the test's own local port)."""
    cmd = gt.command("up", host, *args, ssh_config=ssh_config)
    return subprocess.Popen(cmd, env=gt.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sock_dir(gt: Gt) -> Path:
    """A private directory with a short path: sun_path holds about 100 bytes."""
    path = Path(gt.env["XDG_RUNTIME_DIR"]) / "s"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def gt_on_path(gt: Gt, tmp_path: Path) -> dict[str, str]:
    """The environment of a user shell with `gt-remote` on PATH, running this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "gt-remote"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m gt_remote \"$@\"\n")
    shim.chmod(0o755)
    return {**gt.env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def run_in(shell: str, script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert shutil.which(shell), f"{shell} is missing: run docker/testbed.sh (make testbed)"
    return subprocess.run([shell, "-c", script], env=env, capture_output=True, text=True, timeout=120)


def up_line(shell: str, args: str) -> str:
    """The documented way to bring a host up in each shell."""
    return f"gt-remote {args} | source" if shell == "fish" else f'eval "$(gt-remote {args})"'


def in_a_terminal(command: list[str], env: dict[str, str]) -> str:
    """Run with stdout on a real pseudo-terminal (script(1)), return what it showed."""
    result = subprocess.run(["script", "-qec", shlex.join(command), "/dev/null"], env=env, capture_output=True, text=True, timeout=120)
    return result.stdout.replace("\r\n", "\n")


def received(sock: socket.socket) -> list[str]:
    """Every datagram already queued, without waiting."""
    sock.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


SEQUENCES = "\x1b]0;pwned\x07\x1b]52;c;cHduZWQ=\x07\x1b[2J\x1b[31mforged: all files deleted\x1b[0m"


SHOWN = "\\x1b]0;pwned\\x07\\x1b]52;c;cHduZWQ=\\x07\\x1b[2J\\x1b[31mforged: all files deleted\\x1b[0m"


CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but TAB and the newline


def assert_no_control(text: str) -> None:
    found = CONTROL.search(text)
    assert found is None, f"{found.group()!r} reached the terminal: {text!r}"


TITLE_CLIPBOARD_SHOWN = "\\x1b]0;pwned\\x07\\x1b]52;c;cHduZWQ=\\x07"
