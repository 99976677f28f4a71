"""The light CLI path (issue 18): the commands that do not open an SSH connection themselves
import neither asyncssh nor cryptography, and the ones a new shell runs not even asyncio.

`eval "$(gt-remote env HOST)"` sits in ~/.bashrc, so every new terminal pays for what these
commands import: asyncssh and cryptography alone cost about 0.2 s. Each command runs for real,
against a live tunnel, under `python -X importtime`, which names every module as it is first
imported and, by its indentation, who imported it; a failure names the command, the module
and the chain of imports that pulled it in. The speed itself is measured by `make bench`
(the CLI section of docs/benchmarks.md), never asserted here.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Gt
from tests.testbed import STANDIN, SshHost, free_loopback_port

HEAVY = ("asyncssh", "cryptography", "tenacity")  # what only the code that connects may import
SHELL_START = HEAVY + ("asyncio",)  # what a new shell's `env` and a prompt's `status` must not pay for either
FIX = ("import it inside the function that connects (or that needs it), not at the top of a module "
       "these commands load; see GUIDE.md's light-import rule and issue 18")
IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+\d+ \|( *)(\S+)")


@dataclass
class Imports:
    """What one command imported, in the order -X importtime printed it (each module after
    the modules it imported, indented one step deeper than its importer)."""

    modules: list[tuple[int, str]]

    @classmethod
    def parse(cls, stderr: str) -> Imports:
        return cls([(len(m[1]) // 2, m[2]) for m in map(IMPORT_LINE.match, stderr.splitlines()) if m])

    def chain(self, index: int) -> list[str]:
        """The module at `index` and its importers up to the top: whom to fix."""
        depth, name = self.modules[index]
        chain = [name]
        for later_depth, later in self.modules[index + 1:]:
            if later_depth < depth:
                chain.append(later)
                depth = later_depth
        return chain[::-1]

    def offending(self, forbidden: tuple[str, ...]) -> list[str]:
        """One line per forbidden package imported: the first of its modules, by whom."""
        found: dict[str, str] = {}
        for index, (_, name) in enumerate(self.modules):
            top = name.split(".")[0]
            if top in forbidden and top not in found:
                chain = self.chain(index)
                first = next(i for i, module in enumerate(chain) if module.split(".")[0] == top)
                found[top] = " -> ".join(chain[: first + 1])
        return [f"{top} (via {chain})" for top, chain in found.items()]


def run_importtime(gt: Gt, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], Imports]:
    """`gt-remote ARGS` as `python -X importtime -m gt_remote ARGS` (what the installed command runs)."""
    config = ["-F", str(gt.ssh_config)] if gt.ssh_config else []
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "gt_remote", *config, *args],
                            env={**gt.env, **(env or {})}, capture_output=True, text=True, timeout=120)
    return result, Imports.parse(result.stderr)


def check(gt: Gt, args: tuple[str, ...], forbidden: tuple[str, ...], env: dict[str, str] | None = None, shown: str = "") -> str:
    result, imports = run_importtime(gt, *args, env=env)
    shown = shown or "gt-remote " + " ".join(args)
    errors = "\n".join(line for line in result.stderr.splitlines() if not IMPORT_LINE.match(line))
    assert result.returncode == 0, f"`{shown}` exited {result.returncode}, so its whole path did not run: {errors}"
    assert imports.modules, f"`{shown}`: no -X importtime lines on stderr; the check cannot see the imports"
    offending = imports.offending(forbidden)
    assert not offending, f"`{shown}` opens no SSH connection in its own process, yet imported {'; '.join(offending)}: {FIX}"
    return result.stdout


# Commands whose own process never connects. Each runs against a live tunnel, so its whole
# path runs (a command that fails early would import less and prove nothing).
SHELL_START_COMMANDS = (
    ("--version",),
    ("env", "{host}"),
    ("env", "{host}", "--unset"),
    ("status",),
    ("status", "{host}", "--json"),
    ("exec", "{host}", "--", "true"),  # the imports happen before the exec; stderr shows them
    ("completion", "bash"),
    ("pick",),  # a polecat's spawn asks it: the supervisors' cached figures, no connection (#32)
    ("pick", "{host}", "--for", "polecat-1", "--json"),
    ("exec", "--pick", "--", "true"),
    ("status", "--pool"),
)
LIGHT_COMMANDS = (
    ("--help",),
    ("up", "--help"),
    ("ping", "{host}"),
    ("logs", "{host}"),
    ("reconnect", "{host}"),
    ("up", "{host}", "--local", "{local}", "--server-binary", "{standin}"),  # already up: answered by its supervisor
)


def up_args(host: SshHost) -> tuple[str, ...]:
    return ("up", host.alias, "--local", f"tcp://127.0.0.1:{free_loopback_port()}", "--server-binary", str(STANDIN))


def test_commands_that_do_not_connect_import_no_ssh_library(gt: Gt, ssh_host: SshHost) -> None:
    gt.ssh_config = ssh_host.ssh_config
    result = gt(*up_args(ssh_host))
    assert result.returncode == 0, result.stderr
    [row] = gt.status(ssh_host.alias)
    fill = {"host": ssh_host.alias, "standin": str(STANDIN), "local": row["local"]}
    for forbidden, commands in ((SHELL_START, SHELL_START_COMMANDS), (HEAVY, LIGHT_COMMANDS)):
        for command in commands:
            check(gt, tuple(word.format(**fill) for word in command), forbidden)
    # `down` without --stop-server only asks the supervisor to stop.
    check(gt, ("down", ssh_host.alias), HEAVY)
    assert gt.status(ssh_host.alias)[0]["state"] == "down"


def test_up_leaves_ssh_to_its_supervisor(gt: Gt, ssh_host: SshHost) -> None:
    """`up` starts the supervisor and relays its progress: only the supervisor imports asyncssh."""
    gt.ssh_config = ssh_host.ssh_config
    stdout = check(gt, up_args(ssh_host), HEAVY)
    assert "export GASTOWN_CCMUX_ADDR=" in stdout
    [row] = gt.status(ssh_host.alias)
    assert row["state"] == "up"  # the supervisor did connect, with asyncssh, in its own process


class ControlListener:
    """A Unix socket where a supervisor's control socket would be, counting who connects."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen()
        self.server.settimeout(0.2)
        self.connections = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.server.close()


