"""`clean` looks where `up` put things, and never through a symbolic link (#27).

Builds and relays live under <install_dir>/gt-remote/{servers,relay}; a host brought up with
--install-dir keeps its relays there, so that is where `clean` must find the old ones. And
gt-remote makes no symbolic links under its roots: a link there (or in place of a root) points
at something of the user's, which `rm -rf` through the link would destroy.
"""

from __future__ import annotations

import shlex

from gt_remote.remote.relay.deploy import agent_digest
from tests.conftest import Gt
from tests.testbed import SshHost

HOME = "/home/gamer"
ROOT = f"{HOME}/.local/share/gt-remote"
PRECIOUS = f"{HOME}/precious"
ALBUMS = f"{HOME}/albums"
KEPT_LINK = "(a symbolic link; clean never follows one)"


def exists(host: SshHost, path: str) -> bool:
    return host.exec(f"test -e {shlex.quote(path)} || test -L {shlex.quote(path)}", user="gamer")[0] == 0


def snapshot(host: SshHost, *roots: str) -> str:
    """Every path under `roots` with its type, and every file's SHA-256: equal means untouched."""
    quoted = " ".join(shlex.quote(root) for root in roots)
    return host.sh(f"find {quoted} -printf '%y %p\\n' | sort && find {quoted} -type f -exec sha256sum {{}} + | sort", user="gamer")


def test_clean_never_follows_a_symlink_under_the_install_root(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host, "--local", "unix://" + str(gt.home / "ccmux.sock")).returncode == 0
    assert gt("down", "gaming-pc").returncode == 0
    q = shlex.quote
    # The user's own files, shaped like what clean removes: an old partial upload, a build-like
    # directory, a relay-version-like directory.
    ssh_host.sh(
        f"mkdir -p {q(PRECIOUS)}/photos {q(ALBUMS)}/2019 {q(ALBUMS)}/0000000000000000"
        f" && echo 'the only copy' > {q(PRECIOUS)}/photos/a.jpg && echo notes > {q(PRECIOUS)}/notes.txt"
        f" && echo draft > {q(PRECIOUS)}/.notes.txt.part-0001 && touch -d '2 hours ago' {q(PRECIOUS)}/.notes.txt.part-0001"
        f" && echo holiday > {q(ALBUMS)}/2019/b.jpg && echo old > {q(ALBUMS)}/0000000000000000/c.jpg",
        user="gamer",
    )
    build_link = f"{ROOT}/servers/cafecafecafecafe"  # a link among the builds
    ssh_host.sh(f"ln -s {q(PRECIOUS)} {q(build_link)}", user="gamer")
    ssh_host.sh(f"mv {q(ROOT)}/relay {q(ROOT)}/relay.real && ln -s {q(ALBUMS)} {q(ROOT)}/relay", user="gamer")  # a root that is a link
    before = snapshot(ssh_host, PRECIOUS, ALBUMS)
    result = gt("clean", "gaming-pc")
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot(ssh_host, PRECIOUS, ALBUMS) == before, result.stdout
    assert exists(ssh_host, build_link) and exists(ssh_host, f"{ROOT}/relay"), "the links themselves are the user's too"
    assert f"gaming-pc: kept {build_link} {KEPT_LINK}" in result.stdout, result.stdout
    assert f"gaming-pc: kept {ROOT}/relay {KEPT_LINK}" in result.stdout, result.stdout


def test_clean_removes_old_relays_under_a_custom_install_dir(gt: Gt, ssh_host: SshHost) -> None:
    games = f"{HOME}/games dir"  # a space too: every path in the script stays one word
    relays = f"{games}/gt-remote/relay"
    result = gt.up(ssh_host, "--local", "unix://" + str(gt.home / "ccmux.sock"), "--install-dir", games)
    assert result.returncode == 0, result.stderr
    current = f"{relays}/{agent_digest()}"
    stale = f"{relays}/0000000000000000"
    default_stale = f"{ROOT}/relay/1111111111111111"  # not where this host's relays are: not clean's to judge
    q = shlex.quote
    ssh_host.sh(f"mkdir -p {q(stale)} {q(default_stale)} && cp {q(current)}/relay_agent.py {q(stale)}/ && cp {q(current)}/relay_agent.py {q(default_stale)}/", user="gamer")
    result = gt("clean", "gaming-pc")
    assert result.returncode == 0, result.stderr
    assert f"gaming-pc: removed {stale} (an old relay version)" in result.stdout, result.stdout
    assert f"gaming-pc: kept {current}/relay_agent.py (running)" in result.stdout, result.stdout
    assert not exists(ssh_host, stale)
    assert exists(ssh_host, f"{current}/relay_agent.py") and exists(ssh_host, default_stale)
