"""`sync` against a far side that is not on the user's side: what it prints reaches the
terminal as text, and a pull does not plant the remote's git hooks or config here (#27)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from gt_remote.base.config import HostSettings
from gt_remote.base.errors import GtRemoteError
from gt_remote.commands import sync
from tests.conftest import Gt
from tests.testbed import SshHost

# A window title (OSC 0), a clipboard write (OSC 52), a screen clear, a forged red line.
SEQUENCES = "\x1b]0;pwned\x07\x1b]52;c;cHduZWQ=\x07\x1b[2J\x1b[31mforged: all files deleted\x1b[0m"
SHOWN = "\\x1b]0;pwned\\x07\\x1b]52;c;cHduZWQ=\\x07\\x1b[2J\\x1b[31mforged: all files deleted\\x1b[0m"
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but TAB and the newline
NOTICE = "gt-remote: left out .git/hooks and .git/config (git runs them); --with-git-config brings them"


def assert_no_control(text: str) -> None:
    found = CONTROL.search(text)
    assert found is None, f"{found.group()!r} reached the terminal: {text!r}"


def settings_for(host: SshHost) -> HostSettings:
    return HostSettings(name=host.alias, destination=host.alias, local_url="tcp://127.0.0.1:9999", ssh_config=str(host.ssh_config))


# --- what the far side prints -----------------------------------------------------------


def test_far_side_sequences_reach_the_terminal_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    """stdout, stderr and the error line of a failing transfer: every byte of the far side's
    text goes through visible(). A stand-in for rsync prints what a hostile remote could."""
    payload = SEQUENCES.encode() + b" \xc2\x9b31m c1 \x9b raw\tcolumn"
    stand_in = f"import sys; sys.stdout.buffer.write({payload!r} + b'\\n' + {payload!r}); sys.stderr.buffer.write({payload!r} + b'\\r\\n'); sys.exit(23)"
    with pytest.raises(GtRemoteError) as failed:
        sync._rsync([sys.executable, "-c", stand_in], settings_for_name("pc"))
    shown = capsys.readouterr()
    for text in (shown.out, shown.err, str(failed.value)):
        assert_no_control(text)
        assert SHOWN in text and "\\x9b31m c1" in text and "\tcolumn" in text
    assert shown.out.count("\n") == 2 and shown.err.count("\n") == 1


def settings_for_name(name: str) -> HostSettings:
    return HostSettings(name=name, destination=name, local_url="tcp://127.0.0.1:9999")


@pytest.mark.docker
def test_sync_shows_what_the_remote_login_shell_and_file_names_print_as_text(gt: Gt, ssh_host: SshHost) -> None:
    """The remote ~/.bashrc writes escape sequences to stderr (rsync still works: stdout is
    clean) and a remote file name carries some: a pull shows both, and neither acts."""
    printer = f"printf '%s\\n' {shlex.quote(SEQUENCES)} >&2"
    ssh_host.sh(f"cd /home/gamer && {{ printf '%s\\n' {shlex.quote(printer)}; cat .bashrc; }} > rc.new && cat rc.new > .bashrc", user="gamer")
    ssh_host.sh("cd /home/gamer && mkdir -p gt/rig && touch \"gt/rig/$(printf 'evil\\033]0;pwned\\007name')\"", user="gamer")
    rig = gt.home / "gt" / "rig"

    dry = gt("sync", "gaming-pc", "--pull", "--dry-run", str(rig), ssh_config=ssh_host.ssh_config)
    assert dry.returncode == 0, dry.stderr
    assert_no_control(dry.stdout + dry.stderr)
    assert SHOWN in dry.stderr and "evil" in dry.stdout and "name" in dry.stdout

    failed = gt("sync", "gaming-pc", "--pull", str(gt.home / "gt" / "absent"), ssh_config=ssh_host.ssh_config)
    assert failed.returncode == 1
    assert_no_control(failed.stdout + failed.stderr)
    assert SHOWN in failed.stderr and "gt-remote: error: rsync with gaming-pc failed: " in failed.stderr


# --- git's own files on a pull ----------------------------------------------------------

REMOTE_REPO = """
set -e
cd /home/gamer/gt/myrig
mkdir -p .git/hooks .git/modules/lib/hooks .git/worktrees/w vendor/tool/.git/hooks
printf 'ref: refs/heads/main\\n' > .git/HEAD
printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n\\tsshCommand = touch /tmp/pwned\\n' > .git/config
printf '#!/bin/sh\\ntouch /tmp/pwned\\n' > .git/hooks/post-checkout
printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n' > .git/modules/lib/config
printf '#!/bin/sh\\ntouch /tmp/pwned\\n' > .git/modules/lib/hooks/pre-commit
printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n' > .git/worktrees/w/config.worktree
printf 'ref: refs/heads/main\\n' > vendor/tool/.git/HEAD
printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n' > vendor/tool/.git/config
printf '#!/bin/sh\\ntouch /tmp/pwned\\n' > vendor/tool/.git/hooks/pre-push
printf 'print(1)\\n' > src.py
"""
GIT_RUNS_THESE = (".git/config", ".git/hooks", ".git/modules/lib/config", ".git/modules/lib/hooks", ".git/worktrees/w/config.worktree", "vendor/tool/.git/config", "vendor/tool/.git/hooks")


def make_remote_repo(host: SshHost) -> None:
    host.sh("mkdir -p /home/gamer/gt/myrig", user="gamer")
    host.sh(REMOTE_REPO, user="gamer")


def test_only_a_pull_leaves_out_git_files_and_only_unless_asked() -> None:
    """The command itself: unanchored rules for any depth, anchored ones for a git directory."""
    settings = settings_for_name("pc")
    checkout = sync.Transfer(Path("/tmp/rig"), "gt/rig", True)
    pulled = sync.rsync_command(settings, checkout, False, False, False)
    assert {"--exclude=.git/hooks/", "--exclude=.git/config", "--exclude=.git/modules/**/config"} <= set(pulled)
    assert pulled.index("--exclude=.git/config") < pulled.index("--")  # an option, not an operand
    assert not any(arg.startswith("--exclude=/") for arg in pulled)
    git_dir = sync.rsync_command(settings, sync.Transfer(Path("/tmp/rig/.git"), "gt/rig/.git", True), False, False, False)
    assert {"--exclude=/hooks/", "--exclude=/config"} <= set(git_dir)
    assert not any(arg.startswith("--exclude") for arg in sync.rsync_command(settings, checkout, True, False, False))
    assert not any(arg.startswith("--exclude") for arg in sync.rsync_command(settings, checkout, False, False, False, with_git_config=True))


@pytest.mark.docker
def test_sync_pull_leaves_out_the_remote_repos_hooks_and_config(gt: Gt, ssh_host: SshHost) -> None:
    """The docs' own `sync --pull ~/gt/myrig`: the remote's hooks and config (core.fsmonitor,
    core.sshCommand) never land here, in the repo, a submodule's or a nested checkout's git
    directory; the local .git/config stays, even with --delete; one line says so."""
    make_remote_repo(ssh_host)
    rig = gt.home / "gt" / "myrig"
    (rig / ".git").mkdir(parents=True)
    (rig / ".git" / "config").write_text("mine\n")

    pulled = gt("sync", "gaming-pc", "--pull", "--delete", str(rig), ssh_config=ssh_host.ssh_config)
    assert pulled.returncode == 0, pulled.stderr
    assert [name for name in GIT_RUNS_THESE if (rig / name).exists()] == [".git/config"]
    assert (rig / ".git" / "config").read_text() == "mine\n"
    assert (rig / ".git" / "HEAD").is_file() and (rig / "vendor/tool/.git/HEAD").is_file() and (rig / "src.py").is_file()
    assert pulled.stderr.splitlines().count(NOTICE) == 1 and "hiding" not in pulled.stdout + pulled.stderr

    (rig / ".git" / "config").unlink()
    git_dir = gt("sync", "gaming-pc", "--pull", str(rig / ".git"), ssh_config=ssh_host.ssh_config)  # the git directory itself
    assert git_dir.returncode == 0, git_dir.stderr
    assert [name for name in GIT_RUNS_THESE if (rig / name).exists()] == [] and NOTICE in git_dir.stderr.splitlines()

    ssh_host.sh("mkdir -p /home/gamer/notes && echo hi > /home/gamer/notes/a.txt", user="gamer")
    (gt.home / "notes").mkdir()  # a directory here too: its contents are synced, not itself
    plain = gt("sync", "gaming-pc", "--pull", str(gt.home / "notes"), ssh_config=ssh_host.ssh_config)
    assert plain.returncode == 0 and (gt.home / "notes" / "a.txt").is_file() and NOTICE not in plain.stderr


@pytest.mark.docker
def test_sync_pull_with_git_config_brings_them(ssh_host: SshHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The opt-in: the remote's hooks and config do come, and nothing says they were left out."""
    make_remote_repo(ssh_host)
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/gt/myrig here is gt/myrig there
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    rig = tmp_path / "gt" / "myrig"
    rig.mkdir(parents=True)
    said: list[str] = []
    sync.run(settings_for(ssh_host), [str(rig)], push=False, dry_run=False, delete=False, out=said.append, with_git_config=True)
    assert [name for name in GIT_RUNS_THESE if not (rig / name).exists()] == []
    assert "fsmonitor" in (rig / ".git" / "config").read_text() and not any("left out" in line for line in said)
