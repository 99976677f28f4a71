"""`gt-remote sync` against a real sshd: push, pull and dry run, `--delete`, paths from the config,
rsync's own messages, chatty login shells, git files, rsync missing on either side, and trees
holding a live database refused both ways unless `--force`."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from gt_remote.base.config import HostSettings
from gt_remote.commands import sync
from tests.conftest import Gt
from tests.helpers import SEQUENCES, SHOWN, assert_no_control, one_error_line
from tests.testbed import SshHost

NOTICE = "gt-remote: left out .git/hooks and .git/config (git runs them); --with-git-config brings them"


def settings_for(host: SshHost) -> HostSettings:
    return HostSettings(name=host.alias, destination=host.alias, local_url="tcp://127.0.0.1:9999", ssh_config=str(host.ssh_config))


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


# --- sync -------------------------------------------------------------------------------


def make_rig(root: Path) -> Path:
    rig = root / "gt" / "rig1"
    (rig / "notes").mkdir(parents=True)
    (rig / "notes" / "plan.md").write_text("- [ ] step 1\n")
    (rig / "src.py").write_text("print('polecat')\n")
    return rig


def test_sync_shows_rsyncs_own_messages(gt: Gt, ssh_host: SshHost) -> None:
    target = gt.home / "never-made"
    result = gt("sync", "gaming-pc", "--pull", str(target), ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    assert any(line.startswith("rsync: [sender] link_stat") and "No such file or directory" in line for line in result.stderr.splitlines()[:-1]), result.stderr
    line = one_error_line(result.stderr)
    assert "rsync with gaming-pc failed: " in line and "No such file or directory" in line
    assert "\r" not in result.stdout + result.stderr
    ssh_host.known_hosts.write_text("")
    unknown = gt("sync", "gaming-pc", str(gt.home), ssh_config=ssh_host.ssh_config)
    assert "Host key verification failed" in unknown.stderr and unknown.returncode == 1


@pytest.mark.parametrize(("user", "file", "guard"), [("bashy", "~/.bashrc", "[ -t 1 ]"), ("zshy", "~/.zshenv", "[ -t 1 ]"), ("fishy", "~/.config/fish/config.fish", "status is-interactive"), ("dashy", "~/.ssh/rc", "[ -t 1 ]")])
def test_sync_on_a_chatty_shell_names_the_start_up_file(gt: Gt, chatty: SshHost, user: str, file: str, guard: str) -> None:
    host = chatty.as_user(user, alias="pc")
    folder = gt.home / "rig"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello\n")
    result = gt("sync", host.alias, "--push", str(folder), ssh_config=host.ssh_config)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "protocol version mismatch" in line and file in line and guard in line


def test_sync_names_the_file_that_prints_not_the_login_shells(gt: Gt, ssh_host: SshHost) -> None:
    """#30.7: ~/.ssh/rc prints, and the bash login's ~/.bashrc (Debian's) is already guarded:
    sync names ~/.ssh/rc, found by running each start-up file there, and not ~/.bashrc."""
    quiet_bashrc = ssh_host.sh("cd && bash --norc --noprofile -c '. ./.bashrc' </dev/null | wc -c", user="gamer").strip()
    assert quiet_bashrc == "0", "the check is void: gamer's ~/.bashrc is to print nothing when not interactive"
    ssh_host.sh("printf 'echo Welcome to the gaming PC\\n' > /home/gamer/.ssh/rc", user="gamer")
    folder = gt.home / "rig"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello\n")
    result = gt("sync", "gaming-pc", "--push", str(folder), ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "failed: ~/.ssh/rc on gaming-pc prints text for non-interactive commands" in line and "in ~/.ssh/rc on gaming-pc, wrap what it prints in 'if [ -t 1 ]" in line
    assert "bashrc" not in line
    ssh_host.sh("printf 'if [ -t 1 ]; then echo Welcome to the gaming PC; fi\\n' > /home/gamer/.ssh/rc", user="gamer")  # the fix it gives
    assert gt("sync", "gaming-pc", "--push", str(folder), ssh_config=ssh_host.ssh_config).returncode == 0


def test_sync_works_once_the_start_up_file_is_guarded(gt: Gt, chatty: SshHost) -> None:
    """The fix the message gives really fixes it."""
    host = chatty.as_user("fishy", alias="pc")
    chatty.sh("printf 'if status is-interactive\\n    cat /etc/gt-remote-banner\\nend\\n' > /home/fishy/.config/fish/config.fish")
    folder = gt.home / "rig"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello\n")
    result = gt("sync", host.alias, "--push", str(folder), ssh_config=host.ssh_config)
    assert result.returncode == 0, result.stderr
    assert chatty.sh("cat /home/fishy/rig/notes.txt", user="fishy") == "hello\n"


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


def test_sync_push_pull_round_trip_and_dry_run(gt: Gt, ssh_host: SshHost) -> None:
    rig = make_rig(gt.home)
    pushed = gt("sync", "gaming-pc", "--push", str(rig), ssh_config=ssh_host.ssh_config)
    assert pushed.returncode == 0, pushed.stderr
    assert ssh_host.sh("cat /home/gamer/gt/rig1/notes/plan.md", user="gamer") == "- [ ] step 1\n"

    ssh_host.sh("echo '- [ ] step 2' >> /home/gamer/gt/rig1/notes/plan.md && echo new > /home/gamer/gt/rig1/remote.txt", user="gamer")
    dry = gt("sync", "gaming-pc", "--pull", "--dry-run", str(rig), ssh_config=ssh_host.ssh_config)
    assert dry.returncode == 0, dry.stderr
    assert not (rig / "remote.txt").exists() and "step 2" not in (rig / "notes/plan.md").read_text()
    assert "remote.txt" in dry.stdout

    pulled = gt("sync", "gaming-pc", "--pull", str(rig), ssh_config=ssh_host.ssh_config)
    assert pulled.returncode == 0, pulled.stderr
    assert (rig / "remote.txt").read_text() == "new\n" and "step 2" in (rig / "notes/plan.md").read_text()
    listing = lambda: sorted(str(p.relative_to(rig)) for p in rig.rglob("*"))  # noqa: E731
    assert listing() == ["notes", "notes/plan.md", "remote.txt", "src.py"]


def test_sync_never_deletes_without_delete(gt: Gt, ssh_host: SshHost) -> None:
    rig = make_rig(gt.home)
    assert gt("sync", "gaming-pc", str(rig), ssh_config=ssh_host.ssh_config).returncode == 0
    (rig / "src.py").unlink()
    assert gt("sync", "gaming-pc", str(rig), ssh_config=ssh_host.ssh_config).returncode == 0
    assert ssh_host.exec("test -f /home/gamer/gt/rig1/src.py")[0] == 0
    assert gt("sync", "gaming-pc", "--delete", str(rig), ssh_config=ssh_host.ssh_config).returncode == 0
    assert ssh_host.exec("test -f /home/gamer/gt/rig1/src.py")[0] != 0


def test_sync_paths_from_config(gt: Gt, ssh_host: SshHost) -> None:
    rig = make_rig(gt.home)
    config = gt.home / "config.toml"
    config.write_text(f'[hosts.gaming-pc]\nsync = ["{rig}"]\n')
    result = gt("--config", str(config), "sync", "gaming-pc", ssh_config=ssh_host.ssh_config)
    assert result.returncode == 0, result.stderr
    assert ssh_host.exec("test -f /home/gamer/gt/rig1/src.py")[0] == 0
    nothing = gt("sync", "gaming-pc", ssh_config=ssh_host.ssh_config)
    assert nothing.returncode == 2 and "nothing to sync" in nothing.stderr


def test_sync_without_rsync_on_either_side(gt: Gt, ssh_host: SshHost) -> None:
    rig = make_rig(gt.home)
    ssh_host.sh("rm /usr/bin/rsync")
    remote = gt("sync", "gaming-pc", str(rig), ssh_config=ssh_host.ssh_config)
    assert remote.returncode == 1 and "rsync is not installed on gaming-pc" in remote.stderr
    gt.env["PATH"] = "/nonexistent"
    local = gt("sync", "gaming-pc", str(rig), ssh_config=ssh_host.ssh_config)
    assert local.returncode == 1 and "rsync is not installed on this machine" in local.stderr



# --- live databases ---------------------------------------------------------------------

DOLT_FIX = "beads live in the town's Dolt server and reach gaming-pc through the back tunnel ('gt-remote up gaming-pc --back dolt')"


def test_sync_push_refuses_a_tree_with_a_live_database_and_force_copies_it(gt: Gt, ssh_host: SshHost) -> None:
    """Dolt's data directory, or SQLite with its -wal: refused before rsync starts (a dry run
    too), nothing reaches the gaming PC; --force copies it all."""
    rig = make_rig(gt.home)
    (rig / ".dolt-data" / "beads" / ".dolt").mkdir(parents=True)
    (rig / ".dolt-data" / "beads" / ".dolt" / "manifest").write_text("live\n")
    for extra in ((), ("--dry-run",)):
        refused = gt("sync", "gaming-pc", "--push", *extra, str(rig), ssh_config=ssh_host.ssh_config)
        assert refused.returncode == 1 and refused.stdout == ""
        assert one_error_line(refused.stderr) == (
            "gt-remote: error: refusing to sync ~/gt/rig1: it holds a live database (.dolt-data/ at ~/gt/rig1/.dolt-data; "
            f"copying a running database's files corrupts it); {DOLT_FIX}; sync a path without it, or stop the database and pass --force to copy it anyway"
        )
        assert len(refused.stderr.splitlines()) == 1  # not even the announcement: nothing started
    assert ssh_host.exec("test -e /home/gamer/gt")[0] != 0

    notes = gt.home / "notes"
    notes.mkdir()
    (notes / "cache.sqlite").write_text("db\n")
    (notes / "cache.sqlite-wal").write_text("wal\n")
    sqlite = gt("sync", "gaming-pc", "--push", str(rig / "src.py"), str(notes), ssh_config=ssh_host.ssh_config)
    assert sqlite.returncode == 1
    assert "refusing to sync ~/notes: it holds a live database (cache.sqlite with cache.sqlite-wal at ~/notes/cache.sqlite;" in one_error_line(sqlite.stderr)
    assert ssh_host.exec("test -e /home/gamer/gt/rig1/src.py")[0] != 0  # the first path, clean, was not sent either

    forced = gt("sync", "gaming-pc", "--push", "--force", str(rig), ssh_config=ssh_host.ssh_config)
    assert forced.returncode == 0, forced.stderr
    assert ssh_host.sh("cat /home/gamer/gt/rig1/.dolt-data/beads/.dolt/manifest /home/gamer/gt/rig1/src.py", user="gamer") == "live\nprint('polecat')\n"


def test_sync_pull_refuses_a_remote_tree_with_a_live_database(gt: Gt, ssh_host: SshHost) -> None:
    """Found there, in one remote command, before rsync runs: nothing lands here; --force pulls.
    A path with a space, a quote and `$(...)` reaches find as one path."""
    ssh_host.sh("mkdir -p /home/gamer/gt/rig/sub/.dolt/noms && echo live > /home/gamer/gt/rig/sub/.dolt/noms/manifest && echo hi > /home/gamer/gt/rig/a.txt", user="gamer")
    rig = gt.home / "gt" / "rig"
    refused = gt("sync", "gaming-pc", "--pull", str(rig), ssh_config=ssh_host.ssh_config)
    assert refused.returncode == 1 and refused.stdout == ""
    assert one_error_line(refused.stderr) == (
        "gt-remote: error: refusing to sync ~/gt/rig from gaming-pc: it holds a live database there (.dolt/ at ~/gt/rig/sub/.dolt; "
        f"copying a running database's files corrupts it); {DOLT_FIX}; sync a path without it, or stop the database and pass --force to copy it anyway"
    )
    assert not (gt.home / "gt").exists()

    odd = "it's $(touch pwned) x"
    ssh_host.sh(f"cd /home/gamer && mkdir -p {shlex.quote(odd)} && touch {shlex.quote(odd)}/app.db {shlex.quote(odd)}/app.db-wal", user="gamer")
    sqlite = gt("sync", "gaming-pc", "--pull", "--dry-run", str(gt.home / odd), ssh_config=ssh_host.ssh_config)
    assert sqlite.returncode == 1
    assert f"refusing to sync ~/{odd} from gaming-pc: it holds a live database there (app.db with app.db-wal at ~/{odd}/app.db;" in one_error_line(sqlite.stderr)
    assert ssh_host.exec("test -e /home/gamer/pwned")[0] != 0 and not (gt.home / odd).exists()

    rig.mkdir(parents=True)  # a directory here too: its contents are synced, not itself
    forced = gt("sync", "gaming-pc", "--pull", "--force", str(rig), ssh_config=ssh_host.ssh_config)
    assert forced.returncode == 0, forced.stderr
    assert (rig / "sub" / ".dolt" / "noms" / "manifest").read_text() == "live\n" and (rig / "a.txt").read_text() == "hi\n"


def test_sync_pull_of_a_clean_tree_still_works_on_a_chatty_fish_login(gt: Gt, chatty: SshHost) -> None:
    """The remote search runs under fish's `sh -s`, past its banner: a tree with a database is
    refused by name, a clean one is left to rsync (whose own error names the start-up file)."""
    host = chatty.as_user("fishy", alias="pc")
    chatty.sh("mkdir -p /home/fishy/db/.dolt /home/fishy/clean && echo x > /home/fishy/clean/a.txt", user="fishy")
    refused = gt("sync", host.alias, "--pull", str(gt.home / "db"), ssh_config=host.ssh_config)
    assert refused.returncode == 1 and "refusing to sync ~/db from pc: it holds a live database there (.dolt/ at ~/db/.dolt;" in one_error_line(refused.stderr)
    clean = gt("sync", host.alias, "--pull", str(gt.home / "clean"), ssh_config=host.ssh_config)
    assert clean.returncode == 1 and "protocol version mismatch" in one_error_line(clean.stderr)
