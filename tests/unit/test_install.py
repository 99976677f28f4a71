"""Installing ccmux-server, the parts found without a remote: upload progress on a terminal, an
install dir with a control character refused before any connection, and a version answer that
must name the server."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from gt_remote.base import progress
from gt_remote.remote.probe import names_server, parse_version
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


@pytest.mark.parametrize(
    ("answer", "server", "version"),
    [
        ("ccmux-server 0.1.1", "ccmux-server", "0.1.1"),
        ("fugue-server 2.0.0-beta", "fugue-server", "2.0.0-beta"),
        ("true (GNU coreutils) 9.1", "ccmux-server", None),  # `--server-binary /bin/true`: no version 9.1
        ("ccmux 0.1.1", "ccmux-server", None),
        ("ccmux-server", "ccmux-server", None),  # a name and no version
        ("fugue-server 1.0", "ccmux-server", None),  # another server program's answer
        ("", "ccmux-server", None),
    ],
)
def test_a_version_answer_must_name_the_server(answer: str, server: str, version: str | None) -> None:
    assert parse_version(answer, server) == version
    assert names_server(answer, server) is (version is not None)


def test_without_a_server_name_the_last_word_is_the_version() -> None:
    """Callers that do not know the program (none of gt-remote's own) keep the old reading."""
    assert parse_version("true (GNU coreutils) 9.1") == "9.1"
