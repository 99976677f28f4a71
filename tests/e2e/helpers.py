"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import hashlib
import json
import os
import select
import shlex
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from gt_remote.base.config import HostSettings
from gt_remote.runtime.reach import run_on
from tests.conftest import Gt
from tests.helpers import STANDIN_ECHO, STANDIN_PATTERN
from tests.testbed import STANDIN, USER, SshHost, free_loopback_port, wait_for

PORT = 9999  # the remote port, inside the container (whose loopback is its own); the laptop's is gt.port()


# --- helpers inside the container -------------------------------------------------------


def add_account(host: SshHost, name: str, with_key: bool = False) -> int:
    """A second account on the gaming PC, made at run time."""
    host.sh(f"id {name} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {name}")
    if with_key:
        host.sh(f"usermod -p '*' {name} && install -d -m 0700 -o {name} -g {name} /home/{name}/.ssh")
        host.sh(f"install -m 0600 -o {name} -g {name} /home/{USER}/.ssh/authorized_keys /home/{name}/.ssh/authorized_keys")
    return int(host.sh(f"id -u {name}").strip())


def our_server_pids(host: SshHost) -> list[int]:
    code, output = host.exec(f"exec pgrep -u {USER} -f -- {shlex.quote(STANDIN_PATTERN + str(PORT))}")
    return [int(pid) for pid in output.split()] if code == 0 else []


PING = b"\x00\x00\x00\x04\x11\x00\x00\x00"


PONG = PING


GET_SERVER_STATUS = b"\x00\x00\x00\x04\x0f\x00\x00\x00"


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def recv_frame(sock: socket.socket) -> bytes:
    (length,) = struct.unpack(">I", recv_exactly(sock, 4))
    return struct.pack(">I", length) + recv_exactly(sock, length)


def echo_frame(seq: int, filler: int = 200) -> bytes:
    payload = struct.pack("<IQ", STANDIN_ECHO, seq) + bytes((seq + i) % 251 for i in range(filler))
    return struct.pack(">I", len(payload)) + payload


class LongClient:
    """One connection through the tunnel, busy all the time: an echo frame and a Ping per round."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.settimeout(120)  # a fault stalls it; only a reset or EOF is a failure
        self.rounds = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        try:
            while not self._stop.is_set():
                seq += 1
                frame = echo_frame(seq)
                self.sock.sendall(frame + PING)
                assert recv_frame(self.sock) == frame, f"echo {seq} came back wrong or out of order"
                assert recv_frame(self.sock) == PONG, f"the Ping after echo {seq} was not answered next"
                self.rounds += 1
                self._stop.wait(0.02)  # pacing, about 50 rounds a second
        except BaseException as exc:  # reset, EOF, timeout or a wrong reply: all failures
            if not self._stop.is_set():
                self.error = exc

    def wait_rounds(self, more: int, timeout: float = 60) -> None:
        target = self.rounds + more
        wait_for(lambda: self.rounds >= target or self.error is not None, timeout, f"{more} more answered rounds")
        assert self.error is None, f"the client saw {self.error!r}"

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(10)


def row(gt: Gt, name: str = "gaming-pc") -> dict[str, Any]:
    [status] = gt.status(name)
    return status


def bring_up(gt: Gt, host: SshHost, *args: str) -> dict[str, Any]:
    result = gt.up(host, "--keepalive", "1", *args)
    assert result.returncode == 0, result.stderr
    return row(gt)


def wait_recovered(gt: Gt, reconnects: int, timeout: float = 45) -> None:
    wait_for(lambda: (s := row(gt))["state"] == "up" and s["reconnects"] >= reconnects, timeout, f"reconnect #{reconnects}")


def relay_stats(host: SshHost) -> dict[str, Any]:
    """What the relay itself reports, asked on its socket inside the container."""
    return relay_request(host, {"op": "stats"})


def relay_request(host: SshHost, message: dict[str, Any]) -> dict[str, Any]:
    """One hello to the relay on its socket inside the container, as the login user; its reply."""
    asker = (
        "import json, socket, struct, os\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect(os.path.expanduser('~/.local/state/gt-remote/relay-{PORT}/sock'))\n"
        f"body = json.dumps({message!r}).encode()\n"
        "s.sendall(b'H' + struct.pack('>I', len(body)) + body)\n"
        "data = b''\n"
        "while True:\n"
        "    chunk = s.recv(65536)\n"
        "    if not chunk: break\n"
        "    data += chunk\n"
        "print(data[5:].decode())\n"
    )
    return dict(json.loads(host.sh(f"python3 -c {shlex.quote(asker)}", user="gamer")))


def server_clients_inside(host: SshHost) -> int:
    """The stand-in's client count asked from inside the container, minus the asker."""
    asker = (
        "import socket, struct\n"
        f"s = socket.create_connection(('127.0.0.1', {PORT}))\n"
        f"s.sendall({GET_SERVER_STATUS!r})\n"
        "data = b''\n"
        "while len(data) < 51: data += s.recv(100)\n"
        "print(struct.unpack_from('<Q', data, 16)[0])\n"
    )
    return int(host.sh(f"python3 -c {shlex.quote(asker)}", user="gamer")) - 1


