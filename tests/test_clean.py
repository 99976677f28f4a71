"""`clean` on a real remote: partial uploads another `up` may still be writing stay, running
builds are found through /proc even under a home path with spaces, and old relay versions and
partial relay uploads go."""

from __future__ import annotations

import shlex
from pathlib import Path

from gt_remote.commands.clean import CLEAN_SCRIPT
from gt_remote.remote.relay.deploy import agent_digest
from gt_remote.remote.scripts import REMOTE_RELAY_ROOT, script_text
from tests.conftest import Gt
from tests.testbed import STANDIN, SshHost, wait_for

HOME = "/home/gamer"
SERVERS = f"{HOME}/.local/share/gt-remote/servers"
RELAYS = f"{HOME}/{REMOTE_RELAY_ROOT}"


def exists(host: SshHost, path: str) -> bool:
    return host.exec(f"test -e {shlex.quote(path)}", user="gamer")[0] == 0


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
                f" && cp /tmp/standin {q(running)} && cp /tmp/standin {q(newer)} && touch -d '1 day ago' {q(running)}", user="gamer")
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
