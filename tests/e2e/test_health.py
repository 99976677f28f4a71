"""What an idle tunnel's health checks cost the remote.

The port-and-lease script starts the login shell (with its start-up files, which on a gaming
PC may be slow) and a dozen small programs. With resumable streams, the health Ping goes
through the relay, which checks who holds the port as it dials, and the relay's lease op
refreshes the lease: an idle tunnel then starts no shell at all. The script comes back
whenever the relay cannot do its part. Shell starts are counted by the account's own
start-up file, against the relay's count of health-Ping streams, so the tests follow health
checks, not the clock. That a squat is still caught is tests/e2e/test_other_accounts.py's job
(test_a_squatted_port_is_never_forwarded_to)."""

from __future__ import annotations

from gt_remote.remote.lease import LEASE_TOUCH_KEEPALIVES
from tests.conftest import Gt
from tests.e2e.helpers import CHECKS, LEASES, count_shell_starts, over_checks, shell_starts, up_resumable
from tests.testbed import USER, SshHost


def failed_relay_pings(gt: Gt) -> int:
    """Health Pings through the relay that failed, from the supervisor's log: after each, the
    script rightly runs (a machine loaded past the Ping's time limit)."""
    logs = (gt.home / ".local/state/gt-remote/logs").glob("*.log")
    return sum(path.read_text().count("health Ping through the relay failed") for path in logs)


def test_an_idle_resumable_tunnel_starts_no_shell_on_the_remote(gt: Gt, ssh_host: SshHost) -> None:
    count_shell_starts(ssh_host)
    up_resumable(gt, ssh_host)
    assert shell_starts(ssh_host) > 0, "up's own scripts start the shell: the counter counts"
    failed_before = failed_relay_pings(gt)
    starts, touches = over_checks(ssh_host, CHECKS)
    excused = failed_relay_pings(gt) - failed_before
    assert starts <= excused, f"{starts} shell starts over {CHECKS} health checks, {excused} of them after a failed relay Ping"
    assert touches >= CHECKS // LEASE_TOUCH_KEEPALIVES - 1, f"the lease was touched {touches} times over {CHECKS} health checks"
    assert ssh_host.sh(f"cat {LEASES}/*", user=USER).strip().isdigit(), "the lease holds its ttl, as the script writes it"