def kill_ssh_sessions(host: SshHost) -> None:
    serving = dropbear_sessions(host) if host.kind == "dropbear" else host.pids("sshd: gamer")
    assert serving, f"no {host.kind} process serves our connection"
    for pid in serving:
        host.kill(pid)


def dropbear_sessions(host: SshHost) -> list[int]:
    """Dropbear's per-connection processes: `dropbear` children of the listener (PID 1 on a
    dropbear host). They keep root's uid and sshd's "sshd: user" title has no match here, so
    they are found by parent; the relay, reparented to PID 1 too, is not named dropbear."""
    code, output = host.exec("exec pgrep -x -P 1 dropbear")
    return [int(pid) for pid in output.split()] if code == 0 else []


def relay_pids(host: SshHost) -> list[int]:
    return host.pids("relay_agent.py --socket")


def expect_clean_close(sock: socket.socket) -> None:
    """EOF, not a reset: drain what is left, then recv returns b''."""
    sock.settimeout(60)
    while True:
        data = sock.recv(65536)  # a reset raises ConnectionResetError and fails the test
        if not data:
            return


STALL = 60.0  # nothing taken for this long while not yet full: the flow is stuck, not slow


MOST_OFFERED = 256 * 1024 * 1024  # taken without ever filling: the buffers are not capped


def offer_until_full(sock: socket.socket, block: bytes, full: Any, what: str) -> None:
    """Send whole frames as fast as the socket takes them until `full()` holds; backpressure,
    not the test, stops it. No budget for the whole fill, which a loaded machine makes slow:
    it fails only when the socket takes nothing for STALL s, or takes without end."""
    pending = memoryview(block)
    offered, progress_at = 0, time.monotonic()
    while True:
        try:
            sent = sock.send(pending)
        except BlockingIOError:
            if full():
                return
            assert time.monotonic() - progress_at < STALL, f"stuck for {STALL:g} s ({offered} bytes taken) waiting for {what}"
            select.select([], [sock], [], 0.5)
            continue
        offered, progress_at = offered + sent, time.monotonic()
        assert offered <= MOST_OFFERED, f"{offered} bytes taken without {what}: the buffers are not capped"
        pending = pending[sent:] or memoryview(block)


# --- health checks and leases, counted on the remote (test_health.py, test_leases.py) ----------

LEASES = f"/home/{USER}/.local/state/gt-remote/leases/9999"


STARTS = f"/home/{USER}/.shell-starts"


CHECKS = 9


def count_shell_starts(host: SshHost) -> None:
    """The first line of ~/.bashrc appends a line to ~/.shell-starts: bash reads it for every
    command sshd runs, before anything else of it (Debian's returns early when not interactive)."""
    line = f"echo start >> {STARTS}"
    host.sh(f"printf '%s\\n' {shlex.quote(line)} | cat - /home/{USER}/.bashrc > /tmp/bashrc.new && cat /tmp/bashrc.new > /home/{USER}/.bashrc", user=USER)


def shell_starts(host: SshHost) -> int:
    return int(host.sh(f"cat {STARTS} 2>/dev/null | wc -l", user=USER).strip())


