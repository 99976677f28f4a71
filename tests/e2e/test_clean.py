"""`gt-remote clean` on a real remote: partial uploads another `up` may still be writing stay,
running builds are kept, old builds and relay versions go, a symlink is never followed, a custom
install dir is cleaned too, and `--dry-run` changes nothing."""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

from gt_remote.commands.clean import CLEAN_SCRIPT
from gt_remote.remote.probe import file_digest
from gt_remote.remote.relay.deploy import agent_digest
from gt_remote.remote.scripts import REMOTE_RELAY_ROOT, script_text
from tests.conftest import Gt
from tests.e2e.helpers import HOME, REMOTE_STATE, SERVERS, free_local, new_build, remote_ls, server_pids
from tests.helpers import local_files, ping
from tests.testbed import STANDIN, SshHost, wait_for

RELAYS = f"{HOME}/{REMOTE_RELAY_ROOT}"


def exists(host: SshHost, path: str) -> bool:
    return host.exec(f"test -e {shlex.quote(path)}", user="gamer")[0] == 0


ROOT = f"{HOME}/.local/share/gt-remote"


PRECIOUS = f"{HOME}/precious"


ALBUMS = f"{HOME}/albums"


KEPT_LINK = "(a symbolic link; clean never follows one)"


def exists_or_link(host: SshHost, path: str) -> bool:
    return host.exec(f"test -e {shlex.quote(path)} || test -L {shlex.quote(path)}", user="gamer")[0] == 0


def snapshot(host: SshHost, *roots: str) -> str:
    """Every path under `roots` with its type, and every file's SHA-256: equal means untouched."""
    quoted = " ".join(shlex.quote(root) for root in roots)
    return host.sh(f"find {quoted} -printf '%y %p\\n' | sort && find {quoted} -type f -exec sha256sum {{}} + | sort", user="gamer")


def test_clean_leaves_partial_uploads_in_flight_and_removes_stale_ones(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host, "--local", "unix://" + str(gt.home / "ccmux.sock")).returncode == 0
    assert gt("down", "gaming-pc").returncode == 0
    build_dir = ssh_host.sh(f"ls -d {SERVERS}/*/", user="gamer").split()[0].rstrip("/")
    young, old, held = (f"{build_dir}/.ccmux-server.part-{tag}" for tag in ("young001", "old00002", "held0003"))
    uploading = f"{SERVERS}/ffffffffffffffff/.ccmux-server.part-other004"  # another machine's first upload
    ssh_host.sh(f"mkdir -p {SERVERS}/ffffffffffffffff && touch {young} {old} {held} {uploading}", user="gamer")
    ssh_host.sh(f"touch -d '2 hours ago' {old} {held}", user="gamer")
    ssh_host.spawn(f"exec 3>>{held}; exec sleep 300")  # a running upload holds its file open
    wait_for(lambda: bool(ssh_host.pids("sleep 300")), 10, "the holder to start")
    result = gt("clean", "gaming-pc")
    assert result.returncode == 0, result.stderr
    assert f"gaming-pc: removed {old} (a partial upload)" in result.stdout
    assert f"gaming-pc: kept {young} (an upload in progress)" in result.stdout
    assert f"gaming-pc: kept {held} (an upload in progress)" in result.stdout
    assert exists(ssh_host, young) and exists(ssh_host, held) and exists(ssh_host, uploading)
    assert not exists(ssh_host, old)


def test_clean_removes_old_relay_versions_and_partial_relay_uploads(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host, "--local", "unix://" + str(gt.home / "ccmux.sock")).returncode == 0
    current = f"{RELAYS}/{agent_digest()}"
    stale_version = f"{RELAYS}/0000000000000000"
    partial = f"{RELAYS}/1111111111111111/.relay_agent.part-dead0001"
    ssh_host.sh(f"mkdir -p {stale_version} {partial.rsplit('/', 1)[0]} && cp {current}/relay_agent.py {stale_version}/ && touch {partial}", user="gamer")
    ssh_host.sh(f"touch -d '2 hours ago' {partial}", user="gamer")
    result = gt("clean", "gaming-pc")
    assert result.returncode == 0, result.stderr
    assert f"gaming-pc: kept {current}/relay_agent.py (running)" in result.stdout
    assert f"gaming-pc: removed {stale_version} (an old relay version)" in result.stdout
    assert f"gaming-pc: removed {partial} (a partial upload)" in result.stdout
    assert not exists(ssh_host, stale_version) and not exists(ssh_host, partial.rsplit("/", 1)[0])
    assert exists(ssh_host, f"{current}/relay_agent.py")


