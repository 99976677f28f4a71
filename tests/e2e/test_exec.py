"""`gt-remote exec`: the command runs with the tunnel's variables and its exit code is passed on."""

from __future__ import annotations

import sys

from tests.conftest import Gt
from tests.testbed import SshHost


def test_exec_sets_the_variables_and_passes_the_exit_code(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    program = (
        "import os, sys, asyncio; sys.path.insert(0, os.environ['PYTHONPATH']);"
        "from gt_remote.ccmux.wire import ping_address; from gt_remote.base.addresses import address_from_env;"
        "asyncio.run(ping_address(address_from_env())); print(os.environ['GASTOWN_CCMUX_ADDR'], os.environ['CCMUX_ADDR']); sys.exit(7)"
    )
    result = gt("exec", "gaming-pc", "--", sys.executable, "-c", program)
    assert result.returncode == 7, result.stderr
    assert result.stdout.split() == [gt.local(), gt.local()]