def lease_touched_at(host: SshHost) -> str:
    """The lease file's modification time, to the nanosecond: each touch changes it."""
    return host.sh(f"stat -c %.9Y {LEASES}/*", user=USER).strip()


def up_resumable(gt: Gt, host: SshHost) -> None:
    result = gt.up(host, "--keepalive", "1", "--local", f"tcp://127.0.0.1:{free_loopback_port()}")
    assert result.returncode == 0, result.stderr
    [status] = gt.status("gaming-pc")
    assert status["resumable"] is True


def health_checks(host: SshHost) -> int:
    """Health checks so far: each opens one relay stream for its Ping."""
    return int(relay_request(host, {"op": "stats"})["streams_total"])


def over_checks(host: SshHost, count: int) -> tuple[int, int]:
    """(shell starts, lease touches) over the next `count` health checks. The first check after
    `up` runs the script whatever the relay does (nothing vouched for the port yet): skipped."""
    wait_for(lambda: health_checks(host) >= 2, 60, "the first health checks")
    first, starts = health_checks(host), shell_starts(host)
    touches = {lease_touched_at(host)}

    def done() -> bool:
        touches.add(lease_touched_at(host))
        return health_checks(host) - first >= count

    wait_for(done, 60, f"{count} health checks")
    return shell_starts(host) - starts, len(touches) - 1  # the first value was there before


# --- shared by several end-to-end test files --------------------------------------------

HOME = "/home/gamer"


REMOTE_STATE = "/home/gamer/.local/state/gt-remote"


SERVERS = "/home/gamer/.local/share/gt-remote/servers"


ROUNDS = 3


SECRET = "ghp_Zq8sEcReTtOkEn0123456789abcdefXYZ"  # what a token in an install_command looks like


MOTD_ON = ["sh", "-c", "sed -i 's/^PrintMotd no/PrintMotd yes/' /etc/ssh/sshd_config && exec /usr/sbin/sshd -D -e"]


T = TypeVar("T")


def server_pids(host: SshHost, port: int = 9999) -> list[int]:
    return host.pids(f"{STANDIN_PATTERN}{port}")


def remote_ls(host: SshHost, path: str) -> list[str]:
    code, output = host.exec(f"ls -A {path}", user="gamer")
    return output.split() if code == 0 else []


def new_build(tmp_path: Path, version: str = "0.1.2") -> Path:
    """Another build of the stand-in: another version, so another hash."""
    path = tmp_path / "new" / "ccmux-server"
    path.parent.mkdir(exist_ok=True)
    path.write_text(STANDIN.read_text().replace('VERSION = "0.1.1"', f'VERSION = "{version}"'))
    path.chmod(0o755)
    return path


def default_ssh_config(gt: Gt, text: str) -> Path:
    """The test's private HOME gets ~/.ssh/config: no -F anywhere."""
    ssh_dir = gt.home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    config = ssh_dir / "config"
    config.write_text(text)
    config.chmod(0o600)
    return config


def doctor(gt: Gt, host: str = "gaming-pc") -> dict[str, dict[str, str]]:
    result = gt("doctor", host, "--json")
    return {check["name"]: check for check in json.loads(result.stdout)}


def other_shell(gt: Gt, tmp_path: Path) -> Gt:
    """The same user in another shell: same home, another XDG_RUNTIME_DIR (su, cron, ssh -T)."""
    runtime = Path(gt.env["XDG_RUNTIME_DIR"]).parent / f"o-{tmp_path.name[-12:]}"  # in the session's root, as gt's
    runtime.mkdir(mode=0o700, exist_ok=True)
    other = Gt(gt.home, runtime)
    other.env = {**gt.env, "XDG_RUNTIME_DIR": str(runtime)}
    other.ports = gt.ports  # the same user's tunnels: the same local addresses
    return other


def free_local() -> str:
    """A local address no other test (of any worktree on this machine) is using now."""
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{spare.getsockname()[1]}"