def test_a_running_build_under_a_home_with_spaces_is_kept(ssh_host: SshHost, tmp_path: Path) -> None:
    """The script itself, run on the remote with HOME holding spaces, as a user's may."""
    home = "/tmp/gamer home/with  spaces"
    servers = f"{home}/.local/share/gt-remote/servers"
    running, newer = f"{servers}/aaaaaaaaaaaaaaaa/ccmux-server", f"{servers}/bbbbbbbbbbbbbbbb/ccmux-server"
    ssh_host.container.copy_into_container(STANDIN.read_bytes(), "/tmp/standin", 0o755)
    q = shlex.quote
    ssh_host.sh(f"mkdir -p {q(running.rsplit('/', 1)[0])} {q(newer.rsplit('/', 1)[0])} {q(home + '/.local/state/gt-remote')}"
                f" && cp /tmp/standin {q(running)} && cp /tmp/standin {q(newer)} && touch {q(newer + '.answered')} && touch -d '1 day ago' {q(running)}", user="gamer")
    ssh_host.spawn(f"cd /tmp && HOME={q(home)} exec {q(running)} --listen-tcp 127.0.0.1:9981 > /tmp/spaces.log 2>&1")
    wait_for(lambda: "listening on tcp" in ssh_host.exec("cat /tmp/spaces.log")[1], 10, "the build under a spaced home")
    [pid] = ssh_host.pids("--listen-tcp 127.0.0.1:9981")
    ssh_host.sh(f"echo {pid} > {q(home + '/.local/state/gt-remote/ccmux-server-9981.pid')}", user="gamer")
    script = script_text(CLEAN_SCRIPT, ("ccmux-server", "0", agent_digest(), REMOTE_RELAY_ROOT))
    ssh_host.container.copy_into_container(script.encode(), "/tmp/clean.sh", 0o644)
    code, output = ssh_host.exec(f"HOME={q(home)} sh /tmp/clean.sh", user="gamer")
    assert code == 0, output
    assert f"kept={running} (running)" in output.splitlines(), output
    assert f"kept={newer} (newest; the next up starts it)" in output.splitlines()
    assert exists(ssh_host, running) and ssh_host.pids("--listen-tcp 127.0.0.1:9981") == [pid]


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
    assert exists_or_link(ssh_host, build_link) and exists_or_link(ssh_host, f"{ROOT}/relay"), "the links themselves are the user's too"
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
    assert not exists_or_link(ssh_host, stale)
    assert exists_or_link(ssh_host, f"{current}/relay_agent.py") and exists_or_link(ssh_host, default_stale)


# --- clean -----------------------------------------------------------------------------


