"""Every `gt-remote` command shown in the docs parses against the real command line, and
the documented remote-polecat command runs through `exec` with the variables set."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import click
import pytest

from gt_remote.cli import main
from tests.conftest import Gt
from tests.testbed import REPO, STANDIN, SshHost

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str]]:
    """(file, command line) for every gt-remote invocation inside a code block."""
    found = []
    for path in DOCS:
        in_block = False
        for line in path.read_text().splitlines():
            if line.strip().startswith("```"):
                in_block = not in_block
                continue
            if not in_block:
                continue
            code = line.split(" # ")[0]
            start = code.find("gt-remote ")
            if start < 0:
                continue
            rest = code[start + len("gt-remote "):]
            if code[:start].endswith("$("):  # eval "$(gt-remote up HOST)"
                rest = rest.rsplit(")", 1)[0]
            rest = re.split(r" (?:>|>>|\||&&|\|\||;) ", rest)[0]  # the command, not the shell's redirection or chain
            if rest.strip() and "COMMAND ..." not in rest:  # the synopsis is not a command
                found.append((path.name, rest.strip()))
    return found


def _rest(ctx: click.Context) -> list[str]:
    with warnings.catch_warnings():  # click 8.2 deprecates protected_args with no replacement before 9.0
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*ctx.protected_args, *ctx.args]


def parse(words: list[str]) -> None:
    """Resolve the command chain and parse its options, without running anything."""
    ctx = main.make_context("gt-remote", list(words), resilient_parsing=False)
    command: click.Command = main
    args = _rest(ctx)
    while isinstance(command, click.Group) and args:
        name, sub, args = command.resolve_command(ctx, args)
        assert sub is not None, f"unknown command {name}"
        ctx = sub.make_context(name or "", args, parent=ctx)
        command, args = sub, _rest(ctx)


COMMANDS = documented_commands()


def test_the_docs_show_commands() -> None:
    files = {name for name, _ in COMMANDS}
    assert {"README.md", "usage.md", "setup.md", "gastown.md", "state-sync.md"} <= files
    assert len(COMMANDS) > 30


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}:{c}" for d, c in COMMANDS])
def test_documented_command_parses(doc: str, command: str) -> None:
    parse(shlex.split(command.replace("$XDG_RUNTIME_DIR", "/run/user/1000").replace("$UID", "1000")))


def test_documented_ccmux_compat_command_reaches_the_server(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """A `ccmux-compat` stand-in on PATH proves exec hands it CCMUX_ADDR and the arguments."""
    shim = tmp_path / "bin" / "ccmux-compat"
    shim.parent.mkdir()
    shim.write_text(
        f"#!{sys.executable}\n"
        "import asyncio, os, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from gt_remote.base.addresses import parse_address\n"
        "from gt_remote.tunnel.wire import ping_address\n"
        "asyncio.run(ping_address(parse_address(os.environ['CCMUX_ADDR'])))\n"
        "print('ccmux-compat stand-in:', os.environ['CCMUX_ADDR'], sys.argv[1:])\n"
    )
    shim.chmod(0o755)
    assert gt.up(ssh_host).returncode == 0
    gt.env["PATH"] = f"{shim.parent}:{gt.env['PATH']}"
    documented = 'gt-remote exec gaming-pc -- ccmux-compat new-session -d -s polecat-1 "claude --resume"'
    assert ("gastown.md", documented.removeprefix("gt-remote").strip()) in COMMANDS
    result = gt(*shlex.split(documented)[1:], ssh_config=ssh_host.ssh_config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ccmux-compat stand-in: tcp://127.0.0.1:9999 ['new-session', '-d', '-s', 'polecat-1', 'claude --resume']"


def test_setup_guide_in_a_real_shell(gt: Gt, ssh_host: SshHost) -> None:
    """docs/setup.md steps 5 to 7 as a new user types them, eval included."""
    gt_remote = f"{sys.executable} -m gt_remote -F {ssh_host.ssh_config}"
    script = f"""
        set -e
        gt_remote() {{ {gt_remote} "$@"; }}
        gt_remote doctor gaming-pc > doctor-before.txt || true
        eval "$(gt_remote up gaming-pc --server-binary {STANDIN})"
        gt_remote status
        gt_remote ping
        gt_remote doctor gaming-pc
        echo "GASTOWN_CCMUX_ADDR=$GASTOWN_CCMUX_ADDR"
    """
    result = subprocess.run(["sh", "-c", script], env=gt.env, capture_output=True, text=True, cwd=gt.home, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    before = (gt.home / "doctor-before.txt").read_text()
    assert "✓ SSH connection and authentication" in before and "✗ tunnel is up" in before
    assert "gaming-pc: up" in result.stdout and "Pong from tcp://127.0.0.1:9999" in result.stdout
    assert "✓ ccmux Ping answered: tcp://127.0.0.1:9999 via GASTOWN_CCMUX_ADDR" in result.stdout
    assert result.stdout.strip().endswith("GASTOWN_CCMUX_ADDR=tcp://127.0.0.1:9999")
