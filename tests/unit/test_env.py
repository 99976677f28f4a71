"""Shell integration without a remote, in real shells: a failed `up` fails the `eval`,
`env --unset` removes the variables, and a terminal gets a line saying how to use the output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Gt
from tests.helpers import gt_on_path, in_a_terminal, run_in, up_line
from tests.testbed import free_loopback_port

# docker/testbed.sh (ensure_host_tools) installs fish and zsh, as it does rsync.
SHELLS = ["bash", "zsh", "fish"]


@pytest.mark.parametrize("shell", SHELLS)
def test_a_failed_up_fails_the_eval_and_stops_the_chain(gt: Gt, tmp_path: Path, shell: str) -> None:
    env = gt_on_path(gt, tmp_path)
    (tmp_path / "ssh_config").write_text("")
    local = f"tcp://127.0.0.1:{free_loopback_port()}"  # not the default 9999, which another run may hold
    args = f"-F {tmp_path}/ssh_config up no-such-host.invalid --local {local}"
    chained = run_in(shell, f"{up_line(shell, args)} && echo REACHED", env)
    assert "REACHED" not in chained.stdout
    assert "cannot resolve host" in chained.stderr
    errexit = "set -e; " if shell != "fish" else ""
    script = f"{errexit}{up_line(shell, args)}" + ("; or exit 3" if shell == "fish" else "") + "; echo REACHED"
    stopped = run_in(shell, script, env)
    assert stopped.returncode != 0 and "REACHED" not in stopped.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_a_usage_error_fails_the_eval_too(gt: Gt, tmp_path: Path, shell: str) -> None:
    env = gt_on_path(gt, tmp_path)
    result = run_in(shell, f"{up_line(shell, 'up')} && echo REACHED", env)
    assert "REACHED" not in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "gt-remote: error: missing argument 'HOST'; see 'gt-remote up --help'"


def test_the_failure_line_prints_nothing_and_fails() -> None:
    """What stdout carries on failure is a command in every shell, silent, and failing."""
    result = subprocess.run([sys.executable, "-m", "gt_remote", "up"], capture_output=True, text=True)
    assert result.stdout == "false\n"
    for shell in ["sh", *SHELLS]:
        ran = run_in(shell, result.stdout, dict(os.environ))
        assert ran.returncode != 0 and ran.stdout == "" and ran.stderr == "", shell


@pytest.mark.parametrize("shell", SHELLS)
def test_env_unset_removes_the_variables(gt: Gt, tmp_path: Path, shell: str) -> None:
    env = {**gt_on_path(gt, tmp_path), "SHELL": f"/usr/bin/{shell}"}
    url = "tcp://127.0.0.1:9999"
    if shell == "fish":
        script = f"set -gx GASTOWN_CCMUX_ADDR {url}; set -gx CCMUX_ADDR {url}; gt-remote env gaming-pc --unset | source; and echo ok=$status; set -q GASTOWN_CCMUX_ADDR; or set -q CCMUX_ADDR; or echo gone"
    else:
        script = f'export GASTOWN_CCMUX_ADDR={url} CCMUX_ADDR={url}; eval "$(gt-remote env gaming-pc --unset)" && echo ok=$?; [ -z "${{GASTOWN_CCMUX_ADDR+x}}${{CCMUX_ADDR+x}}" ] && echo gone'
    result = run_in(shell, script, env)
    assert result.stdout.split() == ["ok=0", "gone"], result.stderr


def test_fish_unset_removes_variables_gt_remote_cannot_see(gt: Gt, tmp_path: Path) -> None:
    """`set -g` (not exported) and nothing set at all: the sourced lines still work and succeed."""
    env = {**gt_on_path(gt, tmp_path), "SHELL": "/usr/bin/fish"}
    url = "tcp://127.0.0.1:9999"
    script = f"set -g GASTOWN_CCMUX_ADDR {url}; gt-remote env gaming-pc --unset | source; and echo ok=$status; set -q GASTOWN_CCMUX_ADDR; or echo gone"
    result = run_in("fish", script, env)
    assert result.stdout.split() == ["ok=0", "gone"], result.stderr
    nothing_set = run_in("fish", "gt-remote env gaming-pc --unset | source; and echo ok=$status", env)
    assert nothing_set.stdout.split() == ["ok=0"], nothing_set.stderr


def test_env_unset_lines_per_shell(gt: Gt) -> None:
    sh = gt("env", "gaming-pc", "--unset", "--shell", "sh")
    assert sh.stdout == "unset GASTOWN_CCMUX_ADDR CCMUX_ADDR FUGUE_ADDR\n"
    fish = gt("env", "gaming-pc", "--unset", "--shell", "fish")
    assert fish.stdout.splitlines() == [f"set -e {name}; or true" for name in ("GASTOWN_CCMUX_ADDR", "CCMUX_ADDR", "FUGUE_ADDR")]
    gt.env["SHELL"] = "/usr/bin/fish"
    assert gt("env", "gaming-pc", "--unset").stdout == fish.stdout  # $SHELL picks the syntax


def test_a_terminal_gets_a_usage_comment(gt: Gt, tmp_path: Path) -> None:
    env = {**gt_on_path(gt, tmp_path), "SHELL": "/bin/bash"}
    shown = in_a_terminal(["gt-remote", "env", "gaming-pc", "--unset"], env)
    assert shown.splitlines() == ["unset GASTOWN_CCMUX_ADDR CCMUX_ADDR FUGUE_ADDR", '# Run: eval "$(gt-remote env gaming-pc --unset)"']
    fish = in_a_terminal(["gt-remote", "env", "gaming-pc", "--unset", "--shell", "fish"], env)
    assert fish.splitlines()[-1] == "# Run: gt-remote env gaming-pc --unset | source"
    piped = subprocess.run(["gt-remote", "env", "gaming-pc", "--unset"], env=env, capture_output=True, text=True)
    assert "#" not in piped.stdout