def on(host: SshHost, action: Callable[[asyncssh.SSHClientConnection], Awaitable[T]], install_dir: str | None = None) -> T:
    """Run `action` on one connection to the test host, as gt-remote reaches a host (reach.run_on)."""
    return run_on(HostSettings(host.alias, host.alias, ssh_config=str(host.ssh_config), install_dir=install_dir), action)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def up(gt: Gt, host: SshHost, *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """`up` with the stand-in uploaded, on a free local port (other tunnels may hold 9999)."""
    local = free_loopback_port()
    result = gt("up", host.alias, "--server-binary", str(STANDIN), "--local", f"tcp://127.0.0.1:{local}", *args, ssh_config=host.ssh_config)
    return result, local


def bring_up_local(gt: Gt, host: SshHost, *args: str) -> str:
    local = f"tcp://127.0.0.1:{free_loopback_port()}"
    result = gt.up(host, "--local", local, *args)
    assert result.returncode == 0, result.stderr
    return local


def private_setup(gt: Gt, ssh_host: SshHost) -> dict[str, Path | str]:
    """A host `pc` reached as user@alias, through an ssh_config (naming an identity) at a path
    of the user's choosing, whose install_command carries a token."""
    ssh_dir = gt.home / "work-secrets"
    ssh_dir.mkdir(mode=0o700)
    ssh_config = ssh_dir / "client_ssh_config"
    shutil.copy(ssh_host.ssh_config, ssh_config)
    destination = f"{ssh_host.user}@{ssh_host.alias}"
    config = gt.home / "gt-remote-private.toml"
    config.write_text(
        "[hosts.pc]\n"
        f'ssh = "{destination}"\n'
        f'local = "tcp://127.0.0.1:{free_loopback_port()}"\n'
        f'server_binary = "{STANDIN}"\n'
        f'install_command = "curl -H \'Authorization: token {SECRET}\' https://example.invalid/ccmux | sh"\n'
    )
    return {"ssh_config": ssh_config, "config": config, "destination": destination, "identity": ssh_host.key.path}


# --- a large upload, and holding it on the gaming PC ------------------------------------


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


HELD_UPLOAD_MIB = 50  # far more than the SSH window and a pipe hold: its remote end stopped, the upload stalls

# Inside the container, as the login user (root there lacks CAP_SYS_PTRACE, which reading
# another account's /proc/PID/fd takes): the first `cat` of the server's upload (its stdout is
# the part file; the relay's upload runs beside it) is stopped as soon as it exists, its pid said.
STOP_THE_SERVER_UPLOAD = r"""
while :; do
    for pid in $(pgrep -u gamer -x cat); do
        case $(readlink "/proc/$pid/fd/1") in *ccmux-server.part-*) kill -STOP "$pid"; echo "$pid"; exit 0 ;; esac
    done
    sleep 0.01
done
"""


def wait_for_no_partial_upload(host: SshHost) -> None:
    """No `.NAME.part-TOKEN` left under the builds on the gaming PC: the cancelled upload's
    clean-up runs there after the laptop's side has ended, so it is waited for."""
    wait_for(lambda: host.exec(f"find {SERVERS} -name '.*part*' 2>/dev/null", user=USER)[1].strip() == "", 30, "no partial upload left on the remote")


class HeldUpload:
    """The server's upload held on the gaming PC, a fault in the test container: its remote
    `cat` is stopped as soon as it starts, so the upload stalls with its bytes on the way and a
    test can act during it however fast the machine (200 MB over loopback takes a second or
    two: a signal sent once `status` showed the upload could land after it had finished).
    Made before `up` starts; `wait` for the hold, `release` it in a `finally`."""

    def __init__(self, host: SshHost) -> None:
        self.host = host
        self.said: list[str] = []
        self.thread = threading.Thread(target=lambda: self.said.append(host.exec(STOP_THE_SERVER_UPLOAD, user=USER)[1].strip()), daemon=True)
        self.thread.start()

    def wait(self, timeout: float = 120.0) -> int:
        self.thread.join(timeout)
        assert self.said and self.said[0].isdigit(), f"the server's upload never started: {self.said}"
        return int(self.said[0])

    def release(self) -> None:
        if self.said and self.said[0].isdigit():
            self.host.exec(f"kill -CONT {self.said[0]}", user=USER)  # the process the hold stopped, by its pid
