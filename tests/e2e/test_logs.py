"""`gt-remote logs`: the supervisor's log, shown and rotated."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import Gt
from tests.e2e.helpers import bring_up
from tests.testbed import SshHost


def test_logs_command_and_rotation(gt: Gt, ssh_host: SshHost) -> None:
    bring_up(gt, ssh_host)
    result = gt("logs", "gaming-pc")
    assert result.returncode == 0 and f"up: {gt.local()}" in result.stdout
    missing = gt("logs", "nowhere")
    assert missing.returncode == 1 and "no log for nowhere" in missing.stderr



PYTHON_WARNING = re.compile(r"\b[A-Z]\w*Warning: ")  # how Python prints a warning: `file:line: CategoryWarning: message`


def test_no_library_deprecation_notice_reaches_a_terminal_or_a_log(gt: Gt, ssh_host: SshHost) -> None:
    """#30.3: asyncssh's import makes cryptography warn ("DSA is deprecated", ten lines). None
    of it reaches doctor's, up's, a failing sync's or `down --stop-server`'s stderr, nor the
    supervisor's log (its stderr); -v shows it again."""
    plain = subprocess.run([sys.executable, "-c", "import asyncssh"], capture_output=True, text=True, timeout=60)
    noisy = "DeprecationWarning" in plain.stderr  # what these libraries do here, unhushed
    doctor = gt("doctor", "gaming-pc", ssh_config=ssh_host.ssh_config)
    up = gt.up(ssh_host)
    assert up.returncode == 0, up.stderr
    sync = gt("sync", "gaming-pc", "--pull", str(gt.home / "absent"), ssh_config=ssh_host.ssh_config)
    assert sync.returncode == 1 and "rsync with gaming-pc failed" in sync.stderr
    down = gt("down", "gaming-pc", "--stop-server")
    assert down.returncode == 0, down.stderr
    said = {"doctor": doctor.stderr, "up": up.stderr, "sync": sync.stderr, "down --stop-server": down.stderr}
    said["the supervisor's log"] = gt("logs", "gaming-pc", "--lines", "100000").stdout
    assert "up: " in said["the supervisor's log"]
    for where, text in said.items():
        assert not PYTHON_WARNING.search(text), f"{where}: {text}"
    if noisy:
        verbose = gt("-v", "doctor", "gaming-pc", ssh_config=ssh_host.ssh_config)
        assert "DeprecationWarning" in verbose.stderr, verbose.stderr
