"""What an idle tunnel's health checks cost the remote.

The port-and-lease script starts the login shell (with its start-up files, which on a gaming
PC may be slow) and a dozen small programs. With resumable streams, the health Ping goes
through the relay, which checks who holds the port as it dials; the script then runs only
when the lease needs touching, every third health check. Counted against the relay's own
count of health-Ping streams, so the test follows health checks, not the clock. That a squat
is still caught is tests/test_bringup.py's job (test_a_squatted_port_is_never_forwarded_to).
"""

from __future__ import annotations

from gt_remote.bootstrap.lease import LEASE_TOUCH_KEEPALIVES
from tests.conftest import Gt
from tests.test_resume import relay_request
from tests.testbed import SshHost, free_loopback_port, wait_for

LEASE = "/home/gamer/.local/state/gt-remote/leases/9999"
CHECKS = 9


def lease_touched_at(host: SshHost) -> str:
    """The lease file's modification time, to the nanosecond: each script run writes it."""
    return host.sh(f"stat -c %.9Y {LEASE}/*", user="gamer").strip()


def test_an_idle_resumable_tunnel_runs_the_remote_script_every_third_check(gt: Gt, ssh_host: SshHost) -> None:
    result = gt.up(ssh_host, "--keepalive", "1", "--local", f"tcp://127.0.0.1:{free_loopback_port()}")
    assert result.returncode == 0, result.stderr
    [status] = gt.status("gaming-pc")
    assert status["resumable"] is True
    first = relay_request(ssh_host, {"op": "stats"})["streams_total"]
    touches = {lease_touched_at(ssh_host)}

    def checks_done() -> bool:  # each health check opens one relay stream for its Ping
        touches.add(lease_touched_at(ssh_host))
        return relay_request(ssh_host, {"op": "stats"})["streams_total"] - first >= CHECKS

    wait_for(checks_done, 60, f"{CHECKS} health checks")
    runs = len(touches) - 1  # the first value was there before the window
    assert 1 <= runs <= CHECKS // LEASE_TOUCH_KEEPALIVES + 1, f"{runs} script runs over {CHECKS} health checks"
