"""Installing ccmux-server, the parts found without a remote: upload progress on a terminal, and
an install dir with a control character refused before any connection."""

from __future__ import annotations

import io
import os
from pathlib import Path

from gt_remote.base import progress
from tests.conftest import Gt
from tests.helpers import one_error_line


def test_upload_progress_on_a_terminal_only_once_it_takes_time() -> None:
    main, other = os.openpty()
    with os.fdopen(main, "rb", buffering=0) as reader, open(other, "w") as terminal:
        display = progress.TransferDisplay(terminal, delay=1.0)
        display.update(1 << 20, 8 << 20, 0.5)  # quick so far: nothing
        display.update(4 << 20, 8 << 20, 2.0)
        display.finish()
        shown = reader.read(4096).decode()
    assert "\rgt-remote: uploading  50%    2.0 MiB/s 0:02 left" in shown and shown.count("uploading") == 1
    piped = io.StringIO()
    not_a_terminal = progress.TransferDisplay(piped, delay=0.0)
    not_a_terminal.update(4 << 20, 8 << 20, 2.0)
    not_a_terminal.finish()
    assert piped.getvalue() == ""



def test_install_dir_with_a_control_character_is_refused(gt: Gt, untouched_host: Path) -> None:
    result = gt("up", "gaming-pc", "--install-dir", "/opt/gt\nExecStartPost=x", ssh_config=untouched_host)
    assert result.returncode == 2
    assert "control character" in one_error_line(result.stderr)
