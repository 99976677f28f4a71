"""Bringing up the three kinds of tunnel the benchmark compares, all to the same server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.probes import time_to_pong
from tests.testbed import STANDIN, Gt, SshHost, free_loopback_port

REMOTE_PORT = 9999


@dataclass(eq=False)  # identity: each is a running tunnel
class Tunnel:
    name: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    supervisor_pid: int | None = None
    gt: Gt | None = None
    host: str = ""

    def pids(self) -> list[int]:
        """The processes that make this tunnel: a supervisor, or autossh/ssh and its children."""
        if self.supervisor_pid:
            return [self.supervisor_pid]
        assert self.proc is not None
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self) -> None:
        if self.gt is not None:
            self.gt("down", self.host)
        elif self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a process this benchmark started, by pid
            self.proc.wait(10)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def ssh_options(host: SshHost, keepalive: float, ssh_config: Path | None = None) -> list[str]:
    return [
        "-F", str(ssh_config or host.ssh_config),
        "-o", f"ServerAliveInterval={keepalive:g}",
        "-o", "ServerAliveCountMax=3",
        "-o", "ExitOnForwardFailure=yes",
        "-o", "BatchMode=yes",
    ]


def wait_ready(tunnel: Tunnel, cap: float = 20.0) -> Tunnel:
    if asyncio.run(time_to_pong(tunnel.port, time.monotonic(), cap)) is None:
        raise RuntimeError(f"{tunnel.name} on port {tunnel.port} never answered a Ping")
    return tunnel


def start_gt_remote(gt: Gt, host: SshHost, keepalive: float, alias: str | None = None, *, name: str = "gt-remote",
                    options: tuple[str, ...] = (), ssh_config: Path | None = None) -> Tunnel:
    port = free_loopback_port()
    alias = alias or host.alias
    result = gt("up", alias, "--local", f"tcp://127.0.0.1:{port}", "--remote-port", str(REMOTE_PORT),
                "--keepalive", f"{keepalive:g}", "--server-binary", str(STANDIN), *options,
                ssh_config=ssh_config or gt.ssh_config or host.ssh_config)
    if result.returncode != 0:
        raise RuntimeError(f"gt-remote up failed: {result.stderr}")
    [status] = gt.status(alias)
    return wait_ready(Tunnel(name, port, supervisor_pid=status["supervisor_pid"], gt=gt, host=alias))


NO_RESUME = "--no-resume"


def resumable_mode(gt: Gt) -> tuple[bool, str]:
    """Does this gt-remote have resumable streams? Then `up` is resumable and `up --no-resume` plain."""
    result = gt("up", "--help")
    if NO_RESUME in result.stdout:
        return True, ""
    return False, f"this gt-remote has no `up {NO_RESUME}`: resumable streams are not built yet"


def start_autossh(host: SshHost, keepalive: float, alias: str | None = None, ssh_config: Path | None = None) -> Tunnel:
    """autossh -M 0 with ServerAlive giving the same detection budget as gt-remote's keepalive."""
    port = free_loopback_port()
    command = ["autossh", "-M", "0", "-N", *ssh_options(host, keepalive, ssh_config), "-L", f"127.0.0.1:{port}:127.0.0.1:{REMOTE_PORT}", alias or host.alias]
    env = {**os.environ, "AUTOSSH_GATETIME": "0"}
    proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wait_ready(Tunnel("autossh", port, proc))


def start_plain_ssh(host: SshHost, keepalive: float) -> Tunnel:
    port = free_loopback_port()
    command = ["ssh", "-N", *ssh_options(host, keepalive), "-L", f"127.0.0.1:{port}:127.0.0.1:{REMOTE_PORT}", host.alias]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wait_ready(Tunnel("ssh -L", port, proc))


def start_reverse(host: SshHost, keepalive: float, forwards: list[tuple[int, int]], *, autossh: bool, log_dir: Path, tag: str = "") -> Tunnel:
    """`ssh -N -R` (or autossh -M 0 around it) with the same options as the others: each
    (remote, local) pair makes the container's 127.0.0.1:remote reach this machine's
    127.0.0.1:local. ssh's stderr goes to a file (its "remote port forwarding failed" lines are
    counted), autossh's own log to another; `port` is the first remote port, inside the container."""
    name = "autossh" if autossh else "ssh -R"
    spec = [arg for remote, local in forwards for arg in ("-R", f"127.0.0.1:{remote}:127.0.0.1:{local}")]
    command = [*(["autossh", "-M", "0"] if autossh else ["ssh"]), "-N", *ssh_options(host, keepalive), *spec, host.alias]
    stem = log_dir / f"{host.alias}-{'autossh' if autossh else 'ssh-R'}{tag}"
    env = {**os.environ, "AUTOSSH_GATETIME": "0", "AUTOSSH_LOGFILE": f"{stem}.autossh.log", "AUTOSSH_LOGLEVEL": "6"}
    with open(f"{stem}.stderr", "wb") as stderr:  # the child keeps its own descriptor
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    return Tunnel(name, forwards[0][0], proc)


def reverse_logs(tunnel: Tunnel, log_dir: Path, alias: str, tag: str = "") -> tuple[Path, Path]:
    """(ssh's stderr, autossh's own log) of a tunnel from start_reverse."""
    stem = log_dir / f"{alias}-{'autossh' if tunnel.name == 'autossh' else 'ssh-R'}{tag}"
    return Path(f"{stem}.stderr"), Path(f"{stem}.autossh.log")