def test_clean_dry_run_then_clean(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    assert gt.up(ssh_host).returncode == 0
    old = file_digest(str(STANDIN))
    build = new_build(tmp_path)
    assert gt("upgrade", "gaming-pc", "--server-binary", str(build), "--yes").returncode == 0
    [pid] = server_pids(ssh_host)
    assert gt("down", "gaming-pc").returncode == 0
    ssh_host.sh(f"echo 999999 > {REMOTE_STATE}/ccmux-server-9990.pid", user="gamer")
    ssh_host.sh(f"mkdir -p {SERVERS}/0123456789abcdef", user="gamer")  # an empty install directory
    ssh_host.sh(f"touch {SERVERS}/{old}/ccmux-server", user="gamer")  # the old build is now the newest...
    ssh_host.sh(f"mkdir -p {SERVERS}/aaaaaaaaaaaaaaaa && cp {SERVERS}/{old}/ccmux-server {SERVERS}/{old}/ccmux-server.answered {SERVERS}/aaaaaaaaaaaaaaaa/", user="gamer")
    ssh_host.sh(f"touch -d '2001-01-01' {SERVERS}/aaaaaaaaaaaaaaaa/ccmux-server", user="gamer")  # ...and this one old
    before = local_files(gt)
    assert before
    dry = gt("clean", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"gaming-pc: would remove {SERVERS}/aaaaaaaaaaaaaaaa (an old build)" in dry.stdout
    assert f"gaming-pc: would remove {REMOTE_STATE}/ccmux-server-9990.pid (stale pid file)" in dry.stdout
    assert f"gaming-pc: would remove {SERVERS}/0123456789abcdef (empty or half-uploaded)" in dry.stdout
    assert f"kept {SERVERS}/{file_digest(str(build))}/ccmux-server (running)" in dry.stdout
    assert "local: would remove" in dry.stdout
    assert local_files(gt) == before and len(remote_ls(ssh_host, SERVERS)) == 4
    result = gt("clean")
    assert result.returncode == 0, result.stderr
    assert sorted(remote_ls(ssh_host, SERVERS)) == sorted([old, file_digest(str(build))])
    assert remote_ls(ssh_host, REMOTE_STATE + "/*.pid") == [f"{REMOTE_STATE}/ccmux-server-9999.pid", f"{REMOTE_STATE}/relay-9999.pid"]  # both live: kept
    assert server_pids(ssh_host) == [pid]
    assert local_files(gt) == [str(gt.home / ".local/state/gt-remote/reached/gaming-pc.json")]  # how the next clean reaches it


def test_clean_keeps_the_local_files_of_a_host_that_is_up(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    before = local_files(gt)
    result = gt("clean")
    assert result.returncode == 0, result.stderr
    assert "local:" not in result.stdout
    assert local_files(gt) == before
    ping(gt.local())



# --- every remote gt-remote ever brought up, until --forget (#30) ---------------------------


def test_clean_reaches_a_remote_after_down_stop_server_until_told_to_forget_it(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """`down --stop-server` forgets the server it stopped (reach.forget), not the builds it
    uploaded: `clean` still reaches the remote and removes the old one, as setup.md's uninstall
    says, and again after a clean of the local files, until `clean HOST --forget`."""
    assert gt.up(ssh_host, "--local", free_local()).returncode == 0
    build = new_build(tmp_path)
    assert gt("upgrade", "gaming-pc", "--server-binary", str(build), "--yes").returncode == 0
    assert gt("down", "gaming-pc", "--stop-server").returncode == 0
    old, new = file_digest(str(STANDIN)), file_digest(str(build))
    result = gt("clean")
    assert result.returncode == 0, result.stderr
    assert f"gaming-pc: removed {SERVERS}/{old} (an old build)" in result.stdout, result.stdout
    assert f"gaming-pc: kept {SERVERS}/{new}/ccmux-server (newest; the next up starts it)" in result.stdout
    assert remote_ls(ssh_host, SERVERS) == [new]
    assert local_files(gt) == [str(gt.home / ".local/state/gt-remote/reached/gaming-pc.json")]  # the one record kept

    stray = f"{SERVERS}/bbbbbbbbbbbbbbbb"  # a build of another day, found by the next clean
    ssh_host.sh(f"mkdir -p {stray} && cp {SERVERS}/{new}/ccmux-server {SERVERS}/{new}/ccmux-server.answered {stray}/ && touch -d '2001-01-01' {stray}/ccmux-server", user="gamer")
    again = gt("clean", "gaming-pc", "--forget")
    assert again.returncode == 0, again.stderr
    assert f"gaming-pc: removed {stray} (an old build)" in again.stdout, again.stdout
    assert "gaming-pc: forgot its remote; later cleans do not connect there" in again.stdout
    assert local_files(gt) == []

    ssh_host.sh(f"mkdir -p {stray} && cp {SERVERS}/{new}/ccmux-server {stray}/", user="gamer")
    forgotten = gt("clean")
    assert forgotten.returncode == 0, forgotten.stderr
    assert "gaming-pc" not in forgotten.stdout + forgotten.stderr and forgotten.stdout.strip() == "nothing to clean"
    assert exists(ssh_host, stray)


def test_clean_forget_of_a_remote_gone_for_good_forgets_it(gt: Gt, ssh_host: SshHost) -> None:
    """A gaming PC that no longer answers: its clean is said, not a failure, and it is forgotten."""
    assert gt.up(ssh_host, "--local", free_local()).returncode == 0
    assert gt("down", "gaming-pc", "--stop-server").returncode == 0
    with socket.socket() as spare:  # the machine is gone: its address now refuses
        spare.bind(("127.0.0.1", 0))
        ssh_host.ssh_config.write_text(ssh_host.config_block().replace(f"Port {ssh_host.port}", f"Port {spare.getsockname()[1]}"))
    result = gt("clean", "gaming-pc", "--forget")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gaming-pc: could not clean up the remote" in result.stdout
    assert "gaming-pc: forgot its remote" in result.stdout
    assert local_files(gt) == []


def test_a_build_that_never_answered_a_ping_is_no_newest_build(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """A build that names the server but never answers (it exits at once) is uploaded, fails its
    start, and is never "the newest": clean keeps the one that answered, and removes the other
    once it is an hour old (younger, an `up` may be starting it)."""
    local = free_local()
    assert gt.up(ssh_host, "--local", local).returncode == 0
    assert gt("down", "gaming-pc", "--stop-server").returncode == 0
    broken = never_answers(tmp_path)
    failed = gt("up", "gaming-pc", "--server-binary", str(broken), "--local", local, ssh_config=ssh_host.ssh_config)
    assert failed.returncode == 1, failed.stderr
    good, bad = file_digest(str(STANDIN)), file_digest(str(broken))
    young = gt("clean", "gaming-pc", "--dry-run")
    assert f"gaming-pc: kept {SERVERS}/{good}/ccmux-server (newest; the next up starts it)" in young.stdout, young.stdout
    assert f"gaming-pc: kept {SERVERS}/{bad}/ccmux-server (it never answered a Ping yet; an up may be starting it)" in young.stdout
    ssh_host.sh(f"touch -d '2 hours ago' {SERVERS}/{bad}/ccmux-server", user="gamer")
    result = gt("clean", "gaming-pc")
    assert f"gaming-pc: removed {SERVERS}/{bad} (a build that never answered a Ping)" in result.stdout, result.stdout
    assert remote_ls(ssh_host, SERVERS) == [good]


def never_answers(tmp_path: Path) -> Path:
    """A build that says it is ccmux-server, and exits as soon as it is started."""
    path = tmp_path / "broken" / "ccmux-server"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'ccmux-server 9.9.9'; exit 0; fi\necho 'ccmux-server: cannot start' >&2\nexit 1\n")
    path.chmod(0o755)
    return path
