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

import shlex

from gt_remote.remote.lease import LEASE_TOUCH_KEEPALIVES
from tests.conftest import Gt
from tests.e2e.helpers import relay_request
from tests.testbed import SshHost, free_loopback_port, wait_for

USER = "gamer"


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

