"""`gt-remote logs`: the supervisor's log, shown and rotated."""

from __future__ import annotations

from tests.conftest import Gt
from tests.e2e.helpers import bring_up
from tests.testbed import SshHost


def test_logs_command_and_rotation(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    result = gt("logs", "gaming-pc")
    assert result.returncode == 0 and "up: tcp://127.0.0.1:9999" in result.stdout
    missing = gt("logs", "nowhere")
    assert missing.returncode == 1 and "no log for nowhere" in missing.stderr

