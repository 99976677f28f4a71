"""`gt-remote env` and `up` in real shells (bash, zsh, fish) and on a terminal, against a real sshd."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from tests.conftest import Gt
from tests.e2e.helpers import up
from tests.helpers import gt_on_path, in_a_terminal, run_in, up_line
from tests.testbed import REPO, STANDIN, SshHost


def test_up_in_real_shells_and_on_a_terminal(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    env = gt_on_path(gt, tmp_path)
    gt.local_in_config("gaming-pc")  # typed as a user would: the test's port comes from its config
    args = f"-F {ssh_host.ssh_config} up gaming-pc --server-binary {STANDIN}"
    bash = run_in("bash", f'set -e; {up_line("bash", args)}; echo "$GASTOWN_CCMUX_ADDR"', env)
    assert bash.returncode == 0 and bash.stdout.strip() == gt.local(), bash.stderr
    fish = run_in("fish", f'{up_line("fish", args + " --shell fish")}; and echo $CCMUX_ADDR', env)
    assert fish.stdout.strip() == gt.local(), fish.stderr
    shown = in_a_terminal(["gt-remote", *shlex.split(args)], env)
    assert f"export GASTOWN_CCMUX_ADDR={gt.local()}" in shown
    assert f'# Run: eval "$(gt-remote -F {ssh_host.ssh_config} up gaming-pc)"' in shown  # -F, as given: the hint runs as shown
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
    assert fish.stdout.splitlines() == [f"set -gx GASTOWN_CCMUX_ADDR '{gt.local()}'", f"set -gx CCMUX_ADDR '{gt.local()}'"]



BASH_RC_LINE = 'eval "$(gt-remote env gaming-pc --if-up)"'  # docs/usage.md's lines for rc files, as documented
FISH_RC_LINE = "gt-remote env gaming-pc --shell fish --if-up | source"
SHOW_BASH = 'echo "status=$?"; echo "addr=${GASTOWN_CCMUX_ADDR-unset}"'
SHOW_FISH = "echo status=$status; set -q GASTOWN_CCMUX_ADDR; and echo addr=$GASTOWN_CCMUX_ADDR; or echo addr=unset"


def new_bash(env: dict[str, str]) -> str:
    """A new interactive bash: it reads ~/.bashrc, and its first command sees the status the
    rc file left, as a prompt does. No terminal: bash says so on stderr, which is not read."""
    return subprocess.run(["bash", "-ic", SHOW_BASH], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL).stdout


def test_the_rc_file_line_never_fails_a_new_shell(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """#30.5: the documented line in ~/.bashrc and in fish's config.fish leaves the status 0 and
    sets nothing while the host is down, and sets the variables once it is up. The plain `env`
    line, for scripts, still fails while the host is down."""
    usage = (REPO / "docs" / "usage.md").read_text()
    assert BASH_RC_LINE in usage and FISH_RC_LINE in usage
    env = gt_on_path(gt, tmp_path)
    bashrc = gt.home / ".bashrc"
    config_fish = gt.home / ".config" / "fish" / "config.fish"
    config_fish.parent.mkdir(parents=True)
    bashrc.write_text(BASH_RC_LINE + "\n")
    config_fish.write_text(FISH_RC_LINE + "\n")

    def new_shells() -> tuple[str, str, str]:
        fish = run_in("fish", SHOW_FISH, env).stdout  # config.fish ran first, as in any new fish
        fish_line = run_in("fish", f"{FISH_RC_LINE}; {SHOW_FISH}", env).stdout  # `fish -c` starts at status 0 whatever config.fish did: the line's own
        return new_bash(env), fish, fish_line

    unset = "status=0\naddr=unset\n"
    assert new_shells() == (unset, unset, unset)
    bashrc.write_text('eval "$(gt-remote env gaming-pc)"\n')  # the line for scripts fails while the host is down: what the check above would see
    assert new_bash(env) == "status=1\naddr=unset\n"
    bashrc.write_text(BASH_RC_LINE + "\n")

    result, local = up(gt, ssh_host)
    assert result.returncode == 0, result.stderr
    assert new_shells() == (f"status=0\naddr=tcp://127.0.0.1:{local}\n",) * 3
