"""`gt-remote env` and `up` in real shells (bash, zsh, fish) and on a terminal, against a real sshd."""

from __future__ import annotations

import shlex
from pathlib import Path

from tests.conftest import Gt
from tests.helpers import gt_on_path, in_a_terminal, run_in, up_line
from tests.testbed import STANDIN, SshHost


def test_up_in_real_shells_and_on_a_terminal(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    env = gt_on_path(gt, tmp_path)
    args = f"-F {ssh_host.ssh_config} up gaming-pc --server-binary {STANDIN}"
    bash = run_in("bash", f'set -e; {up_line("bash", args)}; echo "$GASTOWN_CCMUX_ADDR"', env)
    assert bash.returncode == 0 and bash.stdout.strip() == "tcp://127.0.0.1:9999", bash.stderr
    fish = run_in("fish", f'{up_line("fish", args + " --shell fish")}; and echo $CCMUX_ADDR', env)
    assert fish.stdout.strip() == "tcp://127.0.0.1:9999", fish.stderr
    shown = in_a_terminal(["gt-remote", *shlex.split(args)], env)
    assert "export GASTOWN_CCMUX_ADDR=tcp://127.0.0.1:9999" in shown
    assert '# Run: eval "$(gt-remote up gaming-pc)"' in shown
    ssh_host.sh(": > /home/gamer/.ssh/authorized_keys")
    assert run_in("bash", "gt-remote down gaming-pc", env).returncode == 0
    refused = run_in("bash", f'{up_line("bash", args)} && echo REACHED', env)
    assert "refused authentication" in refused.stderr and "REACHED" not in refused.stdout


def test_env_prints_exports_only_when_up(gt: Gt, ssh_host: SshHost) -> None:
    down = gt("env", "gaming-pc")
    assert down.returncode != 0 and "gaming-pc is not up" in down.stderr
    up = gt.up(ssh_host)
    env = gt("env", "gaming-pc")
    assert env.returncode == 0 and env.stdout == up.stdout
    fish = gt("env", "gaming-pc", "--shell", "fish")
    assert fish.stdout.splitlines() == ["set -gx GASTOWN_CCMUX_ADDR 'tcp://127.0.0.1:9999'", "set -gx CCMUX_ADDR 'tcp://127.0.0.1:9999'"]

