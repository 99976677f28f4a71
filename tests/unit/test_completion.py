"""Shell completion as a user meets it: the script runs in a real bash, and Tab on HOST offers
the configured hosts and ssh_config aliases, never patterns."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from tests.conftest import Gt

SSH_CONFIG = """\
Host gaming-pc laptop-*
    HostName 192.0.2.10
Host build-box !bad
    User me
Include extra.conf
"""


@pytest.fixture
def configured(gt: Gt) -> Gt:
    ssh = gt.home / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text(SSH_CONFIG)
    (ssh / "extra.conf").write_text("Host included-box\n")
    config = gt.home / ".config/gt-remote"
    config.mkdir(parents=True)
    (config / "config.toml").write_text('[hosts.workstation]\nssh = "me@192.0.2.11"\n')
    return gt


def bash_complete(gt: Gt, line: str) -> list[str]:
    """Source the script in a real bash, set COMP_WORDS to `line` and call its function, as Tab does."""
    script = gt("completion", "bash")
    assert script.returncode == 0, script.stderr
    (gt.home / "gt-remote.bash").write_text(script.stdout)
    bin_dir = gt.home / "bin"  # the script runs `gt-remote` by name, as an installed command
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "gt-remote").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m gt_remote \"$@\"\n")
    (bin_dir / "gt-remote").chmod(0o755)
    words = line.split() + ([""] if line.endswith(" ") else [])
    driver = (
        f"source {shlex.quote(str(gt.home / 'gt-remote.bash'))}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(word) for word in words)}); COMP_CWORD={len(words) - 1}\n"
        "_gt_remote_completion gt-remote\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**gt.env, "PATH": f"{bin_dir}:{gt.env['PATH']}"}
    result = subprocess.run(["bash", "-c", driver], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [word for word in result.stdout.splitlines() if word]


def test_tab_on_host_offers_configured_hosts_and_ssh_aliases(configured: Gt) -> None:
    assert bash_complete(configured, "gt-remote up ") == ["build-box", "gaming-pc", "included-box", "workstation"]
    assert bash_complete(configured, "gt-remote status g") == ["gaming-pc"]
    assert bash_complete(configured, "gt-remote sta") == ["status"]


def test_each_shell_gets_its_script(gt: Gt) -> None:
    markers = {"bash": "complete -o nosort -F _gt_remote_completion gt-remote", "zsh": "#compdef gt-remote", "fish": "complete --no-files --command gt-remote"}
    for shell, marker in markers.items():
        result = gt("completion", shell)
        assert result.returncode == 0 and marker in result.stdout, (shell, result.stderr)
    refused = gt("completion", "tcsh")
    assert refused.returncode == 2
