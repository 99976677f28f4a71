"""Leases on the remote: two aliases share one server knowingly, a plain `down` releases its
lease, and the remote script keeps the lease when the relay cannot."""

from __future__ import annotations

from pathlib import Path

from gt_remote.remote.lease import LEASE_TOUCH_KEEPALIVES
from tests.conftest import Gt
from tests.e2e.helpers import CHECKS, LEASES, count_shell_starts, our_server_pids, over_checks, row, up_resumable
from tests.helpers import answers, one_error_line
from tests.testbed import STANDIN, USER, SshHost, combined_ssh_config, free_loopback_port, wait_for


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

