"""The supervisor's log file: capped and rotated."""

from __future__ import annotations

import logging
import os
from pathlib import Path


def test_log_file_is_capped_and_rotated(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from gt_remote.base.paths import HostFiles
    from gt_remote.runtime import process as supervisor

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    files = HostFiles("chatty")
    umask = os.umask(0o022)  # setup_logging sets the supervisor's umask: this process's is put back after
    os.umask(umask)
    supervisor.setup_logging(files)
    noisy = logging.getLogger("gt_remote.test")
    try:
        for index in range(12000):  # about 5 MB: more than the cap times the backups
            noisy.info("line %d %s", index, "x" * 400)
    finally:
        os.umask(umask)
        logging.shutdown()
        logging.basicConfig(handlers=[logging.NullHandler()], force=True)
    logs = sorted(files.log.parent.glob("chatty.log*"))
    assert [p.name for p in logs] == ["chatty.log", "chatty.log.1", "chatty.log.2", "chatty.log.3"]
    assert all(p.stat().st_size <= supervisor.LOG_MAX_BYTES for p in logs)
    assert all(p.stat().st_mode & 0o077 == 0 for p in logs)