def test_completing_a_host_reads_config_and_ssh_config_only(gt: Gt) -> None:
    """Tab on HOST (#18.2): names from the config, ssh_config and gt-remote's own records; no
    supervisor is asked and nothing that connects is imported, so a Tab press never waits."""
    (gt.home / ".ssh").mkdir()
    (gt.home / ".ssh/config").write_text("Host gaming-pc\n    HostName 192.0.2.10\n")
    (gt.home / ".config/gt-remote").mkdir(parents=True)
    (gt.home / ".config/gt-remote/config.toml").write_text('[hosts.workstation]\nssh = "me@192.0.2.11"\n')
    state = gt.home / ".local/state/gt-remote/hosts"
    state.mkdir(parents=True)
    (state / "known-pc.json").write_text('{"host": "known-pc", "status": {}}')
    listener = ControlListener(Path(gt.env["XDG_RUNTIME_DIR"]) / "gt-remote" / "known-pc.sock")
    try:
        env = {"_GT_REMOTE_COMPLETE": "bash_complete", "COMP_WORDS": "gt-remote env ", "COMP_CWORD": "2"}
        stdout = check(gt, (), SHELL_START, env=env, shown="gt-remote env <Tab>")
    finally:
        listener.close()
    assert [line.split(",", 1)[1] for line in stdout.splitlines()] == ["gaming-pc", "known-pc", "workstation"]
    assert listener.connections == 0, "completing HOST asked a supervisor's control socket; it must read files only"


def test_the_import_check_sees_a_heavy_import() -> None:
    """The check itself: a command that imports asyncssh is caught, with the chain to fix."""
    stderr = subprocess.run([sys.executable, "-X", "importtime", "-c", "import gt_remote.runtime.supervisor"],
                            capture_output=True, text=True, env={**os.environ}).stderr
    offending = Imports.parse(stderr).offending(HEAVY)
    assert any(line.startswith("asyncssh (via gt_remote.runtime.supervisor -> ") for line in offending), offending


def test_the_contract_catches_a_light_module_importing_asyncssh(tmp_path: Path) -> None:
    """pyproject's forbidden contract: even a lazy import of asyncssh in a module every command
    loads breaks `make lint`."""
    import shutil

    from tests.helpers import lint_imports
    from tests.testbed import REPO

    shutil.copytree(REPO / "gt_remote", tmp_path / "gt_remote", symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "gt_remote/base/heavy.py").write_text("def connect() -> None:\n    import asyncssh  # even here\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "The light modules every command loads never import the SSH libraries BROKEN" in result.stdout
    assert "gt_remote.base.heavy -> asyncssh" in result.stdout
