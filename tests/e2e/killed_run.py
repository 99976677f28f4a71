"""The run that tests/e2e/test_reaper.py kills: a pytest of its own brings a tunnel up, starts a
laptop mariadbd, an autossh beside the tunnel and a bench scratch dir (as the bench's smoke test
does), says what it started, and waits to be killed. Not collected by a plain run (no
`test_` in its file name): pytest collects it only when named, as test_reaper.py names it."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from bench import scratch
from bench.tunnels import start_autossh
from tests.conftest import Gt
from tests.e2e.mariadb import LaptopMariaDB
from tests.reaper import SESSION_ENV
from tests.testbed import SshHost

REPORT_ENV = "GT_REMOTE_KILLED_RUN_REPORT"  # where to say what this run started
KILLED_WITHIN_S = 240.0  # test_reaper.py kills it long before; past this it fails (and is reaped all the same)


def test_holds_a_tunnel_until_killed(gt: Gt, ssh_host: SshHost, laptop_mariadb: LaptopMariaDB) -> None:
    report = os.environ.get(REPORT_ENV)
    if not report:
        pytest.skip(f"run by tests/e2e/test_reaper.py only (it sets {REPORT_ENV})")
    result = gt.up(ssh_host)
    assert result.returncode == 0, result.stderr
    [row] = gt.status()
    autossh = start_autossh(ssh_host, keepalive=1.0)  # the bench's reference tunnel, in this run's environment
    assert autossh.proc is not None
    bench_dir = scratch.make("gt-remote-bench-")  # as a bench run makes it: in the system's temporary directory
    facts = {
        "session": os.environ[SESSION_ENV],
        "pytest": os.getpid(),
        "supervisor": row["supervisor_pid"],
        "container": ssh_host.wrapped.id,
        "mariadbd": laptop_mariadb.pid,
        "root": str(Path(gt.env["XDG_RUNTIME_DIR"]).parent),
        "local_port": gt.port(),
        "autossh": autossh.proc.pid,
        "bench_dir": str(bench_dir),
    }
    partial = Path(report + ".part")
    partial.write_text(json.dumps(facts))
    partial.rename(report)  # whole or not at all, for the reader
    threading.Event().wait(KILLED_WITHIN_S)  # the killing comes from outside; nothing here to wait on
    pytest.fail(f"not killed within {KILLED_WITHIN_S:g} s")
