"""Two gt-remote versions on one remote account and port (#27).

Both use the port's one relay socket, so only one relay can serve it. A relay of another
version (another content hash) that another supervisor's live lease vouches for carries that
laptop's streams: it is left running, and this tunnel forwards plainly, saying why. One that no
other live lease vouches for is a leftover of an older version of our own: replaced, as before.

The "other version" here is the relay this test run builds with one byte more, uploaded to its
own hash directory and started exactly as relay_start starts one, as the same user.
"""

from __future__ import annotations

import hashlib
import shlex
from typing import Any

from gt_remote.remote.relay.deploy import agent_digest
from tests.conftest import Gt
from tests.helpers import agent_file, answers
from tests.testbed import SshHost, free_loopback_port, wait_for

PORT = 9999
HOME = "/home/gamer"
STATE = f"{HOME}/.local/state/gt-remote"
RELAYS = f"{HOME}/.local/share/gt-remote/relay"
OTHER_LEASE = "other-laptop-gaming-pc"


def start_other_version(host: SshHost) -> tuple[str, int]:
    """Another gt-remote version's relay for PORT, running as `gamer`: its agent path and pid."""
    agent = agent_file().read_bytes() + b"# another gt-remote version\n"
    agent_path = f"{RELAYS}/{hashlib.sha256(agent).hexdigest()[:16]}/relay_agent.py"
    assert agent_digest() not in agent_path
    q = shlex.quote
    host.sh(f"umask 077 && mkdir -p {q(agent_path.rsplit('/', 1)[0])} {q(STATE)}/relay-{PORT}", user="gamer")
    host.container.copy_into_container(agent, agent_path, 0o600)
    host.sh(f"chown gamer:gamer {q(agent_path)}")
    sock, pidfile = f"{STATE}/relay-{PORT}/sock", f"{STATE}/relay-{PORT}.pid"
    host.sh(
        f"umask 077; setsid nohup python3 -I {q(agent_path)} --socket {q(sock)} --port {PORT} --leases {q(STATE)}/leases/{PORT} </dev/null >>{q(STATE)}/relay-{PORT}.log 2>&1 & echo $! > {q(pidfile)}",
        user="gamer",
    )
    wait_for(lambda: host.exec(f"test -S {q(sock)}", user="gamer")[0] == 0, 15, "the other version's relay to listen")
    return agent_path, int(host.sh(f"cat {q(pidfile)}", user="gamer"))


def write_lease(host: SshHost, name: str, ttl: int, age: str = "") -> None:
    """A lease file as lease_touch writes it; `age` back-dates it (touch -d) to expire it."""
    path = shlex.quote(f"{STATE}/leases/{PORT}/{name}")
    host.sh(f"umask 077 && mkdir -p {shlex.quote(STATE)}/leases/{PORT} && echo {ttl} > {path}", user="gamer")
    if age:
        host.sh(f"touch -d {shlex.quote(age)} {path}", user="gamer")


def row(gt: Gt) -> dict[str, Any]:
    [status] = gt.status("gaming-pc")
    return status


def bring_up(gt: Gt, host: SshHost) -> int:
    """`up` on a local port of its own; the port."""
    port = free_loopback_port()
    result = gt.up(host, "--local", f"tcp://127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    return port


def test_another_versions_relay_with_a_live_lease_is_left_running(gt: Gt, ssh_host: SshHost) -> None:
    agent_path, pid = start_other_version(ssh_host)
    write_lease(ssh_host, OTHER_LEASE, ttl=3600)
    port = bring_up(gt, ssh_host)
    status = row(gt)
    assert status["resumable"] is False, status
    reason = status["resumable_reason"]
    assert "another gt-remote version" in reason and f"lease {OTHER_LEASE}" in reason and f"pid {pid}" in reason, reason
    assert ssh_host.pids(agent_path) == [pid], "the other laptop's relay was stopped"
    assert ssh_host.sh(f"cat {STATE}/relay-{PORT}.pid", user="gamer").strip() == str(pid)
    assert answers(f"tcp://127.0.0.1:{port}"), "the tunnel forwards plainly"
    shown = gt("status", "gaming-pc").stdout
    assert f"lease {OTHER_LEASE}" in shown, shown


def test_another_versions_relay_is_replaced_once_no_other_lease_holds_it(gt: Gt, ssh_host: SshHost) -> None:
    """Left over by an older gt-remote of our own (its lease long expired): replaced at `up`."""
    agent_path, pid = start_other_version(ssh_host)
    write_lease(ssh_host, OTHER_LEASE, ttl=60, age="2 hours ago")
    port = bring_up(gt, ssh_host)
    assert row(gt)["resumable"] is True, row(gt)
    assert ssh_host.pids(agent_path) == []
    assert len(ssh_host.pids(f"{RELAYS}/{agent_digest()}/relay_agent.py --socket")) == 1
    assert answers(f"tcp://127.0.0.1:{port}")


def test_a_reconnect_takes_the_port_back_once_the_other_tunnel_is_gone(gt: Gt, ssh_host: SshHost) -> None:
    """Reconnects check the relay with this supervisor's own lease name: its own lease never
    counts as another tunnel's, so once the other one's is gone, our relay replaces theirs."""
    agent_path, pid = start_other_version(ssh_host)
    write_lease(ssh_host, OTHER_LEASE, ttl=3600)
    port = bring_up(gt, ssh_host)
    assert row(gt)["resumable"] is False
    ssh_host.sh(f"rm {STATE}/leases/{PORT}/{OTHER_LEASE}", user="gamer")  # that laptop's `down`
    result = gt("reconnect", "gaming-pc", "--force")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: row(gt)["resumable"] is True, 30, "our relay to serve the port after the reconnect")
    assert ssh_host.pids(agent_path) == []
    assert answers(f"tcp://127.0.0.1:{port}")
