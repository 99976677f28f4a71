"""The test bed: real OpenSSH "gaming PC" containers, reached on loopback only.

Every container gets a fresh client key, an authorized_keys entry, a known_hosts pinned to
its own host key (strict checking, never disabled) and an ssh_config alias. Fault helpers
act on the container only, never on a host process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gt_remote.tunnel.quick_import  # noqa: F401  # before asyncssh: its warning filter, as the product's own entry points (#30)

# isort: split
import asyncssh
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from tests.reaper import SESSION_ENV, SESSION_LABEL

# testcontainers on this kind of machine: no registry for Ryuk, and keep traffic on loopback.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TC_HOST", "127.0.0.1")

REPO = Path(__file__).resolve().parent.parent
STANDIN = REPO / "tests" / "standin" / "ccmux-server-standin"
TEST_IMAGE = os.environ.get("GT_REMOTE_TEST_IMAGE", "gt-remote-testhost:latest")
BASE_TAG = os.environ.get("GT_REMOTE_BASE_TAG", "gt-remote-base:bookworm")
USER = "gamer"
# sshd as a child of a PID 1 that stays: sshd can then be killed and started again inside
# (the image's own sshd is PID 1, and the container ends with it).
RESTARTABLE_SSHD = ["sh", "-c", "/usr/sbin/sshd -D -e & exec sleep infinity"]
FOREIGN_HOST_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIGtsPLXmX0l7o4g3q+7yF0b8fQmB9cXh3Qn8l1sD0o4T"  # not any test host's

# SSH servers other than a default OpenSSH (#31), each as the container's command (PID 1):
# - "hardened": the same sshd with `DisableForwarding yes` (a hardening guide's setting): it runs
#   commands, and refuses every TCP and stream-local forward;
# - "dropbear": Debian's Dropbear (dropbear-bin), which has no stream-local forwarding. Its host
#   keys are made at container start (the package makes none), kept across a restart; -s: keys
#   only, -w: no root, as docker/sshd_config; -E: log on stderr, -F: in the foreground.
DROPBEAR_KEY_TYPES = ("ed25519", "ecdsa")
DROPBEAR_KEYS = tuple(f"/etc/dropbear/dropbear_{kind}_host_key" for kind in DROPBEAR_KEY_TYPES)
DROPBEAR = [
    "sh",
    "-c",
    "set -e; mkdir -p /etc/dropbear; "
    + "".join(f"[ -f {key} ] || dropbearkey -t {kind} -f {key} >/dev/null; " for kind, key in zip(DROPBEAR_KEY_TYPES, DROPBEAR_KEYS))
    + "exec /usr/sbin/dropbear -F -E -s -w -p 22 "
    + " ".join(f"-r {key}" for key in DROPBEAR_KEYS),
]
HARDENED_SSHD = ["/usr/sbin/sshd", "-D", "-e", "-o", "DisableForwarding=yes"]
HOST_KINDS = ("openssh", "hardened", "dropbear")  # start_host(kind=...); "openssh" is the image's own
KIND_COMMANDS: dict[str, list[str] | None] = {"openssh": None, "hardened": HARDENED_SSHD, "dropbear": DROPBEAR}
# What each server logs as it starts ("Not backgrounding": Dropbear's line under -F); whether or
# not the port is bound by then, start_host then waits for the banner on the published port.
KIND_READY = {"openssh": "Server listening on", "hardened": "Server listening on", "dropbear": "Not backgrounding"}


def session_labels() -> dict[str, str]:
    """The label naming this pytest session (SESSION_ENV, set by tests/conftest.py), for a container
    or network it makes, so that its reaper (tests/reaper.py) removes exactly those if the run is
    killed; none outside a session (make demo, make bench)."""
    session = os.environ.get(SESSION_ENV)
    return {SESSION_LABEL: session} if session else {}


def context_hash() -> str:
    """Same as docker/testbed.sh: sha256 of Dockerfile + sshd_config + shells.sh, first 16 hex digits."""
    data = b"".join((REPO / "docker" / name).read_bytes() for name in ("Dockerfile", "sshd_config", "shells.sh"))
    return hashlib.sha256(data).hexdigest()[:16]


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll a condition until it holds or the deadline passes: synchronisation, not a sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass
class ClientKey:
    path: Path
    public: str

    @classmethod
    def create(cls, directory: Path) -> ClientKey:
        key = asyncssh.generate_private_key("ssh-ed25519", comment="gt-remote-tests")
        path = directory / "id_ed25519"
        key.write_private_key(str(path))
        path.chmod(0o600)
        return cls(path, key.export_public_key().decode().strip())


@dataclass
class SshHost:
    """One running "gaming PC" container, and how to reach it."""

    container: DockerContainer
    alias: str
    port: int
    directory: Path
    key: ClientKey
    network: str | None = None
    host_key_line: str = ""
    extra_config: list[str] = field(default_factory=list)
    hostname: str = "127.0.0.1"  # as the client names it; a network alias when not published
    published: dict[int, int] = field(default_factory=dict)  # container port -> loopback port
    user: str = USER  # the account the ssh_config logs in as
    kind: str = "openssh"  # which SSH server runs inside: one of HOST_KINDS

    @property
    def ssh_config(self) -> Path:
        return self.directory / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def wrapped(self):  # type: ignore[no-untyped-def]
        return self.container.get_wrapped_container()

    # --- set-up ---------------------------------------------------------------------

    def authorize(self) -> None:
        self.sh(f"printf '%s\\n' {shlex.quote(self.key.public)} > /home/{self.user}/.ssh/authorized_keys", user=self.user)
        host_key = self.host_public_key()
        name = self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"
        self.host_key_line = f"{name} {host_key[0]} {host_key[1]}"
        self.known_hosts.write_text(self.host_key_line + "\n")
        self.write_ssh_config()

    def host_public_key(self) -> tuple[str, str]:
        """(type, base64) of the server's ed25519 host key, read inside the container: sshd's
        .pub file, or what `dropbearkey -y` prints of Dropbear's key."""
        if self.kind != "dropbear":
            words = self.sh("cat /etc/ssh/ssh_host_ed25519_key.pub").split()
            return words[0], words[1]
        printed = self.sh(f"dropbearkey -y -f {DROPBEAR_KEYS[0]}")
        [line] = [line for line in printed.splitlines() if line.startswith("ssh-ed25519 ")]
        words = line.split()
        return words[0], words[1]

    def config_block(self) -> str:
        lines = [
            f"Host {self.alias}",
            f"    HostName {self.hostname}",
            f"    Port {self.port}",
            f"    User {self.user}",
            f"    IdentityFile {self.key.path}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {self.known_hosts}",
            "    StrictHostKeyChecking yes",
            *[f"    {line}" for line in self.extra_config],
        ]
        return "\n".join(lines) + "\n"

    def write_ssh_config(self) -> None:
        self.ssh_config.write_text(self.config_block())

    # --- inside the container -------------------------------------------------------

    def exec(self, command: str, user: str = "root") -> tuple[int, str]:
        code, output = self.wrapped.exec_run(["sh", "-c", command], user=user)
        return int(code), output.decode(errors="replace")

    def sh(self, command: str, user: str = "root") -> str:
        code, output = self.exec(command, user)
        assert code == 0, f"{command!r} exited {code}: {output}"
        return output

    def spawn(self, command: str, user: str = USER) -> None:
        """Start a long-running process inside, detached from docker exec."""
        self.wrapped.exec_run(["sh", "-c", command], user=user, detach=True)

    def pids(self, pattern: str) -> list[int]:
        code, output = self.exec(f"exec pgrep -f -- {shlex.quote(pattern)}")  # exec: no sh wrapper to match
        return [int(pid) for pid in output.split()] if code == 0 else []

    def hold_port(self, port: int) -> None:
        """Another program (not ccmux) listening on a loopback port inside the container."""
        holder = f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(3600)"
        self.spawn(f"exec python3 -c {shlex.quote(holder)}")
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}))"
        wait_for(lambda: self.exec(f"python3 -c {shlex.quote(probe)}")[0] == 0, 10, f"a program to hold port {port}")

    def pin_wrong_host_key(self) -> None:
        """known_hosts now names another key for this host: a changed host key, as ssh sees it."""
        name = self.host_key_line.split()[0]
        self.known_hosts.write_text(f"{name} ssh-ed25519 {FOREIGN_HOST_KEY}\n")

    def install_standin(self, path: str = "/usr/local/bin/ccmux-server") -> None:
        self.container.copy_into_container(STANDIN.read_bytes(), path, 0o755)

    # --- faults ---------------------------------------------------------------------

    def pause(self) -> None:
        self.wrapped.pause()

    def unpause(self) -> None:
        self.wrapped.unpause()

    def restart(self) -> None:
        self.wrapped.restart(timeout=1)
        wait_for(self._banner, 30, "sshd to answer again after the restart")

    def disconnect(self) -> None:
        assert self.network, "this host was started without its own network"
        self.container.get_docker_client().client.networks.get(self.network).disconnect(self.wrapped)

    def connect(self) -> None:
        assert self.network
        self.container.get_docker_client().client.networks.get(self.network).connect(self.wrapped)

    def restart_sshd(self, down_s: float = 0.0) -> None:
        """Every sshd inside killed (listener and sessions), then sshd started again as root.
        Needs a host started with command=RESTARTABLE_SSHD."""
        self.sh("pkill -KILL -x sshd || true")
        time.sleep(down_s)  # how long sshd stays down: the fault's length
        self.sh("/usr/sbin/sshd -e")  # daemonizes once it listens

    def kill(self, pid: int, signal_name: str = "KILL") -> None:
        """Signal one process inside; one already gone counts as done (an sshd session's child
        dies with its parent, so killing both in a row finds the second gone)."""
        self.sh(f"kill -{signal_name} {int(pid)} 2>/dev/null || ! kill -0 {int(pid)} 2>/dev/null")

    def _banner(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                return conn.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def answers_ssh(self) -> bool:
        return self._banner()

    def as_user(self, user: str, alias: str | None = None) -> SshHost:
        """The same container reached as another of its accounts (docker/shells.sh adds them),
        with its own alias, ssh_config and known_hosts."""
        other = dataclasses.replace(self, user=user, alias=alias or f"{self.alias}-{user}", directory=self.directory.parent / f"{self.directory.name}-{user}")
        other.directory.mkdir(parents=True, exist_ok=True)
        other.authorize()
        return other


def start_host(
    directory: Path,
    key: ClientKey,
    alias: str = "gaming-pc",
    network: str | None = None,
    tmpfs: dict[str, str] | None = None,
    publish: bool = True,
    extra_ports: tuple[int, ...] = (),
    command: str | list[str] | None = None,
    kind: str = "openssh",
) -> SshHost:
    """Start a host. Unpublished hosts live only on `network`, named by their alias there.
    `command` replaces the image's (sshd as PID 1), e.g. to restart sshd inside. `kind` picks
    the SSH server (HOST_KINDS): "hardened" (sshd refusing every forward) or "dropbear"."""
    assert kind in HOST_KINDS, f"unknown host kind {kind!r}: one of {', '.join(HOST_KINDS)}"
    port = free_loopback_port() if publish else 22
    container = DockerContainer(TEST_IMAGE)
    command = command or KIND_COMMANDS[kind]
    if command:
        container.with_command(command)
    container.tmpfs.update(tmpfs or {})
    if publish:
        container.ports["22/tcp"] = ("127.0.0.1", port)  # publish on loopback only
    published = {inner: free_loopback_port() for inner in extra_ports}
    for inner, outer in published.items():
        container.ports[f"{inner}/tcp"] = ("127.0.0.1", outer)
    container.with_kwargs(labels=session_labels(), **({"network": network} if network else {}))
    container.waiting_for(LogMessageWaitStrategy(KIND_READY[kind]).with_startup_timeout(30))
    container.start()
    if network and not publish:
        _alias_on(container, network, alias)
    directory.mkdir(parents=True, exist_ok=True)
    host = SshHost(container, alias, port, directory, key, network, hostname="127.0.0.1" if publish else alias, published=published, kind=kind)
    host.authorize()
    if publish:
        wait_for(host.answers_ssh, 15, "sshd to answer on the published port")
    return host


def _alias_on(container: DockerContainer, network: str, alias: str) -> None:
    """Give the container a DNS alias on `network` (reconnect with the alias)."""
    net = container.get_docker_client().client.networks.get(network)
    net.disconnect(container.get_wrapped_container())
    net.connect(container.get_wrapped_container(), aliases=[alias])


def combined_ssh_config(path: Path, *hosts: SshHost) -> Path:
    """One ssh_config naming several hosts, as a user's ~/.ssh/config would."""
    path.write_text("\n".join(host.config_block() for host in hosts))
    return path


# The user's world that must not reach a test's gt-remote: their agent, their tunnel's address
# variables, a service manager's sockets and markers, their verbosity.
NOT_INHERITED = (
    "SSH_AUTH_SOCK", "GASTOWN_CCMUX_ADDR", "CCMUX_ADDR", "FUGUE_ADDR", "NOTIFY_SOCKET", "INVOCATION_ID", "XPC_SERVICE_NAME",
    "GT_REMOTE_VERBOSE", "GT_REMOTE_QUIET",
)  # fmt: skip
GLOBAL_OPTIONS_WITH_VALUE = ("-F", "--config")


PORTS_LOCK = threading.Lock()


class Gt:
    """Runs the real `gt-remote` command line, as a user would, in an isolated home.

    Nothing of the user's world is used: HOME, the XDG directories, the runtime dir, the config
    and the ssh_config are the test's own, with no agent and no address variables. Nor is the
    laptop's 127.0.0.1:9999, the default local address (the remote port's number), which the
    user's own tunnel may hold: every `up HOST` without --local, whose config gives HOST no
    `local` either, gets `--local` with this test's own free loopback port for HOST
    (`local(HOST)`, one per host, the same for the whole test). A test about the default itself
    passes own_local=False, and picks a free remote port so that the default is a free laptop port.
    """

    def __init__(self, home: Path, runtime: Path) -> None:
        self.home = home
        self.env = {
            **os.environ,
            "HOME": str(home),
            "XDG_STATE_HOME": str(home / ".local/state"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_RUNTIME_DIR": str(runtime),
            "PYTHONPATH": str(REPO),
        }
        for name in NOT_INHERITED:
            self.env.pop(name, None)
        self.ssh_config: Path | None = None
        self.ports: dict[str, int] = {}  # host -> this test's laptop port for its tunnel (shared by other_shell)

    def port(self, host: str = "gaming-pc") -> int:
        """This test's own laptop port for HOST's tunnel: free when first asked, then kept. The
        first ask is under a lock: racing `up`s in threads must all get the one port."""
        with PORTS_LOCK:
            if host not in self.ports:
                self.ports[host] = free_loopback_port()
            return self.ports[host]

    def local(self, host: str = "gaming-pc") -> str:
        """The local address `up HOST` gets in this test: tcp://127.0.0.1:port(HOST)."""
        return f"tcp://127.0.0.1:{self.port(host)}"

    def local_in_config(self, *hosts: str) -> Path:
        """Each of `hosts` gets its own local address in the test's config file, for `up` typed
        in a shell (an rc file, a guide's steps), where no --local can be added: exactly what
        the user types still runs, on this test's ports. The config file, appended to."""
        config = Path(self.env["XDG_CONFIG_HOME"]) / "gt-remote" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        with config.open("a") as out:
            out.write("".join(f'\n[hosts."{host}"]\nlocal = "{self.local(host)}"\n' for host in hosts))
        return config

    def command(self, *args: str, ssh_config: Path | None = None, own_local: bool = True) -> list[str]:
        """The argv of `gt-remote ARGS` (with -F when given), an `up` with this test's own local address."""
        config = ssh_config or self.ssh_config
        words = [*(["-F", str(config)] if config else []), *args]
        return [sys.executable, "-m", "gt_remote", *(self._with_own_local(words) if own_local else words)]

    def _with_own_local(self, words: list[str]) -> list[str]:
        """`up HOST ...` with `--local local(HOST)` added where gt-remote would use its default."""
        config = Path(self.env["XDG_CONFIG_HOME"]) / "gt-remote" / "config.toml"
        index = 0
        while index < len(words) and words[index].startswith("-"):
            if words[index] in GLOBAL_OPTIONS_WITH_VALUE and index + 1 < len(words):
                if words[index] == "--config":
                    config = Path(words[index + 1])
                index += 2
            else:
                if words[index].startswith("--config="):
                    config = Path(words[index].partition("=")[2])
                index += 1
        rest = words[index + 1 :]
        if words[index : index + 1] != ["up"] or not rest or rest[0].startswith("-"):
            return words
        if any(word in ("--help", "-h", "--local") or word.startswith("--local=") for word in rest):
            return words
        table = _config_hosts(config).get(rest[0])
        if isinstance(table, dict) and "local" in table:
            return words  # the test's config names the address: that is what the test is about
        return [*words, "--local", self.local(rest[0])]

    def __call__(
        self, *args: str, timeout: float = 120, ssh_config: Path | None = None, input: str | None = None, own_local: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = self.command(*args, ssh_config=ssh_config, own_local=own_local)
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, input=input)

    def up(self, host: SshHost, *args: str, standin: bool = True, own_local: bool = True) -> subprocess.CompletedProcess[str]:
        extra = ["--server-binary", str(STANDIN)] if standin else []
        return self(*(["up", host.alias, *extra, *args]), ssh_config=host.ssh_config, own_local=own_local)

    def status(self, host: str | None = None) -> list[dict[str, Any]]:
        result = self("status", *([host] if host else []), "--json")
        return json.loads(result.stdout)

    def supervisor_pids(self) -> list[int]:
        runtime = Path(self.env["XDG_RUNTIME_DIR"]) / "gt-remote"
        pids = []
        for path in runtime.glob("*.pid"):
            text = path.read_text().strip()
            if text.isdigit():
                pids.append(int(text))
        return pids


def _config_hosts(path: Path) -> dict[str, Any]:
    """The [hosts.*] tables of a gt-remote config, or none (a missing or broken file: the test's
    `up` finds that out itself)."""
    import tomllib

    try:
        hosts = tomllib.loads(path.read_text()).get("hosts", {})
    except (OSError, ValueError):
        return {}
    return hosts if isinstance(hosts, dict) else {}
