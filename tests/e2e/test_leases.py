"""Leases on the remote: two aliases share one server knowingly, a plain `down` releases its
lease, and the remote script keeps the lease when the relay cannot."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from gt_remote.remote.lease import LEASE_TOUCH_KEEPALIVES
from tests.conftest import Gt
from tests.e2e.helpers import our_server_pids, relay_request
from tests.helpers import answers, one_error_line
from tests.testbed import STANDIN, USER, SshHost, combined_ssh_config, free_loopback_port, wait_for


def row(gt: Gt, name: str = "gaming-pc") -> dict[str, Any]:
    [status] = gt.status(name)
    return status


LEASES = f"/home/{USER}/.local/state/gt-remote/leases/9999"


STARTS = f"/home/{USER}/.shell-starts"


CHECKS = 9


def count_shell_starts(host: SshHost) -> None:
    """The first line of ~/.bashrc appends a line to ~/.shell-starts: bash reads it for every
    command sshd runs, before anything else of it (Debian's returns early when not interactive)."""
    line = f"echo start >> {STARTS}"
    host.sh(f"printf '%s\\n' {shlex.quote(line)} | cat - /home/{USER}/.bashrc > /tmp/bashrc.new && cat /tmp/bashrc.new > /home/{USER}/.bashrc", user=USER)


def shell_starts(host: SshHost) -> int:
    return int(host.sh(f"cat {STARTS} 2>/dev/null | wc -l", user=USER).strip())


def lease_touched_at(host: SshHost) -> str:
    """The lease file's modification time, to the nanosecond: each touch changes it."""
    return host.sh(f"stat -c %.9Y {LEASES}/*", user=USER).strip()


def up_resumable(gt: Gt, host: SshHost) -> None:
    result = gt.up(host, "--keepalive", "1", "--local", f"tcp://127.0.0.1:{free_loopback_port()}")
    assert result.returncode == 0, result.stderr
    [status] = gt.status("gaming-pc")
    assert status["resumable"] is True


def health_checks(host: SshHost) -> int:
    """Health checks so far: each opens one relay stream for its Ping."""
    return int(relay_request(host, {"op": "stats"})["streams_total"])


def over_checks(host: SshHost, count: int) -> tuple[int, int]:
    """(shell starts, lease touches) over the next `count` health checks. The first check after
    `up` runs the script whatever the relay does (nothing vouched for the port yet): skipped."""
    wait_for(lambda: health_checks(host) >= 2, 60, "the first health checks")
    first, starts = health_checks(host), shell_starts(host)
    touches = {lease_touched_at(host)}

    def done() -> bool:
        touches.add(lease_touched_at(host))
        return health_checks(host) - first >= count

    wait_for(done, 60, f"{count} health checks")
    return shell_starts(host) - starts, len(touches) - 1  # the first value was there before


# --- shared accounts --------------------------------------------------------------------


def test_two_aliases_share_one_server_knowingly(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    twin = SshHost(ssh_host.container, "twin-pc", ssh_host.port, ssh_host.directory, ssh_host.key, host_key_line=ssh_host.host_key_line)
    gt.ssh_config = combined_ssh_config(tmp_path / "both_config", ssh_host, twin)
    first, second = (f"tcp://127.0.0.1:{free_loopback_port()}" for _ in range(2))
    assert gt("up", "gaming-pc", "--server-binary", str(STANDIN), "--local", first, "--keepalive", "1").returncode == 0
    result = gt("up", "twin-pc", "--local", second, "--keepalive", "1")
    assert result.returncode == 0, result.stderr
    assert answers(first) and answers(second)
    [server] = our_server_pids(ssh_host)
    assert row(gt, "twin-pc")["tunnels_sharing_server"] == 2
    wait_for(lambda: row(gt, "gaming-pc")["tunnels_sharing_server"] == 2, 20, "the first tunnel to see the second")
    assert "shared by 2 tunnels" in gt("status", "gaming-pc").stdout

    refused = gt("down", "gaming-pc", "--stop-server")
    assert refused.returncode != 0
    line = one_error_line(refused.stderr)
    assert "twin-pc" in line and "--force" in line
    assert our_server_pids(ssh_host) == [server] and answers(second) and answers(first)  # nothing stopped

    # With the first tunnel already down, `down --stop-server` connects by itself: the same refusal.
    assert gt("down", "gaming-pc").returncode == 0
    offline = gt("down", "gaming-pc", "--stop-server")
    assert offline.returncode != 0 and "twin-pc" in one_error_line(offline.stderr)
    assert our_server_pids(ssh_host) == [server] and answers(second)

    forced = gt("down", "gaming-pc", "--stop-server", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"stopped the remote server (pid {server})" in forced.stderr
    wait_for(lambda: server not in our_server_pids(ssh_host), 10, "the server to stop")
    # twin-pc's supervisor is still up: to it the server died, and it starts another one (not a
    # check that no server runs, which raced that restart on a loaded machine).
    wait_for(lambda: answers(second), 30, "twin-pc's supervisor to start the server again")


def test_a_plain_down_releases_the_lease(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    twin = SshHost(ssh_host.container, "twin-pc", ssh_host.port, ssh_host.directory, ssh_host.key, host_key_line=ssh_host.host_key_line)
    gt.ssh_config = combined_ssh_config(tmp_path / "both_config", ssh_host, twin)
    assert gt("up", "gaming-pc", "--server-binary", str(STANDIN), "--local", f"tcp://127.0.0.1:{free_loopback_port()}").returncode == 0
    assert gt("up", "twin-pc", "--local", f"tcp://127.0.0.1:{free_loopback_port()}").returncode == 0
    assert gt("down", "twin-pc").returncode == 0
    result = gt("down", "gaming-pc", "--stop-server")
    assert result.returncode == 0, result.stderr
    assert "stopped the remote server" in result.stderr


def test_when_the_relay_cannot_keep_the_lease_the_remote_script_does(gt: Gt, ssh_host: SshHost) -> None:
    count_shell_starts(ssh_host)
    up_resumable(gt, ssh_host)
    ssh_host.sh(f"chmod 500 {LEASES}", user=USER)  # the relay writes a new file; the script rewrites the old one
    starts, touches = over_checks(ssh_host, CHECKS)
    assert 2 <= starts <= CHECKS // LEASE_TOUCH_KEEPALIVES + 1, f"{starts} script runs over {CHECKS} health checks"
    assert touches >= 2, "the script kept the lease fresh"

